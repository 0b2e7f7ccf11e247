/**
 * The soak's steady traffic besides the pings (docs/soak.md, "Traffic"): every guest sends, for the
 * whole run,
 *   - a TCP stream of checked transfers: the first STREAM_BYTES of /bin/busybox (the same file in L2
 *     and in the L3 initramfs, which the lab copies from the host) to L2's TCP_PORT, one transfer
 *     per connection, PERIOD_S apart; L2 hashes what arrives and compares it with its own copy, so a
 *     corrupted, cut or stalled stream is seen;
 *   - UDP bursts: every PERIOD_S a burst of BURST_LINES numbered lines (`TOKEN BURST LINE`) through
 *     busybox `logger` to the guest's `syslogd -R`, which sends each line as one datagram to L2's
 *     UDP_PORT (the L3 initramfs has no other UDP sender: busybox's nc has no -u); L2 counts the lines
 *     of every burst, so a lost datagram is seen.
 * The guest side is a shell loop started after every boot (`guestCommand`); the L2 side is one TCP
 * server and one UDP socket for all guests, each guest known by its address. The loops are kept
 * sparse in processes (about 1.7 started per second per guest): every process an L3 guest starts
 * costs L2 exits, and one per 0.2 s per guest is enough for three guests to overload L2 (a restarted
 * daemon then takes 20 s to answer instead of 3) and make it die more often (docs/soak.md, "When L2
 * dies").
 */
import { createHash } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as net from 'node:net';

export const TCP_PORT = 5601;
export const UDP_PORT = 5602;
/** Bytes per checked TCP transfer (a quarter MiB: steady work for the rings, light on the nested lab). */
export const STREAM_BYTES = 256 * 1024;
export const BURST_LINES = 100;
/** L2's receive buffer for every guest's bursts. */
const RECV_BUFFER = 8 << 20;
/** Seconds between two transfers, and between two bursts, of one guest. */
export const PERIOD_S = 3;
/** The guest's copy of what it sends, made once per start (so a transfer starts one process: nc). */
const COPY = '/tmp/vbsoak-stream';
/** The file both L2 and the L3 initramfs hold (scripts/lab/setup copies the host's busybox into it). */
const SOURCE = '/bin/busybox';

/**
 * One line, printable, for `Guest.exec`: (re)starts the guest's TCP and UDP senders to `host`, and
 * its syslogd forwarding to L2. `token` names this start, so bursts of an earlier boot never mix in.
 */
export function guestCommand(host: string, token: string): string {
  return (
    `syslogd -R ${host}:${UDP_PORT}; head -c ${STREAM_BYTES} ${SOURCE} > ${COPY}; ` +
    `(while :; do nc ${host} ${TCP_PORT} < ${COPY}; sleep ${PERIOD_S}; done) >/dev/null 2>&1 & ` +
    `(i=0; while :; do i=$((i+1)); j=0; while [ $j -lt ${BURST_LINES} ]; do j=$((j+1)); ` +
    `echo "${token} $i $j"; done | logger -t vbsoak; sleep ${PERIOD_S}; done) >/dev/null 2>&1 &`
  );
}

export type TransferOutcome = 'ok' | 'corrupt' | 'cut';

export interface Transfer {
  guest: string;
  /** ms since the epoch: accepted, and completed or closed */
  start: number;
  end: number;
  bytes: number;
  outcome: TransferOutcome;
}

/**
 * One transfer's bytes as they arrive: `ok` when exactly STREAM_BYTES came and their hash is the
 * expected one, `corrupt` when the hash differs or more came, `cut` when the connection closed early.
 */
export class TransferCheck {
  private readonly hash = createHash('sha256');
  bytes = 0;
  outcome: TransferOutcome | null = null;

  constructor(
    private readonly expected: string,
    private readonly length = STREAM_BYTES,
  ) {}

  /** Feeds a chunk; returns the outcome once decided. */
  add(chunk: Buffer): TransferOutcome | null {
    if (this.outcome) {
      if (chunk.length) this.outcome = 'corrupt';
      return this.outcome;
    }
    const take = Math.min(chunk.length, this.length - this.bytes);
    this.hash.update(chunk.subarray(0, take));
    this.bytes += chunk.length;
    if (this.bytes > this.length) this.outcome = 'corrupt';
    else if (this.bytes === this.length) this.outcome = this.hash.digest('hex') === this.expected ? 'ok' : 'corrupt';
    return this.outcome;
  }

  closed(): TransferOutcome {
    this.outcome ??= 'cut';
    return this.outcome;
  }
}

/** What one guest's UDP bursts brought: per token, per burst, the set of line numbers seen. */
export class BurstLedger {
  private readonly bursts = new Map<string, Map<number, Set<number>>>();
  /** when the first line of each burst arrived (ms since the epoch), per token */
  private readonly arrived = new Map<string, Map<number, number>>();
  /** the newest token seen (a guest's current senders) */
  token: string | null = null;

  /** Reads one syslog datagram (`<13>... vbsoak: TOKEN BURST LINE`); false if it is not one of ours. */
  add(datagram: string, at = Date.now()): boolean {
    const m = /vbsoak: (\S+) (\d+) (\d+)\s*$/.exec(datagram);
    if (!m) return false;
    const [, token, b, l] = m;
    let byBurst = this.bursts.get(token);
    if (!byBurst) {
      byBurst = new Map();
      this.bursts.set(token, byBurst);
      this.token = token;
    }
    let lines = byBurst.get(Number(b));
    if (!lines) {
      lines = new Set();
      byBurst.set(Number(b), lines);
      let times = this.arrived.get(token);
      if (!times) {
        times = new Map();
        this.arrived.set(token, times);
      }
      times.set(Number(b), at);
    }
    lines.add(Number(l));
    return true;
  }

