/**
 * The isolation benchmark, inside L2 (started by scripts/bench-isolation.ts through lab/job.ts):
 * does one port's slow or busy front-end stall another port's control traffic? One `vhost-bridge
 * serve` daemon with ports `a` and `b` on L2's real vhost-net. A synthetic front-end on `b`
 * (lab/frontend/handshake.ts: both rings attached) sends GET_FEATURES every 5 ms and times each reply
 * (the probe), while port `a` gets, from another process (this file with argv `disturb KIND SOCKET`),
 * one of:
 *  - nothing (quiet, before and after);
 *  - burst: bursts of 2000 SET_VRING_NUM (no reply) and a GET_FEATURES, again and again;
 *  - memtable: SET_MEM_TABLE with 8 regions of 1 GiB (fresh memfds each time, so every table is new:
 *    8 mmaps, VHOST_SET_MEM_TABLE on the kernel, the previous 8 GiB unmapped), back to back, acked.
 * The disturber is a separate process so that its own work does not delay the probe's event loop
 * (both share L2's two vCPUs with the daemon, as a host's processes would). Writes isolation.json in
 * the exchange directory.
 * Not a pass/fail test: it reports.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { bit, has, maskOf } from '../../src/bits.js';
import { PROTOCOL_F } from '../../src/vhost-user/constants.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F } from '../../src/virtio.js';
import { request } from '../../src/daemon/ctl.js';
import type { PortReport } from '../../src/daemon/report.js';
import { CLK_TCK, ownCpuTicks } from '../../lab/host.js';
import { ID, msg } from '../../lab/frontend/builder.js';
import { memfd, TestFrontEnd } from '../../lab/frontend/frontend.js';
import { type Handshaken, handshake } from '../../lab/frontend/handshake.js';
import { quantile } from '../bench/metrics.js';
import { jobOptions, xchgPath } from '../../lab/job.js';

const OUT = xchgPath('isolation.json');
const CLI = resolve(import.meta.dirname, '..', '..', 'src', 'cli.js');
/** What scripts/bench-isolation.ts asks of the benchmark in L2: seconds per phase. */
export interface IsolationJob {
  phaseSeconds: number;
}
const PHASE_S = jobOptions<IsolationJob>({ phaseSeconds: 6 }).phaseSeconds;
const PROBE_EVERY_MS = 5;
const BURST = 2000;
const GiB = 1n << 30n;
const REGIONS = 8;

const KINDS = ['quiet', 'burst', 'memtable', 'quiet-after'] as const;
type Kind = (typeof KINDS)[number];

