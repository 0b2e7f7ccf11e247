/**
 * L3 test guests for the lab. Runs INSIDE L2 (see docs/lab.md): boots a VMM (QEMU, or cloud-hypervisor)
 * with nested KVM on the busybox initramfs built by scripts/lab/setup (.lab/l3-initrd.cpio.gz, /init =
 * lab/guest-initramfs/init) and drives it through the serial console. The parts, each the same for
 * every VMM but the arguments:
 *
 *   lab/guest/files.ts      the lab's guest kernel and initramfs
 *   lab/guest/options.ts    what a guest is booted with; the L3 settings every guest shares
 *   lab/guest/qemu-args.ts  QEMU's command line (and the guest kernel's)
 *   lab/guest/ch-args.ts    cloud-hypervisor's command line
 *   lab/guest/console.ts    the serial console protocol (markers, one command per line)
 *   lab/guest/faults.ts     guest faults of the nested lab: panics, self-resets, stalls
 *   lab/guest/traffic.ts    ping and iperf3
 *   lab/guest/diagnose.ts   what a guest that does not answer is doing
 *
 * This module is the Guest (boot attempts, console lines, command queue, recovery) and the
 * lab's one import for all of it.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { chBinary } from './cloud-hypervisor.js';
import { chArgs } from './guest/ch-args.js';
import { commandLine, commandProblem, INIT_MARKER, LineSplitter, READY_MARKER, resultOf } from './guest/console.js';
import { diagnose, stalledVcpu } from './guest/diagnose.js';
import { type LabFiles, labFiles } from './guest/files.js';
import { FaultLog, faultText, type GuestFaultKind, isPanicLine, RESET_BY_INIT } from './guest/faults.js';
import { defaultMac, type ExecResult, type GuestBootOptions, L3_DEFAULTS } from './guest/options.js';
import { guestAddresses, openTapFds, qemuArgs } from './guest/qemu-args.js';
import { type IperfOptions, type IperfResult, iperf3, type PingResult, ping, untilReply } from './guest/traffic.js';
import { Qmp, type QmpEvent } from './qmp.js';
import { stopProcess } from './stuck.js';

export { stalledVcpu } from './guest/diagnose.js';
export { type LabFiles, labFiles } from './guest/files.js';
export type { GuestFaultKind } from './guest/faults.js';
export {
  type ExecResult,
  type GuestBootOptions,
  type GuestNet,
  L3_DEFAULTS,
  labTuning,
  type Vmm,
} from './guest/options.js';
export { qemuOptValue } from './guest/qemu-args.js';
export {
  type IperfOptions,
  type IperfResult,
  type PingResult,
  TRAFFIC_MIN_BYTES,
} from './guest/traffic.js';

// ------------------------------------------------------------------ guest

class GuestTimeout extends Error {}

type Waiter = (line: string | null) => void;

const live = new Set<ChildProcessWithoutNullStreams>();
/** numbers the QMP sockets of this process's QEMUs */
let qmpSeq = 0;
let exitHookInstalled = false;
function track(child: ChildProcessWithoutNullStreams): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // never leave a VMM behind when mocha (or a script) exits
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
}

const CONSOLE_TAIL = 40;

export class Guest {
  readonly name: string;
  /** the VMM process, QEMU or cloud-hypervisor (of the current boot attempt) */
  pid = 0;
  /** QEMU start to VBGUEST-READY, of the attempt that succeeded */
  bootMs = 0;
  /** QEMU start to VBGUEST-INIT, of the attempt that succeeded */
  initMs = 0;
  /** 1 when the first boot attempt hung and QEMU was started again */
  bootRetries = 0;
  /**
   * Guest faults seen: kernel panics, self-resets, and stalls (a command times out while the guest
   * no longer answers ping from L2, its vCPU spinning). They are faults of the nested lab (SVM
   * emulated by TCG): seen under QEMU's own vhost=on as under the bridge, about once per 8-10
   * minutes of iperf3 load (docs/lab.md). The command that was running fails at once (panic, reset)
   * or at its timeout (stall); recover() brings the guest back.
   */
  get faults(): number {
    return this.faultRecord.count;
  }
  /** Every fault seen, by kind (the stress command counts them: docs/lab.md, "Guest faults"). */
  get faultLog(): readonly { kind: GuestFaultKind; at: number; text: string }[] {
    return this.faultRecord.entries;
  }
  /**
   * What the last fault was (`traps: PANIC: double fault ...`, `the guest reset itself ...`, `the guest stopped
   * answering ...`).
   */
  get lastFault(): string {
    return this.faultRecord.last;
  }
  private readonly faultRecord = new FaultLog();
  private stalled = false;
  private recovering: Promise<void> | null = null;

