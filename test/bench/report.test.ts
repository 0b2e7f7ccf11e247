import { expect } from 'chai';
import { quantile, type RawResults, type Run } from '../../scripts/bench/metrics.js';
import {
  halfWidth,
  markdownTable,
  preciseEnough,
  precisionNote,
  replaceSection,
  summarize,
  svgChart,
  textTable,
  verdict,
} from '../../scripts/bench/report.js';

function run(config: Run['config'], round: number, metrics: Run['metrics'], error?: string): Run {
  return {
    round,
    config,
    startedAt: '2026-11-23T00:00:00Z',
    seconds: 8,
    bootRetries: 0,
    metrics,
    ...(error ? { error } : {}),
  };
}

const raw: RawResults = {
  meta: { date: '2026-11-23' },
  runs: [
    run('bridge', 1, { tcpTxMbps: 900, tcpRxMbps: 500, rttP50Ms: 3, cpuS: 0.1 }),
    run('vhost-on', 1, { tcpTxMbps: 1000, tcpRxMbps: 500, rttP50Ms: 2 }),
    run('bridge', 2, { tcpTxMbps: 1000, tcpRxMbps: 600, rttP50Ms: 2 }),
    run('vhost-on', 2, { tcpTxMbps: 800, tcpRxMbps: 400, rttP50Ms: 2.5 }),
    run('bridge', 3, { tcpTxMbps: 950, tcpRxMbps: 550, rttP50Ms: 2.5 }),
    run('vhost-on', 3, { tcpTxMbps: 900, tcpRxMbps: 450, rttP50Ms: 2 }),
    run('dpdk', 1, {}, 'dpdk-testpmd exited'),
  ],
};

