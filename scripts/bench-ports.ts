/**
 * `npm run bench:ports`: the daemon with 200 ports and no guests, in the lab (it needs
 * /dev/vhost-net). Each port is set up by a synthetic front-end (scripts/lab-runs/bench-ports.ts);
 * prints the daemon's RSS and fd count at 1, 50, 100 and 200 ports and the handshake time per port
 * (median, p99, and per block of ports to see whether it stays flat), and writes
 * results/ports-<date>.json. Options: VB_PORTS=N (default 200).
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { table } from '../src/daemon/ctl.js';
import { quantile } from './bench/metrics.js';
import { endText, runInLab } from '../lab/job.js';
import type { PortsJob, PortsResult } from './lab-runs/bench-ports.js';

const work = mkdtempSync(join(tmpdir(), 'vb-bench-ports-'));
const options: PortsJob = { ports: Number(process.env.VB_PORTS ?? 200) };
const lab = await runInLab({
  name: 'bench:ports',
  script: 'dist/scripts/lab-runs/bench-ports.js',
  options,
  timeoutSeconds: 900,
  xchg: work,
});
let r: PortsResult;
try {
  r = JSON.parse(readFileSync(join(work, 'ports.json'), 'utf8')) as PortsResult;
} catch {
  console.error(`bench:ports: no results (lab: ${endText(lab)}); logs in ${work}`);
  process.exit(1);
}

const ms = (v: number): string => v.toFixed(2);
const stats = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? { median: quantile(s, 0.5), p99: quantile(s, 0.99) } : { median: NaN, p99: NaN };
};
const blocks = [
  [0, 1],
  [1, 50],
  [50, 100],
  [100, 200],
]
  .filter(([a]) => a < r.ports)
  .map(([a, b]) => [a, Math.min(b, r.ports)]);

console.log(`\nvhost-bridge serve with ${r.ports} ports, no guests (L2 kernel ${r.kernel}, Node ${r.node})\n`);
console.log(
  table(
    ['ports', 'daemon RSS (MiB)', 'fds', 'threads', 'vhost-net fds', 'vhost workers'],
    r.marks.map((m) => [m.ports, (m.rssKiB / 1024).toFixed(1), m.fds, m.threads, m.vhostNetFds, m.vhostWorkers]),
  ),
);
console.log('');
console.log(
  table(
    ['ports', 'handshake median (ms)', 'handshake p99 (ms)', 'add median (ms)'],
    [
      ...blocks.map(([a, b]) => {
        const h = stats(r.handshakeMs.slice(a, b));
        return [`${a + 1}-${b}`, ms(h.median), ms(h.p99), ms(stats(r.addMs.slice(a, b)).median)];
      }),
      ['all', ms(stats(r.handshakeMs).median), ms(stats(r.handshakeMs).p99), ms(stats(r.addMs).median)],
    ],
  ),
);
console.log(
  `\n${r.attached} of ${r.ports} ports had both rings attached at the ` +
    `end${r.errors.length ? `; errors:\n${r.errors.join('\n')}` : ''}`,
);

mkdirSync('results', { recursive: true });
const out = `results/ports-${r.when.slice(0, 19).replace(/[T:]/g, '-')}.json`;
writeFileSync(
  out,
  JSON.stringify({ ...r, summary: { handshake: stats(r.handshakeMs), add: stats(r.addMs) } }, null, 2),
);
console.log(`wrote ${out}`);
process.exit(r.errors.length || r.attached !== r.ports ? 1 : 0);
