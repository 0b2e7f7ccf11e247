/**
 * `npm test`: the lab set up for each kernel, the unit tests on this machine (among them the lab
 * runner's own, which boot L2: test/lab/runner.test.ts), then the whole lab suite on L2 kernel 6.1 and the
 * kernel subset (`KERNEL_SUBSET`) on 6.12, each in ONE L2 boot (scripts/lab/run --kernel;
 * docs/kernels.md), the kernels' boots at once (their L2 VMs share nothing on this machine; the
 * first kernel's output is shown as it comes, the others' once all are done; VB_LAB_SERIAL=1 runs
 * them one after another), then the soak's short variant alone on 6.1 (`soakPhase`), then one line
 * `N passed, N failed` over all. Failures and retries name the kernel they happened on
 * (`[lab 6.12] ...`).
 *
 * With CI=true a lab test that cannot run is a failure: a lab that cannot be set up or booted
 * counts as one failure, and a pending (skipped) test counts as a failure.
 * VB_SKIP_LAB=1 runs the unit tests only (refused when CI=true); VB_LAB_ONLY=a,b only the lab files
 * a.test.js and b.test.js.
 * VB_LAB_KERNELS=6.1,6.12:kernel (the default) lists the kernels the lab suite runs on, in that order;
 * `:kernel` runs only the kernel subset there (VB_LAB_KERNELS=6.1,6.12 runs the whole suite on both).
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
} from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { failures, type JoinedSoak } from '../lab/soak/report.js';
import { endText, runInLab } from '../lab/job.js';
import { type FileCounts, resumeAfterDeath, type SuiteProgress, sameFile } from '../lab/suite-progress.js';

const repo = resolve(import.meta.dirname, '..', '..');
const ci = process.env.CI === 'true';
const reporter = 'dist/test/summary-reporter.js';
/** Colours only on a terminal (the lab's mocha writes to L2's serial console, which is a tty). */
const color = process.stdout.isTTY ? '--color' : '--no-color';
const mocha = 'node_modules/.bin/mocha';

type Counts = FileCounts;
const total: Counts & { retried: string[] } = {
  passed: 0,
  failed: 0,
  pending: 0,
  failures: [],
  pendingTitles: [],
  retried: [],
};

function add(phase: string, c: Counts): void {
  total.passed += c.passed;
  total.failed += c.failed;
  total.pending += c.pending;
  total.failures.push(...c.failures.map((f) => `[${phase}] ${f}`));
  total.pendingTitles.push(...c.pendingTitles.map((f) => `[${phase}] ${f}`));
  total.retried.push(...(c.retried ?? []).map((f) => `[${phase}] ${f}`));
}

/** Where a phase's lines go: the terminal, or (a kernel's suite run beside another) its log file. */
type Say = (line: string) => void;

function fail(phase: string, why: string, say: Say = console.log): void {
  say(`\n[${phase}] FAILED: ${why}`);
  add(phase, { passed: 0, failed: 1, pending: 0, failures: [why], pendingTitles: [], retried: [] });
}

function readJson<T>(file: string): T | null {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return null;
  }
}
const readCounts = (file: string): Counts | null => readJson<Counts>(file);

const t0 = Date.now();
const work = mkdtempSync(join(tmpdir(), 'vb-test-'));

/**
 * The lab tests that show what differs between kernels (docs/kernels.md, "What differs"), each row of
 * its table: the vhost ioctls and the worker model (kernel-*), QEMU's own worker (baseline), the
 * bridge's own CPU and its worker during traffic (bridge-guest; cloud-hypervisor's front-end, issue 38's
 * both kernels, whole: cloud-hypervisor), the daemon's `vhostWorkers` kind
 * (daemon), the worker's cgroup placement (operate: a kthread through cgroup.procs on 6.1, a thread
 * through cgroup.threads from 6.4). A kernel listed as `SERIES:kernel` in VB_LAB_KERNELS runs only
 * these: the files, and within them the tests whose full title matches `grep` (whole describe blocks
 * or tests that stand alone after their block's set-up). The rest of the suite drives the same ioctls
 * through the bridge with nothing that depends on the kernel version, and runs on the first kernel.
 * One owner of the subset: docs/kernels.md names it, not copies it.
 */
const KERNEL_SUBSET = {
  files: [
    'kernel-datapath',
    'kernel-errors',
    'kernel-probe',
    'kernel-tap',
    'kernel-worker',
    'baseline',
    'bridge-guest',
    'cloud-hypervisor',
    'daemon',
    'operate',
  ],
  grep: [
    '^lab: ',
    '^lab baseline',
    '^cloud-hypervisor',
    "the datapath is the kernel's",
    'serves the guest and three synthetic front-ends',
    '^operating the daemon in the lab: a guest, with metrics and JSON logs on',
  ].join('|'),
};

