/**
 * L3 test guests for the lab. Runs INSIDE L2 (see docs/lab.md): boots QEMU with
 * nested KVM on the busybox initramfs built by scripts/lab/setup
 * (.lab/l3-initrd.cpio.gz, /init = lab/guest-initramfs/init) and drives it
 * through the serial console:
 *
 *   guest: VBGUEST-INIT                 userspace runs (the nested-KVM boot hang shows up as its absence)
 *   guest: VBGUEST-READY                virtio_net loaded, eth0 configured
 *   host : <id> <shell command>         one line per command
 *   guest: <output> VBGUEST-RC <id> <rc>
 *
 * Every byte the guest prints costs VM exits through two levels of virtualization,
 * so the helpers below keep guest output small: ping() prints only the RTT list,
 * iperf3() parses the JSON of the iperf3 server that runs here in L2.
 *
 * Uses node:child_process and node:fs only.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Qmp, type QmpEvent } from './qmp.js';
import { statFields } from './host.js';
import { stopProcess } from './stuck.js';

// ------------------------------------------------------------------ lab files

export interface LabFiles {
  /** .lab directory of the repository */
  labDir: string;
  /** the L3 guest's kernel release, e.g. 6.1.0-56-amd64 (6.1 in both labs: docs/kernels.md) */
  kver: string;
  /** the L3 guest's uncompressed PVH-bootable kernel */
  vmlinux: string;
  /** the L3 guest initramfs */
  l3Initrd: string;
}

function parentDir(p: string): string {
  const i = p.replace(/\/+$/, '').lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

/**
 * Finds the lab's manifest (written by scripts/lab/setup): env LAB_ENV_FILE (scripts/lab/run
 * sets it to the manifest of the L2 kernel it booted), else the nearest .lab/lab.env above the
 * working directory, else above this module. L3 guests boot its LAB_L3_* kernel (older manifests:
 * LAB_KVER, LAB_VMLINUX).
 */
export function labFiles(): LabFiles {
  const candidates: string[] = [];
  if (process.env.LAB_ENV_FILE) candidates.push(process.env.LAB_ENV_FILE);
  for (const start of [process.cwd(), parentDir(new URL(import.meta.url).pathname)]) {
    for (let d = start; ; d = parentDir(d)) {
      candidates.push(`${d === '/' ? '' : d}/.lab/lab.env`);
      if (d === '/') break;
    }
  }
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) throw new Error('lab: .lab/lab.env not found; build the lab with scripts/lab/setup');
  const env: Record<string, string> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2];
  }
  const need = (k: string): string => {
    const v = env[k];
    if (!v) throw new Error(`lab: ${file} has no ${k}; re-run scripts/lab/setup`);
    return v;
  };
  return {
    labDir: parentDir(file),
    kver: env.LAB_L3_KVER || need('LAB_KVER'),
    vmlinux: env.LAB_L3_VMLINUX || need('LAB_VMLINUX'),
    l3Initrd: need('LAB_L3_INITRD'),
  };
}

// ------------------------------------------------------------------ options

/** QEMU's own tap back-end (-netdev tap), with or without the kernel's vhost-net. */
export interface TapNet {
  kind: 'tap';
  /** an existing tap in L2 (see hostTap) */
  ifname: string;
  vhost: boolean;
  /** queue pairs (the tap must be multi_queue when > 1) */
  queues?: number;
  /** poll-us=N: vhost-net busy polling per ring (vhost=on only) */
  pollUs?: number;
}

/**
 * QEMU's tap back-end on fds the harness opens for each QEMU it starts, as libvirt does for
 * `<interface type='direct'>`: `device` (a macvtap's /dev/tapN) becomes `fd=`, and with vhost
 * /dev/vhost-net becomes `vhostfd=`; QEMU opens nothing itself. One queue pair (one open of the
 * device is one macvtap queue: docs/backends.md).
 */
export interface TapFdNet {
  kind: 'tap-fd';
  device: string;
  vhost: boolean;
  queues?: 1;
  /** poll-us=N: vhost-net busy polling per ring (vhost=on only) */
  pollUs?: number;
}

/** The fds a tap-fd QEMU gets: its fds 3 (the device) and 4 (/dev/vhost-net). */
const TAP_FD = 3;
const VHOST_FD = 4;

