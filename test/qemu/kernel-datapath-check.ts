/**
 * The lab's proof that a guest's packets move on the kernel's datapath, whatever the VMM on the other
 * end of the socket (QEMU in bridge-guest.test.ts, cloud-hypervisor in cloud-hypervisor.test.ts): during
 * 10 s of iperf3 the bridge holds /dev/vhost-net, a vhost worker of the bridge exists and moves the
 * packets, and the bridge's own threads use < 2% of a CPU.
 */
import { expect } from 'chai';
import type { BridgeProcess } from '../../lab/bridge-process.js';
import { type Guest, type IperfResult, TRAFFIC_MIN_BYTES } from '../../lab/guest.js';
import { CLK_TCK, defaultWorkerKind, processCpuTicks, vhostWorkers } from '../../lab/host.js';

export const KERNEL_DATAPATH =
  "the datapath is the kernel's: during 10 s of iperf3 the bridge uses < 2% of a CPU, holds /dev/vhost-net, and " +
  'its vhost worker works';

export function mb(r: IperfResult): string {
  return `${(r.bytes / 1e6).toFixed(1)} MB in ${r.seconds.toFixed(1)} s, ${(r.bitsPerSecond / 1e6).toFixed(0)} Mbit/s`;
}

/** Asserts KERNEL_DATAPATH for bridge `b` serving guest `g`. */
export async function expectKernelDatapath(b: BridgeProcess, g: Guest): Promise<void> {
  const pid = b.pid;
  // Start from a quiet bridge: the bridge runs as the bin does (node --no-memory-reducer, without
  // which GCs some 10 s after a session's set-up would be its only CPU while traffic flows); wait
  // anyway until 5 s pass without a tick (at most 60 s), so set-up work is not counted.
  for (
    let t = Date.now(), last = b.ownCpuTicks(), since = Date.now();
    Date.now() - t < 60_000 && Date.now() - since < 5000;
  ) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = b.ownCpuTicks();
    if (now !== last) {
      last = now;
      since = Date.now();
    }
  }
  const cpu0 = b.ownCpuTicks();
  const all0 = processCpuTicks(pid);
  const w0 = vhostWorkers(pid);
  const samples: { vhostFds: number; workers: number }[] = [];
  const work = g.iperf3({ seconds: 10 });
  let done = false;
  void work.finally(() => {
    done = true;
  });
  while (!done) {
    await new Promise((r) => setTimeout(r, 1000));
    if (!done)
      samples.push({
        vhostFds: b.fdTargets().filter((t) => t === '/dev/vhost-net').length,
        workers: vhostWorkers(pid).length,
      });
  }
  const r = await work;
  const cpu = b.ownCpuTicks() - cpu0;
  const all = processCpuTicks(pid) - all0;
  const w1 = vhostWorkers(pid);
  const workerTicks =
    w1.reduce((a, w) => a + w.cpuTicks, 0) -
    w0.filter((x) => w1.some((y) => y.pid === x.pid)).reduce((a, w) => a + w.cpuTicks, 0);
  const share = cpu / CLK_TCK / r.seconds;
  console.log(
    `      ${mb(r)}; bridge's own threads: ${cpu} ticks = ${(share * 100).toFixed(2)}% of one CPU; ` +
      `vhost-${pid} worker (${w1.map((w) => w.kind).join(',')}): ${workerTicks} ticks; ` +
      `the process in /proc/${pid}/stat: ${all} ticks`,
  );
  expect(r.bytes).to.be.at.least(TRAFFIC_MIN_BYTES);
  expect(samples.length).to.be.at.least(5);
  expect(
    samples.every((s) => s.vhostFds >= 1),
    'bridge holds /dev/vhost-net in every sample',
  ).to.equal(true);
  expect(
    samples.every((s) => s.workers >= 1),
    `a vhost-${pid} worker exists in every sample`,
  ).to.equal(true);
  expect(workerTicks, 'the kernel worker moved the packets').to.be.greaterThan(0);
  expect(share, "CPU share of the bridge's own threads").to.be.lessThan(0.02);
  // docs/kernels.md: from 6.4 the worker is a thread of the bridge, and the process's CPU time
  // includes it (the own-CPU figure leaves it out); before, a kthread's time is not the bridge's.
  expect(
    w1.map((w) => w.kind),
    'the worker model of this kernel',
  ).to.deep.equal(w1.map(() => defaultWorkerKind()));
  if (defaultWorkerKind() === 'thread') {
    expect(all, "the process's CPU time includes its vhost worker").to.be.at.least(cpu + workerTicks - 2);
  } else {
    expect(all, "the process's CPU time is its own threads'").to.be.lessThan(cpu + Math.max(3, workerTicks / 2));
  }
}
