/**
 * The lab baseline every later comparison uses: an L3 guest on QEMU's own
 * `-netdev tap,vhost=on` (tap0 = 10.0.3.1/24 in L2), i.e. the Linux kernel's
 * vhost-net datapath with QEMU as its owner. Proves, in this lab, that
 *   - the guest reaches the host (ping, 5 of 5),
 *   - at least TRAFFIC_MIN_BYTES (1 MB) move in each direction (iperf3),
 *   - during the transfers QEMU holds a /dev/vhost-net fd and its vhost-<pid>
 *     worker exists and burns CPU (sampled while iperf3 runs, not afterwards); the worker is
 *     of this kernel's model (a kthread before 6.4, a thread of QEMU from 6.4: docs/kernels.md).
 * Runs inside L2 only: scripts/lab/run -- node_modules/.bin/mocha dist/test/qemu/baseline.test.js
 */
import { expect } from 'chai';
import { Guest, type IperfResult, TRAFFIC_MIN_BYTES } from '../../lab/guest.js';
import { defaultWorkerKind, hostTap, removeTap, vhostNetFds, vhostWorkers, type VhostWorker } from '../../lab/host.js';
import { inLab, requireLab, retryOnGuestFault } from './lab.js';

const TAP = 'tap0';

interface Sample {
  fds: number;
  workers: VhostWorker[];
}

/** Samples QEMU's vhost-net fds and workers every 500 ms until work settles. */
async function sampledDuring<T>(pid: number, work: Promise<T>): Promise<{ result: T; samples: Sample[] }> {
  const samples: Sample[] = [];
  let done = false;
  const settled = work.finally(() => {
    done = true;
  });
  while (!done) {
    await Promise.race([settled.catch(() => undefined), new Promise((r) => setTimeout(r, 500))]);
    if (!done) samples.push({ fds: vhostNetFds(pid), workers: vhostWorkers(pid) });
  }
  return { result: await settled, samples };
}

function mb(r: IperfResult): string {
  return `${(r.bytes / 1e6).toFixed(1)} MB in ${r.seconds.toFixed(1)} s, ${(r.bitsPerSecond / 1e6).toFixed(0)} Mbit/s`;
}

describe('lab baseline: L3 guest on QEMU -netdev tap,vhost=on (kernel vhost-net)', function () {
  this.timeout(180_000);
  let guest: Guest | undefined;

  before(async function () {
    this.timeout(300_000); // one boot, plus one more on the nested-KVM boot hang
    requireLab(this);
    hostTap(TAP, { ip: '10.0.3.1/24' });
    guest = await Guest.boot({
      name: 'baseline',
      net: { kind: 'tap', ifname: TAP, vhost: true },
      logFile: `${process.env.LAB_XCHG ?? '/tmp'}/guest-baseline.log`,
    });
    console.log(
      `      guest up in ${(guest.bootMs / 1000).toFixed(1)} s (QEMU pid ` +
        `${guest.pid}${guest.bootRetries ? ', after one retry' : ''})`,
    );
  });

  after(async function () {
    await guest?.shutdown();
    if (inLab()) removeTap(TAP);
  });

  function theGuest(): Guest {
    if (!guest) throw new Error('no guest (boot failed)');
    return guest;
  }

  it('pings the host: 5 of 5 replies', async function () {
    await retryOnGuestFault(this, theGuest(), async () => {
      const p = await theGuest().ping('10.0.3.1', { count: 5 });
      console.log(`      rtt ms: ${p.rttMs.join(' ')}`);
      expect(p.transmitted).to.equal(5);
      expect(p.received).to.equal(5);
      expect(p.rttMs).to.have.length(5);
    });
  });

  for (const reverse of [false, true]) {
    const dir = reverse ? 'host -> guest' : 'guest -> host';
    it(`moves >= 1 MB ${dir}, with QEMU's vhost-net fd and vhost worker busy meanwhile`, async function () {
      await retryOnGuestFault(this, theGuest(), async () => {
        const g = theGuest();
        const before = vhostWorkers(g.pid);
        const { result, samples } = await sampledDuring(g.pid, g.iperf3({ seconds: 8, reverse }));
        console.log(`      ${dir}: ${mb(result)}`);
        expect(result.bytes).to.be.at.least(TRAFFIC_MIN_BYTES);

        expect(samples.length, 'samples taken while iperf3 ran').to.be.at.least(3);
        const withFd = samples.filter((s) => s.fds >= 1).length;
        const withWorker = samples.filter((s) => s.workers.length >= 1).length;
        expect(withFd, `samples where QEMU ${g.pid} holds /dev/vhost-net`).to.equal(samples.length);
        expect(withWorker, `samples where a vhost-${g.pid} worker exists`).to.equal(samples.length);
        // the worker that existed before the transfer did the work during it
        const last = samples[samples.length - 1].workers;
        const ticks = (ws: VhostWorker[]): number => ws.reduce((a, w) => a + w.cpuTicks, 0);
        const used = ticks(last) - ticks(before.filter((b) => last.some((w) => w.pid === b.pid)));
        const who = last.map((w) => `${w.pid} (${w.kind})`).join(',');
        console.log(`      vhost-${g.pid} worker(s) ${who}: ${used} CPU ticks during the transfer`);
        expect(
          last.map((w) => w.kind),
          'the worker model of this kernel',
        ).to.deep.equal(last.map(() => defaultWorkerKind()));
        expect(used, 'CPU ticks of the vhost worker during the transfer').to.be.greaterThan(0);
      });
    });
  }
});
