/**
 * cloud-hypervisor guests (the lab's L3 guest under cloud-hypervisor, nested KVM in L2; lab/guest/ch-args.ts)
 * on the kernel datapath through vhost-bridge: the one-port bridge (ping and iperf3 both ways, the
 * kernel's datapath, two queue pairs, the bridge SIGKILLed and restarted under the running guest) and a
 * daemon port beside a QEMU guest on another port of the same daemon. Also cloud-hypervisor's own
 * virtio-net on a tap, the datapath its users have today (the benchmark's other half).
 * cloud-hypervisor is the vhost-user client (vhost_mode=client): the bridge listens.
 * Runs inside L2 only: scripts/lab/run -- node_modules/.bin/mocha dist/test/qemu/cloud-hypervisor.test.js
 */
import { expect } from 'chai';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { BridgeProcess } from '../../lab/bridge-process.js';
import { DaemonProcess } from '../../lab/daemon-process.js';
import { Guest, TRAFFIC_MIN_BYTES } from '../../lab/guest.js';
import { hostTap, removeTap } from '../../lab/host.js';
import { expectKernelDatapath, KERNEL_DATAPATH, mb } from './kernel-datapath-check.js';
import { inLab, requireCloudHypervisor, retryOnGuestFault } from './lab.js';

const HOST = '10.0.3.1';
const xchg = process.env.LAB_XCHG ?? '/tmp';
const debug = process.env.VB_DEBUG ? ['--log-level', 'debug'] : [];
/**
 * No VBGUEST-INIT this long after cloud-hypervisor starts = the nested-KVM boot hang. Longer than QEMU's
 * 90 s: its guests reached init after 62 s on a quiet lab, and a loaded one (five L2s on two cores) took
 * more than 90 s.
 */
const CH_HANG_MS = 180_000;
/** How long a bridge or daemon may take to start: node in L2 took 77 s on that loaded lab (60 s is the default). */
const START_MS = 180_000;

async function pingOk(g: Guest, count = 3, host = HOST): Promise<void> {
  const p = await g.ping(host, { count });
  expect(p.received, `ping replies (rtt ${p.rttMs.join(' ')})`).to.equal(count);
}

async function trafficBothWays(g: Guest, host = HOST): Promise<void> {
  await pingOk(g, 5, host);
  for (const reverse of [false, true]) {
    const r = await g.iperf3({ seconds: 4, reverse, peer: host });
    console.log(`      ${reverse ? 'host -> guest' : 'guest -> host'}: ${mb(r)}`);
    expect(r.bytes).to.be.at.least(TRAFFIC_MIN_BYTES);
  }
}

describe('cloud-hypervisor: its own virtio-net on a tap (what its users have today)', function () {
  this.timeout(240_000);
  const TAP = 'vbchtap0';
  let guest: Guest | undefined;

  before(async function () {
    this.timeout(600_000);
    requireCloudHypervisor(this);
    hostTap(TAP, { ip: `${HOST}/24` });
    guest = await Guest.boot({
      name: 'ch-tap',
      vmm: 'cloud-hypervisor',
      hangTimeoutMs: CH_HANG_MS,
      net: { kind: 'tap', ifname: TAP, vhost: false },
      logFile: `${xchg}/guest-ch-tap.log`,
    });
    console.log(`      guest up in ${(guest.bootMs / 1000).toFixed(1)} s (cloud-hypervisor pid ${guest.pid})`);
  });

  after(async function () {
    this.timeout(60_000);
    await guest?.shutdown();
    if (inLab()) removeTap(TAP);
  });

  it('pings the host and moves >= 1 MB each way (iperf3)', async function () {
    await retryOnGuestFault(this, guest!, () => trafficBothWays(guest!));
  });
});

