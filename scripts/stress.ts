/**
 * npm run lab:stress -- [--minutes N] [--guests N] [--net vhost-on|bridge] [--label TEXT]
 *
 * Counts the nested lab's L3 guest faults (kernel panic, self-reset, stall, boot hang) under
 * iperf3 load, per guest-hour, for one lab setting (docs/lab.md, "Guest faults"). The setting is
 * whatever the lab's variables say: LAB_L3_CPU, LAB_L3_APPEND (L3 -cpu and kernel arguments),
 * LAB_L2_CPU, LAB_L2_APPEND (L2 -cpu under TCG and kernel arguments, kvm_amd.* parameters
 * included), LAB_L2_SMP. Prints a table row and writes results/stress/<date>-<label>.json.
 *
 *   LAB_L2_APPEND='kvm_amd.npt=0' npm run lab:stress -- --minutes 10 --label npt0
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { labTuning } from '../lab/guest.js';
import { runInLab } from '../lab/job.js';
import type { StressJob } from './lab-runs/stress.js';

const repo = resolve(import.meta.dirname, '..', '..');
const positive = (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number');
  return n;
};
const o = new Command()
  .name('npm run lab:stress --')
  .description(
    'Count L3 guest faults of the nested lab under iperf3 load, per guest-hour, for the current lab settings.',
  )
  .option('--minutes <n>', 'minutes of load', positive, 10)
  .option('--guests <n>', 'guests at once, each on its own tap', positive, 2)
  .option('--net <kind>', 'vhost-on (QEMU tap,vhost=on) or bridge (vhost-bridge)', 'vhost-on')
  .option('--label <text>', 'name of the setting in the result file', 'default')
  .addHelpText(
    'after',
    `
Settings under test come from the environment:
  LAB_L3_CPU=EPYC  LAB_L3_APPEND='nosmap'  LAB_L2_CPU='max,-pcid'  LAB_L2_APPEND='kvm_amd.npt=0'  LAB_L2_SMP=2

Example:
  LAB_L2_APPEND='kvm_amd.vgif=0' npm run lab:stress -- --minutes 10 --label vgif0`,
  )
  .parse()
  .opts<{ minutes: number; guests: number; net: string; label: string }>();

const work = fs.mkdtempSync(join(os.tmpdir(), 'vb-stress-'));
const settings = labTuning() ?? '(defaults)';
console.log(`== lab:stress '${o.label}': ${o.guests} guest(s), ${o.minutes} min, ${o.net}; ${settings}`);
const options: StressJob = { minutes: o.minutes, guests: o.guests, net: o.net === 'bridge' ? 'bridge' : 'vhost-on' };
const lab = await runInLab({
  name: 'lab:stress',
  script: 'dist/scripts/lab-runs/stress.js',
  options,
  timeoutSeconds: o.minutes * 60 + 600,
  xchg: work,
});
const file = join(work, 'stress.json');
if (!fs.existsSync(file)) {
  console.error(`lab:stress: the lab run ended (${lab.status}) before any transfer finished; logs in ${work}`);
  process.exit(1);
}
interface Result {
  date: string;
  done: boolean;
  guests: {
    name: string;
    loadMs: number;
    transfers: number;
    bytes: number;
    faults: { kind: string }[];
    errors: string[];
  }[];
}
const r = JSON.parse(fs.readFileSync(file, 'utf8')) as Result & Record<string, unknown>;
// L2 itself died (a crash or a lockup: scripts/lab/run exits 125): the counts so far stand, plus that.
const l2Died = !r.done || lab.l2Died;
Object.assign(r, { label: o.label, settings, logs: work, l2Died, labStatus: lab.status });
const dir = join(repo, 'results', 'stress');
fs.mkdirSync(dir, { recursive: true });
const out = join(dir, `${r.date.slice(0, 16).replace(/[:T]/g, '-')}-${o.label}.json`);
fs.writeFileSync(out, JSON.stringify(r, null, 1));

const guestMin = r.guests.reduce((a, g) => a + g.loadMs, 0) / 60_000;
const kinds = ['panic', 'reset', 'stall', 'boot-hang'];
const count = (k: string): number => r.guests.reduce((a, g) => a + g.faults.filter((f) => f.kind === k).length, 0);
const total = kinds.reduce((a, k) => a + count(k), 0) + (l2Died ? 1 : 0);
const perHour = guestMin > 0 ? (total / guestMin) * 60 : NaN;
console.log('');
console.log(
  '| setting | guest-minutes under load | transfers | panic | reset | stall | boot hang | L2 died | faults per ' +
    'guest-hour |',
);
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
console.log(
  `| ${o.label}: ${settings} | ${guestMin.toFixed(1)} | ${r.guests.reduce((a, g) => a + g.transfers, 0)} | ` +
    `${kinds.map((k) => count(k)).join(' | ')} | ${l2Died ? 'yes' : 'no'} | ${perHour.toFixed(1)} |`,
);
console.log(`\nresult: ${out}; logs: ${work}`);
const errors = r.guests.flatMap((g) => g.errors.map((e) => `${g.name}: ${e}`));
if (l2Died) console.error(`lab:stress: L2 died (scripts/lab/run status ${lab.status}): counted as a fault`);
if (errors.length) {
  console.error(`lab:stress: failures that were not guest faults:\n${errors.join('\n')}`);
  process.exit(1);
}
