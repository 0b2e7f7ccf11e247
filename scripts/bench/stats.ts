/**
 * Statistics that decide (docs/backends.md, "The benchmark"): for a figure, the bridge / vhost=on
 * ratio from same-round pairs (both configurations ran in the same round of the interleaved
 * schedule, so they shared the lab's state), with a 95% percentile-bootstrap confidence interval.
 *
 * The ratio estimate is the geometric mean of the per-round ratios (the mean of their logarithms,
 * so 0.9 and 1/0.9 balance); the bootstrap resamples the rounds with replacement, which keeps each
 * round's pair together. Pure functions, deterministic for a seed.
 */

/** A seeded uniform [0, 1) generator (mulberry32): the same seed gives the same intervals. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One round's pair: the bridge's value and vhost=on's for the same figure. */
export interface Pair {
  round: number;
  bridge: number;
  vhostOn: number;
}

/**
 * Rounds below which an interval decides nothing. A percentile bootstrap over n rounds has n^n
 * resamples; with 2 rounds its 95% interval is the range of the two ratios, with 3 nearly so (each
 * extreme round repeated is 1 resample in 27, above the 2.5% tail), far narrower than the truth. From
 * 5 rounds (3125 resamples) the tails are no longer single rounds.
 */
export const MIN_PAIRS = 5;

/** The ratio with its interval. */
export interface RatioInterval {
  /** Geometric mean of the per-round ratios. */
  estimate: number;
  low: number;
  high: number;
  /** Rounds that had both values. */
  n: number;
  /**
   * 1 inside the interval: no significant difference; else which way the bridge differs; with fewer than
   * {@link MIN_PAIRS} rounds, too few to tell.
   */
  difference: 'none' | 'bridge higher' | 'bridge lower' | 'too few rounds';
}

export interface BootstrapOptions {
  /** Resamples (default 10000). */
  iterations?: number;
  /** Confidence level (default 0.95). */
  level?: number;
  /** Seed of the resampling (default 1). */
  seed?: number;
}

/**
 * The bridge / vhost=on ratio over same-round pairs with a percentile-bootstrap interval, or null
 * with fewer than 2 pairs (one pair says nothing about the spread). Pairs with a value <= 0 are
 * left out (a ratio of logs needs both positive).
 */
export function pairedRatio(pairs: readonly Pair[], o: BootstrapOptions = {}): RatioInterval | null {
  const logs = pairs.filter((p) => p.bridge > 0 && p.vhostOn > 0).map((p) => Math.log(p.bridge / p.vhostOn));
  const n = logs.length;
  if (n < 2) return null;
  const iterations = o.iterations ?? 10_000;
  const level = o.level ?? 0.95;
  const rng = seededRandom(o.seed ?? 1);
  const means = new Float64Array(iterations);
  for (let k = 0; k < iterations; k++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += logs[Math.floor(rng() * n)];
    means[k] = sum / n;
  }
  means.sort();
  const at = (q: number): number => {
    const pos = (iterations - 1) * q;
    const lo = Math.floor(pos);
    return means[lo] + (means[Math.ceil(pos)] - means[lo]) * (pos - lo);
  };
  const tail = (1 - level) / 2;
  const low = Math.exp(at(tail));
  const high = Math.exp(at(1 - tail));
  const estimate = Math.exp(logs.reduce((a, b) => a + b, 0) / n);
  const difference = n < MIN_PAIRS ? 'too few rounds' : low > 1 ? 'bridge higher' : high < 1 ? 'bridge lower' : 'none';
  return { estimate, low, high, n, difference };
}

/** A goal for a ratio: at least `min` (throughput) or at most `max` (latency). */
export type GoalBand = { min: number } | { max: number };

/**
 * Whether an interval meets a goal: "meets" only if all of it lies inside the band, "misses" if
 * all of it lies outside, "undecided" if it straddles the bar or rests on fewer than
 * {@link MIN_PAIRS} rounds (more rounds would tell).
 */
export function decide(ci: RatioInterval, band: GoalBand): 'meets' | 'misses' | 'undecided' {
  if (ci.n < MIN_PAIRS) return 'undecided';
  const [inside, outside] =
    'min' in band ? [ci.low >= band.min, ci.high < band.min] : [ci.high <= band.max, ci.low > band.max];
  return inside ? 'meets' : outside ? 'misses' : 'undecided';
}

/** The band as the report writes it. */
export function describeBand(band: GoalBand): string {
  return 'min' in band ? `>= ${band.min}` : `<= ${band.max}`;
}
