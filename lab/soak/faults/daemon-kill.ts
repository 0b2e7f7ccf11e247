/** daemon-kill: SIGKILL the daemon and start it again on the same config; every daemon guest recovers. */
import { DaemonProcess } from '../../daemon-process.js';
import { CONFIG, DAEMON_ARGS, RECOVERY_LIMIT_MS, SPARES } from '../world.js';
import type { FaultKind } from './kind.js';

export const daemonKill: FaultKind = {
  name: 'daemon-kill',
  run: async (w) => {
    const killed = Date.now();
    await w.daemon.stop('SIGKILL');
    for (const f of w.synths.values()) f.close();
    w.synths.clear();
    const spawned = Date.now();
    w.daemon = await DaemonProcess.start(`soak-restart-${++w.restarts}`, CONFIG, DAEMON_ARGS);
    const after = Date.now();
    // The restart's limit counts from the daemon's first log line: the runtime's own start before it
    // (Node loading the program: 0.34 s on the lab's host, 5-30 s under L2's TCG with guests running)
    // is the lab's speed, measured and shown, not the bridge's recovery (docs/soak.md, "daemon-kill
    // under TCG").
    const from = w.daemon.firstLineAt ?? spawned;
    const failures = after - from > RECOVERY_LIMIT_MS ? [`the daemon answered ${after - from} ms after its start`] : [];
    for (const s of SPARES) await w.synth(s);
    const detail =
      `daemon answered ${after - killed} ms after SIGKILL: Node's start ${from - spawned} ms, ` +
      `then the daemon's ${after - from} ms`;
    return { target: 'daemon', affected: w.daemonRefs(), from, after, failures, detail };
  },
};
