/**
 * `npm run bench`: vhost-bridge against QEMU's own tap,vhost=on (and tap,vhost=off, and a DPDK
 * testpmd vhost-user datapath) on the same L3 guest, rounds interleaved, in one L2 boot of the lab;
 * in each round the bridge and tap,vhost=on also migrate the guest back and forth (docs/migration.md).
 * Prints a table, writes results/<date>/{raw,summary}.json and, unless --no-readme, refreshes the results
 * section of docs/performance.md (between its bench:start and bench:end markers; the README links there) and
 * the files it shows, results/latest.{json,md,svg} (latest-6.12.* with --kernel 6.12).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { endText, runInLab } from '../lab/job.js';
import { findChBinary } from '../lab/cloud-hypervisor.js';
import { CONFIGS, type BenchConfig, DEFAULT_CONFIGS, migrates, pairOf, type RawResults } from './bench/metrics.js';
import {
  DEFAULT_PRECISION,
  DEFAULT_ROUNDS,
  markdownTable,
  precisionNote,
  replaceSection,
  SAME_GUEST_DEFAULT_ROUNDS,
  SAME_GUEST_ROUNDS,
  runNotes,
  summarize,
  svgChart,
  textTable,
  verdict,
} from './bench/report.js';
import type { BenchJob } from './lab-runs/bench.js';

const repo = resolve(import.meta.dirname, '..', '..');
const positive = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('a positive integer');
  return n;
};

const fraction = (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n >= 1) throw new InvalidArgumentError('a number from 0 to below 1');
  return n;
};

const cli = new Command()
  .name('npm run bench --')
  .description(
    'Benchmark vhost-bridge against QEMU tap,vhost=on / vhost=off and DPDK testpmd in the lab (one L2 boot), ' +
      'and live migration of the bridge and tap,vhost=on.',
  )
  .option(
    '--rounds <n>',
    'the most interleaved rounds (A B C D, B C D A, ...); fewer if --precision is met first; ' +
      `${SAME_GUEST_DEFAULT_ROUNDS} with --same-guest unless given`,
    positive,
    DEFAULT_ROUNDS,
  )
  .option(
    '--precision <w>',
    "stop once both TCP throughput ratios' (bridge / vhost=on) 95% intervals are at most +-w wide, after at " +
      'least 5 rounds; 0 runs every round (docs/backends.md, "How many rounds?")',
    fraction,
    DEFAULT_PRECISION,
  )
  .option('--seconds <n>', 'seconds per TCP throughput test', positive, 8)
  .option('--pings <n>', 'pings for the RTT percentiles', positive, 200)
  .option(
    '--configs <list>',
    `configurations, comma-separated (of ${CONFIGS.join(',')}; each bridge-X is compared with its vhost-on-X, ` +
      'bridge-zc1 with bridge-zc0: vhost_net reloaded with experimental_zcopytx=1 / 0 for the run; ch-bridge ' +
      "(cloud-hypervisor + vhost-bridge) with ch-tap (cloud-hypervisor's own virtio-net on a tap); the default " +
      'set leaves out -poll, -mq2, -macvtap, -zc* and ch-*)',
    DEFAULT_CONFIGS.join(','),
  )
  .option(
    '--no-migration',
    'leave out the live migration runs (bridge and vhost-on each migrate the guest A -> B -> A once per round), ' +
      'e.g. npm run bench -- --no-migration --configs bridge,vhost-on',
  )
  .option(
    '--pin',
    "a fixed CPU layout in L2 for every run: the guest's QEMU on L2's CPU 1; iperf3 and ping in L2, the bridge " +
      'and the vhost workers on CPU 0 (docs/backends.md, "Why single tests collapse")',
  )
  .option(
    '--min-tso-segs <n>',
    "the guest's net.ipv4.tcp_min_tso_segs in the TCP tests, 0 for the kernel's (docs/backends.md, " +
      '"Why single tests collapse")',
    (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 255) throw new InvalidArgumentError('an integer from 0 to 255');
      return n;
    },
    0,
  )
  .option(
    '--same-guest',
    'bridge and vhost=on in ONE guest boot on two NICs, their tests alternating within seconds, a fresh boot ' +
      `every ${SAME_GUEST_ROUNDS} rounds (only with --configs bridge,vhost-on --no-migration; docs/backends.md, ` +
      '"The same guest on both datapaths")',
  )
  .option(
    '--no-readme',
    "leave docs/performance.md's results section and results/latest.* (its chart, table) as they are",
  )
  .option(
    '--kernel <series>',
    "L2's kernel: 6.1, or 6.12 (its own docs/performance.md section and result files)",
    '6.1',
  )
  .option(
    '--from-raw <file>',
    "no lab run: report an earlier run's raw.json again (its own date, machine and commit), e.g. after a " +
      'run was voided by hand with an "error" naming why; with --kernel if it ran on 6.12',
  )
  .parse();
const o = cli.opts<{
  rounds: number;
  precision: number;
  seconds: number;
  pings: number;
  configs: string;
  migration: boolean;
  pin?: boolean;
  sameGuest?: boolean;
  minTsoSegs: number;
  readme: boolean;
  kernel: string;
  fromRaw?: string;
}>();

const configs = o.configs.split(',') as BenchConfig[];
const bad = configs.filter((c) => !CONFIGS.includes(c));
if (bad.length) {
  console.error(`bench: unknown configuration ${bad.join(', ')} (one of ${CONFIGS.join(', ')})`);
  process.exit(2);
}
if (o.sameGuest && (configs.join(',') !== 'bridge,vhost-on' || o.migration || o.pin || o.minTsoSegs)) {
  console.error(
    'bench: --same-guest runs only with --configs bridge,vhost-on --no-migration (no --pin, --min-tso-segs)',
  );
  process.exit(2);
}
const rounds = o.sameGuest && cli.getOptionValueSource('rounds') === 'default' ? SAME_GUEST_DEFAULT_ROUNDS : o.rounds;
const paired = configs.includes('bridge') && configs.includes('vhost-on');
if (!paired) console.warn('bench: without both bridge and vhost-on there is no ratio to report');
// The stopping rule reads the bridge / vhost=on intervals: without both, every round runs.
const precision = paired ? o.precision : 0;
for (const c of configs) {
  const p = pairOf(c);
  const other = p && (p.bridge === c ? p.reference : p.bridge);
  if (other && !configs.includes(other)) console.warn(`bench: ${c} without ${other}: no ${p.label} ratio`);
}

/** Runs the bench in the lab: its raw results (with the machine, commit and minutes), and where its logs are. */
async function labRun(): Promise<{ raw: RawResults; work: string }> {
  // Is the lab there?
  const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
  if (!fs.existsSync(join(repo, '.lab', 'lab.env')) || !have('qemu-system-x86_64')) {
    console.error('bench: the lab is not set up. Run (as root):  scripts/lab/setup --bench   then  npm run bench');
    process.exit(2);
  }
  if (configs.includes('dpdk') && !have('dpdk-testpmd')) {
    console.error(
      'bench: dpdk-testpmd is missing (the userspace vhost-user configuration). Run (as root):  scripts/lab/setup ' +
        '--bench   or leave it out with --configs bridge,vhost-on,vhost-off',
    );
    process.exit(2);
  }

  const ch = findChBinary();
  if (configs.some((c) => c.startsWith('ch-')) && 'why' in ch) {
    console.error(`bench: no cloud-hypervisor for ch-bridge/ch-tap: ${ch.why}`);
    process.exit(2);
  }

  const sh = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', cwd: repo }).trim();
    } catch {
      return '?';
    }
  };
  const cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.arch();
  const gib = Math.round(os.totalmem() / 2 ** 30);
  const machine = `${cpu}, ${os.cpus().length} cores, ${gib} GiB, Linux ${os.release()}`;
  const head = sh('git', ['rev-parse', '--short', 'HEAD']);
  const commit = `${head}${sh('git', ['status', '--porcelain', '--', 'src']) ? '+changes' : ''}`;

  const work = fs.mkdtempSync(join(os.tmpdir(), 'vb-bench-'));
  // Live migration: bridge and vhost-on (those chosen), a boot and two hops each per round.
  const migrating = o.migration ? configs.filter(migrates) : [];
  const plan =
    precision > 0
      ? `rounds until both TCP intervals are within +-${precision}, at most ${rounds},`
      : `${rounds} round(s)`;
  // The lab run's time limit, generous; the estimate printed is what runs take on the lab hosts: a guest boot per
  // configuration and round, or, in the same-guest mode, its ~45 s rounds and a ~25 s boot every few.
  const budget = 300 + rounds * (configs.length * (90 + 2 * o.seconds + o.pings * 0.03) + migrating.length * 90);
  const estimate = o.sameGuest
    ? rounds * (configs.length * (2 * o.seconds + o.pings * 0.02 + 3) + 25 / SAME_GUEST_ROUNDS)
    : budget * 0.6;
  console.log(
    `== bench: ${plan} of ${configs.join(', ')}` +
      `${migrating.length ? ` and migration of ${migrating.join(', ')}` : ''}; ${o.seconds} s per TCP test; ` +
      `${precision > 0 ? 'at most ' : ''}about ${Math.round(estimate / 60)} min`,
  );
  const t0 = Date.now();
  const options: BenchJob = {
    rounds,
    precision,
    seconds: o.seconds,
    pings: o.pings,
    configs,
    migration: migrating.length > 0,
    hostCpus: o.pin ? '0' : '',
    minTsoSegs: o.minTsoSegs,
    sameGuest: o.sameGuest === true,
  };
  const lab = await runInLab({
    name: 'bench',
    script: 'dist/scripts/lab-runs/bench.js',
    options,
    kernel: o.kernel,
    timeoutSeconds: budget,
    xchg: work,
    ...(o.pin ? { env: { LAB_L3_L2CPUS: '1' } } : {}),
  });
  const rawFile = join(work, 'bench-raw.json');
  if (!fs.existsSync(rawFile)) {
    console.error(`bench: the lab run ended (${endText(lab)}) without results; logs in ${work}`);
    process.exit(1);
  }
  const raw = JSON.parse(fs.readFileSync(rawFile, 'utf8')) as RawResults;
  Object.assign(raw.meta, {
    machine,
    commit,
    l1Qemu: sh('qemu-system-x86_64', ['--version']).split('\n')[0],
    minutes: Math.round((Date.now() - t0) / 600) / 100,
  });
  return { raw, work };
}

