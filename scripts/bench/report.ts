/**
 * Turns the benchmark's raw runs into medians, min-max, the bridge / vhost=on ratios with their
 * 95% bootstrap intervals over same-round pairs (stats.ts), a verdict that counts a figure as met
 * only when its whole interval is inside the goal band, a terminal table, a Markdown table and an
 * SVG chart (bars = medians, whiskers = min..max). Pure functions.
 */
import {
  CONFIG_LABELS,
  CONFIGS,
  METRICS,
  PAIRS,
  quantile,
  type BenchConfig,
  type MetricDef,
  type MetricKey,
  type RawResults,
  type Run,
  type RunPart,
  unitText,
} from './metrics.js';
import { decide, describeBand, type GoalBand, MIN_PAIRS, type Pair, pairedRatio, type RatioInterval } from './stats.js';

export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

export interface Summary {
  configs: BenchConfig[];
  stats: Partial<Record<MetricKey, Partial<Record<BenchConfig, Stat>>>>;
  /** bridge median / vhost-on median, per metric both have. */
  ratio: Partial<Record<MetricKey, number>>;
  /**
   * The bridge / vhost=on ratio over same-round pairs with its 95% bootstrap interval (stats.ts), per
   * metric with at least 2 such pairs.
   */
  interval: Partial<Record<MetricKey, RatioInterval>>;
  /** The same for the other pairs of PAIRS that ran (busy polling, 2 queue pairs), by their label. */
  otherPairs: Record<string, Partial<Record<MetricKey, RatioInterval>>>;
  /** Runs left out: their second attempt failed too, or their failure was not a guest fault of the lab. */
  failedRuns: RunNote[];
  /** Runs whose first attempt a guest fault of the lab voided; their figures are the second attempt's. */
  redoneRuns: RunNote[];
}

/** A run the report names: which, and what happened (the error, or the guest fault). */
export interface RunNote {
  round: number;
  config: BenchConfig;
  part: RunPart;
  text: string;
}

const note = (r: Run, text: string): RunNote => ({
  round: r.round,
  config: r.config,
  part: r.part ?? 'datapath',
  text,
});

export function summarize(raw: RawResults): Summary {
  const configs = CONFIGS.filter((c) => raw.runs.some((r) => r.config === c));
  const stats: Summary['stats'] = {};
  for (const m of METRICS) {
    for (const c of configs) {
      const vals = raw.runs
        .filter((r) => r.config === c && !r.error)
        .map((r) => r.metrics[m.key])
        .filter((v): v is number => typeof v === 'number' && Number.isFinite(v))
        .sort((a, b) => a - b);
      if (!vals.length) continue;
      stats[m.key] ??= {};
      stats[m.key]![c] = {
        median: quantile(vals, 0.5),
        min: vals[0],
        max: vals[vals.length - 1],
        n: vals.length,
      };
    }
  }
  const ratio: Summary['ratio'] = {};
  for (const m of METRICS) {
    const a = stats[m.key]?.bridge,
      b = stats[m.key]?.['vhost-on'];
    if (a && b && b.median > 0) ratio[m.key] = a.median / b.median;
  }
  const intervals = (pair: (typeof PAIRS)[number]): Partial<Record<MetricKey, RatioInterval>> => {
    const out: Partial<Record<MetricKey, RatioInterval>> = {};
    for (const m of METRICS) {
      const ci = pairedRatio(samePairs(raw, m.key, pair));
      if (ci) out[m.key] = ci;
    }
    return out;
  };
  const interval = intervals(PAIRS[0]);
  const otherPairs: Summary['otherPairs'] = {};
  for (const pair of PAIRS.slice(1)) {
    const cis = intervals(pair);
    if (Object.keys(cis).length) otherPairs[pair.label] = cis;
  }
  const failedRuns = raw.runs.filter((r) => r.error).map((r) => note(r, r.error!));
  const redoneRuns = raw.runs.filter((r) => r.retriedAfter).map((r) => note(r, r.retriedAfter!));
  return { configs, stats, ratio, interval, otherPairs, failedRuns, redoneRuns };
}

/**
 * The lines under the table that list the runs left out and the runs redone after a guest fault
 * (`round 2 bridge migration: ...`), or none.
 */
