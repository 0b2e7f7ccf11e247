/**
 * Live migration in the lab (docs/migration.md): QEMU's QMP over a unix socket, the migration
 * itself (throttled with max-bandwidth), a page-by-page compare of two QEMUs' guest RAM, the L2
 * host side (a Linux bridge holding both taps, as on a real host), a 50 ms ping from L2 with the
 * time of every reply, a TCP stream of known data and a UDP flood into the guest. Runs inside L2.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Qmp } from './qmp.js';
import type { Faulting } from './retry.js';
import { stopProcess } from './stuck.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** What query-migrate says at the end (QEMU qapi/migration.json MigrationInfo). */
export interface MigrationResult {
  status: string;
  /** ms from the start of the migration to its end */
  totalTimeMs: number;
  /** ms the guest was stopped, as QEMU reports it */
  downtimeMs: number;
  /** bytes of RAM sent, and the precopy passes over dirty memory */
  ramBytes: number;
  dirtySyncCount: number;
  /** when the migration completed (ms since the epoch, L2's clock) */
  completedAt: number;
}

interface MigrateInfo {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'error-desc'?: string;
  ram?: { transferred?: number; 'dirty-sync-count'?: number };
}

/**
 * Migrate `source` to `uri` (where the destination waits with -incoming): max-bandwidth
 * `slowBytesPerS` for `slowMs` (so that the migration lasts while traffic runs), then
 * `fastBytesPerS` to let it converge; resolves when query-migrate says completed.
 */
export async function migrate(
  source: Qmp,
  uri: string,
  o: { slowBytesPerS: number; slowMs: number; fastBytesPerS: number; downtimeLimitMs?: number; timeoutMs?: number },
): Promise<MigrationResult> {
  const params: Record<string, unknown> = { 'max-bandwidth': o.slowBytesPerS };
  if (o.downtimeLimitMs !== undefined) params['downtime-limit'] = o.downtimeLimitMs;
  await source.execute('migrate-set-parameters', params);
  await source.execute('migrate', { uri });
  const start = Date.now();
  const end = start + (o.timeoutMs ?? 120_000);
  let fast = false;
  for (;;) {
    const info = await source.execute<MigrateInfo>('query-migrate');
    if (info.status === 'completed') {
      return {
        status: info.status,
        totalTimeMs: info['total-time'] ?? Date.now() - start,
        downtimeMs: info.downtime ?? NaN,
        ramBytes: info.ram?.transferred ?? NaN,
        dirtySyncCount: info.ram?.['dirty-sync-count'] ?? NaN,
        completedAt: Date.now(),
      };
    }
    if (info.status === 'failed' || info.status === 'cancelled')
      throw new Error(`migration ${info.status}: ${info['error-desc'] ?? 'no reason given'}`);
    if (Date.now() > end) throw new Error(`migration not completed after ${o.timeoutMs ?? 120_000} ms: ${info.status}`);
    if (!fast && Date.now() - start > o.slowMs) {
      fast = true;
      await source.execute('migrate-set-parameters', { 'max-bandwidth': o.fastBytesPerS });
    }
    await sleep(100);
  }
}

// ------------------------------------------------------------------ guest RAM

/**
 * The guest RAM of a QEMU started with `-object memory-backend-memfd` (lab/guest.ts), as a path
 * any process of L2's root can read: /proc/PID/fd/N of its memfd.
 */
export function guestRamPath(qemuPid: number): string {
  const dir = `/proc/${qemuPid}/fd`;
  for (const fd of fs.readdirSync(dir)) {
    try {
      if (fs.readlinkSync(`${dir}/${fd}`).startsWith('/memfd:memory-backend-memfd')) return `${dir}/${fd}`;
    } catch {
      /* closed meanwhile */
    }
  }
  throw new Error(`QEMU ${qemuPid} has no memory-backend-memfd fd`);
}

export interface PageCompare {
  pages: number;
  /** guest-physical page numbers (4 KiB) whose contents differ, but for `wallClock` */
  differing: number[];
  /**
   * Pages that differ only in a kvmclock wall-clock struct (struct pvclock_wall_clock: u32 version,
   * u32 sec, u32 nsec): KVM writes it into guest memory when the destination QEMU restores the
   * guest's MSR_KVM_WALL_CLOCK_NEW, before the guest runs. Not the datapath's doing.
   */
  wallClock: number[];
  /** of the first few differing pages: how many bytes differ, the first one, and 16 bytes there on each side */
  details: { page: number; bytes: number; first: number; source: string; destination: string }[];
  /** how many of `pages` hold anything but zeros (on the source) */
  nonZero: number;
}

const PAGE = 4096;

