/**
 * npm run soak -- [--minutes N] [--seed N] [--guests N] [--no-one-port] [--kernel 6.1|6.12] [--until HH:MM]
 *                  [--out DIR]
 *
 * Hours of VM life compressed into minutes (docs/soak.md): guests on the ports of one daemon (and
 * one on a one-port bridge), one fault at a time picked from a seeded generator, every recovery
 * checked. Prints the events-by-kind table and every failure, writes results/soak/<date>-<seed>.
 * {json,md,svg} (or into --out), and exits 1 if anything failed (a lost bystander reply, a slow
 * recovery, an fd or memory leak, a port left half set up, too little traffic or too few events to
 * check). `npm test` runs its short variant (docs/soak.md, "The short variant and CI").
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import {
  byKind,
  coverageFailures,
  failures,
  joinParts,
  markdownTable,
  type Part,
  partSeconds,
  soakedSeconds,
  svgChart,
  textTable,
} from '../lab/soak/report.js';
import { labTuning } from '../lab/guest.js';
import { runInLab } from '../lab/job.js';
import { freshSeed } from '../lab/soak/rng.js';
import { EVENT_KINDS, emptyResult, parseKinds, type SoakResult } from '../lab/soak/soak.js';
import type { SoakJob } from './lab-runs/soak.js';

const repo = resolve(import.meta.dirname, '..', '..');
const count = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number');
  return n;
};
const o = new Command()
  .name('npm run soak --')
  .description('Inject faults one at a time into a daemon serving lab guests, and check every recovery.')
  .option('--minutes <n>', 'minutes of faults', (v) => count(v), 30)
  .option('--seed <n>', 'seed of the fault generator (default: a fresh one, printed)', count)
  .option('--guests <n>', 'guests on daemon ports', count, 3)
  .option('--no-one-port', 'no guest on a one-port bridge')
  .option('--kernel <series>', "L2 kernel (scripts/lab/run's --kernel)", '6.1')
  .option(
    '--until <HH:MM>',
    'leave the lab by this time (UTC, within the next 24 h), even if the minutes are not done',
    (v) => {
      const m = /^(\d\d):(\d\d)$/.exec(v);
      if (!m) throw new InvalidArgumentError('HH:MM (UTC)');
      const at = new Date();
      at.setUTCHours(Number(m[1]), Number(m[2]), 0, 0);
      if (at.getTime() < Date.now()) at.setUTCDate(at.getUTCDate() + 1);
      return at.getTime();
    },
  )
  .option('--out <dir>', 'where the table, chart and JSON go', join(repo, 'results', 'soak'))
  .option('--only <kinds>', `only these kinds of event, comma-separated (${EVENT_KINDS.join(', ')})`, (v) => {
    try {
      return parseKinds(v)?.join(',');
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  })
  .addHelpText(
    'after',
    `
Examples:
  npm run soak -- --minutes 30              the full soak: 3 daemon guests + 1 one-port guest
  npm run soak -- --minutes 3 --seed 42     replay a run (the seed is printed at the start)
  npm run soak -- --minutes 3 --guests 1 --no-one-port --kernel 6.12
                                            the short variant npm test runs
  npm run soak -- --minutes 10 --guests 1 --no-one-port --only qemu-kill,ctl-reset
                                            hammer one sequence of faults`,
  )
  .parse()
  .opts<{
    minutes: number;
    seed?: number;
    guests: number;
    onePort: boolean;
    kernel: string;
    out: string;
    only?: string;
    until?: number;
  }>();

const seed = o.seed ?? freshSeed();
const work = fs.mkdtempSync(join(os.tmpdir(), 'vb-soak-'));
const labSettings = labTuning() ?? 'the lab defaults';
console.log(
  `== soak: seed ${seed}, ${o.minutes} min, ${o.guests} daemon guest(s)${o.onePort ? ' + 1 one-port' : ''}; ` +
    labSettings,
);

/**
 * No file of a part's exchange directory changed for this long (guests' consoles, the daemon's log,
 * the events: each written every few seconds while L2 runs): L2 hung without a lockup message, which
 * scripts/lab/run cannot see (its console silent, its QEMU spinning). The part is then stopped and
 * counted as cut, like a death of L2.
 */
