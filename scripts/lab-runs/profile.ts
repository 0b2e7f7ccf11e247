/**
 * Why the bridge's figures differ from tap,vhost=on in the lab: the same guest, the same transfer,
 * with L2-wide event counts from kernel tracepoints (`perf stat -a`: tracepoints work without a
 * PMU, which L2 under TCG does not have, so sampling profiles are not meaningful there).
 * Counted per configuration: TLB flushes by reason (tlb:tlb_flush; reason 0 = TLB_FLUSH_ON_TASK_SWITCH,
 * i.e. an address-space switch), context switches, L3 exits (kvm:kvm_exit), vhost worker wake-ups.
 * Inside L2: scripts/lab/run -- node dist/scripts/lab-runs/profile.js  (perf from linux-perf on L1).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { HOST_IP, withConfig, type ConfigName } from '../../lab/configs.js';
import { hostIfCounter } from '../../lab/host.js';

const out = process.env.LAB_XCHG ?? '/tmp';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const EVENTS = ['tlb:tlb_flush', 'sched:sched_switch', 'kvm:kvm_exit', 'sched:sched_wakeup'];

async function profile(config: ConfigName, workload: 'tcp' | 'udp'): Promise<Record<string, number>> {
  return withConfig(config, { tag: `profile-${config}-${workload}` }, async ({ guest, hostIf }) => {
    const cmd =
      workload === 'tcp'
        ? `timeout 40 iperf3 -c ${HOST_IP} -t 14 >/dev/null 2>&1`
        : `timeout 40 iperf3 -c ${HOST_IP} -u -b 0 -l 64 -t 14 >/dev/null 2>&1`;
    const server = spawn('iperf3', ['-s', '-1', '-B', HOST_IP], { stdio: 'ignore' });
    await sleep(1000);
    const load = guest.exec(`${cmd}; true`, { timeoutMs: 90_000 });
    await sleep(3000);
    const rx0 = hostIfCounter(hostIf, 'rx_packets');
    const bytes0 = hostIfCounter(hostIf, 'rx_bytes');
    const csv = `${out}/perfstat-${config}-${workload}.csv`;
    // tlb_flush split by reason with a filter per reason would need 4 runs; count all, and the task-switch ones.
    spawnSync(
      'perf',
      [
        'stat',
        '-a',
        '-x',
        ',',
        '-o',
        csv,
        ...EVENTS.flatMap((e) => ['-e', e]),
        '-e',
        'tlb:tlb_flush',
        '--filter',
        'reason == 0',
        '--',
        'sleep',
        '8',
      ],
      { stdio: 'ignore' },
    );
    const packets = hostIfCounter(hostIf, 'rx_packets') - rx0;
    const mbytes = (hostIfCounter(hostIf, 'rx_bytes') - bytes0) / 1e6;
    await load;
    server.kill();
    const counts: Record<string, number> = { packets, mbytes };
    const lines = fs
      .readFileSync(csv, 'utf8')
      .split('\n')
      .filter((l) => /^\d/.test(l));
    lines.forEach((l, i) => {
      const [v, , name] = l.split(',');
      counts[i === lines.length - 1 ? 'tlb_flush(task switch)' : name] = Number(v);
    });
    return counts;
  });
}

const results: Record<string, Record<string, number>> = {};
for (const workload of ['tcp', 'udp'] as const) {
  for (const config of ['bridge', 'vhost-on'] as const) {
    results[`${config} ${workload}`] = await profile(config, workload);
    console.log(`${config} ${workload}: ${JSON.stringify(results[`${config} ${workload}`])}`);
  }
}
const keys = [
  'packets',
  'mbytes',
  'tlb:tlb_flush',
  'tlb_flush(task switch)',
  'sched:sched_switch',
  'sched:sched_wakeup',
  'kvm:kvm_exit',
];
console.log(`\n${'8 s, L2-wide'.padEnd(14)}${keys.map((k) => k.padStart(24)).join('')}`);
for (const [name, c] of Object.entries(results)) {
  console.log(`${name.padEnd(14)}${keys.map((k) => String(Math.round(c[k] ?? NaN)).padStart(24)).join('')}`);
  const perPacket = keys.map((k) => (k === 'packets' || k === 'mbytes' ? '' : ((c[k] ?? NaN) / c.packets).toFixed(2)));
  console.log(`${'  per packet'.padEnd(14)}${perPacket.map((v) => v.padStart(24)).join('')}`);
}
fs.writeFileSync(`${out}/profile.json`, JSON.stringify(results, null, 1));
