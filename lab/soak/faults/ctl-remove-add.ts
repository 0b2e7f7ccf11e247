/** ctl-remove-add: a port removed over the control socket and added again with its spec. */
import { SPARES, sleep } from '../world.js';
import type { FaultKind } from './kind.js';

export const ctlRemoveAdd: FaultKind = {
  name: 'ctl-remove-add',
  run: async (w) => {
    const spare = w.rng.next() < 0.5;
    const port = spare ? w.rng.pick(SPARES) : (w.pickGuest(true).port as string);
    const from = Date.now();
    await w.daemon.ask('remove', { port });
    if (spare) w.dropSynth(port);
    await sleep(300);
    await w.daemon.ask('add', { name: port, config: w.specs[port] });
    const after = Date.now();
    if (spare) await w.synth(port);
    const affected = w.refs.filter((r) => r.port === port);
    return { target: port, affected, from, after };
  },
};