const HUNG_AFTER_S = 600;
/**
 * L2 boots in a row whose part ended before its first event: the lab is not holding; give up. Four,
 * since on a bad day L2 dies in the soak's set-up in about one boot of three (the set-up, four
 * guests' boots, is a third to half of L2's life then), and twice in a row must not end a clean run.
 */
const MAX_EMPTY_PARTS = 4;
/**
 * With --until: a part's events stop this long before it (L2's boot before the soak starts, the last
 * event, which may be a guest's boot, the guests' shutdown and L2's), and no part starts with less
 * than UNTIL_MIN_PART_S left (set-up alone, an L2 boot and four guests' boots, takes 3-5 min under TCG).
 */
const UNTIL_MARGIN_S = 240;
const UNTIL_MIN_PART_S = 420;
/** Seconds left before the part's events must stop (--until), or undefined without one. */
const budget = (): number | undefined =>
  o.until === undefined ? undefined : Math.round((o.until - Date.now()) / 1000 - UNTIL_MARGIN_S);
const parts: Part[] = [];
let left = o.minutes * 60;
let empty = 0;
while (left >= 30) {
  const b = budget();
  if (b !== undefined && b < UNTIL_MIN_PART_S) {
    console.log(`== soak: ${Math.round(b + UNTIL_MARGIN_S)} s left before --until: no part started`);
    break;
  }
  // Part k runs seed + k: each part replays alone with `--seed` (docs/soak.md, "When L2 dies").
  const part = await runPart(parts.length, (seed + parts.length) >>> 0, left);
  parts.push(part);
  if (!part.cut) break;
  console.log(`== soak: part ${parts.length} cut short (${part.cut}); ${part.result.events.length} events checked`);
  empty = part.result.events.length ? 0 : empty + 1;
  if (empty >= MAX_EMPTY_PARTS) break;
  left -= partSeconds(part);
  if (left >= 30) console.log(`== soak: booting L2 again for the ${Math.round(left)} s left`);
}
if (!parts.length) process.exit(1);
const r = joinParts(parts);
if (parts.at(-1)?.cut || (o.until !== undefined && r.seconds < o.minutes * 60 - 30))
  r.failures.push(
    `the soak did not run its time: ${Math.round(r.seconds)} of ${o.minutes * 60} s` +
      `${parts.at(-1)?.cut ? '' : ` (stopped for --until ${new Date(o.until ?? 0).toISOString().slice(11, 16)} UTC)`}`,
  );
r.failures.push(...coverageFailures(r, o.only?.split(',')));

/** One L2 boot of the soak; a boot that died (scripts/lab/run: 125) or hung yields what it completed. */
async function runPart(k: number, partSeed: number, seconds: number): Promise<Part> {
  // Each L2 boot its own exchange directory: the daemon's and guests' logs of every part are kept.
  const partDir = join(work, `part-${k + 1}`);
  fs.mkdirSync(partDir);
  const b = budget();
  const options: SoakJob = {
    seconds: Math.round(seconds),
    seed: partSeed,
    guests: o.guests,
    onePort: o.onePort,
    ...(b !== undefined ? { budgetSeconds: b } : {}),
    ...(o.only ? { kinds: o.only } : {}),
  };
  const end = await runInLab({
    name: 'soak',
    script: 'dist/scripts/lab-runs/soak.js',
    options,
    kernel: o.kernel,
    timeoutSeconds: Math.min(seconds + 900, (b ?? Number.POSITIVE_INFINITY) + UNTIL_MARGIN_S),
    xchg: partDir,
    // Several 512 MiB guests, their QEMUs and the daemon's restarts (Node read again from the host's
    // 9p root) need more than L2's default 3 GiB for a restarted daemon to answer in time.
    env: { LAB_L2_MEM: process.env.LAB_L2_MEM ?? '6G' },
    quietLimitSeconds: HUNG_AFTER_S,
  });
  const file = join(partDir, 'soak.json');
  if (fs.existsSync(file)) return { result: JSON.parse(fs.readFileSync(file, 'utf8')) as SoakResult, cut: null };
  const result = completed(file, partSeed, end.status);
  const at = `${((result.samples.at(-1)?.t ?? 0) / 60000).toFixed(1)} min in`;
  if (end.hung) return { result, cut: `L2 hung ${at} (nothing from it for ${HUNG_AFTER_S} s)` };
  // Only a dead L2 is the lab's fault; the soak itself ending without a result is a failure.
  if (!end.l2Died) {
    result.failures.push(`the soak ended (exit status ${end.status}) without a result (logs: ${work})`);
    return { result, cut: null };
  }
  return { result, cut: `L2 died ${at}` };
}

