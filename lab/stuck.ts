/**
 * A process that SIGKILL does not end: it is stuck in L2's kernel (a task in uninterruptible sleep
 * cannot take the signal), and nothing the harness does afterwards is sound in that boot (a task
 * stuck there may hold a lock that every `ip` command then waits for). docs/lab.md, "Guest faults":
 * an L2 lockup of its own kind.
 *
 * What the harness does then: it prints the stuck process's threads (state, wait channel, kernel
 * stack) and every other task of L2 in uninterruptible sleep, writes one line to
 * `$LAB_XCHG/l2-stuck`, and `scripts/lab/run` stops the VM and exits 125, as for a soft lockup; the
 * lab suite runs the files it had not finished in a fresh L2 boot, and a file that L2 is lost in
 * twice is a failure (scripts/test.ts). Without it such a boot would hang until the suite's time
 * limit, with nothing to show for it.
 *
 * A back-end that never answers cannot do this: it makes QEMU wait in a socket read, which SIGKILL
 * ends. Only the kernel can, so this is never a way to absorb a fault of the bridge's own code.
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { statFields } from './host.js';

/** How long a process may take to be gone after SIGKILL (QEMU frees its guest's RAM then). */
const KILL_GRACE_MS = 30_000;

/** The file in the exchange directory that tells `scripts/lab/run` to stop L2 (one line: why); the
 *  runner names it too. */
const STUCK_FILE = 'l2-stuck';

/** What `late(ms)` resolves with: a wait that ran out. */
const LATE: unique symbol = Symbol('late');
const late = (ms: number) => new Promise<typeof LATE>((r) => setTimeout(() => r(LATE), ms).unref());

/** A file of /proc, read off the event loop and given up on after `ms` (a read can block on a stuck task). */
async function procRead(path: string, ms = 3000): Promise<string> {
  const r = await Promise.race([fs.promises.readFile(path, 'utf8').catch((e: Error) => `(${e.message})`), late(ms)]);
  return r === LATE ? '(read did not return)' : r.trim();
}

/** A task's state letter, from its stat line. */
const stateOf = (stat: string): string => statFields(stat)[0];

/** One task's line: tid, name, state, wait channel; its kernel stack below if asked. */
async function describeTask(dir: string, withStack: boolean): Promise<string> {
  const state = stateOf(await procRead(`${dir}/stat`));
  const comm = await procRead(`${dir}/comm`);
  const wchan = await procRead(`${dir}/wchan`);
  const head = `  ${dir.split('/').pop()} ${comm} state ${state} wchan ${wchan || '-'}`;
  if (!withStack) return head;
  const stack = await procRead(`${dir}/stack`);
  return `${head}\n${stack
    .split('\n')
    .map((l) => `      ${l}`)
    .join('\n')}`;
}

/** Every task of L2 in uninterruptible sleep (D), but `except`'s, with its stack; `until` bounds the scan. */
async function blockedTasks(except: number, until: number): Promise<string[]> {
  const out: string[] = [];
  for (const p of await fs.promises.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(p) || Number(p) === except) continue;
    for (const t of await fs.promises.readdir(`/proc/${p}/task`).catch(() => [] as string[])) {
      if (Date.now() > until) return [...out, '  (scan cut short)'];
      if (stateOf(await procRead(`/proc/${p}/task/${t}/stat`, 1000)) === 'D')
        out.push(await describeTask(`/proc/${p}/task/${t}`, true));
    }
  }
  return out.length ? out : ['  (none)'];
}

/** The stuck process's threads with their stacks, then every other task of L2 in state D. */
async function stuckDiagnosis(pid: number): Promise<string> {
  const out: string[] = [`process ${pid}:`];
  const tasks = await fs.promises.readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const t of tasks) out.push(await describeTask(`/proc/${pid}/task/${t}`, true));
  out.push('other tasks of L2 in uninterruptible sleep (D):', ...(await blockedTasks(pid, Date.now() + 20_000)));
  return out.join('\n');
}

