/**
 * The checks after every event, the same for every fault kind (docs/soak.md, "What is checked"): the
 * target passes traffic again within RECOVERY_LIMIT_MS, the bystanders lost no ping reply, no UDP
 * line and no TCP transfer, no stream stalled, a fault of the nested lab's guests is named and
 * absorbed (not charged to the bridge), no port is left half set up, and the daemon's fd count is
 * back at its level for these ports.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { type PortRow, request } from '../../src/daemon/ctl.js';
import type { PortReport } from '../../src/daemon/report.js';
import type { EventRecord } from './soak.js';
import { type GuestRef, type Outcome, RECOVERY_LIMIT_MS, type SoakWorld, sleep } from './world.js';

/**
 * A guest's TCP stream that completed no checked transfer for this long (since its last start) has
 * stalled. After an outage near RECOVERY_LIMIT_MS, TCP's doubling retransmission timeout (RFC 6298)
 * may leave a healthy connection quiet for as long again, so the limit is well above twice it.
 */
export const STREAM_STALL_MS = 60_000;

export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** A port's front-end is connected and its rings 0 and 1 attached. */
const ringsOf = (st: PortReport): boolean => {
  const attached = st.device?.rings.filter((r) => r.attached).map((r) => r.index) ?? [];
  return st.device?.frontEnd === true && attached.includes(0) && attached.includes(1);
};

/** The checks of a run, with what they carry from one event to the next. */
export class EventChecks {
  /** senders' tokens whose stalled stream was looked into (once each: what it shows does not change) */
  private readonly stallShown = new Set<string>();

  constructor(
    private readonly w: SoakWorld,
    /** the daemon's fd count for its ports, once set up */
    private readonly baselineFds: number,
    /** transfers that ended before this were checked by an earlier event (ms since the epoch) */
    private transfersFrom: number,
  ) {}

  /**
   * Checks the event that started at `start` (its outcome null if the fault itself threw) and fills
   * `rec` with what was found; `took` is the event's lap timer (ms since its previous call).
   */
  async after(rec: EventRecord, start: number, outcome: Outcome | null, took: () => number): Promise<void> {
    const { w } = this;
    const ms = { run: took(), recovery: 0, bystanders: 0, state: 0, fds: 0 };
    // Recovery: every affected guest answers a ping sent after the fault is over.
    if (outcome?.affected.length) {
      let worst = 0;
      for (const r of outcome.affected) {
        try {
          const at = await r.pinger.replyAfter(outcome.after, 2 * RECOVERY_LIMIT_MS);
          worst = Math.max(worst, at - outcome.from);
        } catch (e) {
          rec.failures.push((e as Error).message);
          worst = Number.POSITIVE_INFINITY;
        }
      }
      rec.recoveryMs = Number.isFinite(worst) ? worst : null;
      if (worst > RECOVERY_LIMIT_MS && Number.isFinite(worst))
        rec.failures.push(`${outcome.target}: traffic again only after ${worst} ms`);
    }
    ms.recovery = took();
    const affected = new Set(outcome?.affected.map((r) => r.name) ?? []);
    await this.bystanders(rec, start, Date.now(), affected);
    this.transfers(rec, start, affected);
    for (const r of w.refs) {
      const quiet = w.sink.quietFor(r.name);
      if (quiet <= STREAM_STALL_MS) continue;
      rec.failures.push(`${r.name}: its TCP stream completed nothing for ${quiet} ms`);
      // (a guest the lab faulted during the event is booted again below: nothing of it to look into)
      if (!this.stallShown.has(r.token) && r.guest.faults === r.faultsSeen) {
        this.stallShown.add(r.token);
        w.log(await stallDiagnosis(r));
      }
    }
    ms.bystanders = took();
    // Faults of the nested lab's guests: name them, bring the guest back, do not charge the bridge.
    await this.absorbFaults(rec);
    // No port stuck half set up: a state seen once is checked again 3 s later (a port may be in the
    // middle of a reconnect); only what persists fails, what passed is kept in the event's detail.
    took(); // a lab fault's recovery above is in the event's total, in none of its parts
    const state = await this.portState();
    if (state.length) {
      await sleep(3000);
      const again = await this.portState();
      rec.failures.push(...again);
      const passed = state.filter((x) => !again.includes(x));
      if (passed.length)
        rec.detail = `${rec.detail ? `${rec.detail}; ` : ''}seen once, gone 3 s later: ${passed.join('; ')}`;
    }
    // A guest the lab faulted during the check (a reset there stops its rings): absorbed the same way.
    await this.absorbFaults(rec);
    ms.state = took();
    rec.fds = await this.settledFds();
    rec.rssKiB = rssKiB(w.daemon.pid);
    ms.fds = took();
    rec.ms = ms;
    if (rec.fds !== this.baselineFds)
      rec.failures.push(`daemon fd count ${rec.fds}, expected ${this.baselineFds} for its ports`);
  }

