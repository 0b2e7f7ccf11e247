/**
 * The port-scale benchmark, inside L2 (started by scripts/bench-ports.ts through lab/job.ts):
 * one `vhost-bridge serve` daemon, ports added one by one over its control socket, each set up by a
 * synthetic front-end (lab/frontend/handshake.ts: memory table from a memfd, two rings with eventfds,
 * attached to the port's tap on the real vhost-net). Measures the daemon's RSS and fd count at
 * 1, 50, 100 and 200 ports and the time of each handshake; writes ports.json in the exchange directory.
 * Not a pass/fail test: it reports, and says whether every ring was attached.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { vhostNetFds, vhostWorkers } from '../../lab/host.js';
import { request } from '../../src/daemon/ctl.js';
import type { PortReport } from '../../src/daemon/report.js';
import { handshake, type Handshaken } from '../../lab/frontend/handshake.js';
import { quantile } from '../bench/metrics.js';
import { jobOptions, xchgPath } from '../../lab/job.js';

/** What scripts/bench-ports.ts asks of the benchmark in L2. */
export interface PortsJob {
  ports: number;
}
const PORTS = jobOptions<PortsJob>({ ports: 200 }).ports;
const MARKS = [1, 50, 100, 200, PORTS].filter((m, i, a) => m <= PORTS && a.indexOf(m) === i);
const OUT = xchgPath('ports.json');
const CLI = resolve(import.meta.dirname, '..', '..', 'src', 'cli.js');

export interface Mark {
  ports: number;
  rssKiB: number;
  fds: number;
  threads: number;
  vhostNetFds: number;
  vhostWorkers: number;
}
export interface PortsResult {
  when: string;
  kernel: string;
  node: string;
  ports: number;
  marks: Mark[];
  /** Each port's handshake (connect to the last ack), ms, in port order. */
  handshakeMs: number[];
  /** Each port's `add` over the control socket (socket, tap, vhost-net probe), ms. */
  addMs: number[];
  /** Ports whose status showed both rings attached at the end. */
  attached: number;
  errors: string[];
}

const status = (pid: number, key: string): number =>
  Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

async function main(): Promise<void> {
  const dir = mkdtempSync('/tmp/vb-ports-');
  const control = join(dir, 'control.sock');
  const config = join(dir, 'config.json');
  writeFileSync(config, JSON.stringify({ control: { path: control }, ports: {} }));
  const logFd = openSync(`${process.env.LAB_XCHG ?? dir}/bench-ports-daemon.log`, 'w');
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
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const result: PortsResult = {
    when: new Date().toISOString(),
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    node: process.version,
    ports: PORTS,
    marks: [],
    handshakeMs: [],
    addMs: [],
    attached: 0,
    errors: [],
  };
  const fes: Handshaken[] = [];
  try {
    for (let i = 0; i < PORTS; i++) {
      const name = `p${i}`;
      const socket = join(dir, `${name}.sock`);
      const t0 = performance.now();
      const [added] = (await request(control, [
        { method: 'add', params: { name, config: { tap: `vbp${i}`, socket } } },
      ])) as PortReport[];
      if (added.state !== 'running') throw new Error(`${name}: ${added.error}`);
      const t1 = performance.now();
      fes.push(await handshake(socket));
      result.addMs.push(t1 - t0);
      result.handshakeMs.push(performance.now() - t1);
      if (MARKS.includes(i + 1)) {
        const m: Mark = {
          ports: i + 1,
          rssKiB: status(pid, 'VmRSS'),
          fds: readdirSync(`/proc/${pid}/fd`).length,
          threads: status(pid, 'Threads'),
          vhostNetFds: vhostNetFds(pid),
          vhostWorkers: vhostWorkers(pid).length,
        };
        result.marks.push(m);
        console.log(
          `${m.ports} ports: RSS ${(m.rssKiB / 1024).toFixed(1)} MiB, ${m.fds} fds, ${m.vhostNetFds} vhost-net ` +
            `fds, ${m.vhostWorkers} vhost workers`,
        );
      }
    }
    const names = Array.from({ length: PORTS }, (_, i) => `p${i}`);
    const reports = (await request(
      control,
      names.map((n) => ({ method: 'status', params: { port: n } })),
    )) as PortReport[];
    result.attached = reports.filter(
      (r) => r.device?.rings.length === 2 && r.device.rings.every((g) => g.attached),
    ).length;
  } catch (e) {
    result.errors.push((e as Error).stack ?? String(e));
    console.error(e);
  } finally {
    for (const f of fes) f.close();
    const gone = new Promise((r) => daemon.once('exit', r));
    daemon.kill('SIGTERM');
    await gone;
    writeFileSync(OUT, JSON.stringify(result, null, 2));
  }
  const s = [...result.handshakeMs].sort((a, b) => a - b);
  console.log(
    `handshake median ${quantile(s, 0.5).toFixed(2)} ms, p99 ${quantile(s, 0.99).toFixed(2)} ms; ` +
      `${result.attached}/${PORTS} ports with both rings attached`,
  );
}

await main();
