/**
 * The soak's report (docs/soak.md): events by kind (count, worst recovery, bystanders' lost replies,
 * failures) as text and Markdown tables, and the daemon's fd count and RSS over time as an SVG chart.
 */
import type { EventKind, EventRecord, Sample, SoakResult } from './soak.js';

export interface KindRow {
  kind: EventKind;
  count: number;
  /** worst recovery of the kind's targets, ms, over the events the lab faulted no guest in (null:
   *  nothing to recover); the bridge's figure, held to 10 s (docs/soak.md, "What is checked") */
  worstRecoveryMs: number | null;
  /** worst recovery over the events it did fault a guest in: the lab's reboot of that guest, not
   *  charged to the bridge, shown apart so that the column above means one thing */
  faultRecoveryMs: number | null;
  bystanderLost: number;
  bystanderSent: number;
  bystanderUdpLost: number;
  bystanderUdpSent: number;
  transfers: number;
  transfersBad: number;
  guestFaults: number;
  failed: number;
}

export function byKind(events: readonly EventRecord[]): KindRow[] {
  const rows = new Map<EventKind, KindRow>();
  for (const e of events) {
    const r = rows.get(e.kind) ?? {
      kind: e.kind,
      count: 0,
      worstRecoveryMs: null,
      faultRecoveryMs: null,
      bystanderLost: 0,
      bystanderSent: 0,
      bystanderUdpLost: 0,
      bystanderUdpSent: 0,
      transfers: 0,
      transfersBad: 0,
      guestFaults: 0,
      failed: 0,
    };
    r.count++;
    if (e.recoveryMs !== null && !e.guestFault) r.worstRecoveryMs = Math.max(r.worstRecoveryMs ?? 0, e.recoveryMs);
    if (e.recoveryMs !== null && e.guestFault) r.faultRecoveryMs = Math.max(r.faultRecoveryMs ?? 0, e.recoveryMs);
    r.bystanderLost += e.bystanderLost;
    r.bystanderSent += e.bystanderSent;
    r.bystanderUdpLost += e.bystanderUdpLost;
    r.bystanderUdpSent += e.bystanderUdpSent;
    r.transfers += e.transfers;
    r.transfersBad += e.transfersBad;
    if (e.guestFault) r.guestFaults++;
    if (e.failures.length) r.failed++;
    rows.set(e.kind, r);
  }
  return [...rows.values()].sort((a, b) => b.count - a.count);
}

/** Every failure of the run, each naming its event. */
export function failures(r: SoakResult): string[] {
  return [...r.events.flatMap((e) => e.failures.map((f) => `#${e.i} ${e.kind} ${e.target}: ${f}`)), ...r.failures];
}

/** Events during which the target guest's QEMU, or the daemon, starts again (no traffic meanwhile). */
const BOOT_KINDS: ReadonlySet<string> = new Set(['qemu-kill', 'guest-reboot', 'daemon-kill']);
const TRANSFER_FLOOR_S = 15;

/**
 * What a clean run must also show to prove anything: that there was traffic to check and a spread of
 * events (docs/soak.md, "What is checked"). `kinds`: the kinds asked for (--only), all if undefined.
 * Once, a clean 3-minute run had checked only 7 transfers and no bystander UDP line: the checks, not
 * the traffic, were at fault, and these counts caught it.
 */
export function coverageFailures(r: SoakResult, kinds: readonly string[] | undefined): string[] {
  const out: string[] = [];
  const transfers = r.events.reduce((n, e) => n + e.transfers, 0);
  const seen = new Set(r.events.map((e) => e.kind)).size;
  const wantKinds = Math.min(5, kinds?.length ?? 5);
  // A guest sends a transfer every few seconds while it is up (traffic.ts PERIOD_S), but not while its
  // QEMU or the daemon starts again, which can take most of a short run (docs/lab.md, "Why the lab's
  // limits are what they are"). So the floor is one transfer per TRANSFER_FLOOR_S of the time left,
  // a quarter of the nominal rate.
  const downS = r.events.filter((e) => BOOT_KINDS.has(e.kind)).reduce((n, e) => n + (e.ms?.run ?? 0), 0) / 1000;
  const wantTransfers = Math.max(1, Math.floor((r.seconds - downS) / TRANSFER_FLOOR_S));
  if (r.events.length < 10) out.push(`too little checked: ${r.events.length} events (at least 10)`);
  if (transfers < wantTransfers)
    out.push(
      `too little checked: ${transfers} TCP transfers (at least ${wantTransfers}: one per ${TRANSFER_FLOOR_S} s ` +
        `of the ${Math.round(r.seconds - downS)} s no guest was booting or the daemon starting)`,
    );
  if (!r.udpLines) out.push('too little checked: no UDP line received over the run');
  if (seen < wantKinds) out.push(`too little checked: ${seen} kinds of event (at least ${wantKinds})`);
  return out;
}

const HEAD = [
  'event',
  'count',
  'worst recovery (s)',
  'bystanders: pings lost / sent',
  'bystanders: UDP lines lost / sent',
  'TCP transfers: checked / bad',
  'guest faults (lab)',
  'failed',
];

const seconds = (ms: number | null): string => (ms === null ? '-' : (ms / 1000).toFixed(1));

function cells(k: KindRow): string[] {
  // A slower recovery in a lab fault is shown beside the bridge's own, never mixed into it.
  const inFault =
    k.faultRecoveryMs !== null && k.faultRecoveryMs > (k.worstRecoveryMs ?? -1)
      ? ` (${seconds(k.faultRecoveryMs)} in a lab fault)`
      : '';
  return [
    k.kind,
    String(k.count),
    `${seconds(k.worstRecoveryMs)}${inFault}`,
    `${k.bystanderLost} / ${k.bystanderSent}`,
    `${k.bystanderUdpLost} / ${k.bystanderUdpSent}`,
    `${k.transfers} / ${k.transfersBad}`,
    String(k.guestFaults),
    String(k.failed),
  ];
}

