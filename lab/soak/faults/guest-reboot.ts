/** guest-reboot: the guest reboots (its driver resets the device, the rings are set up anew). */
import type { FaultKind } from './kind.js';

export const guestReboot: FaultKind = {
  name: 'guest-reboot',
  run: async (w) => {
    const r = w.pickGuest();
    await r.guest.reboot();
    const t = Date.now();
    await w.startTraffic(r);
    return { target: r.name, affected: [r], from: t, after: t };
  },
};
