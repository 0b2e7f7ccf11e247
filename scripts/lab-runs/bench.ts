/**
 * The benchmark, inside L2 (started by scripts/bench.ts through lab/job.ts): the same L3 guest in
 * each configuration, rounds interleaved and rotated (A B C D, B C D A, ...), raw figures written to
 * bench-raw.json in the exchange directory after every run so a broken run keeps what was measured.
 * Unless the job says `migration: false`, each round also migrates the guest back and forth once in
 * each of bridge and vhost-on that was chosen (lab/migration-hops.ts): those runs take their turn in the same rotation.
 */
import * as fs from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { CLK_TCK, hostIfCounter, ownCpuTicks, peakRssKiB, vhostWorkers, workerTicksBetween } from '../../lab/host.js';
import { ZCOPYTX_PATH } from '../../src/vhost-kernel/vhost-net.js';
import {
  DEFAULT_CONFIGS,
  migrates,
  migrationMetrics,
  PER_PACKET_EVENTS,
  quantile,
  type BenchConfig,
  type Metrics,
  type RawResults,
  type Run,
} from '../bench/metrics.js';
import { DEFAULT_PRECISION, DEFAULT_ROUNDS, preciseEnough, SAME_GUEST_ROUNDS } from '../bench/report.js';
import {
  configFacts,
  HOST_IP,
  type RunContext,
  type SameGuestContext,
  withConfigRetried,
  withSameGuest,
} from '../../lab/configs.js';
import { HOPS_PER_RUN, type MigrationConfig, migrateBackAndForth } from '../../lab/migration-hops.js';
import { type Guest, L3_DEFAULTS } from '../../lab/guest.js';
import { jobOptions, xchgPath } from '../../lab/job.js';

/** What scripts/bench.ts asks of the benchmark in L2 (its options; the defaults when run by hand). */
export interface BenchJob {
  /** the most rounds; fewer if `precision` is met first (scripts/bench.ts, `--precision`) */
  rounds: number;
  precision: number;
  /** seconds per TCP test */
  seconds: number;
  pings: number;
  configs: BenchConfig[];
  /** each round migrates the guest back and forth once in each of bridge and vhost-on chosen */
  migration: boolean;
  /**
   * `--pin`: L2's CPUs for everything but the guest (this runner and what it starts: iperf3's end in
   * L2, ping, the bridge; and every vhost worker), while the guest's QEMU runs on LAB_L3_L2CPUS
   * (lab/guest.ts). A fixed layout in both configurations, so the scheduler's placement of the three
   * busy threads of a transfer (the guest's vCPU, the vhost worker, iperf3 in L2) on L2's two CPUs
   * cannot differ between runs; it is not what spreads them (docs/backends.md, "Why single tests
   * collapse"). Empty: no pinning.
   */
  hostCpus: string;
  /**
   * `--min-tso-segs N`: the guest's net.ipv4.tcp_min_tso_segs for the TCP tests (0: the kernel's, 2).
   * The guest sizes its TSO frames from its pacing rate (about a millisecond's worth), and under TCG a
   * transfer that starts slow could send small frames, each costing the vhost worker about as much as
   * a large one, and stay slow; a floor holds frames to the size a real host's rate gives them (it
   * does not remove the spread: docs/backends.md, "Why single tests collapse").
   */
  minTsoSegs: number;
  /**
   * `--same-guest`: bridge and vhost=on in one guest boot, on two NICs (lab/configs.ts withSameGuest),
   * their tests alternating within seconds; a round is one test of each kind on each, and a boot holds
   * SAME_GUEST_ROUNDS rounds (docs/backends.md, "The same guest on both datapaths").
   */
  sameGuest: boolean;
}

