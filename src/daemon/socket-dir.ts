/**
 * The directories of the sockets the daemon creates (a port's, the control socket's): made so that
 * nobody else can swap a socket in them, and remembered, so that a drop of privileges
 * (privileges.ts) gives them to the daemon's user.
 */
import { chmodSync, mkdirSync, statSync } from 'node:fs';

/** The mode of a socket directory the daemon creates: others may reach a socket, whose own mode decides. */
export const SOCKET_DIR_MODE = 0o755;

/** The socket directories this process created (a drop of privileges gives them to the daemon's user). */
const createdDirs = new Set<string>();
export const socketDirsCreated = (): string[] => [...createdDirs];

/**
 * Make sure the directory of a socket the daemon creates exists and cannot be used to swap the
 * socket: created with {@link SOCKET_DIR_MODE} (set after mkdir, so the umask does not change it);
 * an existing one that everyone may write without the sticky bit is refused.
 */
export function ensureSocketDir(dir: string): void {
  let st: ReturnType<typeof statSync> | undefined;
  try {
    st = statSync(dir);
  } catch {
    mkdirSync(dir, { recursive: true, mode: SOCKET_DIR_MODE });
    chmodSync(dir, SOCKET_DIR_MODE);
    createdDirs.add(dir);
    return;
  }
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (st.mode & 0o002 && !(st.mode & 0o1000))
    throw new Error(
      `${dir} may be written by everyone (mode ${(st.mode & 0o7777).toString(8)}) without the sticky bit: ` +
        `another user could replace the socket; make it ${SOCKET_DIR_MODE.toString(8)}`,
    );
}
