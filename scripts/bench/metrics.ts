/**
 * The benchmark's figures, their units and which way is better; shared by the runner in the lab
 * (scripts/lab-runs/bench.ts) and the report (scripts/bench/report.ts).
 */
import type { MigrationConfig, MigrationHop } from '../../lab/migration-hops.js';

export const CONFIGS = [
  'bridge',
  'vhost-on',
  'vhost-off',
  'dpdk',
  'bridge-poll',
  'vhost-on-poll',
  'bridge-mq2',
  'vhost-on-mq2',
  'bridge-macvtap',
  'vhost-on-macvtap',
  'bridge-zc1',
  'bridge-zc0',
  'ch-bridge',
  'ch-tap',
] as const;
export type BenchConfig = (typeof CONFIGS)[number];
/** What `npm run bench` runs unless told: the four configurations of docs/performance.md, "How the benchmark runs". */
export const DEFAULT_CONFIGS: readonly BenchConfig[] = ['bridge', 'vhost-on', 'vhost-off', 'dpdk'];

export const CONFIG_LABELS: Record<BenchConfig, string> = {
  bridge: 'vhost-bridge',
  'vhost-on': 'tap,vhost=on',
  'vhost-off': 'tap,vhost=off',
  dpdk: 'DPDK testpmd',
  'bridge-poll': 'bridge --busy-poll-us 50',
  'vhost-on-poll': 'tap,vhost=on,poll-us=50',
  'bridge-mq2': 'bridge --queues 2',
  'vhost-on-mq2': 'tap,vhost=on,queues=2',
  'bridge-macvtap': 'bridge --macvtap',
  'vhost-on-macvtap': 'macvtap fd,vhost=on',
  'bridge-zc1': 'bridge, zcopytx=1',
  'bridge-zc0': 'bridge, zcopytx=0',
  'ch-bridge': 'cloud-hypervisor + vhost-bridge',
  'ch-tap': 'cloud-hypervisor virtio-net, tap',
};

/** The configurations that, when chosen, also migrate the guest in each round (lab/migration-hops.ts). */
const MIGRATING: readonly MigrationConfig[] = ['bridge', 'vhost-on'];
export const migrates = (c: BenchConfig): c is MigrationConfig => (MIGRATING as readonly BenchConfig[]).includes(c);

/** Two configurations compared round by round: the ratio is `bridge` / `reference`. */
export interface ConfigPair {
  bridge: BenchConfig;
  reference: BenchConfig;
  label: string;
  /** What the ratio's numerator is, as the verdict says which way a difference goes (default 'bridge'). */
  subject?: string;
  /** The figures the verdict's lines name for this pair (default: the decided ones, report.ts GOALS). */
  figures?: readonly MetricKey[];
}

/**
 * Each bridge configuration against its QEMU counterpart on the same guest (and the bridge with
 * zero-copy transmit against itself without): the first pair is the one the verdict decides on;
 * the others are reported with their intervals.
 */
export const PAIRS: readonly ConfigPair[] = [
  { bridge: 'bridge', reference: 'vhost-on', label: 'bridge / vhost=on' },
  { bridge: 'bridge-poll', reference: 'vhost-on-poll', label: 'busy poll 50 us: bridge / vhost=on' },
  { bridge: 'bridge-mq2', reference: 'vhost-on-mq2', label: '2 queue pairs: bridge / vhost=on' },
  { bridge: 'bridge-macvtap', reference: 'vhost-on-macvtap', label: 'macvtap: bridge / vhost=on' },
  {
    bridge: 'bridge-zc1',
    reference: 'bridge-zc0',
    label: 'bridge, experimental_zcopytx: 1 / 0',
    subject: 'zero-copy',
    figures: ['tcpTxMbps', 'workerCpuS'],
  },
  { bridge: 'ch-bridge', reference: 'ch-tap', label: 'cloud-hypervisor: bridge / its own virtio-net on a tap' },
];

/** The pair a configuration belongs to, if any. */
export const pairOf = (c: BenchConfig): ConfigPair | undefined =>
  PAIRS.find((p) => p.bridge === c || p.reference === c);

export interface MetricDef {
  key: MetricKey;
  label: string;
  /** '' for a count. */
  unit: string;
  /** What the figure is, said after its unit in the row's label: `(ms, QEMU's figure, lower is better)`. */
  aside?: string;
  better: 'higher' | 'lower';
  /** Only some configurations have it (the bridge's own process, testpmd). */
  note?: string;
}

export type MetricKey =
  | 'tcpTxMbps'
  | 'tcpRxMbps'
  | 'udpKpps'
  | 'rttP50Ms'
  | 'rttP99Ms'
  | 'firstPingS'
  | 'cpuS'
  | 'workerCpuS'
  | 'rssMiB'
  | 'setupMs'
  | 'ringsMs'
  | 'switchesPerPkt'
  | 'wakeupsPerPkt'
  | 'l3ExitsPerPkt'
  | 'tlbFlushesPerPkt'
  | 'migrationDowntimeMs'
  | 'migrationLostPings'
  | 'migrationFirstReplyMs';