const job = jobOptions<BenchJob>({
  rounds: DEFAULT_ROUNDS,
  precision: DEFAULT_PRECISION,
  seconds: 8,
  pings: 200,
  configs: [...DEFAULT_CONFIGS],
  migration: true,
  hostCpus: '',
  minTsoSegs: 0,
  sameGuest: false,
});
const ROUNDS = job.rounds;
const PRECISION = job.precision;
const SECONDS = job.seconds;
const PINGS = job.pings;
const CHOSEN = job.configs;
const OUT = xchgPath('bench-raw.json');
const HOST_CPUS = job.hostCpus;
const MIN_TSO_SEGS = job.minTsoSegs;
const SAME_GUEST = job.sameGuest;
const MIGRATING: MigrationConfig[] = job.migration ? CHOSEN.filter(migrates) : [];

const t0 = Date.now();
const elapsed = (): string => {
  const s = Math.round((Date.now() - t0) / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
};
let where = '';
const say = (m: string): void => console.log(`[${elapsed()}] ${where}${m}`);

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).trim();
  } catch {
    return '?';
  }
}

/**
 * L2-wide counts of PER_PACKET_EVENTS over `seconds` (`perf stat -a`, counting, no sampling), run
 * beside the event loop (the guest's console is read meanwhile); null if perf cannot count here.
 */
function perfCounts(seconds: number): Promise<Record<string, number> | null> {
  const csv = `/tmp/vb-bench-perf-${process.pid}.csv`;
  const events = Object.keys(PER_PACKET_EVENTS).flatMap((e) => ['-e', e]);
  return new Promise((res) => {
    const p = spawn('perf', ['stat', '-a', '-x', ',', '-o', csv, ...events, '--', 'sleep', String(seconds)], {
      stdio: 'ignore',
    });
    p.on('error', () => res(null));
    p.on('exit', (code) => {
      try {
        if (code !== 0) return res(null);
        const counts: Record<string, number> = {};
        for (const l of fs.readFileSync(csv, 'utf8').split('\n')) {
          const [v, , name] = l.split(',');
          if (name && name in PER_PACKET_EVENTS && /^\d+$/.test(v)) counts[name] = Number(v);
        }
        res(Object.keys(counts).length === Object.keys(PER_PACKET_EVENTS).length ? counts : null);
      } catch {
        res(null);
      } finally {
        fs.rmSync(csv, { force: true });
      }
    });
  });
}

/**
 * 64-byte UDP flood from the guest to a sink in L2: the host interface's receive rate in kpps, and
 * the kernel's work per packet received over the same window (figures of PER_PACKET_EVENTS).
 */
async function udpFlood(g: RunContext['guest'], hostIf: string): Promise<Metrics> {
  const sink = spawn('iperf3', ['-s', '-1', '-B', HOST_IP, '-p', '5299'], { stdio: 'ignore' });
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  try {
    await sleep(1000);
    const flood = g.exec(`timeout 20 iperf3 -c ${HOST_IP} -p 5299 -u -b 0 -l 64 -t 7 >/dev/null 2>&1; true`, {
      timeoutMs: 60_000,
    });
    await sleep(3000);
    const rx0 = hostIfCounter(hostIf, 'rx_packets'),
      t1 = process.hrtime.bigint();
    const counts = await perfCounts(3);
    if (!counts) await sleep(Math.max(0, 3000 - Number(process.hrtime.bigint() - t1) / 1e6));
    const rx1 = hostIfCounter(hostIf, 'rx_packets'),
      t2 = process.hrtime.bigint();
    await flood;
    const m: Metrics = { udpKpps: (rx1 - rx0) / (Number(t2 - t1) / 1e9) / 1000 };
    if (counts && rx1 > rx0) for (const [e, key] of Object.entries(PER_PACKET_EVENTS)) m[key] = counts[e] / (rx1 - rx0);
    return m;
  } finally {
    sink.kill('SIGKILL');
  }
}

/** vhost_net's experimental_zcopytx as loaded now, or '-' when the module is not. */
function zcopytx(): string {
  try {
    return fs.readFileSync(ZCOPYTX_PATH, 'utf8').trim();
  } catch {
    return '-';
  }
}

