/**
 * Users and groups by name or id: socket owners, groups and allow-lists of both modes (the one-port
 * --allow-users, the daemon's configuration, serve --user).
 * Node has no getpwnam(3): names are looked up in /etc/passwd and /etc/group (files only, no NSS;
 * a user from LDAP or systemd-userdb is given by its numeric id instead).
 */
import { readFileSync } from 'node:fs';

/** The number in field `want` of the first line of a colon-separated file that `match`es, or null. */
function field(file: string, match: (f: string[]) => boolean, want: number): number | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length > want && match(f) && /^\d+$/.test(f[want])) return Number(f[want]);
  }
  return null;
}

function lookup(file: string, v: string | number): number | null {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 && v < 2 ** 32 - 1 ? v : null;
  if (/^\d+$/.test(v)) return lookup(file, Number(v));
  return field(file, (f) => f[0] === v, 2);
}

/** The uid of a user name (or a numeric id as it is), or null. */
export const userId = (v: string | number, file = '/etc/passwd'): number | null => lookup(file, v);

/** The gid of a group name (or a numeric id as it is), or null. */
export const groupId = (v: string | number, file = '/etc/group'): number | null => lookup(file, v);

/** The primary group of a user (the gid field of its /etc/passwd line), or null. */
export function primaryGroup(uid: number, file = '/etc/passwd'): number | null {
  return field(file, (f) => f[2] === String(uid), 3);
}