describe('cloud-hypervisor through the one-port bridge', function () {
  this.timeout(240_000);
  const TAP = 'vbchtap1';
  const SOCK = '/tmp/vb-ch.sock';
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;
  const startBridge = (name: string) =>
    BridgeProcess.start({ name, args: ['--socket-path', SOCK, '--tap', TAP, ...debug], readyTimeoutMs: START_MS });
  const g = (): Guest => {
    if (!guest) throw new Error('no guest (boot failed)');
    return guest;
  };
  const b = (): BridgeProcess => {
    if (!bridge) throw new Error('no bridge');
    return bridge;
  };

  before(async function () {
    this.timeout(600_000);
    requireCloudHypervisor(this);
    hostTap(TAP, { ip: `${HOST}/24` });
    bridge = await startBridge('ch');
    guest = await Guest.boot({
      name: 'ch-bridge',
      vmm: 'cloud-hypervisor',
      hangTimeoutMs: CH_HANG_MS,
      net: { kind: 'vhost-user', socketPath: SOCK },
      logFile: `${xchg}/guest-ch-bridge.log`,
    });
    console.log(
      `      guest up in ${(guest.bootMs / 1000).toFixed(1)} s (CH pid ${guest.pid}, bridge pid ${bridge.pid})`,
    );
  });

  after(async function () {
    this.timeout(60_000);
    await guest?.shutdown();
    await bridge?.stop();
    if (inLab()) removeTap(TAP);
  });

  it('pings the host and moves >= 1 MB each way (iperf3); both rings on the tap, no warnings', async function () {
    await retryOnGuestFault(this, g(), async () => {
      const from = b().mark();
      await trafficBothWays(g());
      expect(b().problems(from), 'bridge warnings').to.deep.equal([]);
      expect(b().status().frontEnd).to.equal(true);
      expect(b().attachedRings(), 'both rings attached to the tap').to.deep.equal([0, 1]);
    });
  });

  it(KERNEL_DATAPATH, async function () {
    await retryOnGuestFault(this, g(), () => expectKernelDatapath(b(), g()));
  });

  it('is killed (SIGKILL) and started again: the guest pings within 10 s, without a reboot', async function () {
    await retryOnGuestFault(this, g(), async () => {
      const before = g().pid;
      const killed = await b().stop('SIGKILL');
      const killedAt = Date.now();
      expect(killed.signal).to.equal('SIGKILL');
      bridge = await startBridge('ch-restarted');
      // cloud-hypervisor reconnects by itself (vhost_mode=client), every 100 ms for 60 s, and replays the
      // set-up; after 60 s it gives up and sets the device NEEDS_RESET (virtio-devices/src/vhost_user/
      // vu_common_ctrl.rs CONNECT_TIMEOUT): the guest's network is then gone until the guest resets it.
      const listening = (Date.now() - killedAt) / 1000;
      expect(listening, "seconds from SIGKILL to the new bridge's ready: cloud-hypervisor waits 60").to.be.lessThan(60);
      await b().waitForEvent('connected', 60_000);
      const ms = await g().untilReply(HOST, 20);
      console.log(`      first reply ${(ms / 1000).toFixed(1)} s after the restarted bridge was ready`);
      expect(ms).to.be.lessThan(10_000);
      expect(g().pid, 'same cloud-hypervisor, no reboot').to.equal(before);
      await pingOk(g(), 5);
    });
  });
});