/** -netdev vhost-user: the back-end (the bridge) serves the rings. */
export interface VhostUserNet {
  kind: 'vhost-user';
  socketPath: string;
  /** QEMU is the server (server=on,wait=off); default: QEMU connects */
  server?: boolean;
  /** reconnect=N on the chardev (client mode) */
  reconnectSeconds?: number;
  queues?: number;
}

export type GuestNet = TapNet | TapFdNet | VhostUserNet;

/** A value inside a QEMU option string (`-chardev socket,path=...`), where a comma is written twice. */
export function qemuOptValue(v: string): string {
  return v.replace(/,/g, ',,');
}

export interface GuestBootOptions {
  /** used in log lines and the QEMU process name */
  name: string;
  net: GuestNet;
  /** vCPUs, default 1 */
  smp?: number;
  /** guest RAM (memfd, share=on, in every configuration), default 512 */
  memMiB?: number;
  /** default: 52:54:00 + 3 bytes derived from name */
  mac?: string;
  /** rx_queue_size and tx_queue_size of virtio-net-pci (QEMU allows tx > 256 only for vhost-user) */
  queueSize?: number;
  /** guest address, default 10.0.3.2/24 */
  ip?: string;
  /** the L2 end (tap address), default 10.0.3.1 */
  peer?: string;
  /** eth0 MTU in the guest */
  mtu?: number;
  extraQemuArgs?: string[];
  extraKernelArgs?: string[];
  /** L3 -cpu model (default L3_DEFAULTS.cpu under kvm, max under tcg) */
  cpu?: string;
  /**
   * everything from the guest console (and QEMU's stderr, and harness notes) goes there, prefixed with ms
   * timestamps
   */
  logFile?: string;
  /** harness messages (default: console.error) */
  log?: (message: string) => void;
  /**
   * No VBGUEST-INIT this long after QEMU starts = the nested-KVM boot hang: boot once more. Default 90000.
   * The timer includes any time QEMU waits for a vhost-user back-end, so start the back-end first
   * (client mode) or connect it promptly (server mode). If QEMU reported "Failed to connect", the
   * boot is not retried: the error says the back-end is missing.
   */
  hangTimeoutMs?: number;
  /** VBGUEST-INIT to VBGUEST-READY, default 120000 */
  readyTimeoutMs?: number;
  /** test hook: the first N boot attempts hang (vbg.hang= makes /init sleep before VBGUEST-INIT) */
  simulateHangAttempts?: number;
  /** default kvm (nested KVM in L2); tcg is ~10x slower to boot */
  accel?: 'kvm' | 'tcg';
  /** default qemu-system-x86_64 */
  qemuBinary?: string;
  /**
   * A migration destination (lab/migration.ts): QEMU starts with `-incoming URI` (and -S if
   * `paused`: the guest stays stopped after the migration until QMP `cont`), with the same options
   * as the source. boot() resolves once QEMU runs: the guest has booted on the source already, and
   * its console continues here after the switch (do not exec before then).
   */
  incoming?: { uri: string; paused?: boolean };
  /**
   * Run this instead of QEMU: a process whose stdin and stdout are the guest's serial console, for a
   * guest that something else starts (a libvirt domain: lab/libvirt.ts). The options that make QEMU's
   * command line (net, smp, memMiB, ...) are then that starter's business; `pid` is this process's.
   */
  console?: { command: string; args: string[] };
}

export interface ExecResult {
  rc: number;
  /** stdout+stderr of the command, lines joined with \n (no trailing newline) */
  output: string;
}

export interface PingResult {
  transmitted: number;
  received: number;
  /** per-reply round-trip times in ms, in order */
  rttMs: number[];
}

/**
 * What a lab test's transfer must move to show that traffic passes: 1 MB, some 700 full-size frames,
 * far more than any handshake or retransmission alone. Not a speed: the nested lab's throughput moves
 * by 10x between days (QEMU's own vhost=on moved 14 MB in 8 s on 2026-12-01, ~1 GB on 2026-11-30),
 * and speed is measured by the benchmark against vhost=on in one run, never asserted by a timed test
 * (README, "Performance"). One owner: every lab test's "traffic passes" uses this.
 */
export const TRAFFIC_MIN_BYTES = 1e6;

export interface IperfOptions {
  seconds: number;
  /** host -> guest (iperf3 -R); default guest -> host */
  reverse?: boolean;
  /** UDP at this bitrate (iperf3 -b, e.g. '100M') and datagram length (-l) */
  udp?: { bitrate: string; length: number };
  /** parallel streams (-P) */
  parallel?: number;
  /** server port in L2, default 5201 */
  port?: number;
  /** the L2 address the server binds and the guest connects to (a second NIC's subnet), default the guest's peer */
  peer?: string;
}