  private readonly opts: GuestBootOptions;
  private readonly files: LabFiles;
  private readonly t0 = Date.now();
  private child: ChildProcessWithoutNullStreams | null = null;
  private exitInfo: string | null = null;
  /** QEMU's "Failed to connect" (vhost-user client + reconnect, no back-end yet) in this boot attempt */
  private backendMissing: string | null = null;
  private lastStderr: string | null = null;
  private startedAt = 0;
  private initAt = 0;
  private readyAt = 0;
  private readonly lines = new LineSplitter();
  /** where commands go: the VMM's stdin, or its console socket once connected */
  private consoleIn: NodeJS.WritableStream | null = null;
  private readonly tail: string[] = [];
  private readonly waiters = new Set<Waiter>();
  private logFd: number | null = null;
  private seq = 0;
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(opts: GuestBootOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.files = labFiles();
    if (opts.logFile) this.logFd = fs.openSync(opts.logFile, 'a');
  }

  /** Boots a guest; resolves at VBGUEST-READY. Retries once on the nested-KVM boot hang. */
  static async boot(opts: GuestBootOptions): Promise<Guest> {
    const g = new Guest(opts);
    try {
      await g.bootWithRetry();
    } catch (e) {
      g.closeLog();
      throw e;
    }
    return g;
  }

  get peer(): string {
    return guestAddresses(this.opts).peer;
  }
  get ip(): string {
    return guestAddresses(this.opts).ip;
  }
  /** what runs the guest, in messages: "QEMU" or "cloud-hypervisor" */
  get vmm(): string {
    return this.opts.vmm === 'cloud-hypervisor' ? 'cloud-hypervisor' : 'QEMU';
  }
  get mac(): string {
    return this.opts.mac ?? defaultMac(this.name);
  }
  /** true while QEMU runs */
  get running(): boolean {
    return this.child !== null && this.exitInfo === null;
  }

  /** The last console lines (for error messages). */
  consoleTail(n = CONSOLE_TAIL): string[] {
    return this.tail.slice(-n);
  }

  private note(message: string): void {
    this.record(`[harness] ${message}`);
    (this.opts.log ?? ((m: string) => console.error(m)))(`guest ${this.name}: ${message}`);
  }

  private record(line: string): void {
    this.tail.push(line);
    if (this.tail.length > 200) this.tail.splice(0, this.tail.length - 200);
    if (this.logFd !== null) fs.writeSync(this.logFd, `[+${String(Date.now() - this.t0).padStart(7)}ms] ${line}\n`);
  }

  private closeLog(): void {
    if (this.logFd !== null) {
      fs.closeSync(this.logFd);
      this.logFd = null;
    }
  }

  /** An error about this guest, with its last console lines. */
  fail(message: string): Error {
    return new Error(`guest ${this.name}: ${message}\n--- last console lines ---\n${this.consoleTail().join('\n')}`);
  }

  // ---------------------------------------------------------------- the VMM

  /**
   * The VMM's binary and arguments of one boot attempt, and the console socket if the console is not
   * its stdio (cloud-hypervisor reads its serial's input from stdin only when stdin is a terminal:
   * vmm/src/serial_manager.rs; its `--serial socket=` serves any client).
   */
  private command(hang: boolean): { bin: string; args: string[]; consoleSocket?: string } {
    const o = this.opts;
    if (o.console) return { bin: o.console.command, args: [...o.console.args] };
    if (o.vmm === 'cloud-hypervisor') {
      const log = `${o.logFile ?? path.join(os.tmpdir(), `vbg-${this.name}`)}.ch.log`;
      const consoleSocket = path.join(os.tmpdir(), `vbg-${process.pid}-${++qmpSeq}.console`);
      fs.rmSync(consoleSocket, { force: true });
      return { bin: chBinary(), args: chArgs(o, this.files, this.mac, hang, log, consoleSocket), consoleSocket };
    }
    return { bin: o.qemuBinary ?? 'qemu-system-x86_64', args: qemuArgs(o, this.files, this.name, this.mac, hang) };
  }

