/**
 * The L2 host side of the lab (docs/lab.md): taps, interface counters, and what /proc says about a
 * process (its CPU time, its peak RSS, its /dev/vhost-net fds and its vhost workers). Runs inside L2.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { VhostWorker, VhostWorkerKind } from '../src/vhost-kernel/workers.js';
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

/**
 * A veth pair `a` <-> `b`, `b` holding L2's address (`hostIp`, with its prefix), both up; IPv6 off
 * on `a` (its own solicitations stay off the wire). Replaces an `a` that exists.
 */
export function vethPair(a: string, b: string, hostIp: string): void {
  // L2 loads modules by name only (no aliases for the kernel's own request_module).
  modprobe('veth');
  removeTap(a);
  ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b);
  disableIpv6(a);
  ip('addr', 'add', hostIp, 'dev', b);
  ip('link', 'set', a, 'up');
  ip('link', 'set', b, 'up');
}

/**
 * The lab's macvtap (docs/backends.md, "macvtap"): a veth pair `lower` <-> `peer`, `peer` with L2's
 * address, and a macvtap `name` in bridge mode on `lower` carrying `mac`, the guest's: macvlan hands
 * the macvtap only frames for its own address (as libvirt's type='direct' does), and L2 cannot reach
 * a macvtap through its own parent, so L2 talks to the guest from the other end of the veth (guest ->
 * macvtap -> lower -> peer -> L2's stack). Returns the macvtap's character device, /dev/tapN.
 * `removeTap(lower)` removes it all (the macvtap goes with its parent).
 */
export function macvtapOnVeth(o: { lower: string; peer: string; name: string; mac: string; hostIp: string }): string {
  vethPair(o.lower, o.peer, o.hostIp);
  modprobe('macvtap');
  ip('link', 'add', 'link', o.lower, 'name', o.name, 'address', o.mac, 'type', 'macvtap', 'mode', 'bridge');
  disableIpv6(o.name);
  ip('link', 'set', o.name, 'up');
  return `/dev/tap${fs.readFileSync(`/sys/class/net/${o.name}/ifindex`, 'utf8').trim()}`;
}

function disableIpv6(ifname: string): void {
  const v6 = `/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`;
  if (fs.existsSync(v6)) fs.writeFileSync(v6, '1');
}

/** A module command (modprobe, rmmod), failing with what it said and which vhost modules are loaded. */
function moduleCommand(cmd: 'modprobe' | 'rmmod', ...args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status === 0) return;
  const lsmod = spawnSync('sh', ['-c', 'lsmod | grep -E "^vhost"'], { encoding: 'utf8' }).stdout;
  throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr.trim()}\nloaded: ${lsmod.trim() || 'no vhost module'}`);
}

function modprobe(name: string): void {
  moduleCommand('modprobe', name);
}

/** The vhost modules' parameters a reload may set (docs/backends.md); absent = the module's default. */
export interface VhostModuleParams {
  /** vhost max_mem_regions (memory slots) */
  maxMemRegions?: number;
  /** vhost_net experimental_zcopytx (zero-copy transmit) */
  experimentalZcopytx?: 0 | 1;
}

/**
 * Unloads vhost_net, vhost and vhost_iotlb and loads them again with `params` (none: the modules'
 * defaults, which is how a caller restores them). Only between runs: nothing may hold
 * /dev/vhost-net. The module's count drops when the last file is released, which may trail its
 * holder's exit a little (QEMU's or the bridge's), so each unload is tried for up to 10 s.
 */
export async function reloadVhostModules(params: VhostModuleParams = {}): Promise<void> {
  for (const m of ['vhost_net', 'vhost', 'vhost_iotlb']) {
    for (let i = 0; fs.existsSync(`/sys/module/${m}`); i++) {
      try {
        moduleCommand('rmmod', m);
      } catch (e) {
        if (i === 20) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }
  const p = (name: string, v: number | undefined): string[] => (v === undefined ? [] : [`${name}=${v}`]);
  moduleCommand('modprobe', 'vhost', ...p('max_mem_regions', params.maxMemRegions));
  moduleCommand('modprobe', 'vhost_net', ...p('experimental_zcopytx', params.experimentalZcopytx));
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

/**
 * CPU ticks the vhost workers in `after` used since `before` (two {@link vhostWorkers} reads of one
 * owner): a worker that started in between counts from zero, one that ended in between is lost.
 */
export function workerTicksBetween(before: readonly VhostWorker[], after: readonly VhostWorker[]): number {
  let ticks = 0;
  for (const w of after) ticks += w.cpuTicks - (before.find((b) => b.pid === w.pid)?.cpuTicks ?? 0);
  return ticks;
}

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
 * The fields of a /proc/PID/stat (or task/TID/stat) line after the name, which is in parentheses
 * and may hold anything, spaces and parentheses included (proc(5)): [0] the state letter, [11]
 * utime, [12] stime (clock ticks).
 */
export function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

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
      const f = statFields(stat);
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
  const f = statFields(stat);
  return Number(f[11]) + Number(f[12]);
}

/** Peak resident set size of a process (VmHWM), KiB. */
export function peakRssKiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}