/** Compare two guest RAMs page by page (the memfd's offset is the guest-physical address below 4 GiB). */
export function comparePages(a: string, b: string): PageCompare {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  const chunk = 4 << 20;
  const ba = Buffer.alloc(chunk);
  const bb = Buffer.alloc(chunk);
  const zero = Buffer.alloc(PAGE);
  const out: PageCompare = { pages: 0, differing: [], wallClock: [], details: [], nonZero: 0 };
  try {
    for (let pos = 0; ; pos += chunk) {
      const na = fs.readSync(fa, ba, 0, chunk, pos);
      const nb = fs.readSync(fb, bb, 0, chunk, pos);
      if (na !== nb) throw new Error(`guest RAMs differ in size (${pos + na} vs ${pos + nb} bytes)`);
      if (na === 0) break;
      for (let off = 0; off < na; off += PAGE) {
        const pa = ba.subarray(off, off + PAGE);
        if (!pa.equals(zero)) out.nonZero++;
        const pb = bb.subarray(off, off + PAGE);
        if (!pa.equals(pb)) {
          if (isWallClockUpdate(pa, pb)) out.wallClock.push((pos + off) / PAGE);
          else out.differing.push((pos + off) / PAGE);
          if (out.details.length < 8) out.details.push(pageDiff((pos + off) / PAGE, pa, pb));
        }
        out.pages++;
      }
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
  return out;
}

/**
 * The two pages differ only within 12 bytes that read as struct pvclock_wall_clock on both sides:
 * an even version that grew, and the destination's seconds within a day of now.
 */
function isWallClockUpdate(a: Buffer, b: Buffer): boolean {
  let first = -1;
  let last = -1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    if (first < 0) first = i;
    last = i;
  }
  const at = first & ~3;
  if (last >= at + 12 || at + 12 > a.length) return false;
  const [va, vb] = [a.readUInt32LE(at), b.readUInt32LE(at)];
  const sec = b.readUInt32LE(at + 4);
  return va % 2 === 0 && vb % 2 === 0 && vb > va && Math.abs(sec - Date.now() / 1000) < 86_400;
}

function pageDiff(page: number, a: Buffer, b: Buffer): PageCompare['details'][number] {
  let bytes = 0;
  let first = -1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    bytes++;
    if (first < 0) first = i;
  }
  const at = first & ~15;
  return {
    page,
    bytes,
    first,
    source: a.subarray(at, at + 16).toString('hex'),
    destination: b.subarray(at, at + 16).toString('hex'),
  };
}

// ------------------------------------------------------------------ L2 host side

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A Linux bridge with an address and persistent taps as its ports (no address of their own), as a
 * host holds the taps of its VMs: the guest's MAC moves to the destination's tap when the guest
 * announces itself after the switch. Replaces what is there under those names.
 */
export function hostBridge(name: string, cidr: string, taps: { name: string; queues?: number }[]): void {
  removeHostBridge(
    name,
    taps.map((t) => t.name),
  );
  // L2 loads modules only when asked (docs/lab.md: modprobe works in L2).
  if (!fs.existsSync('/sys/module/bridge'))
    execFileSync('modprobe', ['bridge'], { stdio: ['ignore', 'ignore', 'pipe'] });
  ip('link', 'add', 'name', name, 'type', 'bridge');
  ip('addr', 'add', cidr, 'dev', name);
  ip('link', 'set', 'dev', name, 'up');
  for (const t of taps) {
    ip('tuntap', 'add', 'dev', t.name, 'mode', 'tap', 'vnet_hdr', ...((t.queues ?? 1) > 1 ? ['multi_queue'] : []));
    ip('link', 'set', 'dev', t.name, 'master', name, 'up');
  }
}

export function removeHostBridge(name: string, taps: string[]): void {
  for (const n of [...taps, name]) if (fs.existsSync(`/sys/class/net/${n}`)) ip('link', 'del', 'dev', n);
}

/** One reply of the L2 ping: its sequence number and when it came (ms since the epoch). */
export interface PingReply {
  seq: number;
  at: number;
}

/** `ping -D -i 0.05` from L2 to the guest, every reply with its time (iputils prints gettimeofday). */
export class PingWatch {
  readonly replies: PingReply[] = [];
  private readonly child: ChildProcess;
  private partial = '';
  private readonly done: Promise<void>;
  readonly startedAt = Date.now();

  constructor(
    target: string,
    readonly intervalMs = 50,
  ) {
    this.child = spawn('ping', ['-D', '-n', '-i', String(intervalMs / 1000), '-W', '1', target], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      const parts = (this.partial + d).split('\n');
      this.partial = parts.pop() ?? '';
      for (const l of parts) {
        const m = /^\[(\d+\.\d+)\] .*icmp_seq=(\d+) /.exec(l);
        if (m) this.replies.push({ seq: Number(m[2]), at: Number(m[1]) * 1000 });
      }
    });
    this.done = new Promise((r) => this.child.once('exit', () => r()));
  }

  /** Replies from `t` on. */
  after(t: number): PingReply[] {
    return this.replies.filter((r) => r.at >= t);
  }

  /** Stop; `sent` = the requests sent (the highest sequence number seen or due by now). */
  async stop(): Promise<{ sent: number; received: number; lost: number }> {
    const sent = Math.floor((Date.now() - this.startedAt) / this.intervalMs);
    await stopProcess(this.child, this.done, 'ping', { signal: 'SIGINT', timeoutMs: 5000 });
    const seqs = new Set(this.replies.map((r) => r.seq));
    const last = Math.max(sent, ...seqs);
    return { sent: last, received: seqs.size, lost: last - seqs.size };
  }
}

