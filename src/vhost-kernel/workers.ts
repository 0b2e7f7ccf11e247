/**
 * The vhost workers of an owner process, in either of the kernel's two models (docs/kernels.md):
 * a kernel thread of its own, child of kthreadd (kernels < 6.4, and later ones when
 * VHOST_SET_FORK_FROM_OWNER chose the kthread model), or a thread of the process that did
 * VHOST_SET_OWNER (>= 6.4 by default: its CPU time, cgroup and /proc/PID/task are the owner's).
 * Either way the kernel names it `vhost-<owner pid>`, so the workers of one owner's devices cannot
 * be told apart by name. Read from /proc when asked; nothing here runs in the background.
 */
import { readdirSync, readFileSync } from 'node:fs';

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