  /**
   * Bystanders: every other guest's requests sent during the event were all answered, every UDP burst
   * it sent since its last check arrived whole (bursts come every few seconds, so they are checked from
   * one event to the next while the guest is a bystander; those of a target's fault are forgiven), and
   * no TCP transfer of its was cut.
   */
  private async bystanders(rec: EventRecord, start: number, end: number, affected: Set<string>): Promise<void> {
    const { refs, sink } = this.w;
    await Promise.all(refs.filter((r) => !affected.has(r.name)).map((r) => r.pinger.settled(start, end)));
    for (const r of refs) {
      const bursts = sink.bursts.get(r.name);
      const newest = bursts?.newest(r.token) ?? 0;
      if (affected.has(r.name)) {
        // A burst sent during its own fault may never arrive, so the newest seen says nothing of
        // it: forgive every burst up to the first one to arrive after the fault, that one too
        // (its first lines may have waited out the fault in the guest's queue).
        r.udpChecked = Math.max(r.udpChecked, newest);
        r.udpForgiveBefore = Date.now();
        continue;
      }
      const lost = r.pinger.ledger.lost(start, end);
      rec.bystanderSent += r.pinger.ledger.sent(start, end);
      if (bursts && r.udpForgiveBefore !== null) {
        const b = bursts.firstArrivedAfter(r.token, r.udpForgiveBefore);
        if (b !== undefined) {
          r.udpChecked = Math.max(r.udpChecked, b);
          r.udpForgiveBefore = null;
        }
      }
      const upTo = bursts?.checkableBefore(r.token) ?? 0;
      const udp =
        bursts && r.udpForgiveBefore === null && upTo - 1 > r.udpChecked
          ? bursts.check(r.token, r.udpChecked, upTo)
          : { sent: 0, lost: 0 };
      r.udpChecked = Math.max(r.udpChecked, upTo - 1);
      rec.bystanderUdpSent += udp.sent;
      const cut = sink.ended(start, end, r.name).filter((t) => t.outcome === 'cut');
      if (udp.lost) rec.failures.push(`${r.name} (bystander) lost ${udp.lost} of ${udp.sent} UDP lines`);
      if (cut.length)
        rec.failures.push(`${r.name} (bystander): ${cut.length} TCP transfer(s) cut (${cut[0].bytes} bytes in)`);
      if (lost.length || udp.lost || cut.length) {
        // A stalled guest answers nothing: ask it once, so that the harness can tell a lab fault.
        await r.guest.exec('true', { timeoutMs: 15_000 }).catch(() => undefined);
        if (r.guest.faults === r.faultsSeen) {
          rec.bystanderLost += lost.length;
          rec.bystanderUdpLost += udp.lost;
          if (lost.length)
            rec.failures.push(
              `${r.name} (bystander) lost ${lost.length} replies (icmp_seq ${lost.slice(0, 5).join(',')})`,
            );
        }
      }
    }
  }

