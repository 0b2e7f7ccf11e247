/**
 * What a port is started with, in both modes: the one-port command line (src/one-port.ts) and the
 * daemon's configuration (src/daemon/config.ts) each map their settings onto one {@link PortSpec},
 * and each checks its numbers against the ranges here, written once.
 */
import type { MemoryLimit } from '../memtable/index.js';
import type { PeerRule } from '../vhost-user/peer.js';

/** A closed range of integers, as both modes check a setting against it. */
export interface IntRange {
  readonly min: number;
  readonly max: number;
}

/** Queue pairs of a port (--queues, `queues`): one vhost-net fd and one queue of the backend socket each. */
export const QUEUE_PAIRS: IntRange = { min: 1, max: 128 };
/** Busy polling per ring, µs (--busy-poll-us, `busyPollUs`; 0: off). */
export const BUSY_POLL_US: IntRange = { min: 0, max: 1_000_000 };
/** The tap's MTU (--mtu, `mtu`): the IPv4 minimum to the largest virtio-net host_mtu. */
export const MTU: IntRange = { min: 68, max: 65521 };
/**
 * Memory regions a front-end may map (--max-regions, `maxRegions`): up to the 509 slots virtio-mem
 * users load the vhost module with (docs/backends.md).
 */
export const MEMORY_REGIONS: IntRange = { min: 1, max: 509 };

/** How the port meets its front-end (vhost-user.rst "Introduction": either side may listen). */
export type TransportSpec =
  | {
      /** Listen on `path` (created, a stale socket file replaced); the VMM connects. */
      mode: 'server';
      path: string;
      socketMode?: number;
      uid?: number | null;
      gid?: number | null;
      peers?: PeerRule | null;
    }
  /** Connect to a VMM listening on `path` (QEMU `server=on`); reconnect when it goes. */
  | { mode: 'client'; path: string; peers?: PeerRule | null }
  /** An inherited socket: a listening one (systemd, libvirt), or one connected to a front-end. */
  | { mode: 'fd'; fd: number; peers?: PeerRule | null };

/**
 * The port's backend socket, the fd given to VHOST_NET_SET_BACKEND (docs/backends.md): a tap by
 * name (created if missing, unless `create: false`), open tap or macvtap fds from a manager (one
 * per queue pair), a macvtap by name (its /dev/tapN), or a raw packet socket bound to an interface.
 */
export type BackendSocketSpec =
  | { tap: string; create?: boolean }
  | { fds: number[] }
  | { macvtap: string }
  | { packet: string };

export interface PortSpec {
  /** The port's name in log lines and the status (default: the backend socket's interface); the daemon names each. */
  name?: string;
  transport: TransportSpec;
  backendSocket: BackendSocketSpec;
  queuePairs: number;
  /** Open /dev/vhost-net fds given by a manager, one per queue pair (--vhost-fd); absent: the port opens its own. */
  vhostFds?: number[];
  /** Set the backend socket's MTU at start. */
  mtu?: number;
  /** VHOST_SET_VRING_BUSYLOOP_TIMEOUT on every ring, µs (0 or absent: off). */
  busyPollUs?: number;
  /** Record every vhost-user message and reply to this file (msgpack trace, vhost-user/trace.ts). */
  record?: string;
  /** What a front-end may make this port map (memtable MemoryLimit); absent: no limit of its own. */
  memoryLimit?: MemoryLimit;
  /** The cgroup v2 directory each session's vhost workers are moved into (VhostNetDatapathConfig.workerCgroup). */
  workerCgroup?: string;
}
