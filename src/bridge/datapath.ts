/**
 * The seam between the vhost-user session (session.ts: what the front-end said) and whatever moves
 * the packets, in the shape of QEMU's VhostOps (hw/virtio/vhost-backend.c) and rust-vmm's
 * VhostBackend / VhostNet / VhostVdpa traits: features, memory table, ring configuration, ring
 * start and stop, the dirty log, and the net extras (MTU, announce).
 *
 * The session owns the vhost-user state and decides, in one place after every request, what the
 * kernel should hold (session.ts settle(): a DatapathTarget, which rings run among it); a datapath
 * applies that as a difference from what it last applied, in the order its kernel interface
 * needs, and keeps no copy of the session's facts, only its own (what it gave the kernel). Its
 * first implementation is vhost-net on a tap (vhost-net-datapath.ts). Others plug in here, as a
 * second implementation, never as branches in the session:
 *  - vhost-vdpa (/dev/vhost-vdpa-N): the same ring ioctls, the memory table as IOTLB updates
 *    (VHOST_IOTLB_UPDATE), start and stop by VHOST_VDPA_SET_STATUS / SET_VRING_ENABLE instead of
 *    NET_SET_BACKEND;
 *  - vhost-net on another socket needs no new datapath: the socket kind (a tap, a macvtap, a raw
 *    packet socket) is an implementation of vhost-kernel's BackendSocket that VhostNetDatapath is
 *    given (docs/backends.md).
 * A second port is a second back-end + datapath pair (docs/architecture.md).
 *
 * Ring arguments are DEVICE ring numbers (virtio.ts ringToPair gives the queue pair).
 * fd arguments belong to the session, which closes them; a datapath hands them to its kernel
 * (which takes its own reference) and never closes them.
 */
import type { MemTable } from '../memtable/index.js';
import type { DatapathStatus } from './status.js';

/**
 * A ring's addresses as a datapath gets them: desc, avail and used in THIS process's address space
 * (translated by src/memtable), log = the guest-physical address of the used ring for the dirty
 * log, flags = VHOST_VRING_F bit numbers (LOG = 0), as in struct vhost_vring_addr (linux/vhost.h).
 */
export interface DatapathRingAddr {
  flags: number;
  desc: bigint;
  avail: bigint;
  used: bigint;
  log: bigint;
}

/**
 * What the session wants the kernel to hold for one ring (linux/vhost.h per-ring ioctls). The
 * datapath gives each field that differs from what it last gave, and serves the ring only if
 * `attached`.
 */
export interface RingTarget {
  /** SET_VRING_NUM; undefined until the front-end sent one. */
  num: number | undefined;
  /** SET_VRING_BASE: the next available index to serve from. */
  base: number;
  addr: DatapathRingAddr | null;
  /** Eventfds (null: none). They belong to the session; the datapath's kernel takes its own reference. */
  kick: number | null;
  call: number | null;
  err: number | null;
  /** SET_VRING_ENABLE as the front-end sent it: lets the datapath steer host traffic to the pairs in use. */
  enabled: boolean;
  /** Serve the ring now (the session decided: started, enabled, configured, logged if it must be). */
  attached: boolean;
}

/** What the session wants the kernel to hold: computed after every request (session.ts settle()). */
export interface DatapathTarget {
  /** The negotiated word (null before SET_FEATURES); LOG_ALL in it toggles the dirty log. */
  features: bigint | null;
  /** The guest memory table (null before the first one); the previous one stays mapped until apply returns. */
  memory: MemTable | null;
  /** SET_LOG_BASE: the dirty bitmap at this address in this process (null: none). */
  log: bigint | null;
  /** Device ring 0..2*queuePairs-1. */
  rings: RingTarget[];
}

export interface Datapath {
  /** What the rings are attached to, for log lines (the tap's name). */
  readonly name: string;
  /** Queue pairs served: 2 rings each. */
  readonly queuePairs: number;
  /**
   * GET_FEATURES: the feature word offered to the front-end, what this datapath can serve plus the
   * bits the bridge implements itself (vhost-kernel/features.ts offeredToFrontEnd).
   */
  readonly offered: bigint;
  /** GET_MAX_MEM_SLOTS: how many memory regions the datapath's kernel accepts. */
  readonly maxMemSlots: number;

  /** SET_OWNER (VhostOps vhost_set_owner): take the per-session resources (vhost-net: one owned fd per queue pair). */
  open(): void;
  /**
   * The session ends (disconnect, RESET_OWNER, RESET_DEVICE): stop every ring and give back the
   * per-session resources. Every step runs even if an earlier one failed (failures are logged with
   * `why`). Afterwards the kernel touches no guest memory, so the session may unmap it, and the
   * datapath has forgotten what it applied. Also valid when not opened (port-level state such as
   * tap queue steering is reset).
   */
  release(why: string): void;

  /**
   * Bring the kernel to `target`: give what differs from what this datapath last gave, in the
   * order its kernel needs (vhost-net: docs/kernel-ordering.md), and nothing else, so a repeated
   * target applies nothing. Before open() only the port-level part (tap queue steering) applies.
   * If a step throws, what was given before it stays given (and recorded as such); a later call
   * with the previous target puts the kernel back.
   */
  apply(target: DatapathTarget): void;
  /** The datapath serves the ring now (what it applied, not what was asked). */
  running(ring: number): boolean;
  /**
   * GET_VRING_BASE: stop the ring (it stays stopped until a target attaches it again), then read
   * the next available index from the kernel. Throws, without reading, if the ring cannot be stopped.
   */
  getRingBase(ring: number): number;

  /** Its own part of the port's status (socket kind, kernel knobs as the kernel reports them now). */
  describe(): DatapathStatus;

  /** NET_SET_MTU. */
  setMtu(mtu: number): void;
  /** SEND_RARP: announce `mac` on the host side. */
  announce(mac: Buffer): void;
}