describe('cloud-hypervisor through the one-port bridge: two queue pairs (num_queues=4)', function () {
  this.timeout(240_000);
  const TAP = 'vbchmq0';
  const SOCK = '/tmp/vb-ch-mq.sock';
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;

  before(async function () {
    this.timeout(600_000);
    requireCloudHypervisor(this);
    hostTap(TAP, { ip: `${HOST}/24`, queues: 2 });
    bridge = await BridgeProcess.start({
      name: 'ch-mq',
      args: ['--socket-path', SOCK, '--tap', TAP, '--queues', '2', ...debug],
      readyTimeoutMs: START_MS,
    });
    guest = await Guest.boot({
      name: 'ch-mq',
      vmm: 'cloud-hypervisor',
      hangTimeoutMs: CH_HANG_MS,
      smp: 2,
      net: { kind: 'vhost-user', socketPath: SOCK, queues: 2 },
      logFile: `${xchg}/guest-ch-mq.log`,
    });
  });

  after(async function () {
    this.timeout(60_000);
    await guest?.shutdown();
    await bridge?.stop();
    if (inLab()) removeTap(TAP);
  });

  it('carries traffic on both queue pairs (guest per-queue counters), all four rings attached', async function () {
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
      const rx = await g.iperf3({ seconds: 4, reverse: true, parallel: 4 });
      // guest -> host: one sender per vCPU; virtio_net maps each CPU to its own TX queue (XPS)
      const tx = await g.exec(
        `for c in 0 1; do taskset -c $c ping -q -c 300 -i 0.01 -s 1000 ${HOST} >/dev/null & done; wait`,
        // a loaded lab (five L2s on two cores) took just over 60 s for these 600 pings
        { timeoutMs: 180_000 },
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

describe('cloud-hypervisor on a daemon port beside a QEMU guest on another port', function () {
  this.timeout(300_000);
  const DIR = '/tmp/vb-daemon-ch';
  const CONFIG = `${DIR}/config.json`;
  const VMS = [
    { port: 'ch', vmm: 'cloud-hypervisor' as const, tap: 'vbdch0', host: '10.0.8.1', ip: '10.0.8.2/24' },
    { port: 'qemu', vmm: 'qemu' as const, tap: 'vbdch1', host: '10.0.9.1', ip: '10.0.9.2/24' },
  ];
  const sock = (port: string): string => `${DIR}/${port}.sock`;
  let daemon: DaemonProcess | undefined;
  const guests: Guest[] = [];

  before(async function () {
    this.timeout(600_000);
    requireCloudHypervisor(this);
    mkdirSync(DIR, { recursive: true });
    const ports = Object.fromEntries(
      VMS.map((v) => [v.port, { tap: v.tap, persistentTap: true, socket: sock(v.port) }]),
    );
    writeFileSync(CONFIG, JSON.stringify({ control: { path: sock('control') }, ports }));
    for (const v of VMS) hostTap(v.tap, { ip: `${v.host}/24` });
    daemon = await DaemonProcess.start('ch-qemu', CONFIG, [], START_MS);
    for (const v of VMS)
      guests.push(
        await Guest.boot({
          name: `daemon-${v.port}`,
          vmm: v.vmm,
          ...(v.vmm === 'cloud-hypervisor' ? { hangTimeoutMs: CH_HANG_MS } : {}),
          ip: v.ip,
          peer: v.host,
          net:
            v.vmm === 'qemu'
              ? { kind: 'vhost-user', socketPath: sock(v.port), reconnectSeconds: 1 }
              : { kind: 'vhost-user', socketPath: sock(v.port) },
          logFile: `${xchg}/guest-daemon-${v.port}.log`,
        }),
      );
  });

  after(async function () {
    this.timeout(120_000);
    for (const g of guests) await g.shutdown();
    await daemon?.stop();
    if (inLab()) {
      for (const v of VMS) removeTap(v.tap);
      rmSync(DIR, { recursive: true, force: true });
    }
  });

  it('both guests ping and move >= 1 MB each way; ctl status shows both front-ends', async function () {
    await retryOnGuestFault(this, guests, async () => {
      for (const [i, g] of guests.entries()) await trafficBothWays(g, VMS[i].host);
      const out = daemon!.ctl('status');
      console.log(out.replace(/^/gm, '      '));
      for (const [i, v] of VMS.entries()) {
        const st = await daemon!.status(v.port);
        expect(st.peer?.pid, `${v.port}: the front-end is its guest's ${guests[i].vmm}`).to.equal(guests[i].pid);
        expect(
          st.device?.rings.filter((r) => r.attached).map((r) => r.index),
          v.port,
        ).to.deep.equal([0, 1]);
        expect(out, v.port).to.match(new RegExp(`^${v.port}: running, .*\n.*\n  front-end  connected by pid `, 'm'));
      }
      expect(daemon!.problems(), 'daemon warnings').to.deep.equal([]);
    });
  });
});
