/**
 * Who may connect: an allow-list of users and groups checked against a unix socket peer's
 * credentials (SO_PEERCRED, unix(7): the peer's pid, effective uid and effective gid as they were at
 * connect()). The socket file's owner, group and mode are the first gate (only who may write the
 * file can connect); this rule is the second, for a socket that a wider group must reach (a
 * directory shared by several VMMs' users) or a socket passed by systemd whose file mode the daemon
 * does not choose. It is checked right after accept(), before any message is read, so a refused peer
 * never reaches the framer (docs/operating.md).
 */
import type { PeerCred } from '../sys/index.js';

/**
 * A peer is let in if its uid is in `uids` OR its gid in `gids`. Only the effective gid is known
 * from SO_PEERCRED (not the supplementary groups), so a group rule names the VMM's primary group.
 */
export interface PeerRule {
  uids: readonly number[];
  gids: readonly number[];
}

/** The rule as the log and the status show it: `users 0, 107; groups 36` (`none` for an empty list). */
export function describeRule(rule: PeerRule): string {
  const list = (xs: readonly number[]) => (xs.length ? xs.join(', ') : 'none');
  return `users ${list(rule.uids)}; groups ${list(rule.gids)}`;
}

/** Why `peer` is refused by `rule`, or null if it is let in. A peer without credentials is refused. */
export function peerRefusal(peer: PeerCred | null, rule: PeerRule): string | null {
  if (peer === null) return 'the peer has no credentials (SO_PEERCRED failed)';
  if (rule.uids.includes(peer.uid) || rule.gids.includes(peer.gid)) return null;
  return `uid ${peer.uid} gid ${peer.gid} is not allowed (allowed: ${describeRule(rule)})`;
}

/** `pid 123 uid 0 gid 0`, or `unknown peer`. */
export const describePeer = (peer: PeerCred | null): string =>
  peer ? `pid ${peer.pid} uid ${peer.uid} gid ${peer.gid}` : 'unknown peer';
