/**
 * vhost-bridge as a child process in the lab, the way a user runs it (node dist/src/cli.js ...),
 * with what the lab tests measure about it: its log lines, its fd table, and the CPU time of its own
 * threads (vhost workers excluded: on kernels >= 6.4 they are threads of the owner process).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { join, resolve } from 'node:path';

const CLI = resolve(import.meta.dirname, '..', '..', 'src', 'cli.js');

export interface BridgeStartOptions {
  /** For log file names and messages. */
  name: string;
  /** Command-line arguments after `vhost-bridge` (or of `command`). */
  args: string[];
  /** Run this instead of `node dist/src/cli.js` (e.g. a shell that drops privileges first); it must exec the bridge. */
  command?: string;
  /** Resolve when this line appears on stderr; default the ready line. */
  readyPattern?: RegExp;
  readyTimeoutMs?: number;
  /** Called with every line it logs. */
  onLine?: (line: string) => void;
}

export class BridgeProcess {
  readonly lines: string[] = [];
  private exit: { code: number | null; signal: string | null } | null = null;
  private readonly exited: Promise<{ code: number | null; signal: string | null }>;
  private readonly logFd: number;
  private waiters: { re: RegExp; from: number; resolve: (l: string) => void }[] = [];

  private constructor(readonly name: string, private readonly child: ChildProcess, private readonly onLine?: (line: string) => void) {
    this.logFd = fs.openSync(join(process.env.LAB_XCHG ?? '/tmp', `bridge-${name}.log`), 'a');
    let partial = '';
    child.stderr!.on('data', (d: Buffer) => {
      fs.writeSync(this.logFd, d);
      const parts = (partial + d.toString()).split('\n');
      partial = parts.pop() ?? '';
      for (const l of parts) this.line(l);
    });
    child.stdout!.on('data', (d: Buffer) => fs.writeSync(this.logFd, d));
    this.exited = new Promise((res) => child.once('exit', (code, signal) => {
      this.exit = { code, signal };
      res(this.exit);
    }));
  }

  /** Start the bridge; resolves once it says it is ready. */
  static async start(o: BridgeStartOptions): Promise<BridgeProcess> {
    const child = o.command
      ? spawn(o.command, o.args, { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(process.execPath, ['--enable-source-maps', CLI, ...o.args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const b = new BridgeProcess(o.name, child, o.onLine);
    try {
      await b.waitFor(o.readyPattern ?? /vhost-bridge ready/, o.readyTimeoutMs ?? 60_000);
    } catch (e) {
      child.kill('SIGKILL');
      throw new Error(`bridge ${o.name} did not start: ${(e as Error).message}\n${b.lines.slice(-10).join('\n')}`);
    }
    return b;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.exit === null;
  }

  private line(l: string): void {
    this.lines.push(l);
    this.onLine?.(l);
    const n = this.lines.length - 1;
    for (const w of [...this.waiters]) {
      if (n >= w.from && w.re.test(l)) {
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve(l);
      }
    }
  }

  /** Wait for a stderr line matching `re` (counting lines already seen from index `from`). */
  waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<string> {
    const seen = this.lines.slice(from).find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolvePromise, reject) => {
      const w = { re, from, resolve: (l: string) => { clearTimeout(t); resolvePromise(l); } };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`no line matching ${re} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(w);
      void this.exited.then((x) => {
        if (this.waiters.includes(w)) {
          clearTimeout(t);
          this.waiters = this.waiters.filter((y) => y !== w);
          reject(new Error(`bridge exited (${x.code ?? x.signal}) before a line matching ${re}`));
        }
      });
    });
  }

  /** Warnings and errors it logged. */
  problems(): string[] {
    return this.lines.filter((l) => / (WARN|ERROR) /.test(l));
  }

  /** Targets of its open fds (readlink /proc/PID/fd/*). */
  fdTargets(): string[] {
    const dir = `/proc/${this.pid}/fd`;
    const out: string[] = [];
    for (const fd of fs.readdirSync(dir)) {
      try { out.push(fs.readlinkSync(`${dir}/${fd}`)); } catch { /* closed meanwhile */ }
    }
    return out;
  }

  /** CPU time, in clock ticks, of its own threads (not vhost workers). */
  ownCpuTicks(): number {
    return ownCpuTicks(this.pid);
  }

  /** When the first (or last) line matching `re` was logged, from its ISO timestamp (ms since the epoch; NaN if none). */
  loggedAt(re: RegExp, which: 'first' | 'last' = 'first'): number {
    const ls = this.lines.filter((l) => re.test(l));
    const l = which === 'last' ? ls.at(-1) : ls[0];
    return l ? Date.parse(l.split(' ')[0]) : NaN;
  }

  /** Send a signal and wait for the exit; resolves with the exit code (or the signal name). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<{ code: number | null; signal: string | null }> {
    if (this.exit) return this.exit;
    this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const r = await this.exited;
    clearTimeout(t);
    fs.closeSync(this.logFd);
    return r;
  }
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
    } catch { /* thread gone */ }
  }
  return ticks;
}

/** Peak resident set size of a process (VmHWM), KiB. */
export function peakRssKiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}
