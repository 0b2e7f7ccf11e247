/** link-flap: the guest takes its link down for a second and up again. */
import type { FaultKind } from './kind.js';

export const linkFlap: FaultKind = {
  name: 'link-flap',
  run: async (w) => {
    const r = w.pickGuest();
    await r.guest.exec('ip link set eth0 down; sleep 1; ip link set eth0 up');
    const t = Date.now();
    return { target: r.name, affected: [r], from: t, after: t };
  },
};