/** VB_LAB_ONLY=daemon,operate: only the lab files of these names (a developer's shortcut). */
const only = process.env.VB_LAB_ONLY?.split(',').map((n) => n.trim());
if (only && ci) fail('lab', 'VB_LAB_ONLY is for a developer, not for CI (CI=true runs the whole suite)');

/** The lab suite's files (paths from the repository), in name order; only `KERNEL_SUBSET` if asked. */
function labFiles(subset: boolean): string[] {
  const dir = 'dist/test/qemu';
  const name = (f: string): string => f.replace(/\.test\.js$/, '');
  return readdirSync(join(repo, dir))
    .filter((f) => f.endsWith('.test.js'))
    .filter((f) => !subset || KERNEL_SUBSET.files.includes(name(f)))
    .filter((f) => !only || only.includes(name(f)))
    .sort()
    .map((f) => `${dir}/${f}`);
}

/** Minutes per file of one L2 boot, from the reporter's record: where CI's time goes. */
function printFileTimes(progress: SuiteProgress | null, end: number, say: Say): void {
  for (const [i, f] of (progress?.files ?? []).entries()) {
    const until = f.endedAt ?? progress?.files[i + 1]?.startedAt ?? end;
    say(`  ${((until - f.startedAt) / 60000).toFixed(1).padStart(5)} min  ${basename(f.file)}`);
  }
}

/**
 * The lab suite on one L2 kernel, in one L2 boot. If that VM dies or locks up before the suite
 * reports (status 125: a fault of nested virtualization under TCG, docs/lab.md), the files it had
 * not finished run in a fresh L2 boot (lab/suite-progress.ts: the file that was running starts
 * over, its partial results dropped), and this says so. A file that L2 dies in twice is a failure,
 * and so is a third death.
 */
/** L2 boots per kernel at most: two deaths are absorbed, a third fails the rest. */
const MAX_BOOTS = 3;

/** Sets the lab up for one kernel (idempotent); false, with a failure counted, if it could not. The
 *  kernels are set up one after another (they share the L3 image), before any suite starts. */
function setUp(series: string): boolean {
  console.log(`\n== lab ${series}: setting up (idempotent)`);
  const setup = spawnSync('scripts/lab/setup', ['--kernel', series], { cwd: repo, stdio: 'inherit' });
  if (setup.status === 0) return true;
  const status = setup.status ?? setup.signal;
  fail(`lab ${series}`, `scripts/lab/setup --kernel ${series} exited ${status}: the lab suite could not run`);
  return false;
}

/** A command of this machine, its output to the terminal or to `log`; its status (a signal counts as
 *  128 + its number, as a shell says). */
function run(command: string, args: string[], env: NodeJS.ProcessEnv, log: string | null): Promise<number> {
  const out = log === null ? null : openSync(log, 'a');
  return new Promise((res) => {
    const child = spawn(command, args, {
      cwd: repo,
      stdio: out === null ? 'inherit' : ['ignore', out, out],
      env,
    });
    const done = (status: number): void => {
      if (out !== null) closeSync(out);
      res(status);
    };
    child.on('error', () => done(127));
    child.on('exit', (code, signal) => done(code ?? 128 + (signal ? constants.signals[signal] : 0)));
  });
}

