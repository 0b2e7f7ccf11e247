/**
 * `serve --user U [--group G]`: start as root, open what needs root (taps the daemon creates, the
 * sockets with their owners and groups), then become U for good: setgroups([G]), setgid(G),
 * setuid(U). From root, setuid to another user clears every capability (capabilities(7)), so the
 * daemon then runs with CapEff 0 and cannot get root back (checked: setuid(0) must fail).
 *
 * What the daemon still needs to add ports afterwards (docs/operating.md):
 *  - /dev/vhost-net opened once per queue pair and session: readable and writable by U or G
 *    (Debian's udev rule makes it `root:kvm 0660`: `--group kvm`; or a udev rule / ACL);
 *  - a persistent tap owned by U (`ip tuntap add dev vbtap3 mode tap vnet_hdr user U`, then
 *    `ip link set vbtap3 up`): TUNSETIFF on it needs no capability; creating one, setting its MTU or
 *    bringing it up does (CAP_NET_ADMIN), so ports added later say `persistentTap: true`;
 *  - its socket directories: the ones the daemon created are given to U before the drop, so it can
 *    create and remove sockets there; a socket's `owner` can then only be U (chown needs CAP_CHOWN).
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import type { Logger } from '../log.js';
import { chown, setGid, setGroups, setUid, SysError } from '../sys/index.js';

/** What /proc/self/status says of this process after the drop. */
export interface Credentials {
  /** Real, effective, saved and filesystem uid. */
  uids: number[];
  gids: number[];
  groups: number[];
  /** Effective capabilities (hex, as the kernel prints them). */
  capEff: string;
}

/** This process's credentials from /proc/self/status. */
export function credentials(): Credentials {
  const status = readFileSync('/proc/self/status', 'utf8');
  const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1].trim() ?? '';
  const nums = (k: string) => field(k).split(/\s+/).filter(Boolean).map(Number);
  return { uids: nums('Uid'), gids: nums('Gid'), groups: nums('Groups'), capEff: field('CapEff') };
}

/**
 * Give `dirs` (socket directories the daemon created) to uid:gid, then become uid:gid with gid as
 * the only supplementary group. Throws (nothing is dropped) if this process is not root.
 */
export function dropPrivileges(uid: number, gid: number, dirs: readonly string[], log: Logger): Credentials {
  if (process.getuid?.() !== 0) throw new Error(`--user: dropping to uid ${uid} needs the daemon to start as root`);
  for (const d of dirs) chown(d, uid, gid);
  setGroups([gid]);
  setGid(gid);
  setUid(uid);
  if (uid !== 0) {
    try {
      setUid(0);
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      // EPERM: root cannot be taken back, as intended
    }
    if (process.getuid?.() === 0) throw new Error('--user: setuid(0) succeeded after the drop; refusing to go on');
  }
  const c = credentials();
  log.info(
    `dropped privileges: uid ${c.uids.join('/')}, gid ${c.gids.join('/')}, groups ${c.groups.join(',') || 'none'}, ` +
      `CapEff ${c.capEff}; socket directories given to it: ${dirs.join(', ') || 'none'}`,
  );
  try {
    accessSync('/dev/vhost-net', constants.R_OK | constants.W_OK);
  } catch {
    log.warn(
      `uid ${uid} gid ${gid} cannot open /dev/vhost-net: ports added or restarted from now on will fail ` +
        `(give the device to group ${gid}, e.g. Debian's kvm group, or an ACL)`,
    );
  }
  return c;
}
