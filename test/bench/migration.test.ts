/** Live migration as a part of the bench: per-run figures from hops, the table's rows, the run notes. */
import { expect } from 'chai';
import type { MigrationHop } from '../../lab/migration-hops.js';
import {
  CONFIGS,
  METRICS,
  migrates,
  migrationMetrics,
  type RawResults,
  type Run,
  unitText,
} from '../../scripts/bench/metrics.js';
import { markdownTable, runNotes, samePairs, summarize, svgChart, textTable } from '../../scripts/bench/report.js';

const hop = (n: number, downtimeMs: number, lostPings: number, firstReplyMs: number | null): MigrationHop => ({
  hop: n,
  downtimeMs,
  totalMs: 1800,
  lostPings,
  sentPings: 60,
  firstReplyMs,
});

function run(
  config: Run['config'],
  round: number,
  part: Run['part'],
  metrics: Run['metrics'],
  more: Partial<Run> = {},
) {
  return { round, config, part, startedAt: '2026-12-01T00:00:00Z', seconds: 5, bootRetries: 0, metrics, ...more };
}

/** Two rounds: each configuration's datapath run and migration run, as separate runs of the round. */
const raw: RawResults = {
  meta: { date: '2026-12-01' },
  runs: [
    run('bridge', 1, 'datapath', { tcpTxMbps: 900 }),
    run('vhost-on', 1, 'datapath', { tcpTxMbps: 1000 }),
    run('bridge', 1, 'migration', { migrationDowntimeMs: 80, migrationLostPings: 5, migrationFirstReplyMs: 100 }),
    run('vhost-on', 1, 'migration', { migrationDowntimeMs: 40, migrationLostPings: 2.5, migrationFirstReplyMs: 50 }),
    run('bridge', 2, 'datapath', { tcpTxMbps: 950 }),
    run('vhost-on', 2, 'datapath', { tcpTxMbps: 950 }),
    run('bridge', 2, 'migration', { migrationDowntimeMs: 60, migrationLostPings: 4, migrationFirstReplyMs: 90 }),
    // The datapath run of round 2 stands; only the migration run failed.
    run('vhost-on', 2, 'migration', {}, { error: 'migration failed: no reason given' }),
  ],
};

describe('bench: live migration', () => {
  it('migrates the guest in the bridge and tap,vhost=on configurations only', () => {
    expect(CONFIGS.filter(migrates)).to.deep.equal(['bridge', 'vhost-on']);
  });

  it("a run's figures are the medians of its hops; a hop without a first reply has no first-reply figure", () => {
    expect(migrationMetrics([hop(1, 30, 4, 60), hop(2, 90, 5, null)])).to.deep.equal({
      migrationDowntimeMs: 60,
      migrationLostPings: 4.5,
      migrationFirstReplyMs: 60,
    });
    expect(migrationMetrics([hop(1, 31, 3, 55), hop(2, 91, 6, 171), hop(3, 78, 5, 99)])).to.deep.equal({
      migrationDowntimeMs: 78,
      migrationLostPings: 5,
      migrationFirstReplyMs: 99,
    });
    expect(migrationMetrics([hop(1, 30, 9, null)])).to.not.have.property('migrationFirstReplyMs');
    expect(migrationMetrics([])).to.deep.equal({});
  });

  it("same-round pairs take each figure from whichever of the round's runs measured it", () => {
    expect(samePairs(raw, 'tcpTxMbps').map((p) => p.round)).to.deep.equal([1, 2]);
    // Round 2's vhost-on migration failed: that round has no downtime pair, its throughput pair stands.
    expect(samePairs(raw, 'migrationDowntimeMs')).to.deep.equal([{ round: 1, bridge: 80, vhostOn: 40 }]);
  });

  it('summary: medians [min-max] per configuration, the ratio with its interval when two rounds pair', () => {
    const s = summarize(raw);
    expect(s.stats.migrationDowntimeMs?.bridge).to.deep.equal({ median: 70, min: 60, max: 80, n: 2 });
    expect(s.stats.migrationDowntimeMs?.['vhost-on']).to.deep.equal({ median: 40, min: 40, max: 40, n: 1 });
    expect(s.ratio.migrationDowntimeMs).to.equal(70 / 40);
    expect(s.interval.migrationDowntimeMs, 'one pair is no interval').to.equal(undefined);
    expect(s.interval.tcpTxMbps?.n).to.equal(2);
    expect(s.failedRuns).to.deep.equal([
      { round: 2, config: 'vhost-on', part: 'migration', text: 'migration failed: no reason given' },
    ]);
  });

  it('the table has a row per migration figure, labelled with unit, aside and direction', () => {
    const md = markdownTable(summarize(raw));
    expect(md).to.include(
      "| migration downtime (ms, QEMU's figure, lower is better) | 70.0 [60.0-80.0] | 40.0 [40.0-40.0] | 1.75 |",
    );
    expect(md).to.include(
      '| pings lost across a migration (50 ms interval, lower is better) | 4.50 [4.00-5.00] | 2.50 [2.50-2.50] ' +
        '| 1.80 |',
    );
    expect(md).to.include('| first reply after the destination resumed (ms, lower is better) | 95.0 [90.0-100] |');
    const text = textTable(summarize(raw));
    expect(text).to.include("migration downtime (ms, QEMU's figure, lower is better)");
    // With two pairs the ratio is an interval, as for every other row.
    const both: RawResults = {
      meta: {},
      runs: [
        ...raw.runs.filter((r) => !r.error),
        run('vhost-on', 2, 'migration', { migrationDowntimeMs: 30, migrationLostPings: 2, migrationFirstReplyMs: 60 }),
      ],
    };
    const s = summarize(both);
    expect(s.interval.migrationDowntimeMs?.n).to.equal(2);
    expect(markdownTable(s)).to.match(
      /\| migration downtime \(ms, QEMU's figure, lower is better\) \|.*\| 2\.00 \[2\.00-2\.00\] \|/,
    );
  });

  it('a count has no unit: the label says only what it is', () => {
    const lost = METRICS.find((m) => m.key === 'migrationLostPings')!;
    expect(unitText(lost)).to.equal('50 ms interval');
    expect(unitText(METRICS.find((m) => m.key === 'tcpTxMbps')!)).to.equal('Mbit/s');
    const svg = svgChart(summarize(raw), 't', 's');
    expect(svg).to.include('>pings lost across a migration (50 ms interval)</text>');
    expect(svg).to.include('>TCP guest -&gt; host (Mbit/s)</text>');
  });

  it('run notes: runs left out and runs redone after a guest fault, named by round, configuration and part', () => {
    const redone: RawResults = {
      meta: {},
      runs: [
        ...raw.runs,
        run('bridge', 3, 'migration', { migrationDowntimeMs: 70 }, { retriedAfter: 'bench-mig-bridge-3-1: panic' }),
        run('vhost-on', 3, 'datapath', { tcpTxMbps: 900 }, { retriedAfter: 'bench-vhost-on-3: stall' }),
      ],
    };
    expect(runNotes(summarize(redone))).to.deep.equal([
      'Failed runs (left out): round 2 vhost-on migration: migration failed: no reason given',
      'Redone after a guest fault of the lab (first attempt void): round 3 bridge migration: ' +
        'bench-mig-bridge-3-1: panic; round 3 vhost-on: bench-vhost-on-3: stall',
    ]);
    expect(runNotes(summarize({ meta: {}, runs: raw.runs.filter((r) => !r.error) }))).to.deep.equal([]);
  });
});
