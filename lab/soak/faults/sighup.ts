/** sighup: SIGHUP with an unchanged config reloads it and touches no port (their sessions unchanged). */
import { SPARES, sleep } from '../world.js';
import type { FaultKind } from './kind.js';

export const sighup: FaultKind = {
  name: 'sighup',
  run: async (w) => {
    const sessions = async (): Promise<number[]> =>
      Promise.all([...w.guestPorts, ...SPARES].map(async (p) => (await w.daemon.status(p)).device?.sessions ?? -1));
    const before = await sessions();
    const from = Date.now();
    process.kill(w.daemon.pid, 'SIGHUP');
    await sleep(500);
    const now = await sessions();
    const failures =
      now.join() === before.join()
        ? []
        : [`SIGHUP with an unchanged config touched ports: sessions ${before.join()} -> ${now.join()}`];
    return { target: 'daemon', affected: [], from, after: Date.now(), failures };
  },
};