export function runNotes(s: Summary): string[] {
  const list = (notes: RunNote[]): string =>
    notes.map((n) => `round ${n.round} ${n.config}${n.part === 'datapath' ? '' : ` ${n.part}`}: ${n.text}`).join('; ');
  return [
    ...(s.failedRuns.length ? [`Failed runs (left out): ${list(s.failedRuns)}`] : []),
    ...(s.redoneRuns.length
      ? [`Redone after a guest fault of the lab (first attempt void): ${list(s.redoneRuns)}`]
      : []),
  ];
}

/**
 * The rounds in which both configurations of `pair` (default: bridge and vhost=on) measured `key`
 * in a run without an error (of whichever part measures it).
 */
export function samePairs(
  raw: RawResults,
  key: MetricKey,
  pair: { bridge: BenchConfig; reference: BenchConfig } = PAIRS[0],
): Pair[] {
  const value = (config: BenchConfig, round: number): number | undefined =>
    raw.runs
      .filter((r) => r.config === config && r.round === round && !r.error)
      .map((r) => r.metrics[key])
      .find((v): v is number => typeof v === 'number' && Number.isFinite(v));
  const rounds = [...new Set(raw.runs.map((r) => r.round))].sort((a, b) => a - b);
  const pairs: Pair[] = [];
  for (const round of rounds) {
    const bridge = value(pair.bridge, round);
    const vhostOn = value(pair.reference, round);
    if (bridge !== undefined && vhostOn !== undefined) pairs.push({ round, bridge, vhostOn });
  }
  return pairs;
}

/** The goal of each decided figure: throughput at least 0.95 of vhost=on both ways, p50 latency at most 1.05. */
export const GOALS: readonly { key: MetricKey; band: GoalBand }[] = [
  { key: 'tcpTxMbps', band: { min: 0.95 } },
  { key: 'tcpRxMbps', band: { min: 0.95 } },
  { key: 'rttP50Ms', band: { max: 1.05 } },
];

/**
 * The figures the bench's round count is chosen for: the throughput ratios, whose 95% interval the
 * bench goes on until it is at most +-`--precision` wide (docs/backends.md, "How many rounds?").
 */
export const PRECISION_KEYS: readonly MetricKey[] = ['tcpTxMbps', 'tcpRxMbps'];

/**
 * The bench's defaults (`npm run bench`, and its runner in the lab when started without them): rounds
 * until the throughput intervals are +-0.05 wide, at most 40; how many that takes in this lab, and how
 * long: docs/backends.md ("How many rounds?").
 */
export const DEFAULT_PRECISION = 0.05;
export const DEFAULT_ROUNDS = 40;

/** `--same-guest`: rounds per guest boot, the NICs' PCI order swapped at each boot (docs/backends.md,
 *  "The same guest on both datapaths"). */
export const SAME_GUEST_ROUNDS = 4;

/**
 * `--same-guest`'s most rounds when `--rounds` is not given: +-0.05 on both throughput figures takes some 130
 * rounds on the AMD EPYC lab host (docs/backends.md, "The same guest on both datapaths"), so 160 leaves room
 * for a noisier day.
 */
export const SAME_GUEST_DEFAULT_ROUNDS = 160;

/**
 * The pair whose intervals decide the round count: the first of PAIRS whose two configurations both
 * ran (bridge / vhost=on in a default run; cloud-hypervisor's pair in a run of only those two).
 */
function stoppingPair(raw: RawResults): (typeof PAIRS)[number] {
  const ran = new Set(raw.runs.map((r) => r.config));
  return PAIRS.find((p) => ran.has(p.bridge) && ran.has(p.reference)) ?? PAIRS[0];
}

/**
 * Half the width of `key`'s interval of the stopping pair ((high - low) / 2, the same bootstrap as the
 * report's), or null below {@link MIN_PAIRS} same-round pairs, where an interval decides nothing.
 */
export function halfWidth(raw: RawResults, key: MetricKey): number | null {
  const ci = pairedRatio(samePairs(raw, key, stoppingPair(raw)));
  return ci && ci.n >= MIN_PAIRS ? (ci.high - ci.low) / 2 : null;
}

/** Each {@link PRECISION_KEYS} figure's half-width, in that order (each a bootstrap: computed once). */
function precisionWidths(raw: RawResults): (number | null)[] {
  return PRECISION_KEYS.map((k) => halfWidth(raw, k));
}

