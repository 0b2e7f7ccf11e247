/**
 * The process's credentials: setgroups(2), setgid(2), setuid(2). glibc applies each to every thread
 * of the process (the kernel's credentials are per thread; nptl's setxid broadcast makes the call
 * process-wide, as POSIX asks), so Node's own threads change with the main one. From root, setuid
 * to another user also clears every capability (capabilities(7), "Effect of user ID changes on
 * capabilities"), which is what makes the drop final.
 */
import { check } from './errors.js';
import { raw } from './libc.js';

/** setgroups(2): the supplementary groups are exactly `gids` (needs CAP_SETGID). */
export function setGroups(gids: readonly number[]): void {
  check(raw.setgroups(gids.length, Uint32Array.from(gids)), `setgroups ${gids.join(',') || '(none)'}`);
}

/** setgid(2): real, effective and saved group id (as root). */
export function setGid(gid: number): void {
  check(raw.setgid(gid), `setgid ${gid}`);
}

/** setuid(2): real, effective and saved user id (as root); the capabilities go with root. */
export function setUid(uid: number): void {
  check(raw.setuid(uid), `setuid ${uid}`);
}
