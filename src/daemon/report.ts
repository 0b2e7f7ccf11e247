/**
 * What the control socket reports about a port: the port's status (the contract of
 * src/bridge/status.ts) plus what the daemon knows around it: the tap as the host sees it (link,
 * MTU and counters from /sys/class/net/<tap>/), the front-end's credentials (SO_PEERCRED),
 * reconnects and uptime. Everything is read when asked: nothing is sampled in the background.
 */
import { readFileSync } from 'node:fs';
import type { PortStatus } from '../bridge/status.js';
import { type PeerCred, peerCred } from '../sys/index.js';
import { type VhostWorkerKind, type WorkerPlacement, workerNow } from '../vhost-kernel/workers.js';
import type { PortState } from './manager.js';

/** Counters of one direction, from /sys/class/net/<tap>/statistics. */
export interface Counters {
  packets: number;
  bytes: number;
  dropped: number;
}

/**
 * The tap as the host sees it. The tap's `tx` is what the host sent into the tap, i.e. towards the
 * guest; its `rx` is what came out of the tap, i.e. from the guest.
 */
export interface TapReport {
  name: string;
  /** operstate: up, down, unknown (a tap without a reader is down: no carrier), ... */
  link: string;
  carrier: boolean | null;
  mtu: number | null;
  rx: Counters | null;
  tx: Counters | null;
}

export interface PortReport {
  name: string;
  /** running: serving its socket; failed: could not start (see error). */
  state: 'running' | 'failed';
  error: string | null;
  origin: 'config' | 'control';
  role: 'server' | 'client';
  socket: string;
  queues: number;
  /** The port's status (status.ts), or null when it is not running; the field keeps its name for scripts. */
  device: PortStatus | null;
  tap: TapReport | null;
  /** The connected front-end's process and user (SO_PEERCRED), or null. */
  peer: PeerCred | null;
  /** Front-end connections after the first one. */
  reconnects: number;
  /** Resets (control `reset`, and after an internal error). */
  resets: number;
  /** Since the port (re)started, in ms; null when it is not running. */
  uptimeMs: number | null;
  /** Where its datapath's CPU goes: the vhost worker of each queue pair of the current session. */
  workers: WorkerReport[];
}

/**
 * One queue pair's vhost worker (docs/kernels.md, docs/operating.md "CPU accounting"): a kthread
 * (< 6.4) or a thread of the daemon (>= 6.4), its CPU so far and the cgroup it is charged to.
 */
export interface WorkerReport {
  pair: number;
  /** pid of a kthread, tid of a thread of the daemon. */
  pid: number;
  kind: VhostWorkerKind;
  cpuTicks: number;
  /** Its cgroup v2 path (/proc/ID/cgroup `0::`), or null (cgroup v1 only, or gone). */
  cgroup: string | null;
  /**
   * The port's `workerCgroup` this session's worker was moved into, and the error if the move
   * failed (`error` null: it was placed); null when the port has no workerCgroup.
   */
  placement: WorkerPlacement | null;
}

/** A port's counters only (`stats`): cheap enough to ask for all ports often. */
export interface PortStats {
  name: string;
  state: 'running' | 'failed';
  frontEnd: boolean;
  reconnects: number;
  resets: number;
  rx: Counters | null;
  tx: Counters | null;
}

const SYS_NET = '/sys/class/net';

function sysfs(tap: string, file: string): string | null {
  try {
    return readFileSync(`${SYS_NET}/${tap}/${file}`, 'utf8').trim();
  } catch {
    return null; // gone, or (carrier) not readable while the link is down
  }
}

function num(s: string | null): number | null {
  return s === null || !/^\d+$/.test(s) ? null : Number(s);
}

function counters(tap: string, dir: 'rx' | 'tx'): Counters | null {
  const packets = num(sysfs(tap, `statistics/${dir}_packets`));
  const bytes = num(sysfs(tap, `statistics/${dir}_bytes`));
  const dropped = num(sysfs(tap, `statistics/${dir}_dropped`));
  return packets === null || bytes === null || dropped === null ? null : { packets, bytes, dropped };
}

/** The tap's link, MTU and counters from sysfs; fields it cannot read are null. */
export function tapReport(name: string): TapReport {
  const carrier = sysfs(name, 'carrier');
  return {
    name,
    link: sysfs(name, 'operstate') ?? 'absent',
    carrier: carrier === null ? null : carrier === '1',
    mtu: num(sysfs(name, 'mtu')),
    rx: counters(name, 'rx'),
    tx: counters(name, 'tx'),
  };
}

function peerOf(p: PortState): PeerCred | null {
  const fd = p.port?.frontEndFd ?? null;
  if (fd === null) return null;
  try {
    return peerCred(fd);
  } catch {
    return null;
  }
}

export function portReport(p: PortState, now = Date.now()): PortReport {
  const device = p.port ? { ...p.port.status(), port: p.name } : null;
  return {
    name: p.name,
    state: p.port ? 'running' : 'failed',
    error: p.error,
    origin: p.origin,
    role: p.config.role,
    socket: p.config.socket,
    queues: p.config.queues,
    device,
    tap: p.port ? tapReport(p.port.interfaceName) : null,
    peer: peerOf(p),
    reconnects: Math.max(0, (device?.sessions ?? 0) - 1),
    resets: p.resets,
    uptimeMs: p.since === null ? null : now - p.since,
    workers: workersOf(p),
  };
}

function workersOf(p: PortState): WorkerReport[] {
  const out: WorkerReport[] = [];
  for (const { pair, worker, placement } of p.port?.workers() ?? []) {
    const now = workerNow(worker);
    if (now) out.push({ pair, pid: worker.pid, kind: worker.kind, ...now, placement });
  }
  return out;
}

export function portStats(p: PortState): PortStats {
  const device = p.port?.status() ?? null;
  const tap = p.port ? p.port.interfaceName : null;
  return {
    name: p.name,
    state: p.port ? 'running' : 'failed',
    frontEnd: device?.frontEnd ?? false,
    reconnects: Math.max(0, (device?.sessions ?? 0) - 1),
    resets: p.resets,
    rx: tap ? counters(tap, 'rx') : null,
    tx: tap ? counters(tap, 'tx') : null,
  };
}

/** How many ports serve: the control socket's `health`, `/healthz` and ctl's exit status. */
export interface Health {
  /** Ports running (serving their socket). */
  serving: number;
  /** The names of the ports that could not start. */
  failed: string[];
  total: number;
}

export function healthOf(ports: readonly Pick<PortState, 'name' | 'port'>[]): Health {
  const failed = ports.filter((p) => !p.port).map((p) => p.name);
  return { serving: ports.length - failed.length, failed, total: ports.length };
}

/** `3 of 3 port(s) serving`, or `2 of 3 port(s) serving; failed: vm2`: one line. */
export function healthLine(h: Health): string {
  return `${h.serving} of ${h.total} port(s) serving${h.failed.length ? `; failed: ${h.failed.join(', ')}` : ''}`;
}
