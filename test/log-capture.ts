/** Log lines captured for assertions instead of printed (src/log.ts setLogSink). */
import { type Level, LEVELS, type LogLine, logLevel, setLogLevel, setLogSink } from '../src/log.js';

/** A capture of log lines: lines go to `lines` instead of stderr until `stop()`. */
export interface LogCapture {
  readonly lines: LogLine[];
  /** Lines at `level` or more severe, as `LEVEL text` strings (handy in assertion messages). */
  texts(level?: Level): string[];
  /** Restore the previous threshold and stderr output. */
  stop(): void;
}

const rank = (l: Level): number => LEVELS.indexOf(l);

/** Capture every line at `level` or more severe (default: everything) until stop(). Captures do not nest. */
export function captureLog(level: Level = 'debug'): LogCapture {
  const previous = logLevel();
  const lines: LogLine[] = [];
  setLogLevel(level);
  setLogSink((l) => lines.push(l));
  return {
    lines,
    texts: (max: Level = 'debug') =>
      lines.filter((l) => rank(l.level) <= rank(max)).map((l) => `${l.level.toUpperCase()} ${l.text}`),
    stop: () => {
      setLogSink(null);
      setLogLevel(previous);
    },
  };
}
