/**
 * QEMU's command line for a lab guest (nested KVM in L2, q35, memfd guest RAM shared with a vhost-user
 * back-end) and the kernel command line every VMM gives the guest's /init (lab/guest-initramfs/init).
 */
import * as fs from 'node:fs';
import type { LabFiles } from './files.js';
import { type GuestBootOptions, L3_DEFAULTS, type TapFdNet } from './options.js';

/** The fds a tap-fd QEMU gets: its fds 3 (the device) and 4 (/dev/vhost-net). */
const TAP_FD = 3;
const VHOST_FD = 4;

/** A value inside a QEMU option string (`-chardev socket,path=...`), where a comma is written twice. */
export function qemuOptValue(v: string): string {
  return v.replace(/,/g, ',,');
}

/** The guest's address (without the prefix length) and its L2 peer, with the lab's defaults. */
export function guestAddresses(o: GuestBootOptions): { ipCidr: string; ip: string; peer: string } {
  const ipCidr = o.ip ?? '10.0.3.2/24';
  return { ipCidr, ip: ipCidr.replace(/\/.*/, ''), peer: o.peer ?? '10.0.3.1' };
}

/** The guest kernel's command line: serial console, the vbg.* settings of /init, the lab's extras. */
export function kernelCmdline(o: GuestBootOptions, hang: boolean): string {
  const a = guestAddresses(o);
  return [
    'console=ttyS0',
    'quiet',
    'loglevel=3',
    'panic=-1',
    `vbg.ip=${a.ipCidr}`,
    `vbg.peer=${a.peer}`,
    ...(o.mtu ? [`vbg.mtu=${o.mtu}`] : []),
    ...(hang ? ['vbg.hang=100000'] : []),
    ...L3_DEFAULTS.append,
    ...(o.extraKernelArgs ?? []),
  ].join(' ');
}

/** QEMU's arguments (without -qmp, which the guest adds per process). */
export function qemuArgs(o: GuestBootOptions, files: LabFiles, name: string, mac: string, hang: boolean): string[] {
  const mem = o.memMiB ?? 512;
  const accel = o.accel ?? 'kvm';
  const queues = o.net.queues ?? 1;
  const args = [
    '-name',
    `vbguest-${name},debug-threads=on`, // vCPU threads named "CPU n/KVM" (lab/guest/diagnose.ts)
    '-accel',
    accel,
    '-cpu',
    o.cpu ?? (accel === 'kvm' ? L3_DEFAULTS.cpu : 'max'),
    '-machine',
    'q35',
    '-smp',
    String(o.smp ?? 1),
    '-m',
    `${mem}M`,
    '-object',
    `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-numa',
    'node,memdev=mem',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-kernel',
    files.vmlinux,
    '-initrd',
    files.l3Initrd,
    '-append',
    kernelCmdline(o, hang),
  ];
  const n = o.net;
  const q = queues > 1 ? `,queues=${queues}` : '';
  if (n.kind === 'tap') {
    const poll = n.pollUs ? `,poll-us=${n.pollUs}` : '';
    args.push(
      '-netdev',
      `tap,id=n0,ifname=${n.ifname},script=no,downscript=no,vhost=${n.vhost ? 'on' : 'off'}${q}${poll}`,
    );
  } else if (n.kind === 'tap-fd') {
    const poll = n.pollUs ? `,poll-us=${n.pollUs}` : '';
    const vhost = n.vhost ? `vhost=on,vhostfd=${VHOST_FD}` : 'vhost=off';
    args.push('-netdev', `tap,id=n0,fd=${TAP_FD},${vhost}${poll}`);
  } else {
    let chr = `socket,id=vu0,path=${qemuOptValue(n.socketPath)}`;
    if (n.server) chr += ',server=on,wait=off';
    if (n.reconnectSeconds !== undefined) chr += `,reconnect=${n.reconnectSeconds}`;
    args.push('-chardev', chr, '-netdev', `vhost-user,id=n0,chardev=vu0${q}`);
  }
  let dev = `virtio-net-pci,netdev=n0,mac=${mac}`;
  if (queues > 1) dev += `,mq=on,vectors=${2 * queues + 2}`;
  // QEMU 7.2 under TCG crashes at DRIVER_OK with vhost-user + MSI-X (docs/qemu-quirks.md)
  else if (accel === 'tcg' && n.kind === 'vhost-user') dev += ',vectors=0';
  if (o.queueSize) dev += `,rx_queue_size=${o.queueSize},tx_queue_size=${o.queueSize}`;
  args.push('-device', dev, ...(o.extraQemuArgs ?? []));
  if (o.incoming) args.push('-incoming', o.incoming.uri, ...(o.incoming.paused ? ['-S'] : []));
  return args;
}

/** A tap-fd QEMU's fds, in order (fd 3, then 4 with vhost); the caller closes them. */
export function openTapFds(n: TapFdNet): number[] {
  const fds = [fs.openSync(n.device, 'r+')];
  try {
    if (n.vhost) fds.push(fs.openSync('/dev/vhost-net', 'r+'));
  } catch (e) {
    fs.closeSync(fds[0]);
    throw e;
  }
  return fds;
}