/**
 * PINGS pings from the guest to `peer`, 20 ms apart: their RTT percentiles, or an error (prefixed
 * with `what`) if under 90% were answered. The interleaved and the same-guest rounds both use it.
 */
async function pingRtt(g: Guest, peer: string, what = ''): Promise<Pick<Metrics, 'rttP50Ms' | 'rttP99Ms'>> {
  const p = await g.ping(peer, { count: PINGS, intervalS: 0.02, timeoutS: 2 });
  const rtt = [...p.rttMs].sort((a, b) => a - b);
  if (rtt.length < PINGS * 0.9) throw new Error(`${what}only ${rtt.length} of ${PINGS} ping replies`);
  return { rttP50Ms: quantile(rtt, 0.5), rttP99Ms: quantile(rtt, 0.99) };
}

/** Puts every vhost worker of `owner` on HOST_CPUS (a kernel thread up to 6.4, a thread of the owner after). */
function pinWorkers(owner: number): void {
  const workers = vhostWorkers(owner);
  for (const w of workers) execFileSync('taskset', ['-p', '-c', HOST_CPUS, String(w.pid)], { stdio: 'ignore' });
  say(`pinned: guest on L2 CPU ${L3_DEFAULTS.l2Cpus}; ${workers.length} vhost worker(s) and L2's end on ${HOST_CPUS}`);
}

async function measure(config: BenchConfig, ctx: RunContext, run: Run): Promise<Metrics> {
  const g = ctx.guest;
  const want = configFacts(config).zcopytx;
  if (want !== null) {
    // The module was reloaded for this run (lab/configs.ts): say so, and fail a run that did not get it.
    if (zcopytx() !== String(want)) throw new Error(`vhost_net experimental_zcopytx is ${zcopytx()}, not ${want}`);
    say(`vhost_net experimental_zcopytx ${want} during the run`);
  }
  const m: Metrics = { firstPingS: ctx.firstPingMs / 1000 };
  const helper = ctx.bridge?.pid ?? ctx.testpmd?.pid;
  const before = helper ? ownCpuTicks(helper) : null;
  // Two queue pairs carry several flows (4 streams), the others one.
  const parallel = configFacts(config).queuePairs > 1 ? 4 : undefined;
  // The vhost workers of whoever owns /dev/vhost-net (the bridge, or QEMU for tap,vhost=on); none
  // for tap,vhost=off and testpmd. Over the guest -> host test: the transmit path zero-copy changes.
  const owner = ctx.bridge?.pid ?? g.pid;
  if (HOST_CPUS) pinWorkers(owner);
  if (MIN_TSO_SEGS) {
    const r = await g.exec(
      `echo ${MIN_TSO_SEGS} > /proc/sys/net/ipv4/tcp_min_tso_segs && cat /proc/sys/net/ipv4/tcp_min_tso_segs`,
      {
        timeoutMs: 20_000,
      },
    );
    if (r.rc !== 0 || r.output.trim() !== String(MIN_TSO_SEGS))
      throw new Error(`the guest's tcp_min_tso_segs is not ${MIN_TSO_SEGS}: ${r.output.trim()}`);
  }
  const workers0 = vhostWorkers(owner);
  say(`TCP guest -> host, ${SECONDS} s${parallel ? `, ${parallel} streams` : ''}`);
  const frames0 = [hostIfCounter(ctx.hostIf, 'rx_bytes'), hostIfCounter(ctx.hostIf, 'rx_packets')];
  const tx = await g.iperf3({ seconds: SECONDS, parallel });
  const frames = hostIfCounter(ctx.hostIf, 'rx_packets') - frames0[1];
  if (frames > 0) run.txFrameBytes = Math.round((hostIfCounter(ctx.hostIf, 'rx_bytes') - frames0[0]) / frames);
  m.tcpTxMbps = tx.bitsPerSecond / 1e6;
  const workers1 = vhostWorkers(owner);
  if (workers1.length) m.workerCpuS = workerTicksBetween(workers0, workers1) / CLK_TCK;
  say(`TCP host -> guest, ${SECONDS} s${parallel ? `, ${parallel} streams` : ''}`);
  const rx = await g.iperf3({ seconds: SECONDS, reverse: true, parallel });
  m.tcpRxMbps = rx.bitsPerSecond / 1e6;
  run.perSecond = { tcpTxMbps: tx.perSecondMbps, tcpRxMbps: rx.perSecondMbps };
  if (helper && before !== null) {
    m.cpuS = (ownCpuTicks(helper) - before) / CLK_TCK;
    m.rssMiB = peakRssKiB(helper) / 1024;
  }
  say(`ping x${PINGS}`);
  Object.assign(m, await pingRtt(g, HOST_IP));
  // Small-packet rate of the datapath: 64-byte UDP datagrams flooded by the guest, counted as they
  // reach the host interface (its RX counter) over 3 s in the middle of a 7 s flood. Not what an
  // iperf3 server reads: L2 runs under TCG, so the receiving application, not the datapath, would be
  // the limit, and under a flood iperf3's own control connection can stall.
  say('UDP 64-byte flood guest -> host, 7 s');
  Object.assign(m, await udpFlood(g, ctx.hostIf));
  if (ctx.bridge) {
    const { connected, featuresSet, allRingsRunning } = ctx.bridge.status().times;
    if (connected !== null && featuresSet !== null && allRingsRunning !== null) {
      m.setupMs = allRingsRunning - connected;
      m.ringsMs = allRingsRunning - featuresSet;
    }
  }
  const fmt = Object.entries(m)
    .map(([k, v]) => `${k}=${Number(v).toFixed(k.endsWith('Ms') || k.endsWith('PerPkt') ? 2 : 1)}`)
    .join(' ');
  say(`done: ${fmt}`);
  return m;
}

