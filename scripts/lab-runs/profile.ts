/**
 * Where L2's CPU time goes while the same guest sends through vhost-bridge and through QEMU's own
 * tap,vhost=on: `perf record -a -g -e cpu-clock` (a software clock: L2 runs under TCG, without a
 * PMU) during a TCP and a small-UDP transfer, then the top symbols and processes of each.
 * Inside L2: scripts/lab/run -- node dist/scripts/lab-runs/profile.js  (needs linux-perf on L1).
 */
import { spawn, spawnSync } from 'node:child_process';
import { HOST_IP, withConfig, type ConfigName } from './configs.js';

const out = process.env.LAB_XCHG ?? '/tmp';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function report(data: string, sort: string, limit: number): string {
  const r = spawnSync('perf', ['report', '-i', data, '--stdio', '--no-children', '--sort', sort, '--percent-limit', '1.5'], { encoding: 'utf8', maxBuffer: 1 << 26 });
  return r.stdout.split('\n').filter((l) => l.trim() && !l.startsWith('#') && /%/.test(l) && !/^\s+\|/.test(l) && !/---/.test(l)).slice(0, limit).join('\n');
}

async function profile(config: ConfigName, workload: 'tcp' | 'udp'): Promise<void> {
  await withConfig(config, { tag: `profile-${config}-${workload}` }, async ({ guest }) => {
    const cmd = workload === 'tcp' ? `iperf3 -c ${HOST_IP} -t 14 >/dev/null 2>&1` : `timeout 30 iperf3 -c ${HOST_IP} -u -b 0 -l 64 -t 14 >/dev/null 2>&1`;
    const server = spawn('iperf3', ['-s', '-1', '-B', HOST_IP], { stdio: 'ignore' });
    await sleep(1000);
    const load = guest.exec(`${cmd}; true`, { timeoutMs: 90_000 });
    await sleep(3000);
    const data = `${out}/perf-${config}-${workload}.data`;
    spawnSync('perf', ['record', '-a', '-g', '-e', 'cpu-clock', '-F', '499', '-o', data, '--', 'sleep', '8'], { stdio: 'ignore' });
    await load;
    server.kill();
    console.log(`\n==== ${config}, ${workload === 'tcp' ? 'TCP guest -> host' : 'UDP 64 B flood guest -> host'}: L2 CPU by process (comm) ====`);
    console.log(report(data, 'comm', 12));
    console.log(`---- by symbol ----`);
    console.log(report(data, 'sym', 25));
  });
}

for (const workload of ['tcp', 'udp'] as const) {
  for (const config of ['bridge', 'vhost-on'] as const) await profile(config, workload);
}
