/**
 * The vhost workers of an owner process, in either of the kernel's two models (docs/kernels.md):
 * a kernel thread of its own, child of kthreadd (kernels < 6.4, and later ones when
 * VHOST_SET_FORK_FROM_OWNER chose the kthread model), or a thread of the process that did
 * VHOST_SET_OWNER (>= 6.4 by default: its CPU time, cgroup and /proc/PID/task are the owner's).
 * Either way the kernel names it `vhost-<owner pid>`, so the workers of one owner's devices cannot
 * be told apart by name. Read from /proc when asked; nothing here runs in the background.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export type VhostWorkerKind = 'kthread' | 'thread';

export interface VhostWorker {
  /** pid (kthread) or tid (thread of the owner) */
  pid: number;
  comm: string;
  kind: VhostWorkerKind;
  /** utime + stime, in clock ticks */
  cpuTicks: number;
}

function readWorker(dir: string, pid: number, owner: number, kind: VhostWorkerKind): VhostWorker | null {
  try {
    const comm = readFileSync(`${dir}/comm`, 'utf8').trim();
    if (comm !== `vhost-${owner}`) return null;
    const stat = readFileSync(`${dir}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { pid, comm, kind, cpuTicks: Number(f[11]) + Number(f[12]) };
  } catch {
    return null;
  }
}

/** Kthreads named vhost-<owner> (each its own thread group in /proc) and the owner's threads of that name. */
export function vhostWorkers(owner: number = process.pid): VhostWorker[] {
  const out: VhostWorker[] = [];
  let ownTasks: Set<number>;
  try {
    ownTasks = new Set(readdirSync(`/proc/${owner}/task`).map(Number));
  } catch {
    return out; // owner gone
  }
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || ownTasks.has(Number(e))) continue;
    const w = readWorker(`/proc/${e}`, Number(e), owner, 'kthread');
    if (w) out.push(w);
  }
  for (const t of ownTasks) {
    if (t === owner) continue;
    const w = readWorker(`/proc/${owner}/task/${t}`, t, owner, 'thread');
    if (w) out.push(w);
  }
  return out;
}

/**
 * The last pid the kernel handed out in this pid namespace (/proc/sys/kernel/ns_last_pid), or null
 * if it cannot be read. Threads and kernel threads take ids from the same counter, so the worker
 * VHOST_SET_OWNER starts has an id above the value read just before it ({@link workerStartedAfter}).
 */
export function lastPid(): number | null {
  try {
    return Number(readFileSync('/proc/sys/kernel/ns_last_pid', 'utf8'));
  } catch {
    return null;
  }
}

/**
 * The worker that a VHOST_SET_OWNER just started, found among the ids handed out since `mark`
 * ({@link lastPid} read before the ioctl): a thread of this process or a kthread named
 * vhost-<pid>. Usually one id to look at, so this costs a few reads rather than a walk of /proc
 * (the workers of one owner cannot be told apart by name: this is how a port knows its own).
 * Null if none is found (pid wrap-around, a kernel without workers, a fake kernel in tests).
 */
export function workerStartedAfter(mark: number | null, owner: number = process.pid): VhostWorker | null {
  const now = lastPid();
  if (mark === null || now === null || now < mark || now - mark > 4096) return null;
  for (let id = mark + 1; id <= now; id++) {
    const w =
      readWorker(`/proc/${owner}/task/${id}`, id, owner, 'thread') ?? readWorker(`/proc/${id}`, id, owner, 'kthread');
    if (w) return w;
  }
  return null;
}

/** Where a worker runs now: its CPU ticks and its cgroup (v2 path, /proc/ID/cgroup), or null if it is gone. */
export function workerNow(
  w: Pick<VhostWorker, 'pid' | 'kind'>,
  owner: number = process.pid,
): {
  cpuTicks: number;
  cgroup: string | null;
} | null {
  const dir = w.kind === 'thread' ? `/proc/${owner}/task/${w.pid}` : `/proc/${w.pid}`;
  const now = readWorker(dir, w.pid, owner, w.kind);
  if (!now) return null;
  return { cpuTicks: now.cpuTicks, cgroup: cgroupOf(dir) };
}

/**
 * Where the daemon put a worker (a port's `workerCgroup`, docs/operating.md "Placing each port's
 * worker"): the cgroup directory, and why the move failed (null: it is there).
 */
export interface WorkerPlacement {
  cgroup: string;
  error: string | null;
}

/** The v2 cgroup of a process or thread (`0::` of /proc/.../cgroup), or null. */
function cgroupOf(procDir: string): string | null {
  try {
    return /^0::(.*)$/m.exec(readFileSync(`${procDir}/cgroup`, 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err.code ? `${err.code} (${err.syscall ?? 'write'})` : String((e as Error).message ?? e);
}

/**
 * True if a directory above `dir` is the cgroup of process `owner` (its `cgroup.procs` lists it):
 * `dir` is in the owner's subtree. Read up the path until a directory that is no cgroup.
 */
function belowOwnersCgroup(dir: string, owner: number): boolean {
  for (let d = dirname(dir); d !== dirname(d); d = dirname(d)) {
    let procs: string;
    try {
      procs = readFileSync(`${d}/cgroup.procs`, 'utf8');
    } catch {
      return false; // above the cgroup mount
    }
    if (procs.split('\n').includes(String(owner))) return true;
  }
  return false;
}

/**
 * Move a worker into the cgroup v2 directory `dir`, the kernel's way for its model (docs/kernels.md,
 * docs/operating.md "Placing each port's worker"):
 *  - a kthread (< 6.4) is a thread group of its own: its pid goes into `cgroup.procs`, of any
 *    domain cgroup;
 *  - a thread of the owner (>= 6.4) can only move within its process's threaded subtree: its tid
 *    goes into `cgroup.threads` of a threaded cgroup under the owner's own cgroup. A `dir` whose
 *    `cgroup.type` is still `domain` is made `threaded` first (which makes the owner's cgroup the
 *    subtree's threaded domain), if it is below the owner's cgroup (else refused: a VM's cgroup is
 *    never changed); any other type is used as it is.
 * Throws an Error that says which file refused what, and why it may have (the cgroup is named by
 * the caller's log line).
 */
export function placeWorker(w: Pick<VhostWorker, 'pid' | 'kind'>, dir: string, owner: number = process.pid): void {
  if (w.kind === 'kthread') {
    try {
      writeFileSync(`${dir}/cgroup.procs`, String(w.pid));
    } catch (e) {
      throw new Error(`kthread ${w.pid} into ${dir}/cgroup.procs: ${errText(e)}`);
    }
    return;
  }
  let type: string;
  try {
    type = readFileSync(`${dir}/cgroup.type`, 'utf8').trim();
  } catch (e) {
    throw new Error(`${dir}/cgroup.type: ${errText(e)} (not a cgroup v2 directory?)`);
  }
  if (type === 'domain') {
    // Never turn someone else's cgroup (a VM's) threaded: only one below the owner's own.
    if (!belowOwnersCgroup(dir, owner))
      throw new Error(
        `${dir} is a domain cgroup that is not below the daemon's own cgroup ` +
          `(${cgroupOf(`/proc/${owner}`) ?? 'unknown'}): a worker thread of the daemon (kernels >= 6.4) can only ` +
          `move into a threaded cgroup under it; not made threaded`,
      );
    try {
      writeFileSync(`${dir}/cgroup.type`, 'threaded');
    } catch (e) {
      throw new Error(
        `making ${dir} threaded (cgroup.type): ${errText(e)}: a worker thread of the daemon needs a threaded ` +
          `cgroup under the daemon's own (${cgroupOf(`/proc/${owner}`) ?? 'unknown'}), with no process in it`,
      );
    }
  }
  try {
    writeFileSync(`${dir}/cgroup.threads`, String(w.pid));
  } catch (e) {
    throw new Error(
      `thread ${w.pid} into ${dir}/cgroup.threads: ${errText(e)}: a worker thread of the daemon (kernels >= 6.4) ` +
        `can only move into a threaded cgroup under the daemon's own cgroup ` +
        `(${cgroupOf(`/proc/${owner}`) ?? 'unknown'})`,
    );
  }
}