type SamePath = 'bridge' | 'vhost-on';

/**
 * One round of the same-guest mode: TCP guest -> host on both NICs, then host -> guest on both in
 * the other order, then the pings in the first order (A B, B A, A B: a drift of the lab's speed
 * within the round weighs on both alike); `order` flips every round.
 */
async function sameGuestRound(ctx: SameGuestContext, order: readonly SamePath[], runs: Record<SamePath, Run>) {
  const g = ctx.guest;
  const owner = (k: SamePath): number => (k === 'bridge' ? ctx.bridge.pid : g.pid);
  const m: Record<SamePath, Metrics> = { bridge: {}, 'vhost-on': {} };
  for (const k of order) {
    m[k].firstPingS = ctx.paths[k].firstPingMs / 1000;
    say(`TCP guest -> host over ${k}'s NIC, ${SECONDS} s`);
    const w0 = vhostWorkers(owner(k));
    const tx = await g.iperf3({ seconds: SECONDS, peer: ctx.paths[k].peer });
    const w1 = vhostWorkers(owner(k));
    m[k].tcpTxMbps = tx.bitsPerSecond / 1e6;
    if (w1.length) m[k].workerCpuS = workerTicksBetween(w0, w1) / CLK_TCK;
    runs[k].perSecond = { tcpTxMbps: tx.perSecondMbps };
  }
  for (const k of [...order].reverse()) {
    say(`TCP host -> guest over ${k}'s NIC, ${SECONDS} s`);
    const rx = await g.iperf3({ seconds: SECONDS, reverse: true, peer: ctx.paths[k].peer });
    m[k].tcpRxMbps = rx.bitsPerSecond / 1e6;
    runs[k].perSecond = { ...runs[k].perSecond, tcpRxMbps: rx.perSecondMbps };
  }
  for (const k of order) {
    say(`ping x${PINGS} over ${k}'s NIC`);
    Object.assign(m[k], await pingRtt(g, ctx.paths[k].peer, `${k}: `));
  }
  for (const k of order) runs[k].metrics = m[k];
}

