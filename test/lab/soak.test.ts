/**
 * The soak's own logic, without the lab: the seeded generator, reading `ping -D -O`, the ledger of
 * lost replies, the RSS-growth rule and the report (docs/soak.md).
 */
import { expect } from 'chai';
import { parsePingLine, PingLedger } from '../../lab/soak/pinger.js';
import {
  byKind,
  coverageFailures,
  failures,
  joinParts,
  markdownTable,
  partSeconds,
  soakedSeconds,
  svgChart,
} from '../../lab/soak/report.js';
import { Rng } from '../../lab/soak/rng.js';
import {
  EVENT_KINDS,
  type EventKind,
  type EventRecord,
  expectedPace,
  rssGrowth,
  type Sample,
  type SoakResult,
} from '../../lab/soak/soak.js';

describe('soak: the seeded fault generator', () => {
  it('repeats its choices for the same seed and differs for another', () => {
    const run = (seed: number) => {
      const r = new Rng(seed);
      return Array.from({ length: 50 }, () => r.int(10));
    };
    expect(run(42)).to.deep.equal(run(42));
    expect(run(42)).to.not.deep.equal(run(43));
    expect(run(7).every((n) => n >= 0 && n < 10)).to.equal(true);
  });

  it('picks by weight', () => {
    const r = new Rng(1);
    const n = { a: 0, b: 0 };
    for (let i = 0; i < 4000; i++)
      n[
        r.weighted([
          { value: 'a' as const, weight: 3 },
          { value: 'b' as const, weight: 1 },
        ])
      ]++;
    expect(n.a / 4000).to.be.within(0.7, 0.8);
  });
});

describe('soak: reading ping -D -O', () => {
  it('reads replies and unanswered requests with their time', () => {
    expect(parsePingLine('[1796071410.096777] 64 bytes from 10.0.40.2: icmp_seq=7 ttl=64 time=0.173 ms')).to.deep.equal(
      { kind: 'reply', seq: 7, at: 1796071410097 },
    );
    expect(parsePingLine('[1796071411.5] no answer yet for icmp_seq=9')).to.deep.equal({
      kind: 'unanswered',
      seq: 9,
      at: 1796071411500,
    });
    expect(parsePingLine('[1796071411.5] From 10.0.40.1 icmp_seq=10 Destination Host Unreachable')?.kind).to.equal(
      'unanswered',
    );
    expect(parsePingLine('PING 10.0.40.2 (10.0.40.2) 56(84) bytes of data.')).to.equal(null);
  });

  it('counts a request lost only if no reply ever came, even a late one', () => {
    const l = new PingLedger();
    l.add({ kind: 'reply', seq: 1, at: 1000 });
    l.add({ kind: 'unanswered', seq: 2, at: 1050 });
    l.add({ kind: 'unanswered', seq: 3, at: 1100 });
    l.add({ kind: 'reply', seq: 2, at: 1120 }); // late, not lost
    l.add({ kind: 'reply', seq: 4, at: 1150 });
    expect(l.lost(1000, 1200)).to.deep.equal([3]);
    expect(l.sent(1000, 1200)).to.equal(4);
    expect(l.lost(1120, 1200)).to.deep.equal([]);
    expect(l.firstReplyAfter(1101)).to.equal(1120);
    expect(l.firstReplyAfter(1200)).to.equal(undefined);
  });

  it("settles a window at once when all its requests were answered, else after ping's reply timeout", () => {
    const l = new PingLedger();
    l.add({ kind: 'reply', seq: 1, at: 1000 });
    l.add({ kind: 'reply', seq: 2, at: 1050 });
    expect(l.settled(1000, 1100)).to.equal(false); // ping has not reported past the window yet
    l.add({ kind: 'reply', seq: 3, at: 1101 });
    expect(l.settled(1000, 1100)).to.equal(true); // all answered: nothing to wait for
    l.add({ kind: 'unanswered', seq: 4, at: 1150 });
    l.add({ kind: 'reply', seq: 5, at: 1210 });
    expect(l.settled(1000, 1200)).to.equal(false); // seq 4 may still be answered late
    l.add({ kind: 'reply', seq: 4, at: 1300 });
    expect(l.settled(1000, 1200)).to.equal(true); // it was
    l.add({ kind: 'unanswered', seq: 6, at: 1400 });
    l.add({ kind: 'reply', seq: 7, at: 1450 });
    expect(l.settled(1000, 1420, 1000)).to.equal(false);
    l.add({ kind: 'reply', seq: 8, at: 2420 });
    expect(l.settled(1000, 1420, 1000)).to.equal(true); // given up on seq 6 after the wait
    expect(l.lost(1000, 1420)).to.deep.equal([6]);
  });
});