export interface Phase {
  kind: Kind;
  /** GET_FEATURES round trips on port b, ms, in order. */
  probeMs: number[];
  median: number;
  p99: number;
  max: number;
  /** What the disturber got done on port a: messages answered (burst) or tables acked (memtable). */
  disturbOps: number;
  disturbSeconds: number;
  /** Each of the disturber's round trips on port a (one burst and its GET_FEATURES, or one acked table), ms. */
  disturbOpMs: { median: number; p99: number; max: number } | null;
  /** The daemon's CPU over the phase, in CPUs (1 = one CPU busy). */
  daemonCpu: number;
}
export interface IsolationResult {
  when: string;
  kernel: string;
  node: string;
  phases: Phase[];
  errors: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The disturber (a child process): runs KIND on SOCKET until SIGTERM, then prints its count as JSON. */
async function disturb(kind: string, socket: string): Promise<void> {
  let ops = 0;
  let stop = false;
  const opMs: number[] = [];
  const t0 = performance.now();
  process.on('SIGTERM', () => {
    stop = true;
  });
  const fe = TestFrontEnd.connect(socket);
  if (kind === 'burst') {
    // SET_VRING_NUM without NEED_REPLY (and no REPLY_ACK on this connection) is answered by nothing,
    // so the burst cannot fill the back-end's reply queue; one GET_FEATURES after each burst waits
    // until the back-end has handled all of it. Written in chunks of what TestFrontEnd sends at once.
    const one = msg.setVringNum(0, 256).bytes;
    const chunk = Buffer.concat(Array.from({ length: 400 }, () => one));
    console.log('ready');
    while (!stop) {
      const t = performance.now();
      for (let sent = 0; sent < BURST; sent += 400) fe.send(chunk);
      if ((await fe.ask(msg.getFeatures())) === 'eof') throw new Error('the back-end hung up during the burst');
      opMs.push(performance.now() - t);
      ops += BURST + 1;
    }
  } else if (kind === 'memtable') {
    const features = (await fe.ask(msg.getFeatures())) as Buffer;
    const offered = features.readBigUInt64LE(12);
    if (!has(offered, VHOST_USER_F_PROTOCOL_FEATURES)) throw new Error('no PROTOCOL_FEATURES offered');
    await fe.ask(msg.getProtocolFeatures());
    fe.send(msg.setProtocolFeatures(bit(PROTOCOL_F.REPLY_ACK)));
    await fe.ask(msg.setOwner().needReply());
    await fe.ask(msg.setFeatures(maskOf(VIRTIO_F.VERSION_1, VHOST_USER_F_PROTOCOL_FEATURES)).needReply());
    console.log('ready');
    for (let n = 0; !stop; n++) {
      const base = 0x7f00_0000_0000n + BigInt(n % 2) * 0x10_0000_0000n;
      const regions = Array.from({ length: REGIONS }, (_, i) => ({
        gpa: BigInt(i) * GiB,
        size: GiB,
        qva: base + BigInt(i) * GiB,
      }));
      const fds = regions.map(() => memfd(GiB, 'vb-isolation'));
      const t = performance.now();
      const r = await fe.ask(msg.setMemTable(regions).needReply(), fds);
      opMs.push(performance.now() - t);
      if (r === 'eof' || r.readUInt32LE(0) !== ID.SET_MEM_TABLE || r.readBigUInt64LE(12) !== 0n) {
        throw new Error(`SET_MEM_TABLE refused or unanswered: ${r === 'eof' ? 'eof' : r.toString('hex')}`);
      }
      ops++;
    }
  } else {
    throw new Error(`unknown disturbance ${kind}`);
  }
  fe.close();
  const sorted = opMs.sort((x, y) => x - y);
  const op = sorted.length
    ? { median: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: sorted[sorted.length - 1] }
    : null;
  console.log(JSON.stringify({ ops, seconds: (performance.now() - t0) / 1000, op }));
  process.exit(0);
}

/**
 * The phases: for each KINDS, the disturber (if any) on socket `a` and the probe on `probe` for
 * PHASE_S seconds; `pid` is the daemon's, for its CPU.
 */
export async function phases(probe: Handshaken, a: string, pid: number): Promise<Phase[]> {
  const out: Phase[] = [];
  for (const kind of KINDS) {
    let child: ReturnType<typeof spawn> | null = null;
    type Count = { ops: number; seconds: number; op: Phase['disturbOpMs'] };
    let done: Promise<Count> = Promise.resolve({ ops: 0, seconds: 0, op: null });
    if (kind === 'burst' || kind === 'memtable') {
      const c = spawn(process.execPath, [import.meta.filename, 'disturb', kind, a], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      child = c;
      const lines = createInterface({ input: c.stdout! });
      let ready: () => void = () => undefined;
      const isReady = new Promise<void>((r) => {
        ready = r;
      });
      done = new Promise((res, rej) => {
        lines.on('line', (l) => {
          if (l === 'ready') ready();
          else if (l.startsWith('{')) res(JSON.parse(l));
        });
        c.once('close', (code) => rej(new Error(`disturber ${kind} exited (${code}) without a count`)));
      });
      await Promise.race([isReady, done]);
      await sleep(300); // let it get going
    }
    const cpu0 = ownCpuTicks(pid);
    const t0 = performance.now();
    const probeMs: number[] = [];
    while (performance.now() - t0 < PHASE_S * 1000) {
      const s = performance.now();
      const r = await probe.fe.ask(msg.getFeatures());
      if (r === 'eof') throw new Error('port b hung up');
      probeMs.push(performance.now() - s);
      await sleep(PROBE_EVERY_MS);
    }
    const cpu = (ownCpuTicks(pid) - cpu0) / CLK_TCK / ((performance.now() - t0) / 1000);
    child?.kill('SIGTERM');
    const d = await done;
    const sorted = [...probeMs].sort((x, y) => x - y);
    const phase: Phase = {
      kind,
      probeMs,
      median: quantile(sorted, 0.5),
      p99: quantile(sorted, 0.99),
      max: sorted[sorted.length - 1],
      disturbOps: d.ops,
      disturbSeconds: d.seconds,
      disturbOpMs: d.op,
      daemonCpu: cpu,
    };
    out.push(phase);
    console.log(
      `${kind}: ${probeMs.length} probes, median ${phase.median.toFixed(2)} ms, p99 ${phase.p99.toFixed(2)} ms, ` +
        `max ${phase.max.toFixed(2)} ms; disturber ${d.ops} ops in ${d.seconds.toFixed(1)} s; daemon ` +
        `${(cpu * 100).toFixed(0)}% CPU`,
    );
    await sleep(500);
  }
  return out;
}

async function main(): Promise<void> {
  const dir = mkdtempSync('/tmp/vb-isolation-');
  const control = join(dir, 'control.sock');
  const config = join(dir, 'config.json');
  const sock = (p: string) => join(dir, `${p}.sock`);
  writeFileSync(
    config,
    JSON.stringify({
      control: { path: control },
      ports: { a: { tap: 'vbisoa', socket: sock('a') }, b: { tap: 'vbisob', socket: sock('b') } },
    }),
  );
  const logFd = openSync(`${process.env.LAB_XCHG ?? dir}/bench-isolation-daemon.log`, 'w');
  const daemon = spawn(
    process.execPath,
    ['--no-memory-reducer', CLI, 'serve', '--config', config, '--log-level', 'warn'],
    { stdio: ['ignore', logFd, logFd] },
  );
  const pid = daemon.pid!;
  for (let i = 0; ; i++) {
    try {
      await request(control, [{ method: 'version' }]);
      break;
    } catch (e) {
      if (i > 200) throw e;
      await sleep(50);
    }
  }
  const result: IsolationResult = {
    when: new Date().toISOString(),
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    node: process.version,
    phases: [],
    errors: [],
  };
  const probe = await handshake(sock('b'));
  try {
    const [b] = (await request(control, [{ method: 'status', params: { port: 'b' } }])) as PortReport[];
    if (!b.device?.rings.every((r) => r.attached)) throw new Error("port b's rings are not attached");
    result.phases = await phases(probe, sock('a'), pid);
    const [after] = (await request(control, [{ method: 'status', params: { port: 'b' } }])) as PortReport[];
    if (after.reconnects !== 0 || !after.device?.rings.every((r) => r.attached)) {
      throw new Error(
        `port b was disturbed: ${after.reconnects} reconnects, rings ${JSON.stringify(after.device?.rings)}`,
      );
    }
  } catch (e) {
    result.errors.push((e as Error).stack ?? String(e));
    console.error(e);
  } finally {
    probe.close();
    const gone = new Promise((r) => daemon.once('exit', r));
    daemon.kill('SIGTERM');
    await gone;
    writeFileSync(OUT, JSON.stringify(result, null, 2));
  }
}

if (process.argv[2] === 'disturb') await disturb(process.argv[3], process.argv[4]);
else if (process.argv[1] === import.meta.filename) await main();
