/**
 * The bridge end to end: L3 guests under nested KVM with QEMU 7.2's vhost-user netdev
 * (memory-backend-memfd, share=on) served by vhost-bridge, whose rings run on L2's kernel vhost-net
 * on a tap. The same guest, the same checks as baseline.test.ts (QEMU's own tap,vhost=on).
 * Runs inside L2 only: scripts/lab/run -- node_modules/.bin/mocha dist/test/qemu/bridge-guest.test.js
 */
import { expect } from 'chai';
import { BridgeProcess } from '../../lab/bridge-process.js';
import { Guest, TRAFFIC_MIN_BYTES } from '../../lab/guest.js';
import { hostTap, removeTap } from '../../lab/host.js';
import { expectKernelDatapath, KERNEL_DATAPATH, mb } from './kernel-datapath-check.js';
import { inLab, requireLab, retryOnGuestFault } from './lab.js';

const HOST = '10.0.3.1';
const xchg = process.env.LAB_XCHG ?? '/tmp';

async function pingOk(g: Guest, count = 3): Promise<void> {
  const p = await g.ping(HOST, { count });
  expect(p.received, `ping replies (rtt ${p.rttMs.join(' ')})`).to.equal(count);
}

describe('bridge end to end: a guest on the kernel datapath through vhost-bridge', function () {
  this.timeout(240_000);
  const TAP = 'vbtap0';
  const SOCK = '/tmp/vb-e2e.sock';
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;

  // VB_DEBUG=1 makes the bridges log every message (bridge-*.log in the lab's xchg dir).
  const startBridge = (name: string) =>
    BridgeProcess.start({
      name,
      args: ['--socket-path', SOCK, '--tap', TAP, ...(process.env.VB_DEBUG ? ['--log-level', 'debug'] : [])],
    });

  before(async function () {
    this.timeout(300_000);
    requireLab(this);
    hostTap(TAP, { ip: `${HOST}/24` });
    bridge = await startBridge('e2e');
    guest = await Guest.boot({
      name: 'bridge-e2e',
      net: { kind: 'vhost-user', socketPath: SOCK, reconnectSeconds: 1 },
      logFile: `${xchg}/guest-bridge-e2e.log`,
    });
    console.log(
      `      guest up in ${(guest.bootMs / 1000).toFixed(1)} s (QEMU pid ${guest.pid}, bridge pid ` +
        `${bridge.pid}${guest.bootRetries ? ', after one retry' : ''})`,
    );
  });

  after(async function () {
    this.timeout(60_000);
    await guest?.shutdown();
    await bridge?.stop();
    if (inLab()) removeTap(TAP);
  });

  const g = (): Guest => {
    if (!guest) throw new Error('no guest (boot failed)');
    return guest;
  };
  const b = (): BridgeProcess => {
    if (!bridge) throw new Error('no bridge');
    return bridge;
  };

  it('pings the host: 5 of 5 replies', async function () {
    await retryOnGuestFault(this, g(), async () => {
      const from = b().mark();
      const p = await g().ping(HOST, { count: 5 });
      console.log(`      rtt ms: ${p.rttMs.join(' ')}`);
      expect(p.received).to.equal(5);
      expect(b().problems(from), 'bridge warnings').to.deep.equal([]);
      expect(b().status().port).to.equal(TAP);
      expect(b().attachedRings(), 'both rings attached to the tap').to.deep.equal([0, 1]);
    });
  });

  for (const reverse of [false, true]) {
    it(`moves >= 1 MB ${reverse ? 'host -> guest' : 'guest -> host'} (iperf3)`, async function () {
      await retryOnGuestFault(this, g(), async () => {
        const r = await g().iperf3({ seconds: 5, reverse });
        console.log(`      ${reverse ? 'host -> guest' : 'guest -> host'}: ${mb(r)}`);
        expect(r.bytes).to.be.at.least(TRAFFIC_MIN_BYTES);
      });
    });
  }

  it(KERNEL_DATAPATH, async function () {
    await retryOnGuestFault(this, g(), () => expectKernelDatapath(b(), g()));
  });

  it('survives the guest taking its link down and up', async function () {
    await retryOnGuestFault(this, g(), async () => {
      const r = await g().exec('ip link set eth0 down && sleep 1 && ip link set eth0 up && sleep 2');
      expect(r.rc).to.equal(0);
      await pingOk(g());
    });
  });

  it('survives a guest reboot (the driver resets the device)', async function () {
    this.timeout(300_000);
    await retryOnGuestFault(this, g(), async () => {
      const from = b().mark();
      await g().reboot();
      await pingOk(g());
      expect(b().problems(from), 'bridge warnings').to.deep.equal([]);
      expect(b().since(from, 'ring-stopped'), "the driver's reset stopped the rings").to.not.be.empty;
      expect(
        b()
          .since(from, 'ring-running')
          .map((e) => (e.event as { ring: number }).ring)
          .sort(),
        'rings re-attached after the reset',
      ).to.include.members([0, 1]);
      expect(b().attachedRings()).to.deep.equal([0, 1]);
    });
  });

  it('is killed (SIGKILL) and started again: the guest pings within 10 s, without a reboot', async function () {
    await retryOnGuestFault(this, g(), async () => {
      const before = g().pid;
      const killed = await b().stop('SIGKILL');
      expect(killed.signal).to.equal('SIGKILL');
      bridge = await startBridge('e2e-restarted');
      await b().waitForEvent('connected', 20_000);
      const ms = await g().untilReply(HOST, 20);
      console.log(`      first reply ${(ms / 1000).toFixed(1)} s after the restarted bridge was ready`);
      expect(ms).to.be.lessThan(10_000);
      expect(g().pid, 'same QEMU, no reboot').to.equal(before);
      await pingOk(g(), 5);
    });
  });
});

