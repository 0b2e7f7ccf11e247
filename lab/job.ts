/**
 * One way to run a job in the lab (docs/lab.md, "Jobs"), for every host script (scripts/*.ts): the
 * job's options are written as one file, job.json, into the run's exchange directory; scripts/lab/run
 * is started with the L2 kernel and the time limit, in its own process group (a ^C or a hang stops
 * everything it started); its output goes to the terminal or to a log; and its status is read in one
 * place: 124 the time limit, 125 L2 died or locked up (a fault of the nested lab under TCG, docs/lab.md
 * "Guest faults"), which is said once, the same way for every job. Inside L2 the job reads its
 * options with `jobOptions` and writes its results with `xchgPath` (the host reads them from
 * `LabEnd.xchg`). The variables a user sets on purpose (LAB_* tuning, VB_SOAK_LOG_LEVEL, CI) still
 * reach L2 through scripts/lab/run; what a host script tells its job goes in the file.
 */
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { constants } from 'node:os';

/** The job's options in the exchange directory. */
export const JOB_FILE = 'job.json';
/** scripts/lab/run's status when its command ran past `-t`. */
export const TIMED_OUT = 124;
/** scripts/lab/run's status when L2 died or locked up before its command ended. */
export const L2_DIED = 125;

const repo = resolve(import.meta.dirname, '..', '..');

export interface LabJob {
  /** what runs in L2, from the repository: a script of dist/ (run by this Node), or a whole command */
  script?: string;
  command?: readonly string[];
  /** what the job reads with `jobOptions` (written as JSON) */
  options?: unknown;
  /** the L2 kernel series (scripts/lab/run --kernel; default its own) */
  kernel?: string;
  /** scripts/lab/run -t */
  timeoutSeconds: number;
  /** the exchange directory on the host (default a fresh one under the system's tmpdir) */
  xchg?: string;
  /** variables for this run over the caller's (lab tuning such as LAB_L2_MEM) */
  env?: Readonly<Record<string, string>>;
  /** the output into this file, instead of the terminal */
  log?: string;
  /**
   * Stop the run if no file of the exchange directory changed for this many seconds: a job that
   * writes its progress there (the soak) shows an L2 hung without a lockup message, which
   * scripts/lab/run cannot see. `LabEnd.hung` says it happened.
   */
  quietLimitSeconds?: number;
  /** the job's name in the lines this module prints (default the script's) */
  name?: string;
}

export interface LabEnd {
  /** scripts/lab/run's status (a signal counts as 128 + its number, as a shell says; 127: not started) */
  status: number;
  /** status 125: L2 died or locked up */
  l2Died: boolean;
  /** status 124: the time limit */
  timedOut: boolean;
  /** stopped by `quietLimitSeconds` */
  hung: boolean;
  /** the exchange directory on the host: the job's results and L2's logs */
  xchg: string;
}

/** The runs under way, stopped together if this process is interrupted. */
const running = new Set<() => void>();
const onSignal = (sig: NodeJS.Signals): void => {
  for (const stop of running) stop();
  process.exit(sig === 'SIGINT' ? 130 : 143);
};

/** Runs one job in one L2 boot; resolves with its end (never rejects: a failed start is status 127). */
export function runInLab(job: LabJob): Promise<LabEnd> {
  const xchg = job.xchg ?? mkdtempSync(join(tmpdir(), 'vb-lab-'));
  mkdirSync(xchg, { recursive: true });
  writeFileSync(join(xchg, JOB_FILE), JSON.stringify(job.options ?? {}, null, 1));
  const command = job.command ?? [process.execPath, '--enable-source-maps', job.script ?? ''];
  const name = job.name ?? job.script ?? command.join(' ');
  const args = [...(job.kernel ? ['--kernel', job.kernel] : []), '-t', String(Math.round(job.timeoutSeconds))];
  const out = job.log === undefined ? null : openSync(job.log, 'a');
  const child = spawn('scripts/lab/run', [...args, '--', ...command], {
    cwd: repo,
    stdio: out === null ? 'inherit' : ['ignore', out, out],
    // its own process group, so that a hung L2 is stopped with everything lab/run started
    detached: true,
    env: { ...process.env, ...job.env, LAB_XCHG_DIR: xchg },
  });
  const stop = (): void => {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
  };
  if (!running.size) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  running.add(stop);
  let hung = false;
  const quiet = job.quietLimitSeconds;
  const watch =
    quiet === undefined
      ? undefined
      : setInterval(() => {
          if (Date.now() - newestChange(xchg) < quiet * 1000) return;
          hung = true;
          clearInterval(watch);
          console.log(`== ${name}: nothing from L2 for ${quiet} s: it hung; stopping it`);
          stop();
        }, 30_000);
  return new Promise((res) => {
    let ended = false;
    const done = (status: number): void => {
      if (ended) return;
      ended = true;
      clearInterval(watch);
      running.delete(stop);
      if (!running.size) {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      if (out !== null) closeSync(out);
      const end = { status, l2Died: status === L2_DIED, timedOut: status === TIMED_OUT, hung, xchg };
      const say = `== ${name}: ${endText(end, job.timeoutSeconds)}; logs in ${xchg}`;
      if (status !== 0) {
        if (job.log === undefined) console.log(say);
        else writeFileSync(job.log, `${say}\n`, { flag: 'a' });
      }
      res(end);
    };
    child.on('error', () => done(127));
    child.on('exit', (code, signal) => done(code ?? 128 + (signal ? constants.signals[signal] : 0)));
  });
}

/** How a run ended, in words (for a report's failure line). */
export function endText(end: LabEnd, timeoutSeconds?: number): string {
  if (end.hung) return 'L2 hung (its exchange directory silent), stopped';
  if (end.l2Died) return 'the L2 VM died or locked up (scripts/lab/run: 125)';
  if (end.timedOut) return `timed out${timeoutSeconds ? ` after ${timeoutSeconds} s` : ''} (scripts/lab/run: 124)`;
  return `exited ${end.status}`;
}

/** The newest change in a directory (its files, not below). */
function newestChange(dir: string): number {
  let t = statSync(dir).mtimeMs;
  for (const f of readdirSync(dir)) t = Math.max(t, statSync(join(dir, f)).mtimeMs);
  return t;
}

/** A file of the exchange directory, as the job in L2 sees it (outside the lab: /tmp). */
export function xchgPath(name: string): string {
  return join(process.env.LAB_XCHG ?? '/tmp', name);
}

/**
 * Inside L2: the job's options (the host's `LabJob.options`) over `defaults`. Without a job file (a
 * job started by hand, `scripts/lab/run -- node dist/scripts/lab-runs/...`) the defaults alone.
 */
export function jobOptions<T extends object>(defaults: T): T {
  const file = xchgPath(JOB_FILE);
  if (!existsSync(file)) return defaults;
  return { ...defaults, ...(JSON.parse(readFileSync(file, 'utf8')) as Partial<T>) };
}
