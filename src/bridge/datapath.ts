/**
 * The seam between the vhost-user session (session.ts: what the front-end said) and whatever moves
 * the packets, in the shape of QEMU's VhostOps (hw/virtio/vhost-backend.c) and rust-vmm's
 * VhostBackend / VhostNet / VhostVdpa traits: features, memory table, ring configuration, ring
 * start and stop, the dirty log, and the net extras (MTU, announce).
 *
 * The session owns the vhost-user state and decides, in one place after every request, which
 * rings should run (session.ts settle()); a datapath only carries out what it is told, in the order
 * its kernel interface needs. Its first implementation is vhost-net on a tap
 * (vhost-net-datapath.ts). Others plug in here, as a second implementation, never as branches in
 * the session:
 *  - vhost-vdpa (/dev/vhost-vdpa-N): the same ring ioctls, the memory table as IOTLB updates
 *    (VHOST_IOTLB_UPDATE), start and stop by VHOST_VDPA_SET_STATUS / SET_VRING_ENABLE instead of
 *    NET_SET_BACKEND;
 *  - vhost-net on another socket needs no new datapath: the socket kind (a tap, a macvtap, a raw
 *    packet socket) is an implementation of vhost-kernel's BackendSocket that VhostNetDatapath is
 *    given (docs/backends.md).
 * A second port is a second session + datapath pair (docs/architecture.md).
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
  /** Between open() and release(). */
  readonly opened: boolean;

  /** SET_OWNER: take the per-session resources (vhost-net: one fd per queue pair, owned by this process). */
  open(): void;
  /**
   * The session ends (disconnect, RESET_OWNER, RESET_DEVICE): stop every ring and give back the
   * per-session resources. Every step runs even if an earlier one failed (failures are logged with
   * `why`). Afterwards the kernel touches no guest memory, so the session may unmap it. Also valid
   * when not opened (port-level state such as tap queue steering is reset).
   */
  release(why: string): void;

  /**
   * SET_FEATURES (also to toggle LOG_ALL during migration): the datapath's share of the negotiated
   * word. LOG_ALL reaches a kernel only once it has the log (setLogBase): docs/migration.md.
   */
  setFeatures(negotiated: bigint): void;
  /**
   * A new memory table. `readdress` lists the rings whose local addresses change with it: a ring
   * that runs is stopped around the change and restarted. Called BEFORE the old table is unmapped.
   */
  setMemTable(table: MemTable, readdress: { ring: number; addr: DatapathRingAddr }[]): void;
  /**
   * SET_LOG_BASE: the dirty bitmap, at this address in this process. A second call replaces the
   * first; the session unmaps the old log only after it returns.
   */
  setLogBase(addr: bigint): void;

  /** Ring configuration (SET_VRING_NUM/BASE/ADDR/KICK): a running ring is stopped around the change. */
  setRingNum(ring: number, num: number): void;
  setRingBase(ring: number, base: number): void;
  setRingAddr(ring: number, addr: DatapathRingAddr): void;
  setRingKick(ring: number, fd: number): void;
  /** SET_VRING_CALL / SET_VRING_ERR (null: none); allowed while the ring runs. */
  setRingCall(ring: number, fd: number | null): void;
  setRingErr(ring: number, fd: number | null): void;
  /** SET_VRING_ENABLE as the front-end sent it: lets the datapath steer host traffic to the pairs in use. */
  setRingEnabled(ring: number, enabled: boolean): void;

  /** Serve the ring (the session calls it only for a ring that is started, enabled and configured). */
  start(ring: number): void;
  /** Stop serving the ring. */
  stop(ring: number, why: string): void;
  /** The datapath serves the ring now. */
  running(ring: number): boolean;
  /** GET_VRING_BASE: stop the ring, then read the next available index. */
  getRingBase(ring: number): number;

  /** Its own part of the port's status (socket kind, kernel knobs as the kernel reports them now). */
  describe(): DatapathStatus;

  /** NET_SET_MTU. */
  setMtu(mtu: number): void;
  /** SEND_RARP: announce `mac` on the host side. */
  announce(mac: Buffer): void;
}