describe('bridge end to end: QEMU quits, the bridge lets go of everything and serves a second VM', function () {
  this.timeout(240_000);
  const TAP = 'vbtap1';
  const SOCK = '/tmp/vb-second.sock';
  let bridge: BridgeProcess | undefined;

  before(async function () {
    requireLab(this);
    hostTap(TAP, { ip: `${HOST}/24` });
    bridge = await BridgeProcess.start({ name: 'second-vm', args: ['--socket-path', SOCK, '--tap', TAP] });
  });

  after(async function () {
    await bridge?.stop();
    if (inLab()) removeTap(TAP);
  });

  const fdsAfterQuit = 'holds after the first VM quits exactly the fds it held before it came, then serves another VM';
  it(fdsAfterQuit, async function () {
    this.timeout(480_000);
    const b = bridge!;
    const idle = b.fdTargets().sort();
    for (const name of ['first-vm', 'second-vm']) {
      const from = b.mark();
      const guest = await Guest.boot({
        name,
        net: { kind: 'vhost-user', socketPath: SOCK },
        logFile: `${xchg}/guest-${name}.log`,
      });
      try {
        await pingOk(guest);
        expect(
          b.fdTargets().filter((t) => t === '/dev/vhost-net'),
          `${name}: vhost-net open while it runs`,
        ).to.have.length(1);
      } finally {
        await guest.shutdown();
      }
      await b.waitForEvent('disconnected', 20_000, from);
      expect(b.status().frontEnd, `${name}: no front-end in the status`).to.equal(false);
      const now = b.fdTargets().sort();
      expect(now, `${name}: the bridge's fds after QEMU quit`).to.deep.equal(idle);
    }
    expect(b.problems()).to.deep.equal([]);
  });
});