export const METRICS: readonly MetricDef[] = [
  { key: 'tcpTxMbps', label: 'TCP guest -> host', unit: 'Mbit/s', better: 'higher' },
  { key: 'tcpRxMbps', label: 'TCP host -> guest', unit: 'Mbit/s', better: 'higher' },
  { key: 'udpKpps', label: 'UDP 64 B guest -> host', unit: 'kpps', better: 'higher' },
  { key: 'rttP50Ms', label: 'ping RTT p50', unit: 'ms', better: 'lower' },
  { key: 'rttP99Ms', label: 'ping RTT p99', unit: 'ms', better: 'lower' },
  { key: 'firstPingS', label: 'QEMU start -> first ping', unit: 's', better: 'lower' },
  {
    key: 'cpuS',
    label: 'helper CPU in TCP tests',
    unit: 's',
    better: 'lower',
    note: "the bridge's own threads (vhost workers excluded) / testpmd",
  },
  {
    key: 'workerCpuS',
    label: 'vhost worker CPU in TCP guest -> host',
    unit: 's',
    better: 'lower',
    note: "the kernel's vhost-<owner pid> workers of the bridge or QEMU (lab/host.ts vhostWorkers)",
  },
  { key: 'rssMiB', label: 'helper peak RSS', unit: 'MiB', better: 'lower', note: 'VmHWM of the bridge / testpmd' },
  {
    key: 'setupMs',
    label: 'vhost-user connect -> last ring',
    unit: 'ms',
    better: 'lower',
    note: 'bridge log timestamps; includes the guest boot',
  },
  {
    key: 'ringsMs',
    label: 'SET_FEATURES -> last ring',
    unit: 'ms',
    better: 'lower',
    note: "bridge log timestamps: the bridge's own set-up work",
  },
  // The steady per-packet work (npm run profile's counts, in every run): L2-wide kernel events over the
  // UDP flood's counting window, per 64-byte packet the host interface received (PER_PACKET_EVENTS).
  {
    key: 'switchesPerPkt',
    label: 'context switches per packet',
    unit: '',
    aside: 'UDP 64 B, L2-wide',
    better: 'lower',
  },
  { key: 'wakeupsPerPkt', label: 'wake-ups per packet', unit: '', aside: 'UDP 64 B, L2-wide', better: 'lower' },
  { key: 'l3ExitsPerPkt', label: 'L3 exits per packet', unit: '', aside: 'UDP 64 B, kvm_exit', better: 'lower' },
  { key: 'tlbFlushesPerPkt', label: 'TLB flushes per packet', unit: '', aside: 'UDP 64 B, L2-wide', better: 'lower' },
  // Live migration (bridge and vhost-on only; lab/migration-hops.ts): per run, the median of its hops.
  { key: 'migrationDowntimeMs', label: 'migration downtime', unit: 'ms', aside: "QEMU's figure", better: 'lower' },
  {
    key: 'migrationLostPings',
    label: 'pings lost across a migration',
    unit: '',
    aside: '50 ms interval',
    better: 'lower',
  },
  { key: 'migrationFirstReplyMs', label: 'first reply after the destination resumed', unit: 'ms', better: 'lower' },
];

/**
 * The kernel tracepoints counted for the per-packet figures, and the figure each gives. Tracepoints
 * count without a PMU, which L2 under TCG lacks (docs/performance.md, "Reading the numbers").
 */
export const PER_PACKET_EVENTS: Readonly<Record<string, MetricKey>> = {
  'sched:sched_switch': 'switchesPerPkt',
  'sched:sched_wakeup': 'wakeupsPerPkt',
  'kvm:kvm_exit': 'l3ExitsPerPkt',
  'tlb:tlb_flush': 'tlbFlushesPerPkt',
};

/** `ms, QEMU's figure`: the unit and the aside of a figure, as its label says them. */
export function unitText(m: MetricDef): string {
  return [m.unit, m.aside].filter(Boolean).join(', ');
}

export type Metrics = Partial<Record<MetricKey, number>>;

/** What a run measured: the datapath figures (throughput, latency, set-up), or live migration. */
export type RunPart = 'datapath' | 'migration';

/** One configuration, one round, one part. */
export interface Run {
  round: number;
  config: BenchConfig;
  /** Which part of the bench the run is; absent means 'datapath' (results files may lack it). */
  part?: RunPart;
  startedAt: string;
  seconds: number;
  bootRetries: number;
  metrics: Metrics;
  error?: string;
  /** The first attempt failed with a guest fault of the lab and was done again: the fault. */
  retriedAfter?: string;
  /** A migration run's hops, each as measured (its metrics are their medians). */
  hops?: MigrationHop[];
  /** The TCP tests' rate in each second (iperf3's intervals in L2), Mbit/s: how steady each test was. */
  perSecond?: { tcpTxMbps?: number[]; tcpRxMbps?: number[] };
  /**
   * Mean bytes per frame the guest sent in the TCP guest -> host test (the host interface's RX
   * bytes / packets: TSO frames as the guest built them), for docs/backends.md "Why single tests collapse".
   */
  txFrameBytes?: number;
}

/** What the lab run writes (raw), and the report reads. */
export interface RawResults {
  meta: Record<string, string | number>;
  runs: Run[];
}

/**
 * A migration run's figures: the median of its hops for each (a hop with no reply after the
 * destination resumed has no first-reply figure; its lost pings count it).
 */
export function migrationMetrics(hops: readonly MigrationHop[]): Metrics {
  const median = (vals: (number | null)[]): number | undefined => {
    const s = vals.filter((v): v is number => v !== null && Number.isFinite(v)).sort((a, b) => a - b);
    return s.length ? quantile(s, 0.5) : undefined;
  };
  const m: Metrics = {};
  const set = (key: MetricKey, v: number | undefined): void => {
    if (v !== undefined) m[key] = v;
  };
  set('migrationDowntimeMs', median(hops.map((h) => h.downtimeMs)));
  set('migrationLostPings', median(hops.map((h) => h.lostPings)));
  set('migrationFirstReplyMs', median(hops.map((h) => h.firstReplyMs)));
  return m;
}

/** The value at quantile q (0..1) of sorted values, by linear interpolation. */
export function quantile(sorted: readonly number[], q: number): number {
  if (!sorted.length) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos),
    hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}
