/**
 * The soak's random choices come from one seeded generator (mulberry32: 32-bit state, good enough to
 * pick events), so a run is reproducible from the seed it prints (docs/soak.md).
 */
export class Rng {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  /** A number in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('pick from nothing');
    return xs[this.int(xs.length)];
  }

  /** One of `xs`, each as likely as its weight. */
  weighted<T>(xs: readonly { value: T; weight: number }[]): T {
    const total = xs.reduce((a, x) => a + x.weight, 0);
    let r = this.next() * total;
    for (const x of xs) {
      r -= x.weight;
      if (r < 0) return x.value;
    }
    return xs[xs.length - 1].value;
  }
}

/** A seed for a run that was not given one. */
export function freshSeed(): number {
  return Math.floor(Math.random() * 2 ** 31);
}