export interface IperfResult {
  bytes: number;
  bitsPerSecond: number;
  seconds: number;
  /**
   * where bytes were counted: the receiver (guest->host, the L2 server) or the sender (reverse: the L2 server
   * sends)
   */
  countedAt: 'receiver' | 'sender';
  /** the L2 server's rate in each second of the test, Mbit/s (how steady the transfer was) */
  perSecondMbps: number[];
  /** TCP sender retransmits (reverse only: the server is the sender) */
  retransmits?: number;
  /** UDP: datagrams, and the receiver's loss (reverse UDP: from the guest client's summary) */
  packets?: number;
  lostPackets?: number;
  lostPercent?: number;
  jitterMs?: number;
}

// ------------------------------------------------------------------ guest

class GuestTimeout extends Error {}

type Waiter = (line: string | null) => void;

/** A tap-fd QEMU's fds, in order (fd 3, then 4 with vhost); the caller closes them. */
function openTapFds(n: TapFdNet): number[] {
  const fds = [fs.openSync(n.device, 'r+')];
  try {
    if (n.vhost) fds.push(fs.openSync('/dev/vhost-net', 'r+'));
  } catch (e) {
    fs.closeSync(fds[0]);
    throw e;
  }
  return fds;
}

const live = new Set<ChildProcessWithoutNullStreams>();
/** numbers the QMP sockets of this process's QEMUs */
let qmpSeq = 0;
let exitHookInstalled = false;
function track(child: ChildProcessWithoutNullStreams): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // never leave a QEMU behind when mocha (or a script) exits
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
}

function defaultMac(name: string): string {
  let h = 0x811c9dc5; // FNV-1a
  for (const ch of name) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  const b = [h >>> 16, h >>> 8, h].map((x) => (x & 0xff).toString(16).padStart(2, '0'));
  return `52:54:00:${b.join(':')}`;
}

const CONSOLE_TAIL = 40;

/** How a guest faulted: a kernel panic (double fault...), a self-reset (triple fault), a stall. */
export type GuestFaultKind = 'panic' | 'reset' | 'stall';

const words = (v: string | undefined): string[] => (v ?? '').split(/\s+/).filter(Boolean);

/**
 * The L3 settings every lab guest (tests, demo, bench) runs with under nested KVM: the -cpu model
 * and extra kernel arguments. docs/lab.md ("Guest faults") says how they were chosen: by fault
 * counts of `npm run lab:stress`. LAB_L3_CPU, LAB_L3_APPEND and LAB_L3_L2CPUS replace them for an experiment.
 */
export const L3_DEFAULTS: L3Settings = {
  cpu: process.env.LAB_L3_CPU ?? 'host',
  append: words(process.env.LAB_L3_APPEND),
  l2Cpus: process.env.LAB_L3_L2CPUS || null,
};

/**
 * The lab's tuning variables set in this environment, `NAME=value ...` (LAB_L2_* for scripts/lab/run,
 * LAB_L3_* for L3_DEFAULTS; docs/lab.md), or null when none is: what a stress or soak run records
 * about the lab it ran in.
 */
export function labTuning(env: NodeJS.ProcessEnv = process.env): string | null {
  const set = Object.keys(env)
    .filter((k) => /^LAB_L[23]_/.test(k) && env[k])
    .sort();
  return set.length ? set.map((k) => `${k}=${env[k]}`).join(' ') : null;
}

interface L3Settings {
  readonly cpu: string;
  readonly append: readonly string[];
  /**
   * L2's CPUs (a taskset list) the guests' QEMUs run on; null: any. LAB_L3_L2CPUS: an experiment of
   * the soak's (docs/soak.md, "2026-12-02"), and the bench's `--pin` (docs/backends.md, "Why single
   * tests collapse").
   */
  readonly l2Cpus: string | null;
}