const narrowEnough = (widths: readonly (number | null)[], within: number): boolean =>
  widths.every((w) => w !== null && w <= within);

/** Whether every {@link PRECISION_KEYS} interval is at most +-`within` wide: enough rounds have run. */
export function preciseEnough(raw: RawResults, within: number): boolean {
  return narrowEnough(precisionWidths(raw), within);
}

/**
 * The report's line on the round count: how many rounds ran and why the bench stopped (the
 * throughput intervals narrow enough, or the most rounds asked with how wide they still were), or
 * null for a run made without a precision (results files without one, or `--precision 0`).
 */
export function precisionNote(raw: RawResults): string | null {
  const within = Number(raw.meta.precision ?? 0);
  if (!(within > 0)) return null;
  const halves = precisionWidths(raw);
  const widths = PRECISION_KEYS.map(
    (k, i) => `${METRICS.find((m) => m.key === k)!.label} +-${halves[i] === null ? '?' : halves[i]!.toFixed(3)}`,
  ).join(', ');
  const rounds = `${raw.meta.rounds} rounds`;
  return narrowEnough(halves, within)
    ? `Rounds: ${rounds}, stopped when both throughput intervals were within +-${within} (${widths}).`
    : `Rounds: ${rounds} of at most ${raw.meta.roundsCap ?? raw.meta.rounds}; the throughput intervals are ` +
        `NOT within +-${within} (${widths}): more rounds would narrow them (docs/backends.md, "How many rounds?").`;
}

/** What the interval says about a difference between the two; `subject` names the ratio's numerator. */
function differenceText(ci: RatioInterval, subject = 'bridge'): string {
  if (ci.difference === 'too few rounds') return `too few rounds to tell (fewer than ${MIN_PAIRS})`;
  if (ci.difference === 'none') return 'no significant difference';
  return `${ci.difference.replace(/^bridge/, subject)}, significant`;
}

/** `0.97 [0.93-1.01]`: the estimate and its interval. */
function ciText(ci: RatioInterval): string {
  return `${ci.estimate.toFixed(2)} [${ci.low.toFixed(2)}-${ci.high.toFixed(2)}]`;
}

/**
 * The bar ({@link GOALS}), decided on the intervals: a figure "meets" only if its whole 95% interval
 * lies inside the band, "MISSES" if all of it lies outside, and is "UNDECIDED" if it straddles the
 * bar; each line also says whether the bridge differs from vhost=on significantly (1 outside the
 * interval) or not. `ok` only if every goal is met.
 */
export function verdict(s: Summary): { ok: boolean; lines: string[] } {
  const lines: string[] = [];
  let ok = true;
  for (const { key, band } of GOALS) {
    const def = METRICS.find((m) => m.key === key)!;
    const ci = s.interval[key];
    if (!ci) {
      ok = false;
      lines.push(`UNDECIDED ${def.label}: fewer than 2 rounds with both configurations (no interval)`);
      continue;
    }
    const d = decide(ci, band);
    ok &&= d === 'meets';
    const diff = differenceText(ci);
    lines.push(
      `${d === 'meets' ? 'meets' : d.toUpperCase()} ${def.label}: bridge / vhost=on = ${ciText(ci)} (95% CI, ` +
        `${ci.n} rounds; want ${describeBand(band)}); ${diff}`,
    );
  }
  for (const [label, cis] of Object.entries(s.otherPairs)) {
    const pair = PAIRS.find((p) => p.label === label);
    for (const key of pair?.figures ?? GOALS.map((g) => g.key)) {
      const ci = cis[key];
      if (!ci) continue;
      const def = METRICS.find((m) => m.key === key)!;
      lines.push(
        `${label}, ${def.label}: ${ciText(ci)} (95% CI, ${ci.n} rounds); ${differenceText(ci, pair?.subject)}`,
      );
    }
  }
  return { ok, lines };
}

/** 3 significant digits or so: 812, 45.3, 2.75. */
function fmt(v: number, _def?: MetricDef): string {
  if (!Number.isFinite(v)) return '-';
  const abs = Math.abs(v);
  return v.toFixed(abs >= 100 ? 0 : abs >= 10 ? 1 : 2);
}

