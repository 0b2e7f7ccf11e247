/** qemu-kill: SIGKILL a guest's QEMU and boot it again; its port takes the new front-end. */
import type { FaultKind } from './kind.js';

export const qemuKill: FaultKind = {
  name: 'qemu-kill',
  run: async (w) => {
    const r = w.pickGuest();
    await r.guest.kill();
    await w.bringBack(r);
    const t = Date.now();
    await w.startTraffic(r);
    return { target: r.name, affected: [r], from: t, after: t };
  },
};