export class Guest {
  readonly name: string;
  /** the QEMU process (of the current boot attempt) */
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
  faults = 0;
  /** Every fault seen, by kind (the stress command counts them: docs/lab.md, "Guest faults"). */
  readonly faultLog: { kind: GuestFaultKind; at: number; text: string }[] = [];
  /**
   * What the last fault was (`traps: PANIC: double fault ...`, `the guest reset itself ...`, `the guest stopped
   * answering ...`).
   */
  lastFault = '';
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
  private partial = '';
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
    return this.opts.peer ?? '10.0.3.1';
  }
  get ip(): string {
    return (this.opts.ip ?? '10.0.3.2/24').replace(/\/.*/, '');
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

  private fail(message: string): Error {
    return new Error(`guest ${this.name}: ${message}\n--- last console lines ---\n${this.consoleTail().join('\n')}`);
  }

  // ---------------------------------------------------------------- QEMU

  private qemuArgs(hang: boolean): string[] {
    const o = this.opts;
    const mem = o.memMiB ?? 512;
    const accel = o.accel ?? 'kvm';
    const queues = o.net.queues ?? 1;
    const append = [
      'console=ttyS0',
      'quiet',
      'loglevel=3',
      'panic=-1',
      `vbg.ip=${o.ip ?? '10.0.3.2/24'}`,
      `vbg.peer=${this.peer}`,
      ...(o.mtu ? [`vbg.mtu=${o.mtu}`] : []),
      ...(hang ? ['vbg.hang=100000'] : []),
      ...L3_DEFAULTS.append,
      ...(o.extraKernelArgs ?? []),
    ].join(' ');
    const args = [
      '-name',
      `vbguest-${this.name},debug-threads=on`, // vCPU threads named "CPU n/KVM" (see diagnose)
      '-accel',
      accel,
      '-cpu',
      o.cpu ?? (accel === 'kvm' ? L3_DEFAULTS.cpu : 'max'),
      '-machine',
      'q35',
      '-smp',
      String(o.smp ?? 1),
      '-m',
      `${mem}M`,
      '-object',
      `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
      '-numa',
      'node,memdev=mem',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-monitor',
      'none',
      '-serial',
      'stdio',
      '-kernel',
      this.files.vmlinux,
      '-initrd',
      this.files.l3Initrd,
      '-append',
      append,
    ];
    const n = o.net;
    const q = queues > 1 ? `,queues=${queues}` : '';
    if (n.kind === 'tap') {
      const poll = n.pollUs ? `,poll-us=${n.pollUs}` : '';
      args.push(
        '-netdev',
        `tap,id=n0,ifname=${n.ifname},script=no,downscript=no,vhost=${n.vhost ? 'on' : 'off'}${q}${poll}`,
      );
    } else if (n.kind === 'tap-fd') {
      const poll = n.pollUs ? `,poll-us=${n.pollUs}` : '';
      const vhost = n.vhost ? `vhost=on,vhostfd=${VHOST_FD}` : 'vhost=off';
      args.push('-netdev', `tap,id=n0,fd=${TAP_FD},${vhost}${poll}`);
    } else {
      let chr = `socket,id=vu0,path=${qemuOptValue(n.socketPath)}`;
      if (n.server) chr += ',server=on,wait=off';
      if (n.reconnectSeconds !== undefined) chr += `,reconnect=${n.reconnectSeconds}`;
      args.push('-chardev', chr, '-netdev', `vhost-user,id=n0,chardev=vu0${q}`);
    }
    let dev = `virtio-net-pci,netdev=n0,mac=${this.mac}`;
    if (queues > 1) dev += `,mq=on,vectors=${2 * queues + 2}`;
    // QEMU 7.2 under TCG crashes at DRIVER_OK with vhost-user + MSI-X (docs/qemu-quirks.md)
    else if (accel === 'tcg' && n.kind === 'vhost-user') dev += ',vectors=0';
    if (o.queueSize) dev += `,rx_queue_size=${o.queueSize},tx_queue_size=${o.queueSize}`;
    args.push('-device', dev, ...(o.extraQemuArgs ?? []));
    if (o.incoming) args.push('-incoming', o.incoming.uri, ...(o.incoming.paused ? ['-S'] : []));
    return args;
  }

  private start(attempt: number): void {
    const hang = attempt <= (this.opts.simulateHangAttempts ?? 0);
    const args = this.opts.console?.args ?? this.qemuArgs(hang);
    let bin = this.opts.console?.command ?? this.opts.qemuBinary ?? 'qemu-system-x86_64';
    // taskset execs QEMU, so the pid is QEMU's and every thread it starts inherits the CPU list.
    if (L3_DEFAULTS.l2Cpus && !this.opts.console) {
      args.unshift('-c', L3_DEFAULTS.l2Cpus, bin);
      bin = 'taskset';
    }
    this.record(`[harness] boot attempt ${attempt}${hang ? ' (simulated hang)' : ''}: ${bin} ${args.join(' ')}`);
    this.exitInfo = null;
    this.backendMissing = null;
    this.lastStderr = null;
    this.initAt = this.readyAt = 0;
    this.partial = '';
    this.startedAt = Date.now();
    // tap-fd: the fds are opened for this QEMU and closed here once it has its own (a macvtap fd
    // left open here would stay a queue of the macvtap after QEMU exits).
    const n = this.opts.console ? null : this.opts.net;
    const passed = n?.kind === 'tap-fd' ? openTapFds(n) : [];
    // A QMP socket per QEMU, for its RESET events (watchResets); not for another starter's console.
    const qmpPath = this.opts.console ? null : path.join(os.tmpdir(), `vbg-${process.pid}-${++qmpSeq}.qmp`);
    if (qmpPath) args.push('-qmp', `unix:${qmpPath},server=on,wait=off`);
    let child: ChildProcessWithoutNullStreams;
    try {
      child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe', ...passed] }) as ChildProcessWithoutNullStreams;
    } finally {
      for (const fd of passed) fs.closeSync(fd);
    }
    this.child = child;
    this.pid = child.pid ?? 0;
    track(child);
    if (qmpPath) this.watchResets(child, qmpPath);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      if (this.child === child) this.feed(s);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => {
      for (const l of s.split('\n')) {
        if (!l.trim()) continue;
        this.record(`[qemu] ${l}`);
        this.lastStderr = l.trim();
        if (/Failed to connect/.test(l)) this.backendMissing = l.trim();
      }
    });
    child.stdin.on('error', () => {
      /* QEMU gone: reported through 'exit' */
    });
    const onGone = (why: string): void => {
      if (this.child !== child || this.exitInfo !== null) return;
      if (this.partial) {
        this.line(this.partial);
        this.partial = '';
      }
      this.exitInfo = this.lastStderr ? `${why} ("${this.lastStderr}")` : why;
      this.record(`[harness] QEMU ${why}`);
      for (const w of [...this.waiters]) w(null);
    };
    child.once('error', (e) => onGone(`could not run: ${e.message}`));
    child.once('exit', (code, signal) => onGone(signal ? `killed by ${signal}` : `exited with status ${code}`));
  }

  private feed(s: string): void {
    const parts = (this.partial + s).split('\n');
    this.partial = parts.pop() ?? '';
    for (const p of parts) this.line(p.replace(/\r$/, ''));
  }

  private line(l: string): void {
    this.record(l);
    if (l === 'VBGUEST-INIT' && this.readyAt)
      this.panicked('the guest reset itself (init ran again without a reboot: a triple fault)', 'reset', true);
    if (l === 'VBGUEST-INIT' && !this.initAt) this.initAt = Date.now();
    else if (l === 'VBGUEST-READY' && !this.readyAt) this.readyAt = Date.now();
    else if (this.readyAt && /\] (traps: PANIC|Kernel panic - not syncing|BUG: |double fault)/.test(l))
      this.panicked(l);
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
    this.faults++;
    this.lastFault = l.replace(/^.*?\] /, '');
    this.faultLog.push({ kind, at: Date.now(), text: this.lastFault });
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
        else if (this.exitInfo !== null) finish(this.fail(`QEMU ${this.exitInfo} while waiting for ${what}`));
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
    if (!this.running || !this.child) throw this.fail(`QEMU is not running (${this.exitInfo ?? 'not started'})`);
    this.child.stdin.write(s);
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
    this.faults++;
    this.stalled = true;
    this.lastFault = text;
    this.faultLog.push({ kind: 'stall', at: Date.now(), text });
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

  /**
   * For timeout errors: is the guest's vCPU running (CPU time of QEMU's threads over 1 s)
   * and does its kernel answer ping from L2? Tells a stalled vCPU from a stuck console.
   */
  private async diagnose(): Promise<string> {
    if (!this.running) return `diagnosis: QEMU ${this.exitInfo ?? 'not running'}`;
    const a = threadTicks(this.pid);
    await sleep(1000);
    const b = threadTicks(this.pid);
    const cpu = [...b]
      .filter(([, v]) => v.comm.startsWith('CPU ') || v.ticks - (a.get(v.tid)?.ticks ?? v.ticks) > 0)
      .map(([, v]) => `${v.comm} +${v.ticks - (a.get(v.tid)?.ticks ?? v.ticks)}`)
      .join(', ');
    const p = spawnSync('/bin/busybox', ['ping', '-c', '2', '-W', '1', this.ip], { encoding: 'utf8', timeout: 6000 });
    const rx = /(\d+) packets received/.exec(p.stdout ?? '');
    return (
      `diagnosis: CPU ticks of QEMU ${this.pid}'s threads in 1 s: ${cpu || 'none'}; ping ${this.ip} from L2: ` +
      `${rx ? `${rx[1]} of 2 replies` : 'not run'}`
    );
  }

  // ---------------------------------------------------------------- commands

  /** Runs a shell command in the guest (sh -c, stdin /dev/null). One at a time; calls queue up. */
  exec(cmd: string, opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    // The command goes to the guest's serial console as one line: a control character (a newline, ^C, ^D,
    // an escape) would be acted on by the guest's tty instead of reaching its shell.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
    if (/[\x00-\x1f\x7f]/.test(cmd))
      return Promise.reject(
        new Error(
          `guest ${this.name}: command contains control characters (one line, printable only): ` +
            `${JSON.stringify(cmd)}`,
        ),
      );
    if (Buffer.byteLength(cmd) > 4000)
      return Promise.reject(
        new Error(`guest ${this.name}: command longer than 4000 bytes (the guest tty's line limit is 4095)`),
      );
    const run = (): Promise<ExecResult> => this.execNow(cmd, opts.timeoutMs ?? 60_000);
    const r = this.chain.then(run, run);
    this.chain = r.catch(() => undefined);
    return r;
  }

  private async execNow(cmd: string, timeoutMs: number): Promise<ExecResult> {
    if (this.recovering) await this.recovering;
    if (!this.running)
      return Promise.reject(this.fail(`QEMU is not running (${this.exitInfo ?? 'not started'}): ${cmd}`));
    if (!this.readyAt) return Promise.reject(this.fail(`exec before VBGUEST-READY: ${cmd}`));
    const id = ++this.seq;
    const out: string[] = [];
    const marker = /VBGUEST-RC (\d+) (\d+)$/;
    const faults = this.faults;
    const p = this.waitFor<ExecResult>(
      (line) => {
        if (this.faults !== faults)
          throw this.fail(
            `the guest kernel panicked while running \`${cmd}\` (${this.lastFault}); it reboots by itself`,
          );
        if (line === null) return undefined;
        const m = marker.exec(line);
        const text = m ? line.slice(0, m.index) : line;
        if (m && Number(m[1]) === id) {
          if (text) out.push(text);
          return { rc: Number(m[2]), output: out.join('\n') };
        }
        // (the marker of an earlier command that timed out is dropped, its text kept)
        if (text || !m) out.push(text);
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
    this.write(`${id} ${cmd}\n`);
    return p;
  }

  /** ping from the guest (busybox ping); the guest prints only the RTT list and the summary. */
  async ping(
    peer: string = this.peer,
    opts: { count?: number; intervalS?: number; timeoutS?: number } = {},
  ): Promise<PingResult> {
    if (!/^[0-9A-Fa-f.:]+$/.test(peer)) throw new Error(`guest ${this.name}: bad ping address ${peer}`);
    const count = opts.count ?? 5;
    const flags = [`-c ${count}`];
    if (opts.intervalS !== undefined) flags.push(`-i ${Number(opts.intervalS)}`);
    flags.push(`-W ${Math.max(1, Math.round(opts.timeoutS ?? 5))}`);
    const cmd =
      `ping ${flags.join(' ')} ${peer} >/tmp/ping.out 2>&1; r=$?; ` +
      `echo "RTT $(sed -n 's/.* time=\\([0-9.]*\\) ms$/\\1/p' /tmp/ping.out | tr '\\n' ' ')"; ` +
      `grep 'packets transmitted' /tmp/ping.out || head -n 3 /tmp/ping.out; exit $r`;
    const budget = (count * (opts.intervalS ?? 1) + (opts.timeoutS ?? 5) + 30) * 1000;
    const { output } = await this.exec(cmd, { timeoutMs: budget });
    const stats = /(\d+) packets transmitted, (\d+) packets received/.exec(output);
    const rtt = /^RTT ?(.*)$/m.exec(output);
    if (!stats || !rtt) throw this.fail(`cannot parse ping output:\n${output}`);
    return {
      transmitted: Number(stats[1]),
      received: Number(stats[2]),
      rttMs: rtt[1].trim() ? rtt[1].trim().split(/\s+/).map(Number) : [],
    };
  }

  /**
   * Ping `peer` once a second (each with a 1 s timeout) until the first reply, at most `tries`
   * times; resolves with the time it took (ms, as seen from L2), rejects if no reply came.
   */
  async untilReply(peer: string = this.peer, tries = 30): Promise<number> {
    if (!/^[0-9A-Fa-f.:]+$/.test(peer)) throw new Error(`guest ${this.name}: bad ping address ${peer}`);
    const t0 = Date.now();
    const r = await this.exec(
      `i=0; while [ $i -lt ${tries} ]; do ping -c 1 -W 1 ${peer} >/dev/null 2>&1 && exit 0; i=$((i+1)); done; exit 1`,
      { timeoutMs: (tries * 2 + 30) * 1000 },
    );
    if (r.rc !== 0) throw this.fail(`no ping reply from ${peer} in ${tries} tries`);
    return Date.now() - t0;
  }

  /**
   * iperf3 between the guest (client, output discarded) and a one-off server in L2 on
   * the peer address (JSON to a file). Default guest -> host; reverse = host -> guest.
   */
  async iperf3(o: IperfOptions): Promise<IperfResult> {
    const port = o.port ?? 5201;
    const json = `/tmp/vbguest-iperf3-${this.name}-${process.pid}-${Date.now()}.json`;
    const peer = o.peer ?? this.peer;
    const server = spawn('iperf3', ['-s', '-1', '-B', peer, '-p', String(port), '-J', '--logfile', json], {
      stdio: 'ignore',
    });
    let serverExit: string | null = null;
    const serverDone = new Promise<void>((res) => {
      server.once('exit', (c, s) => {
        serverExit = s ?? String(c);
        res();
      });
      server.once('error', (e) => {
        serverExit = e.message;
        res();
      });
    });
    try {
      await waitListening(port, 10_000, () => serverExit);
      const args = ['-c', peer, '-p', String(port), '-t', String(o.seconds), '--connect-timeout', '10000'];
      if (o.reverse) args.push('-R');
      if (o.udp) args.push('-u', '-b', o.udp.bitrate, '-l', String(o.udp.length));
      if (o.parallel && o.parallel > 1) args.push('-P', String(o.parallel));
      const udpReverse = Boolean(o.udp && o.reverse);
      // reverse UDP: only the guest (the receiver) knows the loss; print its end.sum compactly
      // `timeout`: a stalled transfer (a datapath that lost the control connection) fails this
      // call in seconds instead of holding the serial command loop until the exec timeout.
      const iperf = `timeout ${o.seconds + 30} iperf3`;
      const cmd = udpReverse
        ? `${iperf} ${args.join(' ')} -J >/tmp/iperf3.out 2>&1; r=$?; ` +
          `if [ $r = 0 ]; then sed -n '/"end":[[:space:]]*{/,$p' /tmp/iperf3.out | sed -n '/"sum":/,/}/p' | ` +
          `tr -d ' \\t\\n'; echo; ` +
          `else grep '"error"' /tmp/iperf3.out | head -n 3; fi; exit $r`
        : `${iperf} ${args.join(' ')} >/tmp/iperf3.out 2>&1; r=$?; [ $r = 0 ] || tail -n 3 /tmp/iperf3.out; exit $r`;
      const res = await this.exec(cmd, { timeoutMs: (o.seconds + 60) * 1000 });
      if (res.rc !== 0) throw this.fail(`iperf3 client failed (rc ${res.rc}): ${res.output}`);
      const timer = setTimeout(() => server.kill('SIGKILL'), 20_000);
      await serverDone;
      clearTimeout(timer);
      let j: IperfJson;
      try {
        j = JSON.parse(fs.readFileSync(json, 'utf8')) as IperfJson;
      } catch (e) {
        throw this.fail(`cannot read the iperf3 server's JSON ${json}: ${(e as Error).message}`);
      }
      if (j.error) throw this.fail(`iperf3 server: ${j.error}`);
      // bytes: what the server received (guest -> host) or sent (reverse)
      const end = j.end ?? {};
      const s = o.reverse ? end.sum_sent : end.sum_received;
      if (!s) throw this.fail(`iperf3 server JSON has no end.${o.reverse ? 'sum_sent' : 'sum_received'}`);
      const r: IperfResult = {
        bytes: s.bytes,
        bitsPerSecond: s.bits_per_second,
        seconds: s.seconds,
        countedAt: o.reverse ? 'sender' : 'receiver',
        perSecondMbps: (j.intervals ?? []).map((i) => Math.round((i.sum?.bits_per_second ?? 0) / 1e5) / 10),
      };
      if (!o.udp) {
        if (o.reverse && s.retransmits !== undefined) r.retransmits = s.retransmits;
      } else if (!o.reverse) {
        r.packets = s.packets;
        r.lostPackets = s.lost_packets;
        r.lostPercent = s.lost_percent;
        r.jitterMs = s.jitter_ms;
      } else {
        const num = (k: string): number | undefined => {
          const m = new RegExp(`"${k}":(-?[0-9.eE+-]+)`).exec(res.output);
          return m ? Number(m[1]) : undefined;
        };
        r.packets = num('packets') ?? s.packets;
        r.lostPackets = num('lost_packets');
        r.lostPercent = num('lost_percent');
        r.jitterMs = num('jitter_ms');
      }
      return r;
    } finally {
      if (serverExit === null) {
        server.kill('SIGKILL');
        await serverDone;
      }
      fs.rmSync(json, { force: true });
    }
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
    this.write(`${++this.seq} reboot\n`);
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
        this.write(`${++this.seq} poweroff\n`);
      } catch {
        /* already gone */
      }
      try {
        await this.waitFor(
          () => (this.exitInfo !== null ? true : undefined),
          opts.timeoutMs ?? 30_000,
          'QEMU exit after poweroff',
        );
      } catch {
        this.note(`QEMU did not exit ${Math.round((opts.timeoutMs ?? 30_000) / 1000)} s after poweroff; killing it`);
      }
    }
    await this.kill();
    this.closeLog();
  }

  /** SIGKILL to QEMU; resolves when it has exited (rejects, L2 declared stuck, if it never does: lab/stuck.ts). */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || this.exitInfo !== null) return;
    const gone = new Promise<void>((res) => {
      if (child.exitCode !== null || child.signalCode !== null) res();
      else child.once('exit', () => res());
    });
    await stopProcess(child, gone, `QEMU of guest ${this.name}`, { signal: 'SIGKILL' });
  }
}

