/**
 * A ping every 50 ms from L2 to one guest, for the whole soak (iputils ping: `-D` stamps each line
 * with the time, `-O` reports a request left unanswered before the next is sent). The soak asks it
 * which requests sent in a time window were never answered, and when the first reply after a moment
 * came. Pinging from L2 leaves the guest's serial console free for the events.
 */
import { type ChildProcess, spawn } from 'node:child_process';

export const PING_INTERVAL_S = 0.05;
/** How long after a window a late reply is still awaited: ping's own reply timeout (-W 1) and some. */
export const REPLY_WAIT_MS = 1200;

/** One line of `ping -D -O`: a reply, or a request seen unanswered (no answer yet, unreachable). */
export interface PingLine {
  kind: 'reply' | 'unanswered';
  seq: number;
  /** ms since the epoch (ping's -D stamp) */
  at: number;
}

export function parsePingLine(line: string): PingLine | null {
  const m = /^\[(\d+\.\d+)\] (.*)$/.exec(line);
  if (!m) return null;
  const at = Math.round(Number(m[1]) * 1000);
  const seq = /icmp_seq=(\d+)/.exec(m[2]);
  if (!seq) return null;
  if (/ bytes from .* time=/.test(m[2])) return { kind: 'reply', seq: Number(seq[1]), at };
  if (/no answer yet|Unreachable|unreachable/.test(m[2])) return { kind: 'unanswered', seq: Number(seq[1]), at };
  return null;
}

/** What was seen of each request: when it was first reported, and whether a reply came. */
export class PingLedger {
  private readonly first = new Map<number, number>();
  private readonly replied = new Map<number, number>();
  /** time of the newest line */
  latest = 0;

  add(l: PingLine): void {
    if (!this.first.has(l.seq)) this.first.set(l.seq, l.at);
    if (l.kind === 'reply' && !this.replied.has(l.seq)) this.replied.set(l.seq, l.at);
    this.latest = Math.max(this.latest, l.at);
  }

  /**
   * Requests first reported in [from, to] that have no reply. A reply may come late (an RTT above
   * the interval under nested virtualisation): only ask once `latest` is well past `to`.
   */
  lost(from: number, to: number): number[] {
    const out: number[] = [];
    for (const [seq, at] of this.first) if (at >= from && at <= to && !this.replied.has(seq)) out.push(seq);
    return out.sort((a, b) => a - b);
  }

  /** Requests first reported in [from, to]. */
  sent(from: number, to: number): number {
    let n = 0;
    for (const at of this.first.values()) if (at >= from && at <= to) n++;
    return n;
  }

  /**
   * Whether the requests first reported in [from, to] are settled: ping has reported past `to` (its
   * lines come in time order, so none of the window is still to come) and either every one of them
   * was answered, or `replyWaitMs` has passed since `to` for a late reply to come. Waiting longer
   * could only add replies, never losses: an answered window is final at once.
   */
  settled(from: number, to: number, replyWaitMs = REPLY_WAIT_MS): boolean {
    if (this.latest <= to) return false;
    return this.latest >= to + replyWaitMs || this.lost(from, to).length === 0;
  }

  /** The time of the first reply at or after `t`, if any yet. */
  firstReplyAfter(t: number): number | undefined {
    let best: number | undefined;
    for (const at of this.replied.values()) if (at >= t && (best === undefined || at < best)) best = at;
    return best;
  }
}

export class HostPinger {
  readonly ledger = new PingLedger();
  private readonly child: ChildProcess;
  private rest = '';
  private waiters: (() => void)[] = [];

  constructor(
    readonly name: string,
    readonly ip: string,
  ) {
    this.child = spawn('ping', ['-n', '-D', '-O', '-i', String(PING_INTERVAL_S), '-W', '1', ip], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    this.child.stdout!.on('data', (d: Buffer) => {
      const parts = (this.rest + d.toString()).split('\n');
      this.rest = parts.pop() ?? '';
      for (const p of parts) {
        const l = parsePingLine(p);
        if (l) this.ledger.add(l);
      }
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  private next(ms: number): Promise<void> {
    return new Promise((res) => {
      const t = setTimeout(res, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        res();
      });
    });
  }

  /** Resolves with the time of the first reply at or after `t`; rejects after `timeoutMs`. */
  async replyAfter(t: number, timeoutMs: number): Promise<number> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const at = this.ledger.firstReplyAfter(t);
      if (at !== undefined) return at;
      if (Date.now() > end) throw new Error(`${this.name}: no ping reply from ${this.ip} within ${timeoutMs} ms`);
      await this.next(200);
    }
  }

  /**
   * Waits until the requests of [from, to] are settled (PingLedger.settled): at once if all were
   * answered, else up to ping's reply timeout (-W 1) past `to` for late replies.
   */
  async settled(from: number, to: number): Promise<void> {
    const end = Date.now() + 5000;
    while (!this.ledger.settled(from, to) && Date.now() < end) await this.next(200);
  }

  stop(): void {
    this.child.kill('SIGTERM');
  }
}
