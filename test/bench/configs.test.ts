/**
 * The bench's configurations and their pairs: what each name sets up (lab/configs.ts configFacts),
 * that every pair differs in the one thing it compares, and how the macvtap and zero-copy pairs
 * are reported (docs/backends.md, "The benchmark").
 */
import { expect } from 'chai';
import { type ConfigFacts, configFacts } from '../../lab/configs.js';
import {
  CONFIGS,
  DEFAULT_CONFIGS,
  METRICS,
  PAIRS,
  pairOf,
  type RawResults,
  type Run,
} from '../../scripts/bench/metrics.js';
import { markdownTable, summarize, verdict } from '../../scripts/bench/report.js';

const run = (config: Run['config'], round: number, metrics: Run['metrics']): Run => ({
  round,
  config,
  startedAt: '2026-12-01T00:00:00Z',
  seconds: 3,
  bootRetries: 0,
  metrics,
});

/** The facts in which two configurations differ. */
function differing(a: ConfigFacts, b: ConfigFacts): string[] {
  return (Object.keys(a) as (keyof ConfigFacts)[]).filter((k) => a[k] !== b[k]);
}

describe('bench configurations', () => {
  it('the macvtap pair: both on the macvtap, one through the bridge, one through QEMU with vhost-net', () => {
    expect(configFacts('bridge-macvtap')).to.deep.equal({
      datapath: 'bridge',
      vmm: 'qemu',
      vhost: false,
      queuePairs: 1,
      busyPollUs: 0,
      host: 'macvtap',
      zcopytx: null,
    });
    expect(configFacts('vhost-on-macvtap')).to.include({ datapath: 'vmm-tap', vhost: true, host: 'macvtap' });
  });

  it('the zero-copy pair: the bridge on a tap with experimental_zcopytx 1 / 0; no other run reloads vhost_net', () => {
    expect(configFacts('bridge-zc1')).to.include({ datapath: 'bridge', host: 'tap', zcopytx: 1 });
    expect(configFacts('bridge-zc0')).to.include({ datapath: 'bridge', host: 'tap', zcopytx: 0 });
    for (const c of CONFIGS.filter((c) => !c.startsWith('bridge-zc'))) expect(configFacts(c).zcopytx, c).to.equal(null);
  });

  it('the older names keep their facts', () => {
    expect(configFacts('vhost-off')).to.include({ datapath: 'vmm-tap', vhost: false, host: 'tap' });
    expect(configFacts('dpdk').datapath).to.equal('dpdk');
    expect(configFacts('bridge-mq2').queuePairs).to.equal(2);
    expect(configFacts('bridge', 3).queuePairs, 'the caller chooses for the others').to.equal(3);
    expect(configFacts('vhost-on-poll')).to.include({ vhost: true, busyPollUs: 50 });
  });

  it('every pair differs in exactly the one thing it compares', () => {
    const compared = PAIRS.map((p) => differing(configFacts(p.bridge), configFacts(p.reference)));
    expect(compared).to.deep.equal([
      ['datapath', 'vhost'], // bridge / vhost=on
      ['datapath', 'vhost'], // busy polling, both polled
      ['datapath', 'vhost'], // 2 queue pairs, both
      ['datapath', 'vhost'], // macvtap, both
      ['zcopytx'],
      ['datapath'], // cloud-hypervisor: bridge / its own virtio-net, both on a tap
    ]);
    // and the pair's shared setting is what its name says
    expect(configFacts('vhost-on-poll').busyPollUs).to.equal(50);
    expect(configFacts('vhost-on-mq2').queuePairs).to.equal(2);
  });

  it('each configuration is in at most one pair; every bridge-X has one; the pairs name known figures', () => {
    const members = PAIRS.flatMap((p) => [p.bridge, p.reference]);
    expect(new Set(members).size).to.equal(members.length);
    for (const c of CONFIGS.filter((c) => c.startsWith('bridge'))) expect(pairOf(c), c).to.not.equal(undefined);
    expect(pairOf('vhost-on-macvtap')?.bridge).to.equal('bridge-macvtap');
    expect(pairOf('dpdk')).to.equal(undefined);
    const keys = METRICS.map((m) => m.key);
    for (const p of PAIRS) for (const f of p.figures ?? []) expect(keys).to.include(f);
  });

  it('the default set leaves the macvtap and zero-copy configurations out (opt-in: docs/backends.md)', () => {
    expect(DEFAULT_CONFIGS).to.deep.equal(['bridge', 'vhost-on', 'vhost-off', 'dpdk']);
  });
});

