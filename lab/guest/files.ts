/**
 * Where the lab's L3 guest files are: the manifest scripts/lab/setup writes (docs/lab.md), read by
 * every guest kind (QEMU and cloud-hypervisor boot the same kernel and initramfs).
 */
import * as fs from 'node:fs';

export interface LabFiles {
  /** .lab directory of the repository */
  labDir: string;
  /** the L3 guest's kernel release, e.g. 6.1.0-56-amd64 (6.1 in both labs: docs/kernels.md) */
  kver: string;
  /** the L3 guest's uncompressed PVH-bootable kernel */
  vmlinux: string;
  /** the L3 guest initramfs */
  l3Initrd: string;
}

export function parentDir(p: string): string {
  const i = p.replace(/\/+$/, '').lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

/**
 * Finds the lab's manifest (written by scripts/lab/setup): env LAB_ENV_FILE (scripts/lab/run
 * sets it to the manifest of the L2 kernel it booted), else the nearest .lab/lab.env above the
 * working directory, else above this module. L3 guests boot its LAB_L3_* kernel (older manifests:
 * LAB_KVER, LAB_VMLINUX).
 */
export function labFiles(): LabFiles {
  const candidates: string[] = [];
  if (process.env.LAB_ENV_FILE) candidates.push(process.env.LAB_ENV_FILE);
  for (const start of [process.cwd(), parentDir(new URL(import.meta.url).pathname)]) {
    for (let d = start; ; d = parentDir(d)) {
      candidates.push(`${d === '/' ? '' : d}/.lab/lab.env`);
      if (d === '/') break;
    }
  }
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) throw new Error('lab: .lab/lab.env not found; build the lab with scripts/lab/setup');
  const env: Record<string, string> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2];
  }
  const need = (k: string): string => {
    const v = env[k];
    if (!v) throw new Error(`lab: ${file} has no ${k}; re-run scripts/lab/setup`);
    return v;
  };
  return {
    labDir: parentDir(file),
    kver: env.LAB_L3_KVER || need('LAB_KVER'),
    vmlinux: env.LAB_L3_VMLINUX || need('LAB_VMLINUX'),
    l3Initrd: need('LAB_L3_INITRD'),
  };
}