const { raw, work } = o.fromRaw
  ? { raw: JSON.parse(fs.readFileSync(o.fromRaw, 'utf8')) as RawResults, work: null }
  : await labRun();
const machine = String(raw.meta.machine ?? '?');
const commit = String(raw.meta.commit ?? '?');
const summary = summarize(raw);
const v = verdict(summary);

const date = String(raw.meta.date).slice(0, 19).replace(/[:T]/g, '-');
// A run on another L2 kernel than 6.1 keeps its own latest files and results section, beside 6.1's.
const suffix = o.kernel === '6.1' ? '' : `-${o.kernel}`;
const dir = join(repo, 'results', date);
fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(join(dir, 'raw.json'), JSON.stringify(raw, null, 1));
fs.writeFileSync(join(dir, 'summary.json'), JSON.stringify({ meta: raw.meta, summary, verdict: v }, null, 1));
const title = `vhost-bridge vs QEMU tap,vhost=on: ${raw.meta.rounds} interleaved rounds, medians with min-max`;
const subtitle =
  `${String(raw.meta.date).slice(0, 10)} | ${machine} | lab L2 ${raw.meta.l2Kernel} (TCG), L3 ` +
  `nested KVM | ${raw.meta.qemu} | bridge ${commit}`;
const svg = svgChart(summary, title, subtitle);
fs.writeFileSync(join(dir, 'chart.svg'), svg);
const md = [
  `Latest run: ${String(raw.meta.date).slice(0, 16).replace('T', ' ')} UTC, bridge commit ${commit}, ` +
    `${raw.meta.rounds} rounds interleaved, ${raw.meta.seconds} s TCP tests, ${raw.meta.pings} pings` +
    `${raw.meta.migration && raw.meta.migration !== '-' ? `; live migration of ${raw.meta.migration}` : ''}` +
    `${raw.meta.sameGuest && raw.meta.sameGuest !== '-' ? `; ${raw.meta.sameGuest}` : ''}` +
    `${raw.meta.pinning && raw.meta.pinning !== '-' ? `; pinned: ${raw.meta.pinning}` : ''}` +
    `${typeof raw.meta.guestMinTsoSegs === 'number' ? `; guest tcp_min_tso_segs ${raw.meta.guestMinTsoSegs}` : ''}.`,
  `Machine: ${machine}. Lab: L2 = Debian ${raw.meta.l2Kernel} under QEMU TCG, L3 guest under nested KVM; ` +
    `${raw.meta.qemu}; ${raw.meta.iperf3}${raw.meta.testpmd !== '-' ? `; DPDK ${raw.meta.testpmd}` : ''}; Node ` +
    `${raw.meta.node}.`,
  '',
  // Relative to docs/performance.md and to results/latest.md alike.
  `![benchmark chart](../results/latest${suffix}.svg)`,
  '',
  markdownTable(summary),
  '',
  ...v.lines.map((l) => `- ${l}`),
  ...[precisionNote(raw), ...runNotes(summary)].flatMap((l) => (l ? ['', l] : [])),
].join('\n');
// results/latest.* are what docs/performance.md's section shows, so they change only with it: a check run with
// --no-readme must not leave that page's text beside another run's chart.
if (o.readme) {
  fs.writeFileSync(join(repo, 'results', `latest${suffix}.svg`), svg);
  fs.writeFileSync(join(repo, 'results', `latest${suffix}.md`), `${md}\n`);
  fs.writeFileSync(
    join(repo, 'results', `latest${suffix}.json`),
    JSON.stringify({ meta: raw.meta, summary, verdict: v }, null, 1),
  );
  const page = join(repo, 'docs', 'performance.md');
  try {
    fs.writeFileSync(page, replaceSection(fs.readFileSync(page, 'utf8'), md, `bench${suffix}`));
  } catch (e) {
    console.warn(`bench: docs/performance.md not refreshed: ${(e as Error).message}`);
  }
}

console.log(`\n${title}\n${subtitle}\n`);
console.log(textTable(summary));
console.log('');
for (const l of v.lines) console.log(`  ${l}`);
if (!v.ok) console.log('  The bridge misses the bar above on this run; see docs/performance.md for why.');
for (const l of [precisionNote(raw), ...runNotes(summary)]) if (l) console.log(`  ${l}`);
console.log(
  `\nwrote ${dir}/{raw,summary}.json, chart.svg${work ? ', logs/' : ''}` +
    `${o.readme ? `; results/latest${suffix}.{json,md,svg} and docs/performance.md's results refreshed` : ''}`,
);
// Keep the lab's logs (guest consoles, bridge and testpmd logs) with the results.
if (work) {
  fs.mkdirSync(join(dir, 'logs'), { recursive: true });
  for (const f of fs.readdirSync(work)) if (f.endsWith('.log')) fs.copyFileSync(join(work, f), join(dir, 'logs', f));
  fs.rmSync(work, { recursive: true, force: true });
}