function cell(st: Stat | undefined, def: MetricDef): string {
  return st ? `${fmt(st.median, def)} [${fmt(st.min, def)}-${fmt(st.max, def)}]` : '-';
}

/** Rows of the table: metric label (unit), one cell per configuration, the ratio. */
function rows(s: Summary): { label: string; cells: string[]; ratio: string }[] {
  return METRICS.filter((m) => s.stats[m.key]).map((m) => ({
    label: `${m.label} (${[unitText(m), `${m.better} is better`].filter(Boolean).join(', ')})`,
    cells: s.configs.map((c) => cell(s.stats[m.key]?.[c], m)),
    ratio: s.interval[m.key]
      ? ciText(s.interval[m.key]!)
      : s.ratio[m.key] !== undefined
        ? s.ratio[m.key]!.toFixed(2)
        : '-',
  }));
}

export function textTable(s: Summary): string {
  const head = ['figure (median [min-max])', ...s.configs.map((c) => CONFIG_LABELS[c]), 'bridge/vhost=on [95% CI]'];
  const body = rows(s).map((r) => [r.label, ...r.cells, r.ratio]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cols: string[]): string =>
    cols.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

export function markdownTable(s: Summary): string {
  const head = ['figure: median [min-max]', ...s.configs.map((c) => CONFIG_LABELS[c]), 'bridge / vhost=on [95% CI]'];
  const out = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const r of rows(s)) out.push(`| ${r.label} | ${r.cells.join(' | ')} | ${r.ratio} |`);
  const others = Object.keys(s.otherPairs);
  if (others.length) {
    const h = ['figure: ratio [95% CI]', ...others];
    out.push('', `| ${h.join(' | ')} |`, `|${h.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`);
    for (const m of METRICS) {
      const cells = others.map((o) => s.otherPairs[o][m.key]);
      if (cells.every((c) => !c)) continue;
      out.push(`| ${m.label} | ${cells.map((c) => (c ? ciText(c) : '-')).join(' | ')} |`);
    }
  }
  return out.join('\n');
}

