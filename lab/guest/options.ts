/**
 * What a lab guest is booted with: its network (the VMM's tap, fds, or a vhost-user socket), its size,
 * addresses and timeouts, and the L3 settings every lab guest shares (lab/guest.ts boots it).
 */

/** QEMU's own tap back-end (-netdev tap), with or without the kernel's vhost-net. */
export interface TapNet {
  kind: 'tap';
  /** an existing tap in L2 (see hostTap) */
  ifname: string;
  vhost: boolean;
  /** queue pairs (the tap must be multi_queue when > 1) */
  queues?: number;
  /** poll-us=N: vhost-net busy polling per ring (vhost=on only) */
  pollUs?: number;
}

/**
 * QEMU's tap back-end on fds the harness opens for each QEMU it starts, as libvirt does for
 * `<interface type='direct'>`: `device` (a macvtap's /dev/tapN) becomes `fd=`, and with vhost
 * /dev/vhost-net becomes `vhostfd=`; QEMU opens nothing itself. One queue pair (one open of the
 * device is one macvtap queue: docs/backends.md).
 */
export interface TapFdNet {
  kind: 'tap-fd';
  device: string;
  vhost: boolean;
  queues?: 1;
  /** poll-us=N: vhost-net busy polling per ring (vhost=on only) */
  pollUs?: number;
}

/** -netdev vhost-user: the back-end (the bridge) serves the rings. */
export interface VhostUserNet {
  kind: 'vhost-user';
  socketPath: string;
  /** QEMU is the server (server=on,wait=off); default: QEMU connects */
  server?: boolean;
  /** reconnect=N on the chardev (client mode) */
  reconnectSeconds?: number;
  queues?: number;
}

export type GuestNet = TapNet | TapFdNet | VhostUserNet;

export type Vmm = 'qemu' | 'cloud-hypervisor';

export interface GuestBootOptions {
  /** used in log lines and the QEMU process name */
  name: string;
  net: GuestNet;
  /** vCPUs, default 1 */
  smp?: number;
  /** guest RAM (memfd, share=on, in every configuration), default 512 */
  memMiB?: number;
  /** default: 52:54:00 + 3 bytes derived from name */
  mac?: string;
  /** rx_queue_size and tx_queue_size of virtio-net-pci (QEMU allows tx > 256 only for vhost-user) */
  queueSize?: number;
  /** guest address, default 10.0.3.2/24 */
  ip?: string;
  /** the L2 end (tap address), default 10.0.3.1 */
  peer?: string;
  /** eth0 MTU in the guest */
  mtu?: number;
  extraQemuArgs?: string[];
  extraKernelArgs?: string[];
  /** L3 -cpu model (default L3_DEFAULTS.cpu under kvm, max under tcg) */
  cpu?: string;
  /**
   * everything from the guest console (and QEMU's stderr, and harness notes) goes there, prefixed with ms
   * timestamps
   */
  logFile?: string;
  /** harness messages (default: console.error) */
  log?: (message: string) => void;
  /**
   * No VBGUEST-INIT this long after QEMU starts = the nested-KVM boot hang: boot once more. Default 90000.
   * The timer includes any time QEMU waits for a vhost-user back-end, so start the back-end first
   * (client mode) or connect it promptly (server mode). If QEMU reported "Failed to connect", the
   * boot is not retried: the error says the back-end is missing.
   */
  hangTimeoutMs?: number;
  /** VBGUEST-INIT to VBGUEST-READY, default 120000 */
  readyTimeoutMs?: number;
  /** test hook: the first N boot attempts hang (vbg.hang= makes /init sleep before VBGUEST-INIT) */
  simulateHangAttempts?: number;
  /** default kvm (nested KVM in L2); tcg is ~10x slower to boot */
  accel?: 'kvm' | 'tcg';
  /** default qemu-system-x86_64 */
  qemuBinary?: string;
  /**
   * The VMM of the guest: QEMU (default) or cloud-hypervisor (lab/guest/ch-args.ts: its own virtio-net
   * on a tap (`tap`, vhost off) or vhost-user, the binary from lab/cloud-hypervisor.ts). Its console,
   * faults and traffic tools are the same; QEMU-only options (accel, cpu, extraQemuArgs, incoming) are refused.
   */
  vmm?: Vmm;
  /**
   * A migration destination (lab/migration.ts): QEMU starts with `-incoming URI` (and -S if
   * `paused`: the guest stays stopped after the migration until QMP `cont`), with the same options
   * as the source. boot() resolves once QEMU runs: the guest has booted on the source already, and
   * its console continues here after the switch (do not exec before then).
   */
  incoming?: { uri: string; paused?: boolean };
  /**
   * Run this instead of QEMU: a process whose stdin and stdout are the guest's serial console, for a
   * guest that something else starts (a libvirt domain: lab/libvirt.ts). The options that make QEMU's
   * command line (net, smp, memMiB, ...) are then that starter's business; `pid` is this process's.
   */
  console?: { command: string; args: string[] };
}

export interface ExecResult {
  rc: number;
  /** stdout+stderr of the command, lines joined with \n (no trailing newline) */
  output: string;
}
export function defaultMac(name: string): string {
  let h = 0x811c9dc5; // FNV-1a
  for (const ch of name) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  const b = [h >>> 16, h >>> 8, h].map((x) => (x & 0xff).toString(16).padStart(2, '0'));
  return `52:54:00:${b.join(':')}`;
}

const words = (v: string | undefined): string[] => (v ?? '').split(/\s+/).filter(Boolean);

/**
 * The L3 settings every lab guest (tests, demo, bench) runs with under nested KVM: the -cpu model
 * and extra kernel arguments. docs/lab.md ("Guest faults") says how they were chosen: by fault
 * counts of `npm run lab:stress`. LAB_L3_CPU, LAB_L3_APPEND and LAB_L3_L2CPUS replace them for an experiment.
 */
export const L3_DEFAULTS: L3Settings = {
  cpu: process.env.LAB_L3_CPU ?? 'host',
  append: words(process.env.LAB_L3_APPEND),
  l2Cpus: process.env.LAB_L3_L2CPUS || null,
};

/**
 * The lab's tuning variables set in this environment, `NAME=value ...` (LAB_L2_* for scripts/lab/run,
 * LAB_L3_* for L3_DEFAULTS; docs/lab.md), or null when none is: what a stress or soak run records
 * about the lab it ran in.
 */
export function labTuning(env: NodeJS.ProcessEnv = process.env): string | null {
  const set = Object.keys(env)
    .filter((k) => /^LAB_L[23]_/.test(k) && env[k])
    .sort();
  return set.length ? set.map((k) => `${k}=${env[k]}`).join(' ') : null;
}

export interface L3Settings {
  readonly cpu: string;
  readonly append: readonly string[];
  /**
   * L2's CPUs (a taskset list) the guests' QEMUs run on; null: any. LAB_L3_L2CPUS: an experiment of
   * the soak's (docs/soak.md, "2026-12-02"), and the bench's `--pin` (docs/backends.md, "Why single
   * tests collapse").
   */
  readonly l2Cpus: string | null;
}