/** `log`: null shows the suite's output as it comes; a file collects it, to be shown when all are done. */
async function labSuite(series: string, subset: boolean, log: string | null): Promise<void> {
  const phase = `lab ${series}`;
  const say: Say = log === null ? console.log : (line) => appendFileSync(log, `${line}\n`);
  // Per L2 boot: the limit is for a hung run, not a slow one (the whole suite takes 20 min on a calm
  // day and twice that on a slow one: docs/lab.md, "Why the lab's limits are what they are"). A
  // stuck process ends its boot at once (lab/stuck.ts); this limit is for a hang nothing else sees.
  const labTimeout = Number(process.env.VB_LAB_TIMEOUT ?? 3000);
  let files = labFiles(subset);
  // (VB_LAB_ONLY may name no file of this kernel's set; say so, which also makes its log)
  if (!files.length) say(`\n== lab suite on L2 kernel ${series}: none of its files was asked for (VB_LAB_ONLY)`);
  const diedIn: string[] = [];
  for (let boot = 1; files.length; boot++) {
    const what = subset ? `the kernel subset (${files.length} files, scripts/test.ts)` : `${files.length} files`;
    const again = boot > 1 ? `, boot ${boot}: the files not finished before` : '';
    say(`\n== lab suite on L2 kernel ${series}: ${what}, one L2 boot${again}`);
    const xchg = join(work, `xchg-${series}-${boot}`);
    const end = await runInLab({
      name: `lab suite ${series}`,
      kernel: series,
      timeoutSeconds: labTimeout,
      xchg,
      ...(log === null ? {} : { log }),
      command: [
        mocha,
        '--no-config',
        '--exit',
        '--enable-source-maps',
        color,
        '--timeout',
        '300000',
        '--reporter',
        reporter,
        ...['--reporter-option', 'summary=/lab-xchg/lab.json', '--reporter-option', 'progress=/lab-xchg/progress.json'],
        ...(subset ? ['--grep', KERNEL_SUBSET.grep] : []),
        ...files,
      ],
    });
    const l = readCounts(join(xchg, 'lab.json'));
    say(`\n[${phase}] boot ${boot}, minutes per file:`);
    printFileTimes(readJson<SuiteProgress>(join(xchg, 'progress.json')), Date.now(), say);
    if (l) add(phase, l);
    if (l && !end.timedOut && !end.l2Died) break;
    if (!l && end.l2Died) {
      const progress = readJson<SuiteProgress>(join(xchg, 'progress.json'));
      const r = resumeAfterDeath(files, progress);
      add(phase, r.kept);
      const running = r.running ? basename(r.running) : 'before the first file started';
      const done = `${r.finished.length} files finished`;
      const why = `the L2 VM died or locked up in boot ${boot} (running: ${running}; ${done})`;
      const twice = r.running !== undefined && diedIn.some((f) => sameFile(f, r.running ?? ''));
      files = r.remaining;
      if (twice) {
        fail(phase, `${why}: L2 died in ${running} in an earlier boot too, so it counts as a failure`, say);
        files = r.remaining.filter((f) => !sameFile(f, r.running ?? ''));
      }
      if (r.running) diedIn.push(r.running);
      if (boot >= MAX_BOOTS) {
        fail(phase, `${why}: ${MAX_BOOTS} L2 boots died, ${files.length} files not run`, say);
        break;
      }
      say(`\n[${phase}] ${why}: the ${files.length} files not finished run in a fresh L2 boot`);
      if (!twice) total.retried.push(`[${phase}] ${why}; its ${files.length} unfinished files ran in a fresh boot`);
      continue;
    }
    if (!l && end.timedOut) {
      // A hung boot: the files that finished keep their results; the one running and those after it
      // count as one failure, named.
      const r = resumeAfterDeath(files, readJson<SuiteProgress>(join(xchg, 'progress.json')));
      add(phase, r.kept);
      const running = r.running ? basename(r.running) : 'before the first file started';
      const left = `${r.remaining.length} files not finished`;
      fail(phase, `lab suite timed out after ${labTimeout} s in boot ${boot} (running: ${running}; ${left})`, say);
      break;
    }
    const why = end.timedOut || end.l2Died ? endText(end, labTimeout) : `exited ${end.status} without a summary`;
    fail(phase, `lab suite ${why}`, say);
    break;
  }
}

/**
 * The soak's short variant (docs/soak.md, "The short variant and CI"): `npm run soak` for
 * SOAK_MINUTES on one daemon guest and the spare ports, on the first kernel, after every lane is
 * done: alone on the machine, since a bystander's zero lost replies is what it checks, and another
 * L2 busy with the suite beside it can starve a bystander for a few pings (docs/lab.md, "Why the
 * lab's limits are what they are"). Not a file of the suite: L2 dies now and then under a soak
 * (docs/lab.md, "Guest faults"), often enough to die in two boots in a row, and the soak carries on
 * in a fresh L2 boot with the time left (docs/soak.md, "When L2 dies"), where the suite would fail
 * a file that L2 died in twice. It counts as one test: passed if the soak found nothing (its exit status and its
 * report agree).
 */
const SOAK_MINUTES = 3;
const soakWanted = !only || only.includes('soak');

