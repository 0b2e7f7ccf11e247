/** vanish: a front-end on spare s2 that hangs up in the middle of its set-up. */
import { msg } from '../../frontend/builder.js';
import { TestFrontEnd } from '../../frontend/frontend.js';
import { sock } from '../world.js';
import type { FaultKind } from './kind.js';

export const vanish: FaultKind = {
  name: 'vanish',
  run: async (w) => {
    w.dropSynth('s2');
    const fe = TestFrontEnd.connect(sock('s2'));
    await fe.ask(msg.getFeatures());
    fe.send(msg.setOwner());
    fe.close();
    await w.synth('s2');
    const t = Date.now();
    return { target: 's2', affected: [], from: t, after: t };
  },
};
