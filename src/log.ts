/**
 * A minimal logger: four levels, one settable threshold, one line per event on stderr with an ISO
 * timestamp (`2026-11-23T19:00:00.000Z WARN vbtap0: SET_VRING_ADDR: ring 3: ...`); a port's lines
 * name it ({@link portLog}). `--log-format json` ({@link setLogFormat}) writes the same lines as
 * JSON objects for machines, one per line, through pino on a synchronous destination (no worker
 * thread, no buffer to flush, no timer: an idle daemon stays idle):
 * `{"level":"warn","time":"2026-...","pid":7,"port":"vbtap0","msg":"SET_VRING_ADDR: ring 3: ..."}`.
 *
 * CONTRIBUTING: "Logs: one line per event, naming the request". Callers build the text only when
 * the level is on (`if (log.enabled('debug'))`), so debug tracing of every vhost-user message
 * costs nothing when it is off.
 *
 * Tests capture lines instead of printing them ({@link setLogSink}), and assert on what was logged.
 */

import { fstatSync } from 'node:fs';
import { pino, type Logger as Pino } from 'pino';

/** Levels, most severe first. */
export const LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type Level = (typeof LEVELS)[number];

/** One logged event, as a sink sees it. */
export interface LogLine {
  level: Level;
  /** The message without timestamp and level. */
  text: string;
}

/** What modules log through. */
export interface Logger {
  error(text: string): void;
  warn(text: string): void;
  info(text: string): void;
  debug(text: string): void;
  /** True if a line at `level` would be written (build expensive text only then). */
  enabled(level: Level): boolean;
  /** A logger whose lines name `port` (the process-wide one has it; {@link portLog} uses it when there). */
  forPort?(port: string): Logger;
}

const rank = (l: Level): number => LEVELS.indexOf(l);

let threshold: Level = 'info';
let sink: ((line: LogLine) => void) | null = null;
/** The JSON writer (`--log-format json`), or null for text lines. */
let json: Pino | null = null;

/** Output formats of {@link setLogFormat}. */
export const FORMATS = ['text', 'json'] as const;

/**
 * sd-daemon(3)'s SyslogLevelPrefix: a text line that starts `<N>` is stored by journald at syslog
 * priority N (3 err, 4 warning, 6 info, 7 debug), so `journalctl -p err` finds the ERROR lines.
 */
const PRIORITY: Record<Level, number> = { error: 3, warn: 4, info: 6, debug: 7 };

/**
 * True if stderr is connected to the journal: systemd.exec(5) sets JOURNAL_STREAM to the device and
 * inode of the stream it connected, and a process compares them with its own fd's (a child that
 * inherited the variable but writes to a pipe or a file gets no prefixes).
 */
export function isJournalStream(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]) && st.ino === BigInt(m[2]);
  } catch {
    return false;
  }
}

let journal: boolean | null = null;

/**
 * One text line: the timestamp, level and text; when stderr is the journal, `<N>` first (and on
 * each further line of a message of several, which journald stores as lines of their own).
 */
export function textLine(
  level: Level,
  text: string,
  port: string | null,
  toJournal: boolean,
  now = new Date(),
): string {
  const line = `${now.toISOString()} ${level.toUpperCase()} ${port === null ? '' : `${port}: `}${text}`;
  if (!toJournal) return `${line}\n`;
  const prefix = `<${PRIORITY[level]}>`;
  return `${prefix}${line.replaceAll('\n', `\n${prefix}`)}\n`;
}

function write(level: Level, text: string, port: string | null): void {
  if (rank(level) > rank(threshold)) return;
  if (sink) {
    sink({ level, text: port === null ? text : `${port}: ${text}` });
    return;
  }
  if (json) {
    if (port === null) json[level](text);
    else json[level]({ port }, text);
    return;
  }
  journal ??= isJournalStream();
  process.stderr.write(textLine(level, text, port, journal));
}

const writer = (port: string | null): Logger => ({
  error: (t) => write('error', t, port),
  warn: (t) => write('warn', t, port),
  info: (t) => write('info', t, port),
  debug: (t) => write('debug', t, port),
  enabled: (l) => rank(l) <= rank(threshold),
  forPort: (p) => writer(p),
});

/** The process-wide logger. */
export const log: Logger = writer(null);

/**
 * Text lines (the default) or JSON objects on stderr (`--log-format json`). JSON goes through pino
 * to a synchronous stderr destination: each line is written before the call returns, as text is.
 */
export function setLogFormat(format: (typeof FORMATS)[number] | string): void {
  if (!(FORMATS as readonly string[]).includes(format))
    throw new Error(`unknown log format '${format}' (one of ${FORMATS.join(', ')})`);
  json =
    format === 'json'
      ? pino(
          {
            level: 'debug', // the threshold is this module's
            timestamp: pino.stdTimeFunctions.isoTime,
            formatters: { level: (label) => ({ level: label }) },
          },
          pino.destination({ dest: 2, sync: true }),
        )
      : null;
}

/**
 * A logger for one port: every line names the port (`... INFO vbtap0: SET_FEATURES: ...`; in JSON
 * its `port` field), so that the lines of a process serving several ports say whose they are.
 */
export function portLog(parent: Logger, port: string): Logger {
  if (parent.forPort) return parent.forPort(port);
  return {
    error: (t) => parent.error(`${port}: ${t}`),
    warn: (t) => parent.warn(`${port}: ${t}`),
    info: (t) => parent.info(`${port}: ${t}`),
    debug: (t) => parent.debug(`${port}: ${t}`),
    enabled: (l) => parent.enabled(l),
  };
}

/** Set the threshold (the CLI's --log-level). Throws on an unknown name. */
export function setLogLevel(level: Level | string): void {
  if (!(LEVELS as readonly string[]).includes(level))
    throw new Error(`unknown log level '${level}' (one of ${LEVELS.join(', ')})`);
  threshold = level as Level;
}

/** The threshold in force (a test that changes it puts it back). */
export const logLevel = (): Level => threshold;

/**
 * Hand every line to `to` instead of writing it, text or JSON (null: write again). The lines keep
 * their level and the port's name (tests assert on them: test/log-capture.ts).
 */
export function setLogSink(to: ((line: LogLine) => void) | null): void {
  sink = to;
}