describe('bench report', () => {
  it('quantile interpolates between ranks', () => {
    expect(quantile([1, 2, 3], 0.5)).to.equal(2);
    expect(quantile([1, 2, 3, 4], 0.5)).to.equal(2.5);
    expect(quantile([0, 10], 0.99)).to.be.closeTo(9.9, 1e-9);
    expect(quantile([], 0.5)).to.be.NaN;
  });

  it('medians, min-max and the bridge / vhost=on ratio, failed runs left out and listed', () => {
    const s = summarize(raw);
    expect(s.configs).to.deep.equal(['bridge', 'vhost-on', 'dpdk']);
    expect(s.stats.tcpTxMbps?.bridge).to.deep.equal({ median: 950, min: 900, max: 1000, n: 3 });
    expect(s.stats.tcpTxMbps?.['vhost-on']).to.deep.equal({ median: 900, min: 800, max: 1000, n: 3 });
    expect(s.ratio.tcpTxMbps).to.be.closeTo(950 / 900, 1e-9);
    expect(s.stats.tcpTxMbps?.dpdk).to.equal(undefined);
    expect(s.stats.cpuS?.bridge?.n).to.equal(1);
    expect(s.failedRuns).to.deep.equal([{ round: 1, config: 'dpdk', part: 'datapath', text: 'dpdk-testpmd exited' }]);
  });

  it('verdict: with fewer than 5 rounds every figure is undecided, whatever its interval', () => {
    const s = summarize(raw);
    // TCP guest -> host: rounds 0.9, 1.25, 1.056; geometric mean 1.06.
    expect(s.interval.tcpTxMbps?.estimate).to.be.closeTo(Math.cbrt(0.9 * 1.25 * (950 / 900)), 1e-9);
    const v = verdict(s);
    expect(v.lines).to.have.length(3);
    expect(v.lines[0]).to.equal(
      'UNDECIDED TCP guest -> host: bridge / vhost=on = 1.06 [0.90-1.25] (95% CI, 3 rounds; want >= 0.95); too ' +
        'few rounds to tell (fewer than 5)',
    );
    // host -> guest: 1.0, 1.5, 1.22: the whole interval is above 0.95, but 3 rounds decide nothing.
    expect(v.lines[1]).to.match(/^UNDECIDED TCP host -> guest: bridge \/ vhost=on = 1.22 \[1.00-1.50\]/);
    expect(v.ok).to.equal(false);
  });

  it('verdict: from 5 rounds, meets inside the band, misses outside, undecided across; says which differ', () => {
    const rounds = [
      { tx: 0.97, rx: 0.8, p50: 1.0 },
      { tx: 0.99, rx: 0.82, p50: 1.1 },
      { tx: 1.0, rx: 0.85, p50: 0.9 },
      { tx: 0.98, rx: 0.79, p50: 1.05 },
      { tx: 1.01, rx: 0.81, p50: 0.95 },
    ];
    const five: RawResults = {
      meta: {},
      runs: rounds.flatMap((r, i) => [
        run('bridge', i + 1, { tcpTxMbps: 1000 * r.tx, tcpRxMbps: 500 * r.rx, rttP50Ms: 2 * r.p50 }),
        run('vhost-on', i + 1, { tcpTxMbps: 1000, tcpRxMbps: 500, rttP50Ms: 2 }),
      ]),
    };
    const v = verdict(summarize(five));
    expect(v.lines[0]).to.match(
      /^meets TCP guest -> host: .*\(95% CI, 5 rounds; want >= 0.95\); no significant difference$/,
    );
    expect(v.lines[1]).to.match(/^MISSES TCP host -> guest: bridge \/ vhost=on = 0.81 .*; bridge lower, significant$/);
    expect(v.lines[2]).to.match(/^UNDECIDED ping RTT p50: .*; no significant difference$/);
    expect(v.ok).to.equal(false);
  });

  it('verdict: one round is no interval, and says so', () => {
    const one: RawResults = { meta: {}, runs: raw.runs.filter((r) => r.round === 1) };
    const v = verdict(summarize(one));
    expect(v.lines[0]).to.equal(
      'UNDECIDED TCP guest -> host: fewer than 2 rounds with both configurations (no interval)',
    );
    expect(v.ok).to.equal(false);
  });

  it('other pairs (busy polling, 2 queue pairs): each bridge-X against its vhost-on-X, with intervals', () => {
    const poll: RawResults = {
      meta: {},
      runs: [
        ...raw.runs,
        run('bridge-poll', 1, { tcpTxMbps: 990, rttP50Ms: 1.0 }),
        run('vhost-on-poll', 1, { tcpTxMbps: 1000, rttP50Ms: 1.0 }),
        run('bridge-poll', 2, { tcpTxMbps: 495, rttP50Ms: 2.2 }),
        run('vhost-on-poll', 2, { tcpTxMbps: 500, rttP50Ms: 2.0 }),
        run('bridge-mq2', 1, { tcpTxMbps: 900 }),
      ],
    };
    const s = summarize(poll);
    expect(Object.keys(s.otherPairs), 'a pair needs both sides').to.deep.equal(['busy poll 50 us: bridge / vhost=on']);
    const ci = s.otherPairs['busy poll 50 us: bridge / vhost=on'].tcpTxMbps!;
    expect(ci.estimate).to.be.closeTo(0.99, 1e-9);
    expect(ci.n).to.equal(2);
    expect(s.interval.tcpTxMbps?.n, 'the main pair is unchanged').to.equal(3);
    const md = markdownTable(s);
    expect(md).to.include('| figure: ratio [95% CI] | busy poll 50 us: bridge / vhost=on |');
    expect(md).to.include('| TCP guest -> host | 0.99 [0.99-0.99] |');
    expect(verdict(s).lines).to.include(
      'busy poll 50 us: bridge / vhost=on, TCP guest -> host: 0.99 [0.99-0.99] (95% CI, 2 rounds); too few ' +
        'rounds to tell (fewer than 5)',
    );
  });

  it('per-packet counts are figures like the others: a row each, the bridge / vhost=on ratio with its interval', () => {
    const counted: RawResults = {
      meta: {},
      runs: [
        run('bridge', 1, { switchesPerPkt: 1.5, l3ExitsPerPkt: 1.2 }),
        run('vhost-on', 1, { switchesPerPkt: 2.0, l3ExitsPerPkt: 1.2 }),
        run('bridge', 2, { switchesPerPkt: 1.6, l3ExitsPerPkt: 1.1 }),
        run('vhost-on', 2, { switchesPerPkt: 2.0, l3ExitsPerPkt: 1.1 }),
      ],
    };
    const s = summarize(counted);
    expect(s.interval.switchesPerPkt?.estimate).to.be.closeTo(Math.sqrt(0.75 * 0.8), 1e-9);
    expect(s.interval.l3ExitsPerPkt?.estimate).to.be.closeTo(1, 1e-9);
    const md = markdownTable(s);
    expect(md).to.include('| context switches per packet (UDP 64 B, L2-wide, lower is better) | 1.55 [1.50-1.60] |');
    expect(md).to.include('| L3 exits per packet (UDP 64 B, kvm_exit, lower is better) |');
  });

  it('the stopping rule: enough rounds once both throughput intervals are within +-w, never below 5 rounds', () => {
    // Rounds whose ratios are 1 +- a spread: steady ones give a narrow interval, wild ones a wide one.
    const rounds = (spread: number, n: number, meta: RawResults['meta'] = {}): RawResults => ({
      meta: { rounds: n, roundsCap: 40, precision: 0.05, ...meta },
      runs: Array.from({ length: n }, (_, i) => {
        const r = 1 + (i % 2 ? spread : -spread);
        return [
          run('bridge', i + 1, { tcpTxMbps: 100 * r, tcpRxMbps: 200 * r }),
          run('vhost-on', i + 1, { tcpTxMbps: 100, tcpRxMbps: 200 }),
        ];
      }).flat(),
    });
    // Four steady rounds decide nothing (MIN_PAIRS), however narrow.
    expect(halfWidth(rounds(0.01, 4), 'tcpTxMbps')).to.equal(null);
    expect(preciseEnough(rounds(0.01, 4), 0.05)).to.equal(false);
    expect(halfWidth(rounds(0.01, 6), 'tcpTxMbps')).to.be.lessThan(0.02);
    expect(preciseEnough(rounds(0.01, 6), 0.05)).to.equal(true);
    // A +-30% spread over 6 rounds is far from +-0.05; the same spread over many rounds narrows.
    const wide = halfWidth(rounds(0.3, 6), 'tcpTxMbps')!;
    expect(wide).to.be.greaterThan(0.1);
    expect(preciseEnough(rounds(0.3, 6), 0.05)).to.equal(false);
    expect(halfWidth(rounds(0.3, 200), 'tcpTxMbps')!).to.be.lessThan(wide / 4);
    // Both figures must be narrow: a wild host -> guest keeps it going.
    const mixed = rounds(0.01, 8);
    for (const r of mixed.runs) if (r.config === 'bridge') r.metrics.tcpRxMbps = r.round % 2 ? 300 : 100;
    expect(preciseEnough(mixed, 0.05)).to.equal(false);
    // What the report says of it.
    expect(precisionNote(rounds(0.01, 6))).to.match(
      new RegExp(
        '^Rounds: 6 rounds, stopped when both throughput intervals were within \\+-0.05 ' +
          '\\(TCP guest -> host \\+-0.0\\d\\d, TCP host -> guest \\+-0.0\\d\\d\\)\\.$',
      ),
    );
    expect(precisionNote(rounds(0.3, 6))).to.match(
      /^Rounds: 6 rounds of at most 40; the throughput intervals are NOT within \+-0.05 \(TCP guest -> host \+-0\.\d+/,
    );
    expect(precisionNote(rounds(0.3, 6, { precision: 0 }))).to.equal(null);
    expect(precisionNote(raw)).to.equal(null); // a run from before the rule
  });

  it('tables name every configuration and figure', () => {
    const s = summarize(raw);
    const t = textTable(s);
    expect(t.split('\n')[0]).to.include('vhost-bridge').and.include('tap,vhost=on').and.include('DPDK testpmd');
    expect(t).to.include('950 [900-1000]');
    const md = markdownTable(s);
    expect(md.split('\n')).to.have.length(2 + 4); // header, rule, 4 figures with data
    expect(md).to.include(
      '| TCP guest -> host (Mbit/s, higher is better) | 950 [900-1000] | 900 [800-1000] | - | 1.06 [0.90-1.25] |',
    );
  });

  it('SVG: one bar with a whisker per configuration and figure that has data, well nested', () => {
    const svg = svgChart(summarize(raw), 'title <&>', 'sub');
    expect(svg.startsWith('<svg')).to.equal(true);
    expect(svg).to.include('title &lt;&amp;&gt;');
    // tx, rx, rtt for 2 configs + cpu for the bridge
    expect((svg.match(/class="bar"/g) ?? []).length).to.equal(3 * 2 + 1);
    expect((svg.match(/class="whisker"/g) ?? []).length).to.equal(7);
    expect((svg.match(/<g /g) ?? []).length).to.equal((svg.match(/<\/g>/g) ?? []).length);
  });

  it('replaces the README section between its markers only', () => {
    const readme = 'a\n<!-- bench:start -->\nold\n<!-- bench:end -->\nz\n';
    expect(replaceSection(readme, 'new')).to.equal('a\n<!-- bench:start -->\nnew\n<!-- bench:end -->\nz\n');
    expect(() => replaceSection('no markers', 'x')).to.throw('bench:start');
    const two = `${readme}<!-- bench-6.12:start -->\nold\n<!-- bench-6.12:end -->\n`;
    expect(replaceSection(two, 'b', 'bench-6.12')).to.equal(
      `${readme}<!-- bench-6.12:start -->\nb\n<!-- bench-6.12:end -->\n`,
    );
  });
});
