/**
 * TEST ONLY (docs/migration.md "The test-only switch"): the one-port bridge, whose vhost-net
 * datapath never gives the kernel the dirty log (log base, LOG_ALL, a ring's VHOST_VRING_F_LOG),
 * so that test/qemu/migration.test.ts can show that its page compare fails without it. The bridge
 * still maps the log and answers SET_LOG_BASE, so QEMU migrates as usual; a guest migrated this way
 * may receive stale packets.
 *
 * It is the real one-port main() on the real kernel parts with one part changed, started by
 * `node dist/lab/withheld-log-bridge.js ARGS` (lab/bridge-process.ts WITHHELD_LOG_BRIDGE_COMMAND),
 * and runs only with VB_TEST_WITHHOLD_DIRTY_LOG=1 in its environment, so that nobody starts it by
 * mistake. Nothing in src/ reads that variable.
 */
import { VhostNetDatapath } from '../src/bridge/vhost-net-datapath.js';
import { runOnePort } from '../src/one-port.js';
import { kernelParts } from '../src/port/parts.js';

if (process.env.VB_TEST_WITHHOLD_DIRTY_LOG !== '1') {
  process.stderr.write('withheld-log-bridge: a test-only bridge: it runs with VB_TEST_WITHHOLD_DIRTY_LOG=1 only\n');
  process.exit(1);
}
runOnePort(process.argv.slice(2), process.env, {
  ...kernelParts(),
  datapath: (cfg) => {
    cfg.log?.warn('VB_TEST_WITHHOLD_DIRTY_LOG=1: the kernel gets no dirty log (test only)');
    return new VhostNetDatapath({ ...cfg, withholdDirtyLog: true });
  },
});