describe("soak: the pace of today's lab", () => {
  // Seconds per event, start to checked plus the gap: the boots and the daemon's restart at their worst
  // in L2 under TCG (docs/soak.md, "Pace"), every other kind at 3 s.
  const heavy = { 'daemon-kill': 31, 'qemu-kill': 64, 'guest-reboot': 60 };
  const secondsWith = (light: number): Record<EventKind, number> =>
    ({ ...Object.fromEntries(EVENT_KINDS.map((k) => [k, light])), ...heavy }) as Record<EventKind, number>;

  it('fits 300 events in 30 minutes with every kind, each boot and restart at least 5 times', () => {
    const p = expectedPace(secondsWith(3), 30 * 60);
    expect(p.perEvent).to.be.at.most(6);
    expect(p.events).to.be.at.least(300);
    for (const k of EVENT_KINDS) expect(p.byKind[k], k).to.be.at.least(5);
  });

  it('would not fit with every kind weighted alike, nor with the other kinds at 5 s', () => {
    const alike = Object.fromEntries(EVENT_KINDS.map((k) => [k, 1])) as Record<EventKind, number>;
    expect(expectedPace(secondsWith(3), 30 * 60, alike).perEvent).to.be.above(6);
    expect(expectedPace(secondsWith(5), 30 * 60).perEvent).to.be.above(6);
  });
});

const ev = (o: Partial<EventRecord>): EventRecord => ({
  i: 1,
  kind: 'ctl-reset',
  target: 'g0',
  t: 0,
  recoveryMs: null,
  bystanderLost: 0,
  bystanderSent: 0,
  bystanderUdpLost: 0,
  bystanderUdpSent: 0,
  transfers: 0,
  transfersBad: 0,
  guestFault: null,
  failures: [],
  fds: 30,
  rssKiB: 60_000,
  ...o,
});

