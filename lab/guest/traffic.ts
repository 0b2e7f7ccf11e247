/**
 * The traffic tools of a lab guest, the same under every VMM: ping and iperf3 run in the guest over its
 * serial console (lab/guest.ts exec), the iperf3 server here in L2. Every byte the guest prints costs
 * VM exits through two levels of virtualization, so the guest prints little: ping only the RTT list,
 * iperf3 nothing (the L2 server's JSON is read instead).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { ExecResult } from './options.js';

/** What the traffic tools need of a guest: its shell, its peer, and an error with its console tail. */
export interface GuestShell {
  readonly name: string;
  readonly peer: string;
  exec(cmd: string, opts?: { timeoutMs?: number }): Promise<ExecResult>;
  fail(message: string): Error;
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
 * (docs/performance.md). One owner: every lab test's "traffic passes" uses this.
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

/** ping from the guest (busybox ping); the guest prints only the RTT list and the summary. */
export async function ping(
  g: GuestShell,
  peer: string = g.peer,
  opts: { count?: number; intervalS?: number; timeoutS?: number } = {},
): Promise<PingResult> {
  if (!/^[0-9A-Fa-f.:]+$/.test(peer)) throw new Error(`guest ${g.name}: bad ping address ${peer}`);
  const count = opts.count ?? 5;
  const flags = [`-c ${count}`];
  if (opts.intervalS !== undefined) flags.push(`-i ${Number(opts.intervalS)}`);
  flags.push(`-W ${Math.max(1, Math.round(opts.timeoutS ?? 5))}`);
  const cmd =
    `ping ${flags.join(' ')} ${peer} >/tmp/ping.out 2>&1; r=$?; ` +
    `echo "RTT $(sed -n 's/.* time=\\([0-9.]*\\) ms$/\\1/p' /tmp/ping.out | tr '\\n' ' ')"; ` +
    `grep 'packets transmitted' /tmp/ping.out || head -n 3 /tmp/ping.out; exit $r`;
  const budget = (count * (opts.intervalS ?? 1) + (opts.timeoutS ?? 5) + 30) * 1000;
  const { output } = await g.exec(cmd, { timeoutMs: budget });
  const stats = /(\d+) packets transmitted, (\d+) packets received/.exec(output);
  const rtt = /^RTT ?(.*)$/m.exec(output);
  if (!stats || !rtt) throw g.fail(`cannot parse ping output:\n${output}`);
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
export async function untilReply(g: GuestShell, peer: string = g.peer, tries = 30): Promise<number> {
  if (!/^[0-9A-Fa-f.:]+$/.test(peer)) throw new Error(`guest ${g.name}: bad ping address ${peer}`);
  const t0 = Date.now();
  const r = await g.exec(
    `i=0; while [ $i -lt ${tries} ]; do ping -c 1 -W 1 ${peer} >/dev/null 2>&1 && exit 0; i=$((i+1)); done; exit 1`,
    { timeoutMs: (tries * 2 + 30) * 1000 },
  );
  if (r.rc !== 0) throw g.fail(`no ping reply from ${peer} in ${tries} tries`);
  return Date.now() - t0;
}

/**
 * iperf3 between the guest (client, output discarded) and a one-off server in L2 on
 * the peer address (JSON to a file). Default guest -> host; reverse = host -> guest.
 */
export async function iperf3(g: GuestShell, o: IperfOptions): Promise<IperfResult> {
  const port = o.port ?? 5201;
  const json = `/tmp/vbguest-iperf3-${g.name}-${process.pid}-${Date.now()}.json`;
  const peer = o.peer ?? g.peer;
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
    const res = await g.exec(cmd, { timeoutMs: (o.seconds + 60) * 1000 });
    if (res.rc !== 0) throw g.fail(`iperf3 client failed (rc ${res.rc}): ${res.output}`);
    const timer = setTimeout(() => server.kill('SIGKILL'), 20_000);
    await serverDone;
    clearTimeout(timer);
    let j: IperfJson;
    try {
      j = JSON.parse(fs.readFileSync(json, 'utf8')) as IperfJson;
    } catch (e) {
      throw g.fail(`cannot read the iperf3 server's JSON ${json}: ${(e as Error).message}`);
    }
    if (j.error) throw g.fail(`iperf3 server: ${j.error}`);
    // bytes: what the server received (guest -> host) or sent (reverse)
    const end = j.end ?? {};
    const s = o.reverse ? end.sum_sent : end.sum_received;
    if (!s) throw g.fail(`iperf3 server JSON has no end.${o.reverse ? 'sum_sent' : 'sum_received'}`);
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