/**
 * What a part cut short completed: its events as JSON lines (scripts/lab-runs/soak.ts writes them as
 * they happen).
 */
function completed(file: string, partSeed: number, status: number | null): SoakResult {
  const lines = `${file}.jsonl`;
  let head: SoakResult | null = null;
  const events: SoakResult['events'] = [];
  const samples: SoakResult['samples'] = [];
  if (fs.existsSync(lines))
    for (const l of fs.readFileSync(lines, 'utf8').split('\n')) {
      if (!l.trim()) continue;
      const x = JSON.parse(l) as {
        head?: SoakResult;
        event?: SoakResult['events'][number];
        sample?: SoakResult['samples'][number];
      };
      if (x.head) head = x.head;
      if (x.event) events.push(x.event);
      if (x.sample) samples.push(x.sample);
    }
  if (!head) {
    console.error(`soak: the lab run ended (${status}) before the soak was set up; logs in ${work}`);
    head = emptyResult({ seed: partSeed, kernel: '?', seconds: 0, guests: o.guests, onePort: o.onePort });
  }
  // (head.seconds is the time asked for; what was soaked is known from the events)
  const soaked = { ...head, events, samples, failures: [] };
  return { ...soaked, seconds: soakedSeconds(soaked) };
}

const rows = byKind(r.events);
const failed = failures(r);
const boots = r.parts.length > 1 ? ` over ${r.parts.length} L2 boots` : '';
const title =
  `soak, seed ${r.seed}: ${r.events.length} events in ${(r.seconds / 60).toFixed(1)} min${boots}, ` +
  `kernel ${r.kernel}, ${r.guests} daemon guest(s)${r.onePort ? ' + 1 one-port' : ''}; ` +
  'daemon fds and RSS after each event';
const partLines = r.parts.map(
  (p, k) => `- part ${k + 1}: seed ${p.seed}, ${p.events} events, ${p.seconds} s${p.cut ? `, ${p.cut}` : ''}`,
);
const dir = resolve(o.out);
fs.mkdirSync(dir, { recursive: true });
const base = join(dir, `${new Date().toISOString().slice(0, 16).replace(/[:T]/g, '-')}-seed${r.seed}`);
fs.writeFileSync(`${base}.json`, JSON.stringify({ ...r, labSettings }, null, 1));
fs.writeFileSync(`${base}.svg`, svgChart(r.samples, title));
fs.writeFileSync(
  `${base}.md`,
  `${title}\n\n${markdownTable(rows)}\n\nLab: ${labSettings}. L2 boots:\n${partLines.join('\n')}\n\n` +
    `failures: ${failed.length ? `\n- ${failed.join('\n- ')}` : 'none'}\n`,
);
console.log(`\n${textTable(rows)}\n`);
console.log(partLines.join('\n'));
console.log(`${r.events.length} events; baseline ${r.baselineFds} fds; ${failed.length} failure(s)`);
for (const f of failed) console.log(`  FAILED ${f}`);
console.log(`\nwrote ${base}.{json,md,svg}; logs in ${work}`);
process.exit(failed.length ? 1 : 0);
