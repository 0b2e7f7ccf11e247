/**
 * `npm run bench:isolation`: does one port's slow operation (a burst of thousands of messages, big
 * memory tables) stall another port's control traffic? Runs scripts/lab-runs/bench-isolation.ts in
 * the lab (it needs /dev/vhost-net): port b's GET_FEATURES round trip (median, p99, max) while port
 * a is quiet, flooded, or given 8 GiB memory tables back to back. Prints a table and writes
 * results/isolation-<date>.json. VB_ISOLATION_SECONDS=N: seconds per phase (default 6).
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { table } from '../src/daemon/ctl.js';
import { endText, runInLab } from '../lab/job.js';
import type { IsolationJob, IsolationResult } from './lab-runs/bench-isolation.js';

const work = mkdtempSync(join(tmpdir(), 'vb-bench-isolation-'));
const options: IsolationJob = { phaseSeconds: Number(process.env.VB_ISOLATION_SECONDS ?? 6) };
const lab = await runInLab({
  name: 'bench:isolation',
  script: 'dist/scripts/lab-runs/bench-isolation.js',
  options,
  timeoutSeconds: 600,
  xchg: work,
});
let r: IsolationResult;
try {
  r = JSON.parse(readFileSync(join(work, 'isolation.json'), 'utf8')) as IsolationResult;
} catch {
  console.error(`bench:isolation: no results (lab: ${endText(lab)}); logs in ${work}`);
  process.exit(1);
}

const what: Record<string, string> = {
  quiet: 'nothing',
  burst: 'bursts of 2000 SET_VRING_NUM',
  memtable: 'SET_MEM_TABLE, 8 x 1 GiB, back to back',
  'quiet-after': 'nothing (again)',
};
const ms = (v: number): string => v.toFixed(2);
console.log(`\nport b's GET_FEATURES round trip while port a gets ... (L2 kernel ${r.kernel}, Node ${r.node})`);
console.log("(port a op: one burst and its GET_FEATURES, or one acked SET_MEM_TABLE, as port a's front-end saw it)\n");
console.log(
  table(
    [
      'port a gets',
      'probes',
      'median (ms)',
      'p99 (ms)',
      'max (ms)',
      'port a ops/s',
      'port a op median/p99/max (ms)',
      'daemon CPU',
    ],
    r.phases.map((p) => [
      what[p.kind] ?? p.kind,
      p.probeMs.length,
      ms(p.median),
      ms(p.p99),
      ms(p.max),
      p.disturbSeconds ? (p.disturbOps / p.disturbSeconds).toFixed(0) : '-',
      p.disturbOpMs ? `${ms(p.disturbOpMs.median)} / ${ms(p.disturbOpMs.p99)} / ${ms(p.disturbOpMs.max)}` : '-',
      `${(p.daemonCpu * 100).toFixed(0)}%`,
    ]),
  ),
);
if (r.errors.length) console.log(`\nerrors:\n${r.errors.join('\n')}`);
mkdirSync('results', { recursive: true });
const out = `results/isolation-${r.when.slice(0, 19).replace(/[T:]/g, '-')}.json`;
const summary = r.phases.map(({ probeMs: _, ...rest }) => rest);
writeFileSync(out, JSON.stringify({ ...r, summary }, null, 2));
console.log(`\n${JSON.stringify(summary)}\nwrote ${out}`);
process.exit(r.errors.length ? 1 : 0);
