/** memtable: spare s1's front-end adds a memory region and removes it, each acked. */
import { ID, msg } from '../../frontend/builder.js';
import { memfd } from '../../frontend/frontend.js';
import type { FaultKind } from './kind.js';

export const memtable: FaultKind = {
  name: 'memtable',
  run: async (w) => {
    const h = w.synths.get('s1');
    if (!h) throw new Error('s1 has no synthetic front-end');
    const region = { gpa: 0x100_0000n, size: 1n << 20n, qva: 0x7f10_0000_0000n };
    const failures: string[] = [];
    const add = await h.fe.ask(msg.addMemReg(region).needReply(), [memfd(region.size, 'vb-soak-region')]);
    if (add === 'eof' || add.readUInt32LE(0) !== ID.ADD_MEM_REG || add.readBigUInt64LE(12) !== 0n)
      failures.push('s1: ADD_MEM_REG was not acked');
    const rem = await h.fe.ask(msg.remMemReg(region).needReply());
    if (rem === 'eof' || rem.readUInt32LE(0) !== ID.REM_MEM_REG || rem.readBigUInt64LE(12) !== 0n)
      failures.push('s1: REM_MEM_REG was not acked');
    const t = Date.now();
    return { target: 's1', affected: [], from: t, after: t, failures };
  },
};