  /** Connects to the VMM's console socket (retrying while the VMM starts); its lines feed the guest. */
  private attachConsoleSocket(child: ChildProcessWithoutNullStreams, sock: string): void {
    const until = Date.now() + 30_000;
    const tryConnect = (): void => {
      if (this.child !== child || this.exitInfo !== null) return;
      const c = net.connect(sock);
      c.setEncoding('utf8');
      c.once('connect', () => {
        this.consoleIn = c;
        c.on('data', (d: string) => {
          if (this.child === child) this.feed(d);
        });
        child.once('exit', () => {
          c.destroy();
          fs.rmSync(sock, { force: true });
        });
      });
      c.once('error', (e: Error) => {
        c.destroy();
        if (this.consoleIn === c) return;
        if (Date.now() > until) this.record(`[harness] no console on ${sock}: ${e.message}`);
        else setTimeout(tryConnect, 50);
      });
    };
    tryConnect();
  }

  private start(attempt: number): void {
    const hang = attempt <= (this.opts.simulateHangAttempts ?? 0);
    const cmd = this.command(hang);
    let { bin } = cmd;
    const { args } = cmd;
    // taskset execs the VMM, so the pid is the VMM's and every thread it starts inherits the CPU list.
    if (L3_DEFAULTS.l2Cpus && !this.opts.console) {
      args.unshift('-c', L3_DEFAULTS.l2Cpus, bin);
      bin = 'taskset';
    }
    this.record(`[harness] boot attempt ${attempt}${hang ? ' (simulated hang)' : ''}: ${bin} ${args.join(' ')}`);
    this.exitInfo = null;
    this.backendMissing = null;
    this.lastStderr = null;
    this.initAt = this.readyAt = 0;
    this.lines.reset();
    this.startedAt = Date.now();
    // tap-fd: the fds are opened for this QEMU and closed here once it has its own (a macvtap fd
    // left open here would stay a queue of the macvtap after QEMU exits).
    const n = this.opts.console || this.opts.vmm === 'cloud-hypervisor' ? null : this.opts.net;
    const passed = n?.kind === 'tap-fd' ? openTapFds(n) : [];
    // A QMP socket per QEMU, for its RESET events (watchResets); not for another starter's console.
    const qmpPath =
      this.opts.console || this.opts.vmm === 'cloud-hypervisor'
        ? null
        : path.join(os.tmpdir(), `vbg-${process.pid}-${++qmpSeq}.qmp`);
    if (qmpPath) args.push('-qmp', `unix:${qmpPath},server=on,wait=off`);
    let child: ChildProcessWithoutNullStreams;
    try {
      child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe', ...passed] }) as ChildProcessWithoutNullStreams;
    } finally {
      for (const fd of passed) fs.closeSync(fd);
    }
    this.child = child;
    this.pid = child.pid ?? 0;
    this.consoleIn = cmd.consoleSocket ? null : child.stdin;
    track(child);
    if (cmd.consoleSocket) this.attachConsoleSocket(child, cmd.consoleSocket);
    if (qmpPath) this.watchResets(child, qmpPath);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      if (this.child === child) this.feed(s);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => {
      for (const l of s.split('\n')) {
        if (!l.trim()) continue;
        this.record(`[${this.opts.vmm === 'cloud-hypervisor' ? 'ch' : 'qemu'}] ${l}`);
        this.lastStderr = l.trim();
        if (/Failed to connect|Error connecting to vhost-user/.test(l)) this.backendMissing = l.trim();
      }
    });
    child.stdin.on('error', () => {
      /* QEMU gone: reported through 'exit' */
    });
    const onGone = (why: string): void => {
      if (this.child !== child || this.exitInfo !== null) return;
      const rest = this.lines.flush();
      if (rest) this.line(rest);
      this.exitInfo = this.lastStderr ? `${why} ("${this.lastStderr}")` : why;
      this.record(`[harness] ${this.vmm} ${why}`);
      for (const w of [...this.waiters]) w(null);
    };
    child.once('error', (e) => onGone(`could not run: ${e.message}`));
    child.once('exit', (code, signal) => onGone(signal ? `killed by ${signal}` : `exited with status ${code}`));
  }

  private feed(s: string): void {
    for (const l of this.lines.push(s)) this.line(l);
  }

  private line(l: string): void {
    this.record(l);
    if (l === INIT_MARKER && this.readyAt) this.panicked(RESET_BY_INIT, 'reset', true);
    if (l === INIT_MARKER && !this.initAt) this.initAt = Date.now();
    else if (l === READY_MARKER && !this.readyAt) this.readyAt = Date.now();
    else if (this.readyAt && isPanicLine(l)) this.panicked(l);
    for (const w of [...this.waiters]) w(l);
  }

  /**
   * QEMU's RESET events: a reset of a READY guest that the harness did not ask for (reboot() clears
   * READY before it writes `reboot`) is the nested lab's triple fault, a fault at once. Without this it
   * shows only at the new boot's VBGUEST-INIT, 10-40 s later; meanwhile the guest's virtio device is
   * reset and its rings stopped, which a check of the back-end would charge to the bridge (the soak did,
   * docs/soak.md). A reset asked over QMP (`guest: false`) is a test's own.
   */
  private watchResets(child: ChildProcessWithoutNullStreams, sock: string): void {
    const onReset = (e: QmpEvent): void => {
      if (this.child !== child || e.event !== 'RESET' || e.data.guest !== true || !this.readyAt) return;
      this.panicked(
        `the guest reset itself (QEMU: RESET, ${String(e.data.reason)}, not asked for: a triple fault)`,
        'reset',
      );
      // the running command fails at once, as at a panic line
      for (const w of [...this.waiters]) w(null);
    };
    Qmp.connect(this.name, sock, 30_000).then(
      (q) => {
        const close = (): void => {
          q.close();
          fs.rmSync(sock, { force: true });
        };
        if (this.child !== child || child.exitCode !== null || child.signalCode !== null) return close();
        q.onEvent = onReset;
        child.once('exit', close);
      },
      (e: Error) => {
        fs.rmSync(sock, { force: true });
        if (this.child === child && this.exitInfo === null)
          this.record(`[harness] no QMP (${e.message}): a reset shows at the next VBGUEST-INIT only`);
      },
    );
  }

  /**
   * The guest kernel died (or the guest reset itself); it reboots by itself. New commands wait for it
   * to be READY again. `initSeen`: the fault was recognised by the new boot's VBGUEST-INIT line.
   */
  private panicked(l: string, kind: 'panic' | 'reset' = 'panic', initSeen = false): void {
    this.faultRecord.add(kind, faultText(l));
    this.note(`guest fault (${this.lastFault}): a fault of the nested lab; the guest reboots by itself`);
    this.readyAt = 0;
    if (!initSeen) this.initAt = 0;
    const wait = this.waitFor(
      () => (this.readyAt ? true : undefined),
      (this.opts.hangTimeoutMs ?? 90_000) + (this.opts.readyTimeoutMs ?? 120_000),
      'VBGUEST-READY after a guest kernel panic',
    );
    this.recovering = wait.then(
      () => {
        this.recovering = null;
        this.record('[harness] the guest is back after the panic');
      },
      (e: unknown) => {
        this.recovering = null;
        throw e;
      },
    );
    this.recovering.catch(() => undefined);
  }

  /**
   * Resolves with check's first non-undefined result; check is called with null
   * right away and whenever QEMU exits, with each console line otherwise.
   */
  private waitFor<T>(check: (line: string | null) => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (err: Error | null, v?: T): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        if (err) reject(err);
        else resolve(v as T);
      };
      const waiter: Waiter = (line) => {
        let v: T | undefined;
        try {
          v = check(line);
        } catch (e) {
          finish(e as Error);
          return;
        }
        if (v !== undefined) finish(null, v);
        else if (this.exitInfo !== null) finish(this.fail(`${this.vmm} ${this.exitInfo} while waiting for ${what}`));
      };
      timer = setTimeout(
        () => finish(new GuestTimeout(`no ${what} after ${Math.round(timeoutMs / 1000)} s`)),
        timeoutMs,
      );
      this.waiters.add(waiter);
      waiter(null);
    });
  }

  private write(s: string): void {
    if (!this.running || !this.child) throw this.fail(`${this.vmm} is not running (${this.exitInfo ?? 'not started'})`);
    if (!this.consoleIn) throw this.fail(`${this.vmm}'s console is not connected`);
    this.consoleIn.write(s);
  }

  private async bootWithRetry(): Promise<void> {
    const hangMs = this.opts.hangTimeoutMs ?? 90_000;
    if (this.opts.incoming) {
      this.start(1);
      await sleep(200);
      if (!this.running) throw this.fail(`QEMU ${this.exitInfo} (as a migration destination)`);
      this.initAt = this.readyAt = Date.now();
      this.record('[harness] waiting for the incoming migration (the console continues the source guest)');
      return;
    }
    for (let attempt = 1; ; attempt++) {
      this.start(attempt);
      try {
        await this.waitFor(() => (this.initAt ? true : undefined), hangMs, 'VBGUEST-INIT');
      } catch (e) {
        if (e instanceof GuestTimeout) this.record(`[harness] ${await this.diagnose()}`);
        await this.kill();
        if (!(e instanceof GuestTimeout)) throw e;
        const secs = Math.round(hangMs / 1000);
        // A guest that waited for its vhost-user back-end never started: not the boot hang.
        if (this.backendMissing)
          throw this.fail(
            `no init marker after ${secs} s, and QEMU reported "${this.backendMissing}": is the vhost-user back-end ` +
              `listening?`,
          );
        if (attempt >= 2) throw this.fail(`no init marker after ${secs} s on the second boot attempt too; giving up`);
        this.note(`no init marker after ${secs} s, booting once more (nested-KVM boot hang)`);
        this.bootRetries = 1;
        continue;
      }
      await this.waitReady('boot');
      this.initMs = this.initAt - this.startedAt;
      this.bootMs = this.readyAt - this.startedAt;
      this.record(`[harness] ready: init after ${this.initMs} ms, ready after ${this.bootMs} ms`);
      return;
    }
  }

  /** Records a stall of the nested lab as a guest fault (docs/lab.md "Guest faults"); recover() boots the guest. */
  private noteStall(text: string): void {
    this.faultRecord.add('stall', text);
    this.stalled = true;
    this.note(`guest fault: ${text}; recover() boots it again`);
  }

  private async waitReady(what: string): Promise<void> {
    try {
      await this.waitFor(() => (this.readyAt ? true : undefined), this.opts.readyTimeoutMs ?? 120_000, 'VBGUEST-READY');
    } catch (e) {
      const diag = e instanceof GuestTimeout ? await this.diagnose() : '';
      await this.kill();
      if (e instanceof GuestTimeout && stalledVcpu(diag)) {
        // Between INIT and READY the guest only loads modules and configures eth0: a vCPU spinning
        // while the kernel answers no ping is the nested lab's stall (docs/lab.md "Guest faults"),
        // counted as a fault. A vCPU blocked in QEMU (a back-end that never answers QEMU's
        // vhost-user request) shows no ticks, and stays a failure.
        this.noteStall(`the guest stalled before VBGUEST-READY (${diag})`);
      }
      throw e instanceof GuestTimeout ? this.fail(`${what}: ${e.message} (VBGUEST-INIT was seen); ${diag}`) : e;
    }
  }

  /** For timeout errors: lab/guest/diagnose.ts. */
  private async diagnose(): Promise<string> {
    if (!this.running) return `diagnosis: ${this.vmm} ${this.exitInfo ?? 'not running'}`;
    return diagnose(this.vmm, this.pid, this.ip);
  }

  // ---------------------------------------------------------------- commands

  /** Runs a shell command in the guest (sh -c, stdin /dev/null). One at a time; calls queue up. */
  exec(cmd: string, opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const problem = commandProblem(cmd);
    if (problem) return Promise.reject(new Error(`guest ${this.name}: ${problem}`));
    const run = (): Promise<ExecResult> => this.execNow(cmd, opts.timeoutMs ?? 60_000);
    const r = this.chain.then(run, run);
    this.chain = r.catch(() => undefined);
    return r;
  }

  private async execNow(cmd: string, timeoutMs: number): Promise<ExecResult> {
    if (this.recovering) await this.recovering;
    if (!this.running)
      return Promise.reject(this.fail(`${this.vmm} is not running (${this.exitInfo ?? 'not started'}): ${cmd}`));
    if (!this.readyAt) return Promise.reject(this.fail(`exec before VBGUEST-READY: ${cmd}`));
    const id = ++this.seq;
    const out: string[] = [];
    const faults = this.faults;
    const p = this.waitFor<ExecResult>(
      (line) => {
        if (this.faults !== faults)
          throw this.fail(
            `the guest kernel panicked while running \`${cmd}\` (${this.lastFault}); it reboots by itself`,
          );
        if (line === null) return undefined;
        const { text, id: of, rc } = resultOf(line);
        if (of === id && rc !== undefined) {
          if (text) out.push(text);
          return { rc, output: out.join('\n') };
        }
        // (the marker of an earlier command that timed out is dropped, its text kept)
        if (text || of === undefined) out.push(text);
        return undefined;
      },
      timeoutMs,
      `result of command ${id}`,
    ).catch(async (e: unknown) => {
      if (!(e instanceof GuestTimeout)) throw e;
      const diag = await this.diagnose();
      if (/from L2: 0 of 2 replies/.test(diag)) {
        this.noteStall(`the guest stopped answering (${diag})`);
      }
      throw this.fail(`${e.message} (${cmd}); ${diag}`);
    });
    this.write(commandLine(id, cmd));
    return p;
  }

  /** ping from the guest (busybox ping); the guest prints only the RTT list and the summary. */
  ping(
    peer: string = this.peer,
    opts: { count?: number; intervalS?: number; timeoutS?: number } = {},
  ): Promise<PingResult> {
    return ping(this, peer, opts);
  }

  /**
   * Ping `peer` once a second (each with a 1 s timeout) until the first reply, at most `tries`
   * times; resolves with the time it took (ms, as seen from L2), rejects if no reply came.
   */
  untilReply(peer: string = this.peer, tries = 30): Promise<number> {
    return untilReply(this, peer, tries);
  }

  /**
   * iperf3 between the guest (client, output discarded) and a one-off server in L2 on
   * the peer address (JSON to a file). Default guest -> host; reverse = host -> guest.
   */
  iperf3(o: IperfOptions): Promise<IperfResult> {
    return iperf3(this, o);
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * After a fault: wait for a panicked guest to come back by itself, or kill a stalled (or dead)
   * QEMU and boot the guest again with the same options. Queued like exec.
   */
  recover(): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.recovering) await this.recovering.catch(() => undefined);
      if (this.running && !this.stalled && this.readyAt) return;
      await this.kill();
      this.stalled = false;
      this.note('booting the guest again after a fault');
      await this.bootWithRetry();
    };
    const r = this.chain.then(run, run);
    this.chain = r.catch(() => undefined);
    return r;
  }

  /** Reboots the guest (reboot -f; QEMU stays) and waits for VBGUEST-READY again. Queued like exec. */
  reboot(): Promise<void> {
    const run = (): Promise<void> => this.rebootNow();
    const r = this.chain.then(run, run);
    this.chain = r.catch(() => undefined);
    return r;
  }

  private async rebootNow(): Promise<void> {
    this.initAt = this.readyAt = 0;
    const t = Date.now();
    this.write(commandLine(++this.seq, 'reboot'));
    try {
      await this.waitFor(
        () => (this.initAt ? true : undefined),
        this.opts.hangTimeoutMs ?? 90_000,
        'VBGUEST-INIT after reboot',
      );
    } catch (e) {
      const diag = e instanceof GuestTimeout ? await this.diagnose() : '';
      await this.kill();
      if (e instanceof GuestTimeout) {
        // The guest's own init never printed after `reboot -f`: nothing outside the guest (no
        // back-end, no network) stands between its kernel and its serial console, so this is the
        // nested lab's boot hang (docs/lab.md "Guest faults"), counted as a fault; recover() boots it.
        this.noteStall(`no VBGUEST-INIT after reboot (a boot hang of the nested lab; ${diag})`);
        throw this.fail(`${e.message}; ${diag}`);
      }
      throw e;
    }
    await this.waitReady('reboot');
    this.record(`[harness] rebooted in ${Date.now() - t} ms`);
  }

  /** poweroff in the guest; waits for QEMU to exit, kills it after timeoutMs. */
  async shutdown(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.running) {
      try {
        this.write(commandLine(++this.seq, 'poweroff'));
      } catch {
        /* already gone */
      }
      try {
        await this.waitFor(
          () => (this.exitInfo !== null ? true : undefined),
          opts.timeoutMs ?? 30_000,
          `${this.vmm} exit after poweroff`,
        );
      } catch {
        this.note(
          `${this.vmm} did not exit ${Math.round((opts.timeoutMs ?? 30_000) / 1000)} s after poweroff; killing it`,
        );
      }
    }
    await this.kill();
    this.closeLog();
  }

  /** SIGKILL to the VMM; resolves when it has exited (rejects, L2 declared stuck, if it never does: lab/stuck.ts). */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || this.exitInfo !== null) return;
    const gone = new Promise<void>((res) => {
      if (child.exitCode !== null || child.signalCode !== null) res();
      else child.once('exit', () => res());
    });
    await stopProcess(child, gone, `${this.vmm} of guest ${this.name}`, { signal: 'SIGKILL' });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
