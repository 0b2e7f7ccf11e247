/**
 * Facts about a network interface by name, shared by the sockets vhost-net can be attached to
 * (backend.ts): interface ioctls on a socket (include/uapi/linux/sockios.h) and sysfs
 * (/sys/class/net/<name>).
 */
import { existsSync, readFileSync } from 'node:fs';
import { C, close, E, ifNameToIndex, ioctlPtr, socket } from '../sys/index.js';
import { withHints } from './errors.js';
import { NETDEV_IFF, SIOC } from './ioctls.js';
import { ifreq, ifreqFlags, ifreqMtu } from './structs.js';

/** A macvtap interface has a macvtap/ directory in sysfs (holding its tapN character device). */
export function isMacvtap(name: string): boolean {
  return existsSync(`/sys/class/net/${name}/macvtap`);
}

export function interfaceExists(name: string): boolean {
  try {
    ifNameToIndex(name);
    return true;
  } catch {
    return false;
  }
}

/** An interface ioctl on a throwaway AF_UNIX datagram socket (any socket reaches dev_ioctl; AF_UNIX needs no IPv4). */
export function ifIoctl<T>(
  name: string,
  req: number,
  u: { flags?: number; mtu?: number },
  call: string,
  out: (b: Buffer) => T,
): T {
  const s = socket(C.AF_UNIX, C.SOCK_DGRAM);
  try {
    const b = ifreq(name, u);
    withHints(() => ioctlPtr(s, req, b, call), { [E.ENODEV]: `no interface ${name} (was it deleted?)` });
    return out(b);
  } finally {
    close(s);
  }
}

/** SIOCGIFMTU. */
export function interfaceMtu(name: string): number {
  return ifIoctl(name, SIOC.GIFMTU, {}, `SIOCGIFMTU ${name}`, ifreqMtu);
}

/** sysfs facts about an interface (best effort: undefined when unreadable). */
export function sysfs(name: string, attr: string): string | undefined {
  try {
    return readFileSync(`/sys/class/net/${name}/${attr}`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * Set the link up: SIOCGIFFLAGS then SIOCSIFFLAGS with IFF_UP added (needs CAP_NET_ADMIN). Nothing
 * is done if it already is, so an unprivileged bridge can use an interface brought up beforehand.
 */
export function setInterfaceUp(name: string, up = true): void {
  const flags = ifIoctl(name, SIOC.GIFFLAGS, {}, `SIOCGIFFLAGS ${name}`, ifreqFlags);
  if (((flags & NETDEV_IFF.UP) !== 0) === up) return;
  const next = up ? flags | NETDEV_IFF.UP : flags & ~NETDEV_IFF.UP;
  withHints(
    () => ifIoctl(name, SIOC.SIFFLAGS, { flags: next }, `SIOCSIFFLAGS ${name} ${up ? 'up' : 'down'}`, () => 0),
    {
      [E.EPERM]:
        `changing the link state needs CAP_NET_ADMIN: bring ${name} up beforehand (ip link set ${name} up) or run ` +
        'as root',
    },
  );
}
