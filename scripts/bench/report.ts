/**
 * Turns the benchmark's raw runs into medians, min-max, the bridge / vhost=on ratios, a terminal
 * table, a Markdown table and an SVG chart (bars = medians, whiskers = min..max). Pure functions.
 */
import {
  CONFIG_LABELS,
  CONFIGS,
  METRICS,
  quantile,
  type BenchConfig,
  type MetricDef,
  type MetricKey,
  type RawResults,
} from './metrics.js';

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
  failedRuns: { round: number; config: BenchConfig; error: string }[];
}

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
  const failedRuns = raw.runs
    .filter((r) => r.error)
    .map((r) => ({ round: r.round, config: r.config, error: r.error! }));
  return { configs, stats, ratio, failedRuns };
}

/** The issue's bar: throughput ratio >= 0.95 both ways, p50 latency ratio <= 1.05. */
export function verdict(s: Summary): { ok: boolean; lines: string[] } {
  const lines: string[] = [];
  let ok = true;
  const check = (key: MetricKey, test: (r: number) => boolean, want: string): void => {
    const r = s.ratio[key];
    const def = METRICS.find((m) => m.key === key)!;
    if (r === undefined) {
      ok = false;
      lines.push(`${def.label}: no ratio (missing runs)`);
      return;
    }
    const pass = test(r);
    ok &&= pass;
    lines.push(`${pass ? 'meets' : 'MISSES'} ${def.label}: bridge / vhost=on = ${r.toFixed(2)} (want ${want})`);
  };
  check('tcpTxMbps', (r) => r >= 0.95, '>= 0.95');
  check('tcpRxMbps', (r) => r >= 0.95, '>= 0.95');
  check('rttP50Ms', (r) => r <= 1.05, '<= 1.05');
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
    label: `${m.label} (${m.unit}, ${m.better} is better)`,
    cells: s.configs.map((c) => cell(s.stats[m.key]?.[c], m)),
    ratio: s.ratio[m.key] !== undefined ? s.ratio[m.key]!.toFixed(2) : '-',
  }));
}

export function textTable(s: Summary): string {
  const head = ['figure (median [min-max])', ...s.configs.map((c) => CONFIG_LABELS[c]), 'bridge/vhost=on'];
  const body = rows(s).map((r) => [r.label, ...r.cells, r.ratio]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cols: string[]): string =>
    cols.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

export function markdownTable(s: Summary): string {
  const head = ['figure: median [min-max]', ...s.configs.map((c) => CONFIG_LABELS[c]), 'bridge / vhost=on'];
  const out = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const r of rows(s)) out.push(`| ${r.label} | ${r.cells.join(' | ')} | ${r.ratio} |`);
  return out.join('\n');
}

const SHORT: Record<BenchConfig, string> = {
  bridge: 'bridge',
  'vhost-on': 'vhost=on',
  'vhost-off': 'vhost=off',
  dpdk: 'DPDK',
};
const COLORS: Record<BenchConfig, string> = {
  bridge: '#d6604d',
  'vhost-on': '#4393c3',
  'vhost-off': '#92c5de',
  dpdk: '#a6a6a6',
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
    o.push(`<text x="${px + 8}" y="${py + 16}" font-weight="bold">${esc(m.label)} (${esc(m.unit)})</text>`);
    const r = s.ratio[m.key];
    o.push(
      `<text x="${px + 8}" y="${py + 31}" fill="#555">${m.better} is ` +
        `better${r !== undefined ? `; bridge / vhost=on = ${r.toFixed(2)}` : ''}</text>`,
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
 * Replace the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in a README (NAME `bench`,
 * or `bench-6.12` for a run on that L2 kernel).
 */
export function replaceSection(readme: string, body: string, name = 'bench'): string {
  const start = `<!-- ${name}:start -->`,
    end = `<!-- ${name}:end -->`;
  const i = readme.indexOf(start),
    j = readme.indexOf(end);
  if (i < 0 || j < i) throw new Error(`README has no ${start} ... ${end} section`);
  return `${readme.slice(0, i + start.length)}\n${body}\n${readme.slice(j)}`;
}