const SHORT: Record<BenchConfig, string> = {
  bridge: 'bridge',
  'vhost-on': 'vhost=on',
  'vhost-off': 'vhost=off',
  dpdk: 'DPDK',
  'bridge-poll': 'bridge poll',
  'vhost-on-poll': 'on poll',
  'bridge-mq2': 'bridge mq2',
  'vhost-on-mq2': 'on mq2',
  'bridge-macvtap': 'bridge mvt',
  'vhost-on-macvtap': 'on mvt',
  'bridge-zc1': 'bridge zc1',
  'bridge-zc0': 'bridge zc0',
  'ch-bridge': 'CH bridge',
  'ch-tap': 'CH tap',
};
const COLORS: Record<BenchConfig, string> = {
  bridge: '#d6604d',
  'vhost-on': '#4393c3',
  'vhost-off': '#92c5de',
  dpdk: '#a6a6a6',
  'bridge-poll': '#f4a582',
  'vhost-on-poll': '#2166ac',
  'bridge-mq2': '#b2182b',
  'vhost-on-mq2': '#053061',
  'bridge-macvtap': '#e08214',
  'vhost-on-macvtap': '#542788',
  'bridge-zc1': '#7f3b08',
  'bridge-zc0': '#fdb863',
  'ch-bridge': '#1b7837',
  'ch-tap': '#a6dba0',
};
const esc = (t: string): string => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Small multiples: one panel per figure, one bar per configuration (median) with a min-max whisker. */
export function svgChart(s: Summary, title: string, subtitle: string): string {
  const metrics = METRICS.filter((m) => s.stats[m.key]);
  const cols = 3,
    pw = 320,
    ph = 230,
    top = 86,
    gap = 20;
  const rowsN = Math.ceil(metrics.length / cols);
  const W = cols * pw + (cols + 1) * gap,
    H = top + 28 + rowsN * (ph + gap) + 20;
  const o: string[] = [];
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `font-family="sans-serif" font-size="11">`,
  );
  o.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  o.push(`<text x="${gap}" y="24" font-size="16" font-weight="bold">${esc(title)}</text>`);
  // The subtitle on as many lines as it needs (at its ' | ' separators), then the legend.
  const sub: string[] = [];
  for (const part of subtitle.split(' | ')) {
    if (sub.length && `${sub[sub.length - 1]} | ${part}`.length <= 150) sub[sub.length - 1] += ` | ${part}`;
    else sub.push(part);
  }
  for (const [i, l] of sub.entries()) o.push(`<text x="${gap}" y="${42 + 14 * i}" fill="#555">${esc(l)}</text>`);
  const legendY = 42 + 14 * sub.length;
  s.configs.forEach((c, i) => {
    const x = gap + i * 150;
    o.push(
      `<rect x="${x}" y="${legendY}" width="12" height="12" fill="${COLORS[c]}"/><text x="${x + 16}" ` +
        `y="${legendY + 10}">${esc(CONFIG_LABELS[c])}</text>`,
    );
  });
  const panelsTop = legendY + 24;
  metrics.forEach((m, k) => {
    const px = gap + (k % cols) * (pw + gap),
      py = panelsTop + Math.floor(k / cols) * (ph + gap);
    const vals = Object.values(s.stats[m.key]!) as Stat[];
    const max = Math.max(...vals.map((v) => v.max)) * 1.15 || 1;
    const plotTop = py + 50,
      plotH = ph - 78,
      base = plotTop + plotH;
    o.push(`<g class="panel" data-metric="${m.key}">`);
    o.push(`<rect x="${px}" y="${py}" width="${pw}" height="${ph}" fill="none" stroke="#ddd"/>`);
    const unit = unitText(m);
    o.push(
      `<text x="${px + 8}" y="${py + 16}" font-weight="bold">${esc(m.label)}${unit ? ` (${esc(unit)})` : ''}</text>`,
    );
    const ci = s.interval[m.key];
    const r = ci ? `${ciText(ci)} (95% CI)` : s.ratio[m.key]?.toFixed(2);
    o.push(
      `<text x="${px + 8}" y="${py + 31}" fill="#555">${m.better} is ` +
        `better${r !== undefined ? `; bridge / vhost=on = ${r}` : ''}</text>`,
    );
    o.push(`<line x1="${px + 10}" y1="${base}" x2="${px + pw - 10}" y2="${base}" stroke="#999"/>`);
    const slot = (pw - 20) / s.configs.length;
    s.configs.forEach((c, i) => {
      const st = s.stats[m.key]![c];
      const cx = px + 10 + slot * i + slot / 2;
      if (!st) {
        o.push(`<text x="${cx}" y="${base - 4}" text-anchor="middle" fill="#aaa">n/a</text>`);
        return;
      }
      const y = (v: number): number => base - (v / max) * plotH;
      const bw = slot * 0.6;
      o.push(
        `<rect class="bar" data-config="${c}" x="${(cx - bw / 2).toFixed(1)}" y="${y(st.median).toFixed(1)}" ` +
          `width="${bw.toFixed(1)}" height="${(base - y(st.median)).toFixed(1)}" fill="${COLORS[c]}"/>`,
      );
      o.push(
        `<line class="whisker" x1="${cx}" y1="${y(st.min).toFixed(1)}" x2="${cx}" y2="${y(st.max).toFixed(1)}" ` +
          `stroke="#222"/>`,
      );
      for (const v of [st.min, st.max])
        o.push(`<line x1="${cx - 5}" y1="${y(v).toFixed(1)}" x2="${cx + 5}" y2="${y(v).toFixed(1)}" stroke="#222"/>`);
      o.push(`<text x="${cx}" y="${(y(st.max) - 4).toFixed(1)}" text-anchor="middle">${fmt(st.median, m)}</text>`);
      o.push(`<text x="${cx}" y="${base + 14}" text-anchor="middle" fill="#555">${esc(SHORT[c])}</text>`);
    });
    o.push('</g>');
  });
  o.push('</svg>');
  return o.join('\n');
}

/**
 * Replace the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in a page (docs/performance.md;
 * NAME `bench`, or `bench-6.12` for a run on that L2 kernel).
 */
export function replaceSection(page: string, body: string, name = 'bench'): string {
  const start = `<!-- ${name}:start -->`,
    end = `<!-- ${name}:end -->`;
  const i = page.indexOf(start),
    j = page.indexOf(end);
  if (i < 0 || j < i) throw new Error(`no ${start} ... ${end} section`);
  return `${page.slice(0, i + start.length)}\n${body}\n${page.slice(j)}`;
}
