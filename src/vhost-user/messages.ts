/**
 * Typed payloads of vhost-user front-end requests (QEMU docs/interop/vhost-user.rst, "Message
 * types"). Wire layouts are in codec.ts; these are the decoded values handlers receive.
 * u64 fields are bigint.
 */

/** "A vring state description": ring index and a number (size for SET_VRING_NUM, index for *_VRING_BASE). */
export interface VringState {
  index: number;
  num: number;
}

/** "A vring address description" (struct vhost_vring_addr). desc/used/avail are FRONT-END VIRTUAL addresses. */
export interface VringAddr {
  index: number;
  /** Bit 0 = VHOST_VRING_F_LOG: log writes to the used ring at `log`. */
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  /** Guest-PHYSICAL address of the used ring, for the dirty log. */
  log: bigint;
}

/** The u64 payload of SET_VRING_KICK/CALL/ERR: bits 0-7 ring index, bit 8 "no fd" (polling mode / invalid fd). */
export interface VringFileRef {
  index: number;
  noFd: boolean;
}

/** "A memory region description" (VhostUserMemoryRegion). */
export interface MemoryRegion {
  /** Guest-physical address of the region. */
  gpa: bigint;
  size: bigint;
  /** Front-end (QEMU) virtual address of the region: ring addresses are given in this space. */
  qva: bigint;
  /** Offset of the region in its fd. */
  mmapOffset: bigint;
}

/** "Log description": the shared dirty-log area is `size` bytes at `offset` in the passed fd. */
export interface LogArea {
  size: bigint;
  offset: bigint;
}