describe('bridge end to end: two queue pairs', function () {
  this.timeout(240_000);
  const TAP = 'vbmq0';
  const SOCK = '/tmp/vb-mq.sock';
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;

  before(async function () {
    this.timeout(300_000);
    requireLab(this);
    hostTap(TAP, { ip: `${HOST}/24`, queues: 2 });
    bridge = await BridgeProcess.start({ name: 'mq', args: ['--socket-path', SOCK, '--tap', TAP, '--queues', '2'] });
    guest = await Guest.boot({
      name: 'bridge-mq',
      smp: 2,
      net: { kind: 'vhost-user', socketPath: SOCK, queues: 2 },
      logFile: `${xchg}/guest-bridge-mq.log`,
    });
  });

  after(async function () {
    this.timeout(60_000);
    await guest?.shutdown();
    await bridge?.stop();
    if (inLab()) removeTap(TAP);
  });

  it('carries traffic on both queue pairs (guest per-queue counters)', async function () {
    await retryOnGuestFault(this, guest!, async () => {
      const g = guest!;
      const from = bridge!.mark();
      const l = await g.exec('ethtool -L eth0 combined 2 && ethtool -l eth0 | tail -4');
      expect(l.rc, l.output).to.equal(0);
      await pingOk(g);
      const counters = async (): Promise<Record<string, number>> => {
        const s = await g.exec("ethtool -S eth0 | grep -E '(rx|tx)_queue_[01]_packets'");
        const out: Record<string, number> = {};
        for (const m of s.output.matchAll(/(\w+_queue_\d_packets): (\d+)/g)) out[m[1]] = Number(m[2]);
        return out;
      };
      const c0 = await counters();
      // host -> guest: several flows, spread over the tap's queues by flow hash
      const rx = await g.iperf3({ seconds: 4, reverse: true, parallel: 4 });
      // guest -> host: one sender per vCPU; virtio_net maps each CPU to its own TX queue (XPS)
      const tx = await g.exec(
        `for c in 0 1; do taskset -c $c ping -q -c 300 -i 0.01 -s 1000 ${HOST} >/dev/null & done; wait`,
        { timeoutMs: 60_000 },
      );
      expect(tx.rc, tx.output).to.equal(0);
      const c1 = await counters();
      const d = (k: string) => (c1[k] ?? 0) - (c0[k] ?? 0);
      console.log(
        `      packets: rx q0 ${d('rx_queue_0_packets')} q1 ${d('rx_queue_1_packets')}, tx q0 ` +
          `${d('tx_queue_0_packets')} q1 ${d('tx_queue_1_packets')}; iperf3 -R -P 4: ${mb(rx)}`,
      );
      for (const k of ['rx_queue_0_packets', 'rx_queue_1_packets', 'tx_queue_0_packets', 'tx_queue_1_packets'])
        expect(d(k), k).to.be.greaterThan(100);
      expect(
        bridge!.fdTargets().filter((t) => t === '/dev/vhost-net'),
        'one vhost-net fd per queue pair',
      ).to.have.length(2);
      expect(bridge!.attachedRings(), 'all four rings attached').to.deep.equal([0, 1, 2, 3]);
      expect(bridge!.problems(from)).to.deep.equal([]);
    });
  });
});

describe('bridge end to end: QEMU as the server, the bridge connects (--connect)', function () {
  this.timeout(240_000);
  const TAP = 'vbtap2';
  const SOCK = '/tmp/vb-client.sock';
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;

  before(async function () {
    this.timeout(300_000);
    requireLab(this);
    hostTap(TAP, { ip: `${HOST}/24` });
    // The bridge starts first and retries until QEMU's socket appears (QEMU waits for it before the guest runs).
    bridge = await BridgeProcess.start({ name: 'client-mode', args: ['--connect', SOCK, '--tap', TAP] });
    guest = await Guest.boot({
      name: 'qemu-server',
      net: { kind: 'vhost-user', socketPath: SOCK, server: true },
      logFile: `${xchg}/guest-qemu-server.log`,
    });
  });

  after(async function () {
    this.timeout(60_000);
    await guest?.shutdown();
    await bridge?.stop();
    if (inLab()) removeTap(TAP);
  });

  it('pings and moves >= 1 MB each way', async function () {
    await retryOnGuestFault(this, guest!, async () => {
      const from = bridge!.mark();
      await pingOk(guest!, 5);
      for (const reverse of [false, true]) {
        const r = await guest!.iperf3({ seconds: 4, reverse });
        console.log(`      ${reverse ? 'host -> guest' : 'guest -> host'}: ${mb(r)}`);
        expect(r.bytes).to.be.at.least(TRAFFIC_MIN_BYTES);
      }
      expect(bridge!.problems(from)).to.deep.equal([]);
    });
  });
});
