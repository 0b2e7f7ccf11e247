/**
 * Clean shutdown on SIGTERM and SIGINT, for both modes (one port, and the daemon of many): the
 * first signal closes everything (rings stop, vhost-net fds close, memory is unmapped); the event
 * loop then ends by itself, and a 3 s guard (unref'd: it never keeps the process alive) exits if a
 * leak would keep it running. A failure while closing is logged and makes the exit status 1.
 */
import type { Logger } from './log.js';

export function stopOnSignals(close: () => void, log: Logger): void {
  let stopping = false;
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      if (stopping) return;
      stopping = true;
      log.info(`${sig}: stopping`);
      try {
        close();
      } catch (e) {
        log.error(`while stopping: ${(e as Error).message}`);
        process.exitCode = 1;
      }
      setTimeout(() => process.exit(process.exitCode ?? 0), 3000).unref();
    });
  }
}
