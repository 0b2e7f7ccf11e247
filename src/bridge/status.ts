/**
 * Status is data: the port's typed snapshot and lifecycle events, read by the control side, by
 * tests and by the benchmark (never by parsing log lines, which are for people).
 */

/** One ring as the port sees it (vhost-user.rst "Ring states"). */
export interface RingStatus {
  /** Device ring number: 2 * queue pair + (0 = rx, 1 = tx). */
  index: number;
  /** SET_VRING_NUM, or null before it. */
  size: number | null;
  /** A kick fd was received and no GET_VRING_BASE stopped the ring since. */
  started: boolean;
  /** SET_VRING_ENABLE 1 (or every ring, without PROTOCOL_FEATURES). */
  enabled: boolean;
  /** The datapath serves it (vhost-net: attached to its tap queue by VHOST_NET_SET_BACKEND). */
  attached: boolean;
  kick: boolean;
  call: boolean;
  err: boolean;
  /**
   * The driver's avail->idx (the next available-ring slot it will fill) and the device's used->idx,
   * as they are in guest memory at the moment of the snapshot (virtio 1.2 2.7.6 "The Virtqueue
   * Available Ring", 2.7.8 "The Virtqueue Used Ring"), both free-running u16. avail - used (mod
   * 2^16) is what the guest has offered and the datapath not yet returned. null while the ring has no address
   * (before SET_VRING_ADDR, after a reset) or its area is not in the mapped guest memory.
   */
  availIdx: number | null;
  usedIdx: number | null;
}

/** What the datapath says about itself (vhost-net: the socket its rings are attached to, and kernel knobs). */
export interface DatapathStatus {
  /** The socket kind (docs/backends.md): a tap, a macvtap, or a raw packet socket. */
  socket: 'tap' | 'macvtap' | 'packet';
  /** Its interface. */
  interface: string;
  /** The busy-poll time asked for (µs; 0 = off): VHOST_SET_VRING_BUSYLOOP_TIMEOUT on every ring. */
  busyPollUs: number;
  /** Per ring, the kernel's VHOST_GET_VRING_BUSYLOOP_TIMEOUT now; empty while no front-end owns the device. */
  kernelBusyPollUs: number[];
  /**
   * vhost_net's experimental_zcopytx module parameter (1: transmit from guest pages without a copy when the
   * socket allows it); null if vhost_net is not loaded. Per host, not per port.
   */
  zeroCopyTx: boolean | null;
}

/** The busy-poll time asked for as logs and `ctl status` word it. */
export function busyPollText(us: number): string {
  return us ? `${us} us` : 'off';
}

/** experimental_zcopytx as logs and `ctl status` word it (one wording for both). */
export function zeroCopyText(z: boolean | null): string {
  return z === null ? 'unknown (vhost_net not loaded)' : z ? 'on' : 'off';
}

export interface PortStatus {
  /** The port's name (one-port mode: the tap's name). */
  port: string;
  /** A front-end is connected. */
  frontEnd: boolean;
  /** Front-end connections served so far, the current one included. */
  sessions: number;
  /** Peers turned away by the port's allow-list (transport.ts, peer.ts), never served. */
  refusedPeers: number;
  features: {
    offered: string;
    offeredNames: string[];
    negotiated: string | null;
    negotiatedNames: string[];
    protocol: string | null;
    protocolNames: string[];
  };
  rings: RingStatus[];
  datapath: DatapathStatus;
  memory: { regions: { guestAddr: string; size: string; userAddr: string }[]; dirtyLog: boolean };
  /** ms since the epoch; null if not (yet) in this session. */
  times: {
    connected: number | null;
    featuresSet: number | null;
    /** When the last ring of the session became attached with every enabled ring attached. */
    allRingsRunning: number | null;
    lastRingStopped: number | null;
    /** The previous session's end. */
    disconnected: number | null;
  };
}

export type PortEvent =
  | { kind: 'ready' }
  | { kind: 'connected' }
  | { kind: 'negotiated' }
  | { kind: 'memory' }
  | { kind: 'ring-running'; ring: number }
  | { kind: 'ring-stopped'; ring: number }
  | { kind: 'reset'; why: string }
  | { kind: 'refused'; request: string; reason: string }
  /** A connecting peer outside the port's allow-list, closed before any message was read (null: no SO_PEERCRED). */
  | { kind: 'peer-refused'; peer: { pid: number; uid: number; gid: number } | null; rule: string }
  | { kind: 'disconnected' };

/** Gets every lifecycle event with the status after it (session.ts; the CLI's --events-fd, events.ts). */
export type PortListener = (event: PortEvent, status: PortStatus) => void;

/** One line of `--events-fd` (JSON, one per line). */
export interface EventLine {
  /** ms since the epoch */
  time: number;
  port: string;
  event: PortEvent;
  status: PortStatus;
}