/**
 * The same-guest mode's rounds: a fresh boot every SAME_GUEST_ROUNDS rounds, the bridge's NIC first
 * in odd boots and second in even ones. A failure (a guest fault of the lab, or anything else) voids
 * the round under way, whose runs keep the error; the next round starts in a fresh boot. Three boots
 * in a row without a round end the bench.
 */
async function sameGuestRounds(raw: RawResults, write: () => void): Promise<void> {
  let round = 1;
  let barren = 0;
  for (let boot = 1; round <= ROUNDS && barren < 3; boot++) {
    const bridgeFirst = boot % 2 === 1;
    where = `boot ${boot} `;
    say(`setting up and booting the guest on both datapaths (the bridge's NIC ${bridgeFirst ? 'first' : 'second'})`);
    const start = round;
    let enough = false;
    let runs: Record<SamePath, Run> | null = null;
    try {
      await withSameGuest({ tag: `bench-same-${boot}`, bridgeFirst }, async (ctx) => {
        for (let k = 0; k < SAME_GUEST_ROUNDS && round <= ROUNDS; k++, round++) {
          where = `round ${round}/${ROUNDS} (boot ${boot}) `;
          const run = (config: SamePath): Run => ({
            round,
            config,
            part: 'datapath',
            startedAt: new Date().toISOString(),
            seconds: SECONDS,
            bootRetries: ctx.guest.bootRetries,
            metrics: {},
          });
          runs = { bridge: run('bridge'), 'vhost-on': run('vhost-on') };
          const order: SamePath[] = round % 2 === 1 ? ['bridge', 'vhost-on'] : ['vhost-on', 'bridge'];
          await sameGuestRound(ctx, order, runs);
          raw.runs.push(runs.bridge, runs['vhost-on']);
          runs = null;
          raw.meta.rounds = round;
          write();
          if (PRECISION > 0 && preciseEnough(raw, PRECISION)) {
            say(`both throughput intervals within +-${PRECISION} after ${round} rounds: enough`);
            enough = true;
            round = ROUNDS + 1;
            return;
          }
        }
      });
    } catch (e) {
      const error = (e as Error).message.split('\n')[0];
      say(`FAILED: ${error}: the round under way is void; the next starts in a fresh boot`);
      if (runs !== null) {
        const r: Record<SamePath, Run> = runs;
        r.bridge.error = r['vhost-on'].error = error;
        raw.runs.push(r.bridge, r['vhost-on']);
        round++;
        write();
      }
    }
    barren = round > start ? 0 : barren + 1;
    if (enough) break;
  }
  if (barren >= 3) say('three boots in a row without a round: stopped');
}

