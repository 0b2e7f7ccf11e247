/**
 * `vhost-bridge serve` as a child process in L2, for the daemon's lab tests: its config file, its
 * log lines, and its control socket (the real client, src/daemon/ctl.ts).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { type PortRow, request } from '../src/daemon/ctl.js';
import { BRIDGE_COMMAND } from './bridge-process.js';
import type { PortReport } from '../src/daemon/report.js';
import { stopProcess } from './stuck.js';

export class DaemonProcess {
  readonly lines: string[] = [];
  /** when its first log line came (ms since the epoch): Node is up and the daemon's code runs */
  firstLineAt: number | null = null;
  private readonly exited: Promise<{ code: number | null; signal: string | null }>;

  private constructor(
    readonly name: string,
    readonly control: string,
    private readonly child: ChildProcess,
  ) {
    const logFd = fs.openSync(join(process.env.LAB_XCHG ?? '/tmp', `daemon-${name}.log`), 'a');
    let rest = '';
    child.stderr!.on('data', (d: Buffer) => {
      this.firstLineAt ??= Date.now();
      fs.writeSync(logFd, d);
      const parts = (rest + d.toString()).split('\n');
      rest = parts.pop() ?? '';
      this.lines.push(...parts);
    });
    this.exited = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
  }

  /**
   * Start `serve --config FILE [ARGS]` and wait until its control socket answers (401 tries 50 ms apart, or
   * for `timeoutMs` when given: a loaded lab starts node slowly).
   */
  static async start(
    name: string,
    configFile: string,
    args: string[] = [],
    timeoutMs?: number,
  ): Promise<DaemonProcess> {
    const cfg = JSON.parse(fs.readFileSync(configFile, 'utf8')) as { control: { path: string } };
    const child = spawn(BRIDGE_COMMAND[0], [...BRIDGE_COMMAND.slice(1), 'serve', '--config', configFile, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const d = new DaemonProcess(name, cfg.control.path, child);
    const until = timeoutMs === undefined ? null : Date.now() + timeoutMs;
    for (let i = 0; ; i++) {
      try {
        await d.ask('version');
        return d;
      } catch (e) {
        if (until === null ? i > 400 : Date.now() > until) {
          child.kill('SIGKILL');
          throw new Error(`daemon ${name} did not answer: ${(e as Error).message}\n${d.lines.slice(-10).join('\n')}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  get pid(): number {
    return this.child.pid!;
  }

  async ask<T = unknown>(method: string, params?: Record<string, unknown>): Promise<T> {
    return (await request(this.control, [{ method, params }]))[0] as T;
  }

  status(port: string): Promise<PortReport> {
    return this.ask<PortReport>('status', { port });
  }

  /**
   * SIGHUP (the daemon re-reads its configuration file) and wait until its control socket lists
   * exactly the ports `names` (status as data: the answer of `ports`, not a log line). Resolves with
   * that list; rejects after `timeoutMs` with the last one.
   */
  async reload(names: readonly string[], timeoutMs = 10_000): Promise<PortRow[]> {
    const want = [...names].sort().join(' ');
    process.kill(this.pid, 'SIGHUP');
    const until = Date.now() + timeoutMs;
    for (;;) {
      const ports = await this.ask<PortRow[]>('ports');
      const have = ports
        .map((p) => p.name)
        .sort()
        .join(' ');
      if (have === want) return ports;
      if (Date.now() > until) throw new Error(`daemon ${this.name}: after SIGHUP ports are [${have}], not [${want}]`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** `vhost-bridge ctl ARGS --control <its socket>`: stdout (throws on a non-zero exit). */
  ctl(...args: string[]): string {
    const r = this.ctlRun(...args);
    if (r.status !== 0) throw new Error(`ctl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }

  /** The same, with its exit status (src/daemon/ctl.ts EXIT: 4 when a port it shows is failed). */
  ctlRun(...args: string[]): { status: number | null; stdout: string; stderr: string } {
    return spawnSync(BRIDGE_COMMAND[0], [...BRIDGE_COMMAND.slice(1), 'ctl', ...args, '--control', this.control], {
      encoding: 'utf8',
    });
  }

  /** Log lines at WARN or ERROR since line `from`. */
  problems(from = 0): string[] {
    return this.lines.slice(from).filter((l) => / (WARN|ERROR) /.test(l));
  }

  /** Send a signal and wait for the exit (lab/stuck.ts: SIGKILL after `timeoutMs`, and then a failure). */
  stop(
    signal: NodeJS.Signals = 'SIGTERM',
    timeoutMs = 15_000,
  ): Promise<{ code: number | null; signal: string | null }> {
    return stopProcess(this.child, this.exited, `daemon ${this.name}`, { signal, timeoutMs, killIsFailure: true });
  }
}