describe('soak: the report', () => {
  it('groups events by kind with the worst recovery and the bystanders', () => {
    const rows = byKind([
      ev({ recoveryMs: 1200, bystanderSent: 40, bystanderUdpSent: 200, transfers: 3 }),
      ev({ i: 2, recoveryMs: 3400, bystanderSent: 40, bystanderLost: 1, failures: ['x lost 1'] }),
      ev({ i: 3, kind: 'sighup', target: 'daemon', bystanderSent: 10 }),
    ]);
    expect(
      rows.map((r) => [r.kind, r.count, r.worstRecoveryMs, r.bystanderLost, r.bystanderSent, r.failed]),
    ).to.deep.equal([
      ['ctl-reset', 2, 3400, 1, 80, 1],
      ['sighup', 1, null, 0, 10, 0],
    ]);
    expect(markdownTable(rows)).to.contain('| ctl-reset | 2 | 3.4 | 1 / 80 | 0 / 200 | 3 / 0 | 0 | 1 |');
  });

  it("keeps a recovery slowed by the lab's guest fault out of the bridge's worst, and shows it apart", () => {
    const fault = 'g0: the guest reset itself';
    const rows = byKind([
      ev({ recoveryMs: 2400 }),
      ev({ i: 2, recoveryMs: 12_800, guestFault: fault }),
      ev({ i: 3, kind: 'link-flap', recoveryMs: 900, guestFault: fault }),
      ev({ i: 4, kind: 'link-flap', recoveryMs: 1500 }),
      ev({ i: 5, kind: 'qemu-kill', recoveryMs: 30_000, guestFault: fault }),
    ]);
    expect(rows.map((r) => [r.kind, r.worstRecoveryMs, r.faultRecoveryMs, r.guestFaults])).to.deep.equal([
      ['ctl-reset', 2400, 12_800, 1],
      ['link-flap', 1500, 900, 1],
      ['qemu-kill', null, 30_000, 1],
    ]);
    const md = markdownTable(rows);
    expect(md).to.contain('| ctl-reset | 2 | 2.4 (12.8 in a lab fault) |');
    expect(md).to.contain('| link-flap | 2 | 1.5 |');
    expect(md).to.contain('| qemu-kill | 1 | - (30.0 in a lab fault) |');
  });

  it('lists every failure with its event, and charts fds and RSS', () => {
    const samples: Sample[] = [
      { t: 0, pid: 9, fds: 30, rssKiB: 60_000 },
      { t: 60_000, pid: 9, fds: 31, rssKiB: 61_000 },
    ];
    const r: SoakResult = {
      seed: 5,
      kernel: '6.1.0',
      seconds: 60,
      guests: 1,
      onePort: false,
      baselineFds: 30,
      events: [ev({ i: 4, failures: ['daemon fd count 31, expected 30 for its ports'] })],
      samples,
      failures: ['daemon RSS grew'],
    };
    expect(failures(r)).to.deep.equal([
      '#4 ctl-reset g0: daemon fd count 31, expected 30 for its ports',
      'daemon RSS grew',
    ]);
    const svg = svgChart(samples, 'soak <seed 5>');
    expect(svg).to.contain('soak &lt;seed 5>');
    expect(svg.match(/<polyline/g)).to.have.length(2);
  });

  it("calls RSS growth of more than 8 MiB between the first and last third of a daemon process's run a failure", () => {
    const flat = Array.from({ length: 30 }, (_, i) => ({ t: i, pid: 9, fds: 30, rssKiB: 60_000 + (i % 3) * 1000 }));
    expect(rssGrowth(flat)).to.deep.equal([]);
    const leak = Array.from({ length: 30 }, (_, i) => ({ t: i, pid: 9, fds: 30, rssKiB: 60_000 + i * 1000 }));
    expect(rssGrowth(leak)[0]).to.match(/^daemon pid 9: RSS grew from 69000 KiB to 89000 KiB over its 30 events/);
  });

  it('judges RSS per daemon process: a restart is not growth, a leak within either process is', () => {
    // A restarted daemon (pid 10) runs higher than the first one ended: two flat runs, no failure.
    const restarted = [
      ...Array.from({ length: 12 }, (_, i) => ({ t: i, pid: 9, fds: 30, rssKiB: 60_000 })),
      ...Array.from({ length: 12 }, (_, i) => ({ t: 12 + i, pid: 10, fds: 30, rssKiB: 75_000 })),
    ];
    expect(rssGrowth(restarted)).to.deep.equal([]);
    // The same numbers as one process would be growth.
    expect(rssGrowth(restarted.map((s) => ({ ...s, pid: 9 })))).to.have.length(1);
    // The second process leaks: named by its pid; a run too short to judge is skipped.
    const leaks = [
      ...Array.from({ length: 12 }, (_, i) => ({ t: i, pid: 9, fds: 30, rssKiB: 60_000 })),
      ...Array.from({ length: 12 }, (_, i) => ({ t: 12 + i, pid: 10, fds: 30, rssKiB: 60_000 + i * 2000 })),
      ...Array.from({ length: 4 }, (_, i) => ({ t: 24 + i, pid: 11, fds: 30, rssKiB: 60_000 + i * 9000 })),
    ];
    expect(rssGrowth(leaks).map((f) => f.split(':')[0])).to.deep.equal(['daemon pid 10']);
  });
});

describe('soak: parts over several L2 boots', () => {
  const part = (seed: number, n: number, fails: string[] = []): SoakResult => ({
    seed,
    kernel: '6.1.0',
    seconds: 600,
    guests: 3,
    onePort: true,
    baselineFds: 65,
    events: Array.from({ length: n }, (_, k) => ev({ i: k + 1, t: 20_000 + k * 5000 })),
    samples: Array.from({ length: n }, (_, k) => ({ t: 24_000 + k * 5000, pid: seed, fds: 65, rssKiB: 70_000 })),
    failures: fails,
  });

  it('counts a cut part from its first event to its last sample, a whole part by its asked-for time', () => {
    expect(partSeconds({ result: part(1, 10), cut: 'L2 died 1.2 min in' })).to.equal(49);
    expect(partSeconds({ result: part(1, 10), cut: null })).to.equal(600);
    expect(partSeconds({ result: part(1, 0), cut: 'L2 died 0.5 min in' })).to.equal(0);
    // a part that ended without a result (its lab run stopped) is counted by what it soaked, not the
    // time it asked for (else a report says "30.0 min" for 114 events in ~11 min)
    expect(soakedSeconds(part(1, 10))).to.equal(49);
  });

  it('joins parts: events numbered on, times continued, failures kept, cuts listed per part', () => {
    const j = joinParts([
      { result: part(7, 3, ['daemon pid 7: RSS grew']), cut: 'L2 died 0.6 min in' },
      { result: part(8, 2), cut: null },
    ]);
    expect(j.events.map((e) => e.i)).to.deep.equal([1, 2, 3, 4, 5]);
    // the second part's times follow the first part's last sample (34 s)
    expect(j.events.map((e) => e.t)).to.deep.equal([20_000, 25_000, 30_000, 54_000, 59_000]);
    expect(j.samples.map((s) => s.pid)).to.deep.equal([7, 7, 7, 8, 8]);
    expect(j.failures).to.deep.equal(['daemon pid 7: RSS grew']);
    expect(j.parts).to.deep.equal([
      { seed: 7, events: 3, seconds: 14, cut: 'L2 died 0.6 min in' },
      { seed: 8, events: 2, seconds: 600, cut: null },
    ]);
    expect(j.seconds).to.equal(614);
    expect(j.seed).to.equal(7);
  });

  it("sums the parts' UDP lines (a part cut by L2's death has no count)", () => {
    const j = joinParts([
      { result: part(7, 3), cut: 'L2 died 0.6 min in' },
      { result: { ...part(8, 2), udpLines: 300 }, cut: null },
      { result: { ...part(9, 2), udpLines: 50 }, cut: null },
    ]);
    expect(j.udpLines).to.equal(350);
  });
});

