/**
 * `--events-fd N`: every lifecycle event of a port as one JSON line (status.ts EventLine) on an
 * inherited fd, for the process that started the bridge (a manager, the lab). Written
 * synchronously when the event happens, so nothing runs while the bridge is idle and a reader sees
 * each line before the bridge handles its next message. The fd should be blocking (a pipe or file
 * as a shell or spawn() passes it): a write that fails stops the events (one warning), never the
 * bridge.
 */
import { writeSync } from 'node:fs';
import type { Logger } from '../log.js';
import type { PortEvent, PortListener, PortStatus, EventLine } from './status.js';

/** The line of one event (with its newline). */
export function eventLine(event: PortEvent, status: PortStatus, time = Date.now()): string {
  const line: EventLine = { time, port: status.port, event, status };
  return `${JSON.stringify(line)}\n`;
}

/** A listener that writes each event to `fd`. */
export function eventsToFd(fd: number, log: Logger): PortListener {
  let broken = false;
  return (event, status) => {
    if (broken) return;
    try {
      const b = Buffer.from(eventLine(event, status));
      for (let off = 0; off < b.length; ) off += writeSync(fd, b, off);
    } catch (e) {
      broken = true;
      log.warn(`--events-fd ${fd}: ${(e as Error).message}; no more events are written`);
    }
  };
}