export function markdownTable(rows: readonly KindRow[]): string {
  return [
    `| ${HEAD.join(' | ')} |`,
    `|${HEAD.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...rows.map((k) => `| ${cells(k).join(' | ')} |`),
  ].join('\n');
}

export function textTable(rows: readonly KindRow[]): string {
  const all = [HEAD, ...rows.map(cells)];
  const w = HEAD.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  return all.map((r) => r.map((x, c) => (c === 0 ? x.padEnd(w[c]) : x.padStart(w[c]))).join('  ')).join('\n');
}

/** fd count (left axis) and RSS in MiB (right axis) after every event. */
export function svgChart(samples: readonly Sample[], title: string): string {
  const W = 720;
  const H = 300;
  const L = 60;
  const R = 60;
  const T = 40;
  const B = 40;
  const tMax = Math.max(1, ...samples.map((s) => s.t));
  const fdMax = Math.max(1, ...samples.map((s) => s.fds)) * 1.2;
  const rssMax = Math.max(1, ...samples.map((s) => s.rssKiB / 1024)) * 1.2;
  const x = (t: number): number => L + ((W - L - R) * t) / tMax;
  const y = (v: number, max: number): number => H - B - ((H - T - B) * v) / max;
  const line = (pts: [number, number][], colour: string): string =>
    `<polyline fill="none" stroke="${colour}" stroke-width="1.5" points="${pts
      .map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`)
      .join(' ')}"/>`;
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#1f77b4"/>`,
    `<line x1="${W - R}" y1="${T}" x2="${W - R}" y2="${H - B}" stroke="#d62728"/>`,
    `<text x="${L - 6}" y="${T}" text-anchor="end" fill="#1f77b4">${Math.round(fdMax)}</text>`,
    `<text x="${L - 6}" y="${H - B}" text-anchor="end" fill="#1f77b4">0</text>`,
    `<text x="${L - 6}" y="${T - 8}" text-anchor="end" fill="#1f77b4">fds</text>`,
    `<text x="${W - R + 6}" y="${T}" fill="#d62728">${rssMax.toFixed(0)}</text>`,
    `<text x="${W - R + 6}" y="${H - B}" fill="#d62728">0</text>`,
    `<text x="${W - R + 6}" y="${T - 8}" fill="#d62728">RSS MiB</text>`,
    `<text x="${W / 2}" y="${H - 10}" text-anchor="middle">minutes (${(tMax / 60_000).toFixed(1)} in all)</text>`,
    line(
      samples.map((s) => [x(s.t), y(s.fds, fdMax)]),
      '#1f77b4',
    ),
    line(
      samples.map((s) => [x(s.t), y(s.rssKiB / 1024, rssMax)]),
      '#d62728',
    ),
    '</svg>',
    '',
  ].join('\n');
}

/**
 * One L2 boot's part of a soak. The nested lab's L2 can die under several L3 guests (docs/lab.md
 * "Guest faults": a kernel stack overrun in KVM's vCPU thread under TCG); `npm run soak` then boots L2
 * again and soaks the time left with the next seed. `cut` names how a part ended early (null: it ran
 * its time); its events up to the cut were checked like any other, the one under way was lost.
 */
export interface Part {
  result: SoakResult;
  cut: string | null;
}

/** What a part soaked: its asked-for time if it ran it, else from its first event to its last sample. */
export function partSeconds(p: Part): number {
  return p.cut ? soakedSeconds(p.result) : p.result.seconds;
}

/**
 * From a result's first event to its last sample: what a soak that did not end by itself soaked (its
 * `seconds` says what was asked). For a part cut by L2's death, and one that ended without a result.
 */
export function soakedSeconds(r: SoakResult): number {
  const first = r.events[0]?.t ?? 0;
  const last = r.samples.at(-1)?.t ?? first;
  return Math.max(0, (last - first) / 1000);
}

export interface JoinedSoak extends SoakResult {
  /** each L2 boot's seed, events, soaked seconds and cut */
  parts: { seed: number; events: number; seconds: number; cut: string | null }[];
}

/**
 * The parts as one run: events numbered on, times continued (each part's from its own start), the
 * failures of every part. A cut is the lab's fault, listed in `parts`, not a failure of the bridge.
 */
export function joinParts(parts: readonly Part[]): JoinedSoak {
  if (!parts.length) throw new Error('no part to join');
  const first = parts[0].result;
  const events: EventRecord[] = [];
  const samples: Sample[] = [];
  const failed: string[] = [];
  let offset = 0;
  for (const p of parts) {
    const r = p.result;
    for (const e of r.events) events.push({ ...e, i: events.length + 1, t: e.t + offset });
    for (const s of r.samples) samples.push({ ...s, t: s.t + offset });
    failed.push(...r.failures);
    offset += r.samples.at(-1)?.t ?? 0;
  }
  return {
    ...first,
    seconds: parts.reduce((n, p) => n + partSeconds(p), 0),
    // (a part cut by L2's death has no count: it is written when a part ends)
    udpLines: parts.reduce((n, p) => n + (p.result.udpLines ?? 0), 0),
    events,
    samples,
    failures: failed,
    parts: parts.map((p) => ({
      seed: p.result.seed,
      events: p.result.events.length,
      seconds: Math.round(partSeconds(p)),
      cut: p.cut,
    })),
  };
}
