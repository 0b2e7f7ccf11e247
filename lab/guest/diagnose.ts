/**
 * What a guest that does not answer is doing, for timeout errors: the CPU time of its VMM's threads
 * over 1 s (the vCPU threads are QEMU's "CPU n/KVM", with debug-threads=on, and cloud-hypervisor's
 * "vcpuN") and whether its kernel answers ping from L2. Tells a stalled vCPU (the nested lab's fault,
 * docs/lab.md "Guest faults") from a guest blocked in its VMM or a stuck console.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { statFields } from '../host.js';

/** The diagnosis line of VMM process `pid` (`vmm` names it: "QEMU", "cloud-hypervisor") of guest address `ip`. */
export async function diagnose(vmm: string, pid: number, ip: string): Promise<string> {
  const a = threadTicks(pid);
  await new Promise((r) => setTimeout(r, 1000));
  const b = threadTicks(pid);
  const vcpu = /^(CPU \d|vcpu\d)/;
  const cpu = [...b]
    .filter(([, v]) => vcpu.test(v.comm) || v.ticks - (a.get(v.tid)?.ticks ?? v.ticks) > 0)
    .map(([, v]) => `${v.comm} +${v.ticks - (a.get(v.tid)?.ticks ?? v.ticks)}`)
    .join(', ');
  const p = spawnSync('/bin/busybox', ['ping', '-c', '2', '-W', '1', ip], { encoding: 'utf8', timeout: 6000 });
  const rx = /(\d+) packets received/.exec(p.stdout ?? '');
  return (
    `diagnosis: CPU ticks of ${vmm} ${pid}'s threads in 1 s: ${cpu || 'none'}; ping ${ip} from L2: ` +
    `${rx ? `${rx[1]} of 2 replies` : 'not run'}`
  );
}

/** tid -> thread name and utime+stime of a process's threads */
function threadTicks(pid: number): Map<number, { tid: number; comm: string; ticks: number }> {
  const out = new Map<number, { tid: number; comm: string; ticks: number }>();
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      const comm = fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim();
      const stat = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const f = statFields(stat);
      out.set(Number(t), { tid: Number(t), comm, ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      /* thread gone */
    }
  }
  return out;
}

/**
 * From a `diagnose()` line: a vCPU thread ran at least half of the second while the guest's kernel
 * answered no ping from L2 (the nested lab's stall, not a guest waiting for anything).
 */
export function stalledVcpu(diag: string): boolean {
  const busy = [...diag.matchAll(/(?:CPU \d+\/KVM|vcpu\d+) \+(\d+)/g)].some((m) => Number(m[1]) >= 50);
  return busy && /from L2: 0 of 2 replies/.test(diag);
}
