/** garbage: an unknown request carrying an fd on spare s2: the daemon drops the connection. */
import { TestFrontEnd } from '../../frontend/frontend.js';
import { sock } from '../world.js';
import type { FaultKind } from './kind.js';

/** An unknown request carrying an fd: the daemon drops the connection and logs the port. */
const GARBAGE = Buffer.from([0x4d, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);

export const garbage: FaultKind = {
  name: 'garbage',
  run: async (w) => {
    w.dropSynth('s2');
    const fe = TestFrontEnd.connect(sock('s2'));
    fe.send(GARBAGE);
    const r = await fe.reply(5000);
    fe.close();
    const failures = r === 'eof' ? [] : ['s2: the daemon answered garbage instead of dropping the connection'];
    await w.synth('s2');
    const t = Date.now();
    return { target: 's2', affected: [], from: t, after: t, failures };
  },
};