describe('soak: a clean run must have had something to check', () => {
  const MS = { run: 500, recovery: 0, bystanders: 50, state: 200, fds: 200 };
  const kinds: EventKind[] = ['ctl-reset', 'sighup', 'garbage', 'vanish', 'link-flap'];
  const run = (n: number, transfersEach: number, udpLines: number | undefined): SoakResult => ({
    seed: 1,
    kernel: '6.12',
    seconds: 180,
    guests: 1,
    onePort: false,
    baselineFds: 40,
    udpLines,
    events: Array.from({ length: n }, (_, k) =>
      ev({ i: k + 1, kind: kinds[k % kinds.length], transfers: transfersEach }),
    ),
    samples: [],
    failures: [],
  });

  it('passes a run with events, transfers, UDP lines and five kinds', () => {
    expect(coverageFailures(run(12, 1, 900), undefined)).to.deep.equal([]);
  });

  it('asks for fewer transfers when guests were booting or the daemon starting (no traffic meanwhile)', () => {
    // a 180 s run in which two qemu-kills, a reboot and a daemon-kill take 118 s and 9 transfers end
    const booted = run(12, 0, 900);
    booted.events[0] = { ...booted.events[0], kind: 'qemu-kill', transfers: 3, ms: { ...MS, run: 32_286 } };
    booted.events[1] = { ...booted.events[1], kind: 'qemu-kill', transfers: 3, ms: { ...MS, run: 36_490 } };
    booted.events[2] = { ...booted.events[2], kind: 'guest-reboot', transfers: 3, ms: { ...MS, run: 25_042 } };
    booted.events[3] = { ...booted.events[3], kind: 'daemon-kill', transfers: 0, ms: { ...MS, run: 24_000 } };
    expect(coverageFailures(booted, undefined)).to.deep.equal([]);
    // the same 9 transfers with nothing booting: too few (a quarter of the rate of one per ~4 s)
    const calm = { ...booted, events: booted.events.map((e) => ({ ...e, kind: 'ctl-reset' as const, ms: MS })) };
    expect(coverageFailures(calm, ['ctl-reset'])[0]).to.match(/^too little checked: 9 TCP transfers \(at least 12/);
  });

  it('names each shortfall: events, TCP transfers, UDP lines, kinds (fewer kinds if fewer asked for)', () => {
    expect(coverageFailures(run(9, 1, 900), undefined)).to.deep.equal([
      'too little checked: 9 events (at least 10)',
      'too little checked: 9 TCP transfers (at least 12: one per 15 s of the 180 s no guest was booting or ' +
        'the daemon starting)',
    ]);
    expect(coverageFailures(run(12, 1, undefined), undefined)).to.deep.equal([
      'too little checked: no UDP line received over the run',
    ]);
    const two = { ...run(12, 1, 900), events: run(12, 1, 900).events.map((e) => ({ ...e, kind: 'sighup' as const })) };
    expect(coverageFailures(two, undefined)).to.deep.equal(['too little checked: 1 kinds of event (at least 5)']);
    expect(coverageFailures(two, ['sighup'])).to.deep.equal([]);
    expect(coverageFailures(two, ['sighup', 'garbage'])).to.deep.equal([
      'too little checked: 1 kinds of event (at least 2)',
    ]);
  });
});
