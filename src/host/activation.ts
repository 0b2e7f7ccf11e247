/**
 * systemd socket activation (sd_listen_fds(3)): the service manager passes sockets as fds 3, 4, ...
 * with LISTEN_FDS = their count, LISTEN_PID = this process, and LISTEN_FDNAMES = their names
 * separated by ':' (FileDescriptorName= of each .socket unit, `systemd-socket-activate --fdname`).
 * The one-port mode takes exactly one socket, named or not; the daemon takes several, each named: a
 * name is a port's name, and the name `control` is the control socket.
 */
import { C, fcntl, fstat } from '../sys/index.js';

/** The first fd passed (SD_LISTEN_FDS_START). */
const FIRST_FD = 3;

/** The name that makes an inherited socket the control socket. */
export const CONTROL_FD_NAME = 'control';

/** One socket passed by the service manager, and its LISTEN_FDNAMES name if there were names. */
interface InheritedSocket {
  fd: number;
  name: string | null;
}

/**
 * The sockets passed to this process, in order. The variables are removed from the environment (as
 * sd_listen_fds(unset_environment=1) does), and each fd is made close-on-exec. Nothing (an empty
 * list) when LISTEN_FDS is not set or LISTEN_PID names another process (a parent).
 * Throws if the variables are inconsistent or an fd is not a socket.
 */
export function inheritedSockets(env: NodeJS.ProcessEnv = process.env, pid = process.pid): InheritedSocket[] {
  const { LISTEN_FDS: count, LISTEN_PID: forPid, LISTEN_FDNAMES: names } = env;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (count === undefined) return [];
  if (forPid !== undefined && Number(forPid) !== pid) return []; // meant for another process (a parent)
  const n = Number(count);
  if (!/^\d+$/.test(count) || n < 1) throw new Error(`LISTEN_FDS=${count}: expected a count of sockets`);
  const list = names === undefined ? null : names.split(':');
  if (list && list.length !== n) throw new Error(`LISTEN_FDS=${n} but LISTEN_FDNAMES has ${list.length} name(s)`);
  const out: InheritedSocket[] = [];
  for (let i = 0; i < n; i++) {
    const fd = FIRST_FD + i;
    const name = list?.[i] ?? null;
    const type = fstat(fd).type;
    if (type !== 'socket')
      throw new Error(`inherited fd ${fd}${name === null ? '' : ` (${name})`} is not a socket (it is a ${type})`);
    fcntl(fd, C.F_SETFD, fcntl(fd, C.F_GETFD) | C.FD_CLOEXEC);
    out.push({ fd, name });
  }
  return out;
}

/** The daemon's sockets by name (inheritedSockets); every socket must be named, each name once. */
export function listenFds(env: NodeJS.ProcessEnv = process.env, pid = process.pid): Map<string, number> {
  const out = new Map<string, number>();
  const sockets = inheritedSockets(env, pid);
  for (const { fd, name } of sockets) {
    if (name === null)
      throw new Error(
        `LISTEN_FDS=${sockets.length} but no LISTEN_FDNAMES: give each .socket unit FileDescriptorName=<port> ` +
          '(systemd-socket-activate: --fdname=PORT:...)',
      );
    if (out.has(name)) throw new Error(`LISTEN_FDNAMES names '${name}' twice`);
    out.set(name, fd);
  }
  return out;
}