describe('bench report: the macvtap and zero-copy pairs', () => {
  // 5 rounds; macvtap: bridge 0.9..1.1 of QEMU's; zero-copy: ~5% more throughput, ~20% less worker CPU.
  const rounds = [0.9, 1.0, 1.1, 0.95, 1.05];
  const raw: RawResults = {
    meta: {},
    runs: rounds.flatMap((r, i) => [
      run('bridge-macvtap', i + 1, { tcpTxMbps: 1000 * r, tcpRxMbps: 800, rttP50Ms: 2, workerCpuS: 1.5 }),
      run('vhost-on-macvtap', i + 1, { tcpTxMbps: 1000, tcpRxMbps: 800, rttP50Ms: 2, workerCpuS: 1.5 }),
      run('bridge-zc1', i + 1, { tcpTxMbps: 1050 + i, tcpRxMbps: 800, rttP50Ms: 2, workerCpuS: 0.8 }),
      run('bridge-zc0', i + 1, { tcpTxMbps: 1000, tcpRxMbps: 800, rttP50Ms: 2, workerCpuS: 1.0 }),
    ]),
  };
  const s = summarize(raw);

  it('both pairs get their intervals, by label', () => {
    expect(Object.keys(s.otherPairs)).to.deep.equal([
      'macvtap: bridge / vhost=on',
      'bridge, experimental_zcopytx: 1 / 0',
    ]);
    expect(s.otherPairs['macvtap: bridge / vhost=on'].tcpTxMbps?.n).to.equal(5);
    expect(s.otherPairs['bridge, experimental_zcopytx: 1 / 0'].workerCpuS?.estimate).to.be.closeTo(0.8, 1e-9);
    expect(s.stats.workerCpuS?.['bridge-zc0']?.median).to.equal(1.0);
  });

  it('the verdict names the decided figures for macvtap, and throughput and worker CPU for zero-copy', () => {
    const lines = verdict(s).lines.filter((l) => !/^(UNDECIDED|meets|MISSES) /.test(l));
    expect(lines.filter((l) => l.startsWith('macvtap: '))).to.have.length(3);
    const zc = lines.filter((l) => l.startsWith('bridge, experimental_zcopytx'));
    expect(zc).to.deep.equal([
      'bridge, experimental_zcopytx: 1 / 0, TCP guest -> host: 1.05 [1.05-1.05] (95% CI, 5 rounds); zero-copy ' +
        'higher, significant',
      'bridge, experimental_zcopytx: 1 / 0, vhost worker CPU in TCP guest -> host: 0.80 [0.80-0.80] (95% CI, ' +
        '5 rounds); zero-copy lower, significant',
    ]);
    expect(lines.find((l) => l.startsWith('macvtap: ') && l.includes('p50'))).to.match(/no significant difference$/);
  });

  it('the Markdown table has a column per pair and a row for the worker CPU', () => {
    const md = markdownTable(s);
    expect(md).to.include(
      '| figure: ratio [95% CI] | macvtap: bridge / vhost=on | bridge, experimental_zcopytx: 1 / 0 |',
    );
    expect(md).to.match(
      /\| vhost worker CPU in TCP guest -> host \| 1\.00 \[1\.00-1\.00\] \| 0\.80 \[0\.80-0\.80\] \|/,
    );
    expect(md.split('\n')[0]).to.include('bridge --macvtap').and.include('bridge, zcopytx=1');
  });
});
