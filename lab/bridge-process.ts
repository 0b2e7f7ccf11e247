/**
 * vhost-bridge as a child process in the lab, the way a user runs it (node, with the options of its
 * shebang line, dist/src/cli.js ...),
 * with what the lab tests measure about it: its typed events and status (`--events-fd 3`: one JSON
 * line per lifecycle event with the status after it, src/bridge/status.ts), its log lines (for
 * people: they are printed and kept in the exchange dir, never parsed to learn an event), its fd
 * table, and the CPU time of its own threads.
 *
 * Whatever accumulates (events, log lines) is read from a mark, so that a test body that runs a
 * second time after a guest fault (lab/retry.ts) measures only its own attempt.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { join, resolve } from 'node:path';
import type { PortEvent, PortStatus, EventLine } from '../src/bridge/status.js';
import { ownCpuTicks } from './host.js';
import { stopProcess } from './stuck.js';

const CLI = resolve(import.meta.dirname, '..', 'src', 'cli.js');
/**
 * The node options the installed `vhost-bridge` runs with: those of its shebang line
 * (`#!/usr/bin/env -S node --no-memory-reducer`), so that the lab measures the bridge as users run it.
 */
const NODE_OPTIONS = (/^#!.*\bnode\b(.*)$/m.exec(fs.readFileSync(CLI, 'utf8').split('\n', 1)[0])?.[1] ?? '')
  .split(/\s+/)
  .filter(Boolean);
/** `vhost-bridge` as the lab starts it: node, the bin's options, the compiled CLI. */
export const BRIDGE_COMMAND: readonly [string, ...string[]] = [
  process.execPath,
  ...NODE_OPTIONS,
  '--enable-source-maps',
  CLI,
];
/**
 * The one-port bridge whose kernel gets no dirty log (lab/withheld-log-bridge.ts, test only), as the
 * lab starts it; it needs VB_TEST_WITHHOLD_DIRTY_LOG=1 in its environment.
 */
export const WITHHELD_LOG_BRIDGE_COMMAND: readonly [string, ...string[]] = [
  process.execPath,
  ...NODE_OPTIONS,
  '--enable-source-maps',
  resolve(import.meta.dirname, 'withheld-log-bridge.js'),
];
/** The child's fd the bridge writes its events to (`--events-fd`). */
const EVENTS_FD = 3;
/** What a `command` must pass to the bridge it execs. */
export const EVENTS_ARGS = ['--events-fd', String(EVENTS_FD)] as const;

export type { PortEvent, PortStatus };

/** One line of `--events-fd`. */
export type BridgeEvent = EventLine;

/** A position in what the bridge has said so far (events and log lines). */
export interface Mark {
  events: number;
  lines: number;
}

export interface BridgeStartOptions {
  /** For log file names and messages. */
  name: string;
  /** Command-line arguments after `vhost-bridge` (`--events-fd 3` is added), or of `command`. */
  args: string[];
  /**
   * Run this instead of `node dist/src/cli.js` (e.g. a shell that drops privileges first); it must
   * exec the bridge with EVENTS_ARGS and leave fd 3 open.
   */
  command?: string;
  readyTimeoutMs?: number;
  /** Called with every line it logs. */
  onLine?: (line: string) => void;
}

type Exit = { code: number | null; signal: string | null };

export class BridgeProcess {
  /** Its log lines, for people (printed, and kept in the exchange dir). */
  readonly lines: string[] = [];
  /** Its events, in order. */
  readonly events: BridgeEvent[] = [];
  private exit: Exit | null = null;
  private readonly exited: Promise<Exit>;
  private readonly logFd: number;
  private waiters: { test: (e: BridgeEvent) => boolean; from: number; resolve: (e: BridgeEvent) => void }[] = [];

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    private readonly onLine?: (line: string) => void,
  ) {
    this.logFd = fs.openSync(join(process.env.LAB_XCHG ?? '/tmp', `bridge-${name}.log`), 'a');
    splitLines(child.stderr!, (l) => {
      fs.writeSync(this.logFd, `${l}\n`);
      this.lines.push(l);
      this.onLine?.(l);
    });
    child.stdout!.on('data', (d: Buffer) => fs.writeSync(this.logFd, d));
    splitLines(child.stdio[EVENTS_FD] as NodeJS.ReadableStream, (l) => {
      if (l.trim()) this.event(JSON.parse(l) as BridgeEvent);
    });
    this.exited = new Promise((res) =>
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        res(this.exit);
      }),
    );
  }

  /** Start the bridge; resolves once it reports that it serves (its `ready` event). */
  static async start(o: BridgeStartOptions): Promise<BridgeProcess> {
    const stdio: ('ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe', 'pipe'];
    const child = o.command
      ? spawn(o.command, o.args, { stdio })
      : spawn(BRIDGE_COMMAND[0], [...BRIDGE_COMMAND.slice(1), ...o.args, ...EVENTS_ARGS], { stdio });
    const b = new BridgeProcess(o.name, child, o.onLine);
    try {
      await b.waitForEvent('ready', o.readyTimeoutMs ?? 60_000);
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

  private event(e: BridgeEvent): void {
    this.events.push(e);
    const n = this.events.length - 1;
    for (const w of [...this.waiters]) {
      if (n >= w.from && w.test(e)) {
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve(e);
      }
    }
  }

  /** Where it is now: read events and lines from here with `since`/`problems`/`waitForEvent`. */
  mark(): Mark {
    return { events: this.events.length, lines: this.lines.length };
  }

  /** Its status after its last event (the device's typed snapshot). */
  status(): PortStatus {
    const last = this.events.at(-1);
    if (!last) throw new Error(`bridge ${this.name}: no event yet`);
    return last.status;
  }

  /** Events since a mark (default: since it started), optionally of one kind. */
  since(m: Mark | null = null, kind?: PortEvent['kind']): BridgeEvent[] {
    return this.events.slice(m?.events ?? 0).filter((e) => kind === undefined || e.event.kind === kind);
  }

  /** Rings the datapath serves now. */
  attachedRings(): number[] {
    return this.status()
      .rings.filter((r) => r.attached)
      .map((r) => r.index);
  }

  /** Wait for an event of `kind` (counting events already seen from `from`, default: from the start). */
  waitForEvent(kind: PortEvent['kind'], timeoutMs: number, from: Mark | null = null): Promise<BridgeEvent> {
    return this.waitUntil((e) => e.event.kind === kind, timeoutMs, from, `a '${kind}' event`);
  }

  /** Wait until its status satisfies `ok` (as of its last event, or of one that comes within the time). */
  async waitForStatus(ok: (s: PortStatus) => boolean, timeoutMs: number, what: string): Promise<PortStatus> {
    const from = this.events.length ? { events: this.events.length - 1, lines: 0 } : null;
    return (await this.waitUntil((e) => ok(e.status), timeoutMs, from, what)).status;
  }

  /** The first event from `from` on that passes `test`, now or within `timeoutMs`. */
  private waitUntil(
    test: (e: BridgeEvent) => boolean,
    timeoutMs: number,
    from: Mark | null,
    what: string,
  ): Promise<BridgeEvent> {
    const start = from?.events ?? 0;
    const seen = this.events.slice(start).find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolvePromise, reject) => {
      const w = {
        test,
        from: start,
        resolve: (e: BridgeEvent) => {
          clearTimeout(t);
          resolvePromise(e);
        },
      };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`bridge ${this.name}: no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(w);
      void this.exited.then((x) => {
        if (this.waiters.includes(w)) {
          clearTimeout(t);
          this.waiters = this.waiters.filter((y) => y !== w);
          reject(new Error(`bridge ${this.name} exited (${x.code ?? x.signal}) before ${what}`));
        }
      });
    });
  }

  /** Warnings and errors it logged since a mark (their level, not their text, is what counts). */
  problems(m: Mark | null = null): string[] {
    return this.lines.slice(m?.lines ?? 0).filter((l) => / (WARN|ERROR) /.test(l));
  }

  /** Targets of its open fds (readlink /proc/PID/fd/*). */
  fdTargets(): string[] {
    const dir = `/proc/${this.pid}/fd`;
    const out: string[] = [];
    for (const fd of fs.readdirSync(dir)) {
      try {
        out.push(fs.readlinkSync(`${dir}/${fd}`));
      } catch {
        /* closed meanwhile */
      }
    }
    return out;
  }

  /** CPU time, in clock ticks, of its own threads (not vhost workers). */
  ownCpuTicks(): number {
    return ownCpuTicks(this.pid);
  }

  /**
   * Send a signal and wait for the exit; resolves with the exit code (or the signal name). SIGKILL
   * after `timeoutMs`, and then a failure: its clean shutdown is under test (lab/stuck.ts).
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<Exit> {
    if (this.exit) return this.exit;
    const r = await stopProcess(this.child, this.exited, `bridge ${this.name}`, {
      signal,
      timeoutMs,
      killIsFailure: true,
    });
    fs.closeSync(this.logFd);
    return r;
  }
}

/** Call `each` with every complete line of a stream. */
function splitLines(s: NodeJS.ReadableStream, each: (line: string) => void): void {
  let partial = '';
  s.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) each(l);
  });
}