async function main(): Promise<void> {
  if (HOST_CPUS) {
    if (!L3_DEFAULTS.l2Cpus) throw new Error('hostCpus (--pin) without LAB_L3_L2CPUS: the guest would not be pinned');
    // Every thread of this process; what it starts from now on inherits the list.
    execFileSync('taskset', ['-a', '-p', '-c', HOST_CPUS, String(process.pid)], { stdio: 'ignore' });
  }
  const raw: RawResults = {
    meta: {
      date: new Date().toISOString(),
      l2Kernel: sh('uname', ['-r']),
      qemu: sh('qemu-system-x86_64', ['--version']).split('\n')[0],
      iperf3: sh('iperf3', ['--version']).split('\n')[0],
      testpmd: CHOSEN.includes('dpdk') ? sh('dpkg-query', ['-W', '-f=$' + '{Version}', 'dpdk-dev']) : '-',
      node: process.version,
      // The rounds that ran (updated after each); roundsCap is the most that were asked for.
      rounds: 0,
      roundsCap: ROUNDS,
      precision: PRECISION,
      seconds: SECONDS,
      pings: PINGS,
      guest:
        'L3: Debian 6.1 kernel, busybox initramfs, 1 vCPU, 512 MiB memfd share=on, virtio-net-pci rx/tx queue size ' +
        '256, nested KVM',
      configs: CHOSEN.join(','),
      // The module's default, which every run that reloads it restores (lab/configs.ts).
      zcopytx: zcopytx(),
      migration: MIGRATING.length ? `${MIGRATING.join(',')}: ${HOPS_PER_RUN} hops per round (A -> B -> A)` : '-',
      guestMinTsoSegs: MIN_TSO_SEGS || 'kernel default',
      sameGuest: SAME_GUEST
        ? `bridge and vhost=on in one guest on two NICs, tests alternating; ${SAME_GUEST_ROUNDS} rounds per boot`
        : '-',
      pinning: HOST_CPUS
        ? `guest QEMU on L2 CPU ${L3_DEFAULTS.l2Cpus}; iperf3/ping in L2, the bridge, vhost workers on ${HOST_CPUS}`
        : '-',
    },
    runs: [],
  };
  const write = (): void => fs.writeFileSync(OUT, JSON.stringify(raw, null, 1));
  write();
  if (SAME_GUEST) {
    await sameGuestRounds(raw, write);
    say(`all runs done; raw results in ${OUT}`);
    return;
  }
  const schedule: ({ config: BenchConfig; part: 'datapath' } | { config: MigrationConfig; part: 'migration' })[] = [
    ...CHOSEN.map((config) => ({ config, part: 'datapath' as const })),
    ...MIGRATING.map((config) => ({ config, part: 'migration' as const })),
  ];
  for (let round = 1; round <= ROUNDS; round++) {
    // Interleaved, and rotated each round (A B C D, B C D A, C D A B, ...) so that no configuration
    // always runs first after the L2 boot or always follows the same neighbour.
    const order = schedule.map((_, i) => schedule[(i + round - 1) % schedule.length]);
    for (const item of order) {
      const { config, part } = item;
      where = `round ${round}/${ROUNDS} ${config.padEnd(9)} ${part === 'migration' ? 'migration ' : ''}`;
      say('setting up and booting the guest');
      const run: Run = {
        round,
        config,
        part,
        startedAt: new Date().toISOString(),
        seconds: SECONDS,
        bootRetries: 0,
        metrics: {},
      };
      const onRetry = (fault: string): void => {
        run.retriedAfter = fault;
        say(`guest fault (${fault.slice(0, 120)}): running this configuration once more`);
      };
      // A guest fault of the nested lab (a panic, a reset, a guest that stopped answering, as the
      // guest harness counts them) voids the run: it is done once more from a fresh set-up and boot,
      // so its figures are its own, and the raw results say so (lab/retry.ts). Other failures stand.
      try {
        if (item.part === 'migration') {
          run.hops = await migrateBackAndForth(item.config, { tag: `bench-mig-${config}-${round}`, log: say }, onRetry);
          run.metrics = migrationMetrics(run.hops);
        } else {
          run.metrics = await withConfigRetried(
            config,
            { tag: `bench-${config}-${round}` },
            async (ctx) => {
              run.bootRetries = ctx.guest.bootRetries;
              return measure(config, ctx, run);
            },
            onRetry,
          );
        }
      } catch (e) {
        run.error = (e as Error).message.split('\n')[0];
        say(`FAILED: ${run.error}`);
      }
      raw.runs.push(run);
      write();
    }
    where = '';
    raw.meta.rounds = round;
    write();
    // Enough rounds once both throughput ratios' intervals are narrow enough (docs/backends.md, "How
    // many rounds?"); the rule reads only the intervals' width, never the ratio, so it cannot pick a result.
    if (PRECISION > 0 && preciseEnough(raw, PRECISION)) {
      say(`both throughput intervals within +-${PRECISION} after ${round} rounds: enough`);
      break;
    }
  }
  say(`all runs done; raw results in ${OUT}`);
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    console.error(`bench failed: ${e.stack ?? e.message}`);
    process.exit(1);
  },
);