/**
 * What L2's QEMUs, node processes (bridges, daemons) and vhost workers are doing: per process, its
 * threads' states (`R1 S4 D1`), with the wait channel of each thread not sleeping in the ordinary
 * way; then every task in state D with its kernel stack. For a lab test that timed out
 * (test/qemu/lab.ts): the next such hang says where it waits.
 */
export async function l2Snapshot(): Promise<string> {
  const until = Date.now() + 20_000;
  const out: string[] = ["L2's QEMUs, node processes and vhost workers (threads by state):"];
  for (const p of await fs.promises.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid || Date.now() > until) continue;
    const comm = await procRead(`/proc/${p}/comm`, 1000);
    if (!/^(qemu-system|node$|vhost-)/.test(comm)) continue;
    const states = new Map<string, number>();
    const odd: string[] = [];
    for (const t of await fs.promises.readdir(`/proc/${p}/task`).catch(() => [] as string[])) {
      const st = stateOf(await procRead(`/proc/${p}/task/${t}/stat`, 1000));
      states.set(st, (states.get(st) ?? 0) + 1);
      if (st !== 'S' && st !== 'I') odd.push(await describeTask(`/proc/${p}/task/${t}`, false));
    }
    const counts = [...states].map(([k, n]) => `${k}${n}`).join(' ');
    out.push(`  ${p} ${comm}: ${counts}`, ...odd.map((l) => `  ${l}`));
  }
  out.push('tasks in uninterruptible sleep (D):', ...(await blockedTasks(process.pid, until)));
  return out.join('\n');
}

/**
 * `exited`, or, if it has not settled `ms` after the caller's SIGKILL, the diagnosis printed, L2
 * declared stuck (`STUCK_FILE`) and an error thrown. `what` names the process ("QEMU of guest g0").
 */
export async function exitWithin<T>(exited: Promise<T>, ms: number, pid: number, what: string): Promise<T> {
  const r = await Promise.race([exited, late(ms)]);
  if (r !== LATE) return r as T;
  const why = `${what} (pid ${pid}) still there ${Math.round(ms / 1000)} s after SIGKILL: stuck in L2's kernel`;
  console.log(`\nlab: ${why}\n${await stuckDiagnosis(pid)}`);
  const xchg = process.env.LAB_XCHG;
  if (process.env.LAB === '1' && xchg) fs.writeFileSync(join(xchg, STUCK_FILE), `${why}\n`);
  throw new Error(why);
}

/**
 * End a child process: `signal` (null: the caller has already asked it to end its own way), SIGKILL
 * if it is still there `timeoutMs` later, and its exit, or L2 declared stuck `KILL_GRACE_MS` after
 * the SIGKILL (`exitWithin`). For a process of the project's (a bridge, a daemon) `killIsFailure`:
 * one that needed the SIGKILL fails the call, since its clean shutdown is under test and the bound
 * that keeps a hang from being silent must not let a slow one pass. Other programs (ping, libvirtd,
 * dpdk-testpmd) are only ended.
 */
export async function stopProcess<T>(
  child: ChildProcess,
  exited: Promise<T>,
  what: string,
  o: { signal?: NodeJS.Signals | null; timeoutMs?: number; killIsFailure?: boolean } = {},
): Promise<T> {
  const signal = o.signal === undefined ? 'SIGTERM' : o.signal;
  const timeoutMs = o.timeoutMs ?? 15_000;
  if (signal) child.kill(signal);
  if (signal !== 'SIGKILL') {
    const r = await Promise.race([exited, late(timeoutMs)]);
    if (r !== LATE) return r as T;
    child.kill('SIGKILL');
  }
  const r = await exitWithin(exited, KILL_GRACE_MS, child.pid ?? 0, what);
  if (signal !== 'SIGKILL' && o.killIsFailure)
    throw new Error(`${what}: still running ${timeoutMs / 1000} s after ${signal ?? 'it was asked to end'}; killed`);
  return r;
}