async function soakPhase(series: string): Promise<void> {
  const phase = `soak ${series}`;
  const out = join(work, `soak-${series}`);
  console.log(
    `\n== soak, short variant, on L2 kernel ${series}: ${SOAK_MINUTES} min, one daemon guest and the spare ports`,
  );
  const seed = process.env.VB_SOAK_SEED;
  const status = await run(
    process.execPath,
    [
      '--enable-source-maps',
      'dist/scripts/soak.js',
      ...['--minutes', String(SOAK_MINUTES), '--guests', '1', '--no-one-port', '--kernel', series, '--out', out],
      ...(seed ? ['--seed', seed] : []),
    ],
    process.env,
    null,
  );
  const json = existsSync(out) ? readdirSync(out).find((f) => f.endsWith('.json')) : undefined;
  const r = json ? readJson<JoinedSoak>(join(out, json)) : null;
  const found = r ? failures(r) : [];
  if (status === 0 && r && !found.length) {
    add(phase, { passed: 1, failed: 0, pending: 0, failures: [], pendingTitles: [], retried: [] });
    const cuts = r.parts.filter((p) => p.cut);
    if (cuts.length)
      total.retried.push(
        `[${phase}] the soak went on in a fresh L2 boot ${cuts.length}x: ${cuts.map((p) => p.cut).join('; ')}`,
      );
  } else if (r) fail(phase, `soak, seed ${r.seed}: ${found.join('; ') || `exit status ${status}`}`);
  else fail(phase, `npm run soak exited ${status} without a report`);
}

// 1. The lab, set up for each kernel (idempotent, one after another: they share the L3 image), before
// the unit tests: they include the lab runner's own (test/lab/runner.test.ts, real L2 boots).
const labKernels = (process.env.VB_LAB_KERNELS ?? '6.1,6.12:kernel')
  .split(',')
  .map((k) => k.trim())
  .filter(Boolean);
const skipLab = process.env.VB_SKIP_LAB === '1' && !ci;
const kernels: { series: string; subset: boolean }[] = [];
if (!skipLab)
  for (const k of labKernels) {
    const [series = '', part] = k.split(':');
    if (part !== undefined && part !== 'kernel') fail('lab', `VB_LAB_KERNELS: "${k}": after ':' only 'kernel'`);
    else if (setUp(series)) kernels.push({ series, subset: part === 'kernel' });
  }

// 2. Unit tests, here.
console.log('\n== unit tests (this machine)');
const unitSummary = join(work, 'unit.json');
const unit = spawnSync(mocha, [color, '--reporter', reporter, '--reporter-option', `summary=${unitSummary}`], {
  cwd: repo,
  stdio: 'inherit',
});
const u = readCounts(unitSummary);
if (u) add('unit', u);
else fail('unit', `mocha exited ${unit.status ?? unit.signal} without a summary`);

// 3. Lab tests: the whole suite on the first kernel, the kernel subset on 6.12, one L2 boot each, at once.
if (skipLab) {
  console.log('\n== lab suite skipped (VB_SKIP_LAB=1)');
} else {
  if (process.env.VB_LAB_SERIAL === '1') {
    for (const k of kernels) await labSuite(k.series, k.subset, null);
  } else {
    // The first kernel's output as it comes; each other kernel's after it, in order, once all are done.
    const logs = kernels.map((k, i) => (i === 0 ? null : join(work, `lab-${k.series}.log`)));
    if (kernels.length > 1)
      console.log(`\n== lab suites on ${kernels.map((k) => k.series).join(', ')} at once, one L2 boot each`);
    await Promise.all(kernels.map((k, i) => labSuite(k.series, k.subset, logs[i])));
    for (const [i, log] of logs.entries())
      if (log !== null) {
        console.log(`\n== lab suite on ${kernels[i].series}, run beside ${kernels[0].series}: its output`);
        process.stdout.write(readFileSync(log, 'utf8'));
      }
  }
  // 4. The soak's short variant, alone, on the first kernel.
  if (soakWanted && kernels.length) await soakPhase(kernels[0].series);
}
rmSync(work, { recursive: true, force: true });

if (ci && total.pending > 0) {
  for (const p of total.pendingTitles) console.log(`  skipped in CI (counted as failed): ${p}`);
  total.failed += total.pending;
  total.pending = 0;
}
if (total.retried.length) {
  console.log("\nRetried once, after a guest fault of the lab or a failure (the result counted is the retry's):");
  for (const f of total.retried) console.log(`  - ${f}`);
}
if (total.failures.length) {
  console.log('\nFailures:');
  for (const f of total.failures) console.log(`  - ${f}`);
}
const mins = ((Date.now() - t0) / 60000).toFixed(1);
const skippedNote = total.pending ? `, ${total.pending} skipped` : '';
const retriedNote = total.retried.length ? `, ${total.retried.length} retried (listed above)` : '';
// The closing line stands alone and exactly so (`N passed, N failed[, N skipped]`): CI reads it as the count
// of tests run; anything after it on that line (once, the minutes) made CI judge the run as having run none.
console.log(`\ntook ${mins} min${retriedNote}`);
console.log(`${total.passed} passed, ${total.failed} failed${skippedNote}`);
process.exit(total.failed > 0 ? 1 : 0);
