/**
 * refused-uid: a peer of another uid on a guest's port (mode 0666, allow-list root) is refused before
 * any message is read, its fd closed (the fd check after every event), the port's own guest undisturbed.
 */
import { sock } from '../world.js';
import type { FaultKind } from './kind.js';

export const refusedUid: FaultKind = {
  name: 'refused-uid',
  run: async (w) => {
    const port = w.pickGuest(true).port as string;
    const refusedBefore = (await w.daemon.status(port)).device?.refusedPeers ?? 0;
    const from = Date.now();
    const seen = await w.nobody.connect(sock(port));
    const refusedNow = (await w.daemon.status(port)).device?.refusedPeers ?? 0;
    const failures: string[] = [];
    if (seen.got !== 0 || !seen.hungUp)
      failures.push(`${port}: a peer outside the allow-list got ${seen.got} bytes, hung up: ${seen.hungUp}`);
    if (refusedNow !== refusedBefore + 1)
      failures.push(`${port}: refusals counted ${refusedBefore} -> ${refusedNow}, expected one more`);
    return { target: port, affected: [], from, after: Date.now(), failures };
  },
};