interface IperfSum {
  bytes: number;
  bits_per_second: number;
  seconds: number;
  retransmits?: number;
  packets?: number;
  lost_packets?: number;
  lost_percent?: number;
  jitter_ms?: number;
}
interface IperfJson {
  error?: string;
  /** the server's report of each interval (a second by default) */
  intervals?: { sum?: { bits_per_second?: number } }[];
  end?: { sum_sent?: IperfSum; sum_received?: IperfSum };
}

/** tid -> thread name and utime+stime of a process's threads */
function threadTicks(pid: number): Map<number, { tid: number; comm: string; ticks: number }> {
  const out = new Map<number, { tid: number; comm: string; ticks: number }>();
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      const comm = fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim();
      const stat = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const f = statFields(stat);
      out.set(Number(t), { tid: Number(t), comm, ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      /* thread gone */
    }
  }
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** true when a TCP socket listens on port (any address), from /proc/net/tcp{,6} */
function listening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const l of text.split('\n').slice(1)) {
      const cols = l.trim().split(/\s+/);
      if (cols.length > 3 && cols[1].endsWith(`:${hex}`) && cols[3] === '0A') return true;
    }
  }
  return false;
}

async function waitListening(port: number, timeoutMs: number, died: () => string | null): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!listening(port)) {
    const d = died();
    if (d !== null) throw new Error(`iperf3 server exited (${d}) before listening on port ${port}`);
    if (Date.now() > end) throw new Error(`iperf3 server not listening on port ${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/**
 * From a `diagnose()` line: a vCPU thread ran at least half of the second while the guest's kernel
 * answered no ping from L2 (the nested lab's stall, not a guest waiting for anything).
 */
export function stalledVcpu(diag: string): boolean {
  const busy = [...diag.matchAll(/CPU \d+\/KVM \+(\d+)/g)].some((m) => Number(m[1]) >= 50);
  return busy && /from L2: 0 of 2 replies/.test(diag);
}
