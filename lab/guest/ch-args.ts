/**
 * cloud-hypervisor's command line for a lab guest: the same PVH vmlinux, initramfs and kernel command
 * line as QEMU's (lab/guest/qemu-args.ts), guest RAM shared (`shared=on`: a vhost-user back-end maps
 * it), the serial console on a unix socket the harness connects to. The form is the kit's README.txt
 * (../shared/cloud-hypervisor).
 * cloud-hypervisor's `num_queues` counts virtqueues (2 per queue pair); the lab's `queues` counts pairs.
 */
import type { LabFiles } from './files.js';
import type { GuestBootOptions } from './options.js';
import { kernelCmdline } from './qemu-args.js';

/** cloud-hypervisor's arguments; throws on what it has no equivalent for. */
export function chArgs(
  o: GuestBootOptions,
  files: LabFiles,
  mac: string,
  hang: boolean,
  logFile: string,
  consoleSocket: string,
): string[] {
  const n = o.net;
  const refused = [
    o.accel && o.accel !== 'kvm' ? 'accel (cloud-hypervisor runs on KVM only)' : '',
    o.cpu ? 'cpu' : '',
    o.extraQemuArgs?.length ? 'extraQemuArgs' : '',
    o.incoming ? 'incoming' : '',
    n.kind === 'tap-fd' ? "a tap-fd net (use 'tap')" : '',
    n.kind === 'tap' && n.vhost ? 'tap with vhost (cloud-hypervisor has no vhost-net)' : '',
    n.kind === 'tap' && n.pollUs ? 'pollUs' : '',
    n.kind === 'vhost-user' && n.reconnectSeconds !== undefined
      ? 'reconnectSeconds (cloud-hypervisor reconnects by itself)'
      : '',
  ].filter(Boolean);
  if (refused.length) throw new Error(`cloud-hypervisor guest: no equivalent for ${refused.join(', ')}`);
  const virtqueues = 2 * (n.queues ?? 1);
  const common = `mac=${mac},num_queues=${virtqueues},queue_size=${o.queueSize ?? 256}`;
  const net =
    n.kind === 'vhost-user'
      ? `vhost_user=true,socket=${n.socketPath},vhost_mode=${n.server ? 'server' : 'client'},${common}`
      : `tap=${n.kind === 'tap' ? n.ifname : ''},${common}`;
  const mem = o.memMiB ?? 512;
  return [
    '--kernel',
    files.vmlinux,
    '--initramfs',
    files.l3Initrd,
    '--cmdline',
    kernelCmdline(o, hang),
    '--cpus',
    `boot=${o.smp ?? 1}`,
    '--memory',
    `size=${mem}M,shared=on`,
    '--net',
    net,
    '--serial',
    `socket=${consoleSocket}`,
    '--console',
    'off',
    '--log-file',
    logFile,
  ];
}
