/**
 * vhost-user wire constants, named as QEMU docs/interop/vhost-user.rst names them (with the spec's
 * front-end / back-end naming: SET_BACKEND_REQ_FD, not SET_SLAVE_REQ_FD).
 *
 * Feature bits are BIT NUMBERS (src/bits.ts makes masks). Header flags are u32 masks, because the
 * spec defines them as masks of a 32-bit field ("Header").
 */
import { namesOf } from '../bits.js';
import { hex } from '../format.js';

/** Front-end message types (vhost-user.rst "Front-end message types"), ids 1-43. */
export const FrontendReq = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;

/** Protocol feature BIT NUMBERS (vhost-user.rst "Protocol features"). */
export const PROTOCOL_F = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** Names of protocol feature bits, for describeBits(). */
export const PROTOCOL_FEATURE_NAMES: Record<number, string> = namesOf(PROTOCOL_F);

/** Header flags (vhost-user.rst "Header"): a u32 whose low 2 bits are the version. */
export const HEADER_FLAGS = {
  /** "Lower 2 bits are the version (currently 0x01)". */
  VERSION_MASK: 0x3,
  VERSION: 0x1,
  /** "Bit 2 is the reply flag - needs to be sent on each reply from the back-end". */
  REPLY: 1 << 2,
  /** "Bit 3 is the need_reply flag" (REPLY_ACK). */
  NEED_REPLY: 1 << 3,
  /** Every bit the spec defines; the others are reserved and must be zero. */
  KNOWN: 0xf,
} as const;

/**
 * Regions in one SET_MEM_TABLE: vhost-user.rst "Memory regions description" has region0 ..
 * region7 (VHOST_MEMORY_BASELINE_NREGIONS in QEMU).
 */
const MAX_MEM_REGIONS = 8;

/** Sizes and limits of the wire format. */
export const LIMITS = {
  /** request, flags, size: three u32. */
  HEADER_SIZE: 12,
  /**
   * The largest payload accepted. The spec bounds payloads only by QEMU's VhostUserPayload union;
   * rust-vmm uses 0x1000 (MAX_MSG_SIZE). Every request this back end supports is at most 264 bytes,
   * so 4096 leaves room and a larger `size` is refused before a byte of it is read.
   */
  MAX_PAYLOAD: 0x1000,
  /** Regions in one SET_MEM_TABLE. */
  MAX_MEM_REGIONS,
  /** The most fds one message carries (SET_MEM_TABLE: one per region). More is MSG_CTRUNC. */
  MAX_FDS: MAX_MEM_REGIONS,
} as const;

/** Payload sizes (vhost-user.rst "Payload"). */
export const PAYLOAD_SIZE = {
  U64: 8,
  VRING_STATE: 8,
  VRING_ADDR: 40,
  /** num regions (u32) + padding (u32), before the regions. */
  MEMORY_HEADER: 8,
  MEMORY_REGION: 32,
  /** padding (u64) + one region (ADD_MEM_REG / REM_MEM_REG). */
  SINGLE_MEMORY_REGION: 40,
  LOG: 16,
} as const;

/**
 * The u64 payload of SET_VRING_KICK/CALL/ERR: "Bits (0-7) of the payload contain the vring index.
 * Bit 8 is the invalid FD flag." (The kernel's struct vhost_vring_file is src/vhost-kernel's VHOST_VRING_FILE.)
 */
export const VRING_FILE_PAYLOAD = {
  INDEX_MASK: 0xffn,
  NOFD_BIT: 8,
} as const;

/** struct vhost_vring_addr flags: bit 0 VHOST_VRING_F_LOG (log used-ring writes); no other bit is defined. */
export const VRING_ADDR_F = {
  LOG: 0,
} as const;

const FRONTEND_NAMES: Record<number, string> = Object.fromEntries(Object.entries(FrontendReq).map(([k, v]) => [v, k]));

/** `SET_MEM_TABLE` for 5; `request 99 (unknown)` for ids the spec does not define. */
export function requestName(id: number): string {
  return FRONTEND_NAMES[id] ?? `request ${id} (unknown)`;
}

/** `0x9 (NEED_REPLY)`: header flags for logs. */
export function describeFlags(flags: number): string {
  const names: string[] = [];
  if (flags & HEADER_FLAGS.REPLY) names.push('REPLY');
  if (flags & HEADER_FLAGS.NEED_REPLY) names.push('NEED_REPLY');
  if (flags & ~HEADER_FLAGS.KNOWN) names.push('reserved bits');
  return `${hex(flags >>> 0)}${names.length ? ` (${names.join('|')})` : ''}`;
}
