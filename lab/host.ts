/**
 * The L2 host side of the lab (docs/lab.md): taps, interface counters, and what /proc says about a
 * process (its CPU time, its peak RSS, its /dev/vhost-net fds and its vhost workers). Runs inside L2.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { VhostWorkerKind } from '../src/vhost-kernel/workers.js';
import * as os from 'node:os';

/**
 * True when the running kernel (L2's: scripts/lab/run --kernel picks it, docs/kernels.md) is at
 * least major.minor. Lab tests that show a difference between kernels branch on it.
 */
export function kernelAtLeast(major: number, minor: number, release: string = os.release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) throw new Error(`kernel release '${release}' does not start with major.minor`);
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > major || (maj === major && min >= minor);
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Creates a persistent tap in L2 (replacing one of the same name), with an address, up.
 * vnet_hdr is set (vhost-net needs it; QEMU and the bridge set it per open anyway);
 * queues > 1 makes it multi_queue (must match every opener); `user` makes it that uid's
 * (`ip tuntap add ... user U`: a daemon running as U attaches without CAP_NET_ADMIN, docs/operating.md).
 */
export function hostTap(ifname: string, o: { ip?: string; queues?: number; mtu?: number; user?: number } = {}): void {
  removeTap(ifname);
  ip(
    'tuntap',
    'add',
    'dev',
    ifname,
    'mode',
    'tap',
    'vnet_hdr',
    ...((o.queues ?? 1) > 1 ? ['multi_queue'] : []),
    ...(o.user !== undefined ? ['user', String(o.user)] : []),
  );
  ip('addr', 'add', o.ip ?? '10.0.3.1/24', 'dev', ifname);
  ip('link', 'set', 'dev', ifname, ...(o.mtu ? ['mtu', String(o.mtu)] : []), 'up');
}

/** Deletes the tap if it exists. */
export function removeTap(ifname: string): void {
  if (fs.existsSync(`/sys/class/net/${ifname}`)) ip('link', 'del', 'dev', ifname);
}

/** Number of the process's fds open on /dev/vhost-net. */
export function vhostNetFds(pid: number): number {
  let n = 0;
  let fds: string[] = [];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return 0;
  }
  for (const fd of fds) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === '/dev/vhost-net') n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

export { type VhostWorker, type VhostWorkerKind, vhostWorkers } from '../src/vhost-kernel/workers.js';

/** The worker model this kernel uses by default (docs/kernels.md): threads of the owner from 6.4. */
export function defaultWorkerKind(): VhostWorkerKind {
  return kernelAtLeast(6, 4) ? 'thread' : 'kthread';
}

/** A counter of the host (L2) interface the guest's packets arrive on (/sys/class/net/IF/statistics). */
export function hostIfCounter(ifname: string, counter: 'rx_packets' | 'rx_bytes'): number {
  return Number(fs.readFileSync(`/sys/class/net/${ifname}/statistics/${counter}`, 'utf8'));
}

/** Clock ticks per second (USER_HZ): 100 on Linux. */
export const CLK_TCK = 100;

/**
 * CPU time (utime + stime, clock ticks) of a process's own threads, from /proc/PID/task/TID/stat.
 * Threads named vhost-* are left out: on kernels >= 6.4 the vhost workers are threads of the
 * process that did VHOST_SET_OWNER, and their work is the kernel datapath, not the process's.
 */
export function ownCpuTicks(pid: number): number {
  let ticks = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      if (fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').startsWith('vhost-')) continue;
      const stat = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      /* thread gone */
    }
  }
  return ticks;
}

/**
 * CPU time (utime + stime, clock ticks) of the whole process, /proc/PID/stat: all its threads,
 * exited ones included, and so, on kernels >= 6.4, its vhost workers (docs/kernels.md).
 */
export function processCpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** Peak resident set size of a process (VmHWM), KiB. */
export function peakRssKiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}
