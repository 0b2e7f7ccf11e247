/** ctl-reset: the control socket's `reset` of a port, a spare's or a guest's (half the time each). */
import { SPARES } from '../world.js';
import type { FaultKind } from './kind.js';

export const ctlReset: FaultKind = {
  name: 'ctl-reset',
  run: async (w) => {
    if (w.rng.next() < 0.5) {
      const s = w.rng.pick(SPARES);
      await w.daemon.ask('reset', { port: s });
      await w.synth(s);
      const t = Date.now();
      return { target: s, affected: [], from: t, after: t };
    }
    const r = w.pickGuest(true);
    const from = Date.now();
    await w.daemon.ask('reset', { port: r.port });
    return { target: r.name, affected: [r], from, after: Date.now() };
  },
};
