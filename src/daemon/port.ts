/**
 * A port of the daemon: one vhost-user socket served on one tap, i.e. one one-port {@link Bridge}
 * (src/bridge/daemon.ts) started from a {@link PortSpec}. The manager sees it through
 * {@link PortUnit}, so that unit tests can give it ports on a recording fake kernel.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Bridge, type TransportSpec } from '../bridge/daemon.js';
import type { DeviceStatus } from '../bridge/status.js';
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
  if (listenFd !== null) return { mode: 'fd', fd: listenFd };
  if (spec.role === 'client') return { mode: 'client', path: spec.socket };
  return { mode: 'server', path: spec.socket, socketMode: spec.mode, uid: spec.owner, gid: spec.group };
}

/** The real port: a Bridge on /dev/vhost-net and the tap. */
export const openBridgePort: PortOpener = (spec, ctx) => {
  if (spec.role === 'server' && ctx.listenFd === null)
    mkdirSync(dirname(spec.socket), { recursive: true, mode: 0o755 });
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
  });
  return {
    tapName: bridge.tapName,
    status: () => bridge.status(),
    frontEndFd: () => bridge.frontEndFd,
    dropFrontEnd: (why) => bridge.dropFrontEnd(why),
    close: () => bridge.close(),
  };
};
