/**
 * A port of the daemon: one vhost-user socket served on one tap, i.e. one one-port {@link Bridge}
 * (src/bridge/daemon.ts) started from a {@link PortSpec}. The manager sees it through
 * {@link PortUnit}, so that unit tests can give it ports on a recording fake kernel.
 */
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { Bridge, type TransportSpec } from '../bridge/daemon.js';
import type { DeviceStatus } from '../bridge/status.js';
import type { PairWorker } from '../bridge/vhost-net-datapath.js';
import type { Logger } from '../log.js';
import type { PortSpec } from './config.js';

/** What the manager needs of a running port. */
export interface PortUnit {
  /** The tap's name as the kernel reports it. */
  readonly tapName: string;
  /** The vhost-user side as data (the status contract, src/bridge/status.ts). */
  status(): DeviceStatus;
  /** The connected front-end's socket (SO_PEERCRED is read from it), or null. */
  frontEndFd(): number | null;
  /** The vhost worker each queue pair's SET_OWNER started in the current session (none without one). */
  workers(): PairWorker[];
  /** Drop the front-end: its rings stop and its memory is unmapped; the port serves the next one. */
  dropFrontEnd(why: string): void;
  /** Stop serving; the socket file a server port created is removed. */
  close(): void;
}

/** How a port is started. */
export interface OpenContext {
  /** Where the port logs; it names itself in every line (log.ts portLog). */
  log: Logger;
  /** A listening socket systemd passed for this port (LISTEN_FDNAMES), owned by the port from here on; or null. */
  listenFd: number | null;
}

export type PortOpener = (spec: PortSpec, ctx: OpenContext) => PortUnit;

/** The transport of a port: an inherited listening fd, the socket it listens on, or the VMM's socket it connects to. */
export function transportOf(spec: PortSpec, listenFd: number | null): TransportSpec {
  const peers = spec.peers;
  if (listenFd !== null) return { mode: 'fd', fd: listenFd, peers };
  if (spec.role === 'client') return { mode: 'client', path: spec.socket, peers };
  return { mode: 'server', path: spec.socket, socketMode: spec.mode, uid: spec.owner, gid: spec.group, peers };
}

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

/** The real port: a Bridge on /dev/vhost-net and the tap. */
export const openBridgePort: PortOpener = (spec, ctx) => {
  if (spec.role === 'server' && ctx.listenFd === null) ensureSocketDir(dirname(spec.socket));
  const bridge = Bridge.start({
    transport: transportOf(spec, ctx.listenFd),
    tap:
      spec.backend === 'macvtap'
        ? { macvtap: spec.tap }
        : spec.backend === 'packet'
          ? { packet: spec.tap }
          : { name: spec.tap, create: !spec.persistentTap },
    busyPollUs: spec.busyPollUs || undefined,
    queuePairs: spec.queues,
    mtu: spec.mtu ?? undefined,
    log: ctx.log,
    port: spec.name,
    memoryLimit: { bytes: spec.maxMemory, regions: spec.maxRegions },
    workerCgroup: spec.workerCgroup ?? undefined,
  });
  return {
    tapName: bridge.tapName,
    status: () => bridge.status(),
    frontEndFd: () => bridge.frontEndFd,
    workers: () => bridge.workers(),
    dropFrontEnd: (why) => bridge.dropFrontEnd(why),
    close: () => bridge.close(),
  };
};
