/** The bench's deciding statistics (scripts/bench/stats.ts): deterministic for a seed, checked on known data. */
import { expect } from 'chai';
import { decide, type Pair, pairedRatio, seededRandom } from '../../scripts/bench/stats.js';

const pairs = (ratios: number[], base = 1000): Pair[] =>
  ratios.map((r, i) => ({ round: i + 1, bridge: base * r, vhostOn: base }));

describe('bench statistics', () => {
  it('seededRandom: the same seed gives the same sequence in [0, 1), another seed another', () => {
    const a = seededRandom(7);
    const b = seededRandom(7);
    const xs = Array.from({ length: 1000 }, () => a());
    expect(Array.from({ length: 1000 }, () => b())).to.deep.equal(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).to.equal(true);
    expect(seededRandom(8)()).to.not.equal(xs[0]);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(mean).to.be.closeTo(0.5, 0.05);
  });

  it('pairedRatio: identical ratios give a zero-width interval at that ratio', () => {
    const ci = pairedRatio(pairs([0.9, 0.9, 0.9, 0.9, 0.9]));
    expect(ci?.estimate).to.be.closeTo(0.9, 1e-12);
    expect(ci?.low).to.be.closeTo(0.9, 1e-12);
    expect(ci?.high).to.be.closeTo(0.9, 1e-12);
    expect(ci?.difference).to.equal('bridge lower');
  });

  it('pairedRatio: the geometric mean of per-round ratios; the pair, not the level, matters', () => {
    // Rounds at very different levels (the lab's noise between rounds) but the same ratio each time.
    const p: Pair[] = [
      { round: 1, bridge: 190, vhostOn: 200 },
      { round: 2, bridge: 665, vhostOn: 700 },
      { round: 3, bridge: 380, vhostOn: 400 },
    ];
    const ci = pairedRatio(p);
    expect(ci?.estimate).to.be.closeTo(0.95, 1e-12);
    expect(ci?.high).to.be.closeTo(0.95, 1e-12);
    expect(pairedRatio(pairs([0.8, 1.25]))?.estimate).to.be.closeTo(1, 1e-12);
  });

  it('pairedRatio: deterministic for a seed; the interval holds the estimate and lies within the data', () => {
    const p = pairs([0.92, 1.03, 0.97, 1.01, 0.95, 0.99, 1.02, 0.96]);
    const a = pairedRatio(p, { seed: 3 });
    expect(pairedRatio(p, { seed: 3 })).to.deep.equal(a);
    expect(a).to.not.equal(null);
    const ci = a!;
    expect(ci.low).to.be.below(ci.estimate);
    expect(ci.high).to.be.above(ci.estimate);
    expect(ci.low).to.be.at.least(0.92);
    expect(ci.high).to.be.at.most(1.03);
    expect(ci.difference, '1 is inside').to.equal('none');
    expect(ci.n).to.equal(8);
  });

  it('pairedRatio: a wider spread gives a wider interval; more rounds of the same spread a narrower one', () => {
    const width = (r: number[]) => {
      const ci = pairedRatio(pairs(r))!;
      return ci.high - ci.low;
    };
    const narrow = [0.98, 1.0, 1.02, 0.99, 1.01];
    const wide = [0.8, 1.0, 1.2, 0.9, 1.1];
    expect(width(wide)).to.be.above(width(narrow));
    expect(width([...wide, ...wide, ...wide, ...wide])).to.be.below(width(wide));
  });

  it('pairedRatio: null with fewer than 2 usable pairs (zero or negative values left out)', () => {
    expect(pairedRatio(pairs([1.0]))).to.equal(null);
    expect(pairedRatio([...pairs([1.0]), { round: 2, bridge: 0, vhostOn: 5 }])).to.equal(null);
    expect(pairedRatio([])).to.equal(null);
  });

  it('under 5 rounds: the interval is given, but no difference is claimed and no goal decided', () => {
    const ci = pairedRatio(pairs([0.8, 0.8, 0.81, 0.8]))!;
    expect(ci.high).to.be.below(0.95);
    expect(ci.difference).to.equal('too few rounds');
    expect(decide(ci, { min: 0.95 })).to.equal('undecided');
  });

  it('decide: meets only if the whole interval is inside the band; misses if all outside; else undecided', () => {
    const ci = (low: number, high: number) => ({
      estimate: (low + high) / 2,
      low,
      high,
      n: 5,
      difference: 'none' as const,
    });
    expect(decide(ci(0.96, 1.02), { min: 0.95 })).to.equal('meets');
    expect(decide(ci(0.95, 1.02), { min: 0.95 })).to.equal('meets');
    expect(decide(ci(0.93, 1.02), { min: 0.95 })).to.equal('undecided');
    expect(decide(ci(0.85, 0.94), { min: 0.95 })).to.equal('misses');
    expect(decide(ci(0.9, 1.05), { max: 1.05 })).to.equal('meets');
    expect(decide(ci(1.0, 1.1), { max: 1.05 })).to.equal('undecided');
    expect(decide(ci(1.06, 1.2), { max: 1.05 })).to.equal('misses');
  });
});