  /**
   * Every guest's checked transfers, each once: those that ended since the previous event's check (in
   * the gap between events too), none corrupt. Cut or corrupt counts against the event only inside
   * its own window, for guests it did not target.
   */
  private transfers(rec: EventRecord, start: number, affected: Set<string>): void {
    const checked = Date.now();
    const done = this.w.sink.ended(this.transfersFrom, checked);
    this.transfersFrom = checked + 1;
    rec.transfers = done.length;
    rec.transfersBad = done.filter((t) => t.outcome !== 'ok' && t.end >= start && !affected.has(t.guest)).length;
    for (const t of done.filter((x) => x.outcome === 'corrupt'))
      rec.failures.push(`${t.guest}: a TCP transfer arrived corrupt (${t.bytes} bytes, checksum differs)`);
  }

  /** A guest the lab faulted since its last check: named in the record, booted again, its failures dropped. */
  private async absorbFaults(rec: EventRecord): Promise<void> {
    for (const r of this.w.refs) {
      if (r.guest.faults === r.faultsSeen) continue;
      rec.guestFault = `${rec.guestFault ? `${rec.guestFault}; ` : ''}${r.name}: ${r.guest.lastFault}`;
      rec.failures = rec.failures.filter((f) => !f.startsWith(r.name) && !f.includes(`${r.name}:`));
      const failure = await this.w.revive(r);
      if (failure) rec.failures.push(failure);
      r.faultsSeen = r.guest.faults;
    }
  }

  /** Ports not running, or whose front-end's rings are not attached; the one-port bridge gone or half set up. */
  private async portState(): Promise<string[]> {
    const { w } = this;
    const out: string[] = [];
    try {
      // One control connection for the list and every status (the daemon answers them in order).
      const guests = w.daemonRefs().map((r) => r.port as string);
      const spares = [...w.synths.keys()];
      const [ports, ...reports] = await request(w.daemon.control, [
        { method: 'ports' },
        ...[...guests, ...spares].map((port) => ({ method: 'status', params: { port } })),
      ]);
      for (const p of ports as PortRow[]) if (p.state !== 'running') out.push(`port ${p.name} is ${p.state}`);
      (reports as PortReport[]).forEach((st, k) => {
        if (ringsOf(st)) return;
        out.push(
          k < guests.length
            ? `port ${guests[k]}: guest's rings not attached (half set up)`
            : `port ${spares[k - guests.length]}: synthetic front-end's rings not attached`,
        );
      });
    } catch (e) {
      out.push(`the daemon does not answer: ${(e as Error).message}`);
    }
    const { bridge } = w;
    if (bridge && !bridge.running) out.push('the one-port bridge exited');
    else if (bridge && bridge.attachedRings().join() !== '0,1')
      out.push(`one-port bridge: rings ${bridge.attachedRings().join()} attached`);
    return out;
  }

  /** The fd count once the daemon has closed what the last requests left (a control connection). */
  private async settledFds(): Promise<number> {
    const { pid } = this.w.daemon;
    let n = fdCount(pid);
    for (let k = 0; k < 10 && n !== this.baselineFds; k++) {
      await sleep(200);
      n = fdCount(pid);
    }
    return n;
  }
}

/**
 * What a stalled stream looks like from both ends, for the log (docs/soak.md "Results so far": a
 * stream can complete nothing for minutes after its guest's lab reset while pings are answered): the
 * guest's processes and TCP sockets, and L2's sockets to that guest.
 */
async function stallDiagnosis(r: GuestRef): Promise<string> {
  const inGuest = await r.guest
    .exec('ps; cat /proc/net/tcp; ls -l /tmp/vbsoak-stream', { timeoutMs: 15_000 })
    .then((x) => x.output)
    .catch((e: Error) => `(guest: ${e.message.split('\n')[0]})`);
  const ss = spawnSync('ss', ['-tnoi', 'dst', r.guest.ip], { encoding: 'utf8', timeout: 5000 });
  return (
    `${r.name}: its TCP stream stalled (token ${r.token}); in the guest:\n${inGuest}\n` +
    `L2's sockets to ${r.guest.ip} (ss -tnoi):\n${ss.stdout || ss.stderr || ss.error?.message}`
  );
}