  /** Lines received, every token and burst. */
  lines(): number {
    let n = 0;
    for (const byBurst of this.bursts.values()) for (const l of byBurst.values()) n += l.size;
    return n;
  }

  /** The newest burst seen of a token (0 if none). */
  newest(token: string | null = this.token): number {
    const byBurst = token === null ? undefined : this.bursts.get(token);
    return byBurst ? Math.max(0, ...byBurst.keys()) : 0;
  }

  /**
   * The first burst of a token that cannot be checked yet: the newest while its lines may still be
   * arriving, the one after it once all of the newest's lines came (a whole burst is known at once;
   * one missing lines is known lossy only when a later burst starts). Bursts below it can be checked.
   */
  checkableBefore(token: string | null = this.token): number {
    const newest = this.newest(token);
    const lines = token === null ? undefined : this.bursts.get(token)?.get(newest);
    return lines?.size === BURST_LINES ? newest + 1 : newest;
  }

  /** The lowest burst of a token whose first line arrived at or after `t`, if any has yet. */
  firstArrivedAfter(token: string, t: number): number | undefined {
    let best: number | undefined;
    for (const [b, at] of this.arrived.get(token) ?? []) if (at >= t && (best === undefined || b < best)) best = b;
    return best;
  }

  /**
   * Lines missing from the bursts strictly between `after` and `before` of a token (the two ends
   * may be partly sent when the window opens or closes): a burst not seen at all misses all of its
   * lines. Returns the lines expected and those missing.
   */
  check(token: string, after: number, before: number): { sent: number; lost: number } {
    const byBurst = this.bursts.get(token) ?? new Map<number, Set<number>>();
    let sent = 0;
    let lost = 0;
    for (let b = after + 1; b < before; b++) {
      sent += BURST_LINES;
      lost += BURST_LINES - (byBurst.get(b)?.size ?? 0);
    }
    return { sent, lost };
  }
}

/** L2's side of every guest's traffic: one TCP server, one UDP socket, each guest known by its address. */
export class TrafficSink {
  readonly transfers: Transfer[] = [];
  readonly bursts = new Map<string, BurstLedger>();
  /** when each guest's senders were last started (a stream counts as stalled only after that) */
  readonly startedAt = new Map<string, number>();

  private constructor(
    private readonly server: net.Server,
    private readonly udp: dgram.Socket,
    private readonly byAddress: ReadonlyMap<string, string>,
  ) {}

  /** Listens on every address of L2; `byAddress` maps a guest's IP to its name. */
  static async open(byAddress: ReadonlyMap<string, string>): Promise<TrafficSink> {
    const expected = createHash('sha256').update(fs.readFileSync(SOURCE).subarray(0, STREAM_BYTES)).digest('hex');
    const server = net.createServer();
    const udp = dgram.createSocket('udp4');
    const sink = new TrafficSink(server, udp, byAddress);
    for (const name of byAddress.values()) sink.bursts.set(name, new BurstLedger());
    server.on('connection', (s) => sink.accept(s, expected));
    udp.on('message', (m, from) => {
      const name = byAddress.get(from.address);
      if (name) sink.bursts.get(name)?.add(m.toString());
    });
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(TCP_PORT, '0.0.0.0', () => res());
    });
    await new Promise<void>((res, rej) => {
      udp.once('error', rej);
      udp.bind(UDP_PORT, '0.0.0.0', () => res());
    });
    // Bursts of every guest may meet a busy soak process (TCG is slow): a receive buffer big enough
    // that L2's own socket never drops what the datapath delivered (the kernel caps it at rmem_max,
    // raised in L2 only: scripts/lab/run sets LAB=1 there).
    if (process.env.LAB === '1')
      try {
        fs.writeFileSync('/proc/sys/net/core/rmem_max', String(RECV_BUFFER));
      } catch {
        /* not root: the default cap stands */
      }
    udp.setRecvBufferSize(RECV_BUFFER);
    return sink;
  }

  private accept(s: net.Socket, expected: string): void {
    const guest = this.byAddress.get(s.remoteAddress?.replace(/^::ffff:/, '') ?? '') ?? '?';
    const check = new TransferCheck(expected);
    const start = Date.now();
    let recorded = false;
    const record = (outcome: TransferOutcome): void => {
      if (recorded) return;
      recorded = true;
      this.transfers.push({ guest, start, end: Date.now(), bytes: check.bytes, outcome });
    };
    s.on('data', (d: Buffer) => {
      const o = check.add(d);
      if (o) {
        record(o);
        s.destroy();
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => record(check.closed()));
  }

  /** Transfers of `guest` (every guest if undefined) that ended in [from, to]. */
  ended(from: number, to: number, guest?: string): Transfer[] {
    return this.transfers.filter((t) => t.end >= from && t.end <= to && (guest === undefined || t.guest === guest));
  }

  /** ms since `guest`'s stream last completed a checked transfer or was (re)started, whichever is later. */
  quietFor(guest: string, now = Date.now()): number {
    let last = this.startedAt.get(guest) ?? now;
    for (const t of this.transfers) if (t.guest === guest && t.outcome === 'ok') last = Math.max(last, t.end);
    return now - last;
  }

  close(): void {
    this.server.close();
    this.udp.close();
  }
}
