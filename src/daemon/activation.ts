/**
 * systemd socket activation with several sockets (sd_listen_fds(3)): the service manager passes
 * listening sockets as fds 3, 4, ... with LISTEN_FDS = their count, LISTEN_PID = this process, and
 * LISTEN_FDNAMES = their names separated by ':' (FileDescriptorName= of each .socket unit). A name
 * is a port's name; the name `control` is the control socket.
 */
import { C, fcntl, fstat } from '../sys/index.js';

/** The first fd passed (SD_LISTEN_FDS_START). */
const FIRST_FD = 3;

/** The name that makes an inherited socket the control socket. */
export const CONTROL_FD_NAME = 'control';

/**
 * The sockets passed to this process by name. The variables are removed from the environment (as
 * sd_listen_fds(unset_environment=1) does), and each fd is made close-on-exec.
 * Throws if the variables are inconsistent or an fd is not a socket.
 */
export function listenFds(env: NodeJS.ProcessEnv = process.env, pid = process.pid): Map<string, number> {
  const out = new Map<string, number>();
  const { LISTEN_FDS: count, LISTEN_PID: forPid, LISTEN_FDNAMES: names } = env;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (count === undefined) return out;
  if (forPid !== undefined && Number(forPid) !== pid) return out; // meant for another process (a parent)
  const n = Number(count);
  if (!/^\d+$/.test(count) || n < 1) throw new Error(`LISTEN_FDS=${count}: expected a count of sockets`);
  const list = (names ?? '').split(':');
  if (names === undefined || list.length !== n) {
    throw new Error(
      `LISTEN_FDS=${n} but LISTEN_FDNAMES has ${names === undefined ? 'no names' : `${list.length} name(s)`}: give ` +
        `each .socket unit FileDescriptorName=<port>`,
    );
  }
  for (let i = 0; i < n; i++) {
    const fd = FIRST_FD + i;
    const type = fstat(fd).type;
    if (type !== 'socket') throw new Error(`inherited fd ${fd} (${list[i]}) is not a socket (it is a ${type})`);
    if (out.has(list[i])) throw new Error(`LISTEN_FDNAMES names '${list[i]}' twice`);
    fcntl(fd, C.F_SETFD, fcntl(fd, C.F_GETFD) | C.FD_CLOEXEC);
    out.set(list[i], fd);
  }
  return out;
}