/** Datagrams to a port of the guest where nothing listens: the kernel's vhost worker keeps writing rx buffers. */
export class UdpFlood {
  private readonly sock = dgram.createSocket('udp4');
  private readonly timer: NodeJS.Timeout;
  sent = 0;

  constructor(target: string, o: { port?: number; perTick?: number; tickMs?: number; size?: number } = {}) {
    const payload = Buffer.alloc(o.size ?? 1400);
    // No route or ARP reply while the guest moves: the flood goes on (a send error is not a failure).
    this.sock.on('error', () => {});
    this.timer = setInterval(() => {
      for (let i = 0; i < (o.perTick ?? 10); i++) {
        payload.writeUInt32BE(this.sent++, 0);
        this.sock.send(payload, o.port ?? 9, target, () => {});
      }
    }, o.tickMs ?? 5);
  }

  stop(): void {
    clearInterval(this.timer);
    this.sock.close();
  }
}

/** What sendStream sent: the md5 of the bytes, and when the stream began and ended (ms since the epoch). */
export interface StreamResult {
  md5: string;
  bytes: number;
  startedAt: number;
  endedAt: number;
}

/**
 * A TCP stream of `bytes` known bytes from L2 to `host:port` (the guest's `nc -l`), as fast as TCP
 * goes or at `bytesPerS`, each 4 KiB stamped with its number so that a stale page would change the checksum. Retries
 * the connection while it is refused (the listener is still starting). Resolves when the guest
 * has closed the connection, with the md5 of what was sent.
 */
export async function sendStream(
  host: string,
  port: number,
  bytes: number,
  bytesPerS = Infinity,
): Promise<StreamResult> {
  const end = Date.now() + 15_000;
  for (;;) {
    try {
      return await streamOnce(host, port, bytes, bytesPerS);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ECONNREFUSED' || Date.now() > end) throw e;
      await sleep(200);
    }
  }
}

function streamOnce(host: string, port: number, bytes: number, bytesPerS: number): Promise<StreamResult> {
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((i * 2654435761) >>> 0, i);
  const hash = createHash('md5');
  const startedAt = Date.now();
  return new Promise((resolve, reject) => {
    // allowHalfOpen: busybox nc half-closes at once (its stdin is /dev/null); the stream goes on.
    const s = net.createConnection({ host, port, allowHalfOpen: true }, () => {
      let sent = 0;
      let n = 0;
      const pump = (): void => {
        while (sent < bytes) {
          const len = Math.min(block.length, bytes - sent);
          const b = Buffer.from(block.subarray(0, len));
          for (let off = 0; off < len; off += PAGE) b.writeUInt32LE(n++, off);
          hash.update(b);
          sent += len;
          const ok = s.write(b);
          const ahead = (sent / bytesPerS) * 1000 - (Date.now() - startedAt);
          if (ahead > 0 && sent < bytes) {
            setTimeout(() => (ok ? pump() : s.once('drain', pump)), ahead);
            return;
          }
          if (!ok) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    });
    s.resume(); // the guest sends nothing but its FIN; reading lets 'close' come
    s.setTimeout(60_000, () => s.destroy(new Error('TCP stream: no progress for 60 s')));
    s.on('error', reject);
    s.on('close', (hadError) => {
      if (!hadError) resolve({ md5: hash.digest('hex'), bytes, startedAt, endedAt: Date.now() });
    });
  });
}

// ------------------------------------------------------------------ the retry

/**
 * Several guests that come and go during one test body, seen by lab/retry.ts as one: it counts the
 * faults of all of them, and its recovery is the body's own clean-up (the second attempt boots anew).
 */
export class GuestGroup implements Faulting {
  private readonly members: Faulting[] = [];
  private lost = 0;
  constructor(
    readonly name: string,
    private readonly cleanUp: () => Promise<void>,
  ) {}
  add<T extends Faulting>(g: T): T {
    this.members.push(g);
    return g;
  }
  get faults(): number {
    return this.lost + this.members.reduce((n, g) => n + g.faults, 0);
  }
  get lastFault(): string {
    return this.members
      .map((g) => g.lastFault)
      .filter(Boolean)
      .join('; ');
  }
  async recover(): Promise<void> {
    this.lost = this.faults;
    this.members.length = 0;
    await this.cleanUp();
  }
}
