/**
 * The vhost-user wire format, pure: Buffers in, typed values out, and replies back to Buffers.
 * No fds, sockets or I/O here (pg-protocol's parser/serializer split; rust-vmm message.rs).
 *
 * Layouts are vhost-user.rst "Message Specification": "All numbers are in the machine native byte
 * order", which on every host this daemon runs on (x86-64, aarch64) is little endian. u64 fields
 * are bigint.
 *
 * Decoders assume the dispatcher already checked the payload size against the request table, and
 * throw RangeError if it did not. `validate*` functions are SYNTAX checks only, in rust-vmm's
 * VhostUserMsgValidator sense ("doesn't validate semantics such as protocol version and dependency
 * on feature flags"): they return the reason a payload is malformed, or null.
 */
import { bit, has, U64_MAX } from '../bits.js';
import { hex } from '../format.js';
import { RING_ALIGN } from '../virtio.js';
import { HEADER_FLAGS, LIMITS, PAYLOAD_SIZE, VRING_ADDR_F, VRING_FILE_PAYLOAD } from './constants.js';
import type { LogArea, MemoryRegion, VringAddr, VringFileRef, VringState } from './messages.js';

/** The 12-byte header (vhost-user.rst "Header"). */
export interface Header {
  request: number;
  flags: number;
  /** Payload size in bytes. */
  size: number;
}

/** A memory table as it arrived (vhost-user.rst "Memory regions description"). */
export interface MemoryTable {
  nregions: number;
  padding: number;
  /** The regions present in the payload (min(nregions, what the payload holds)). */
  regions: MemoryRegion[];
}

/** The payload of ADD_MEM_REG / REM_MEM_REG (vhost-user.rst "Single memory region description"). */
export interface SingleMemoryRegion {
  padding: bigint;
  region: MemoryRegion;
}

// ---------------------------------------------------------------------------------------------
// Decoding (front-end requests)

/** The header at the start of `b` (at least 12 bytes). */
export function decodeHeader(b: Buffer): Header {
  if (b.length < LIMITS.HEADER_SIZE) throw new RangeError(`header needs ${LIMITS.HEADER_SIZE} bytes, got ${b.length}`);
  return { request: b.readUInt32LE(0), flags: b.readUInt32LE(4), size: b.readUInt32LE(8) };
}

/** "A single 64-bit integer". */
export function decodeU64(b: Buffer): bigint {
  return b.readBigUInt64LE(0);
}

/** "A vring state description": u32 index, u32 num. */
export function decodeVringState(b: Buffer): VringState {
  return { index: b.readUInt32LE(0), num: b.readUInt32LE(4) };
}

/**
 * "A vring address description": u32 index, u32 flags, u64 descriptor, used, available, log (struct
 * vhost_vring_addr order).
 */
export function decodeVringAddr(b: Buffer): VringAddr {
  return {
    index: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    desc: b.readBigUInt64LE(8),
    used: b.readBigUInt64LE(16),
    avail: b.readBigUInt64LE(24),
    log: b.readBigUInt64LE(32),
  };
}

/** The u64 of SET_VRING_KICK/CALL/ERR: "Bits (0-7) ... the vring index. Bit 8 is the invalid FD flag." */
export function decodeVringFile(value: bigint): VringFileRef {
  return { index: Number(value & VRING_FILE_PAYLOAD.INDEX_MASK), noFd: has(value, VRING_FILE_PAYLOAD.NOFD_BIT) };
}

function decodeRegion(b: Buffer, at: number): MemoryRegion {
  return {
    gpa: b.readBigUInt64LE(at),
    size: b.readBigUInt64LE(at + 8),
    qva: b.readBigUInt64LE(at + 16),
    mmapOffset: b.readBigUInt64LE(at + 24),
  };
}

/** nregions of a memory table payload (its first u32), or null if the payload is shorter than its 8-byte head. */
export function memoryTableRegionCount(b: Buffer): number | null {
  return b.length < PAYLOAD_SIZE.MEMORY_HEADER ? null : b.readUInt32LE(0);
}

/** The payload size a memory table of `nregions` regions has: u32 nregions, u32 padding, 32 bytes per region. */
export function memoryTableSize(nregions: number): number {
  return PAYLOAD_SIZE.MEMORY_HEADER + nregions * PAYLOAD_SIZE.MEMORY_REGION;
}

/** "Memory regions description" (SET_MEM_TABLE). */
export function decodeMemoryTable(b: Buffer): MemoryTable {
  const nregions = b.readUInt32LE(0);
  const padding = b.readUInt32LE(4);
  const present = Math.min(nregions, Math.floor((b.length - PAYLOAD_SIZE.MEMORY_HEADER) / PAYLOAD_SIZE.MEMORY_REGION));
  const regions: MemoryRegion[] = [];
  for (let i = 0; i < present; i++)
    regions.push(decodeRegion(b, PAYLOAD_SIZE.MEMORY_HEADER + i * PAYLOAD_SIZE.MEMORY_REGION));
  return { nregions, padding, regions };
}

/** "Single memory region description" (ADD_MEM_REG / REM_MEM_REG): u64 padding, then a region. */
export function decodeSingleMemoryRegion(b: Buffer): SingleMemoryRegion {
  return { padding: b.readBigUInt64LE(0), region: decodeRegion(b, 8) };
}

/** "Log description": u64 log size, u64 log offset (SET_LOG_BASE). */
export function decodeLog(b: Buffer): LogArea {
  return { size: b.readBigUInt64LE(0), offset: b.readBigUInt64LE(8) };
}

/** SEND_RARP: "The first 6 bytes of the payload contain the mac address of the guest". */
export function decodeRarpMac(b: Buffer): Buffer {
  return Buffer.from(b.subarray(0, 6));
}

// ---------------------------------------------------------------------------------------------
// Syntax checks (null = valid)

function endOverflows(base: bigint, size: bigint): boolean {
  return base + size > U64_MAX;
}

/**
 * A region is usable only if it is non-empty and neither its guest range, its front-end virtual
 * range nor its range in the fd wraps around 2^64 (rust-vmm VhostUserMemoryRegion::is_valid).
 * REM_MEM_REG skips the offset check: "The mmap offset is ignored" there. The one region rule:
 * src/memtable applies it too before a region reaches the kernel.
 */
export function validateRegion(r: MemoryRegion, opts: { checkOffset?: boolean } = {}): string | null {
  if (r.size === 0n) return 'zero-size region';
  if (endOverflows(r.gpa, r.size)) return `guest address ${hex(r.gpa)} + size ${hex(r.size)} overflows u64`;
  if (endOverflows(r.qva, r.size)) return `user address ${hex(r.qva)} + size ${hex(r.size)} overflows u64`;
  if ((opts.checkOffset ?? true) && endOverflows(r.mmapOffset, r.size))
    return `mmap offset ${hex(r.mmapOffset)} + size ${hex(r.size)} overflows u64`;
  return null;
}

/** SET_MEM_TABLE: 1 <= nregions <= 8, padding zero, every region valid. */
export function validateMemoryTable(t: MemoryTable): string | null {
  if (t.nregions === 0) return 'nregions is 0';
  if (t.nregions > LIMITS.MAX_MEM_REGIONS) return `nregions ${t.nregions} is more than ${LIMITS.MAX_MEM_REGIONS}`;
  if (t.padding !== 0) return `padding is ${hex(t.padding)}, not 0`;
  for (let i = 0; i < t.regions.length; i++) {
    const why = validateRegion(t.regions[i]);
    if (why) return `region ${i}: ${why}`;
  }
  return null;
}

/** ADD_MEM_REG / REM_MEM_REG: padding zero, the region valid. */
export function validateSingleMemoryRegion(s: SingleMemoryRegion, opts: { checkOffset?: boolean } = {}): string | null {
  if (s.padding !== 0n) return `padding is ${hex(s.padding)}, not 0`;
  return validateRegion(s.region, opts);
}

/**
 * SET_VRING_ADDR: only VHOST_VRING_F_LOG may be set, and the three rings are aligned as the split
 * virtqueue requires (rust-vmm VhostUserVringAddr::is_valid).
 */
export function validateVringAddr(a: VringAddr): string | null {
  const unknown = BigInt(a.flags >>> 0) & ~bit(VRING_ADDR_F.LOG);
  if (unknown !== 0n)
    return `unknown flag bits ${hex(unknown)} (only bit ${VRING_ADDR_F.LOG}, VHOST_VRING_F_LOG, is defined)`;
  if (a.desc % RING_ALIGN.desc !== 0n) return `descriptor table ${hex(a.desc)} is not ${RING_ALIGN.desc}-byte aligned`;
  if (a.avail % RING_ALIGN.avail !== 0n)
    return `available ring ${hex(a.avail)} is not ${RING_ALIGN.avail}-byte aligned`;
  if (a.used % RING_ALIGN.used !== 0n) return `used ring ${hex(a.used)} is not ${RING_ALIGN.used}-byte aligned`;
  return null;
}

/** SET_VRING_KICK/CALL/ERR: only bits 0-8 are defined; the rest must be zero. */
export function validateVringFile(value: bigint): string | null {
  const unknown = value & ~(VRING_FILE_PAYLOAD.INDEX_MASK | bit(VRING_FILE_PAYLOAD.NOFD_BIT));
  return unknown === 0n
    ? null
    : `undefined bits ${hex(unknown)} set (only bits 0-7, the index, and bit 8, no-fd, are defined)`;
}

/** SET_VRING_ENABLE: num is 1 (enable) or 0 (disable). */
export function validateVringEnable(s: VringState): string | null {
  return s.num <= 1 ? null : `enable is ${s.num}, not 0 or 1`;
}

/** SET_LOG_BASE: the log area must not wrap around 2^64 in its fd. */
export function validateLog(l: LogArea): string | null {
  return endOverflows(l.offset, l.size) ? `log offset ${hex(l.offset)} + size ${hex(l.size)} overflows u64` : null;
}

// ---------------------------------------------------------------------------------------------
// Encoding (back-end replies)

/** A 12-byte header. */
export function encodeHeader(h: Header): Buffer {
  const b = Buffer.alloc(LIMITS.HEADER_SIZE);
  b.writeUInt32LE(h.request >>> 0, 0);
  b.writeUInt32LE(h.flags >>> 0, 4);
  b.writeUInt32LE(h.size >>> 0, 8);
  return b;
}

/** The flags of every reply: version 1 and the REPLY bit (QEMU rejects any other value: vhost_user_read_header). */
export const REPLY_FLAGS = HEADER_FLAGS.VERSION | HEADER_FLAGS.REPLY;

/** A reply to `request` carrying `payload`. */
function encodeReply(request: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([encodeHeader({ request, flags: REPLY_FLAGS, size: payload.length }), payload]);
}

/** A u64 payload. */
export function encodeU64(value: bigint): Buffer {
  if (value < 0n || value > U64_MAX) throw new RangeError(`u64 out of range: ${value}`);
  const b = Buffer.alloc(PAYLOAD_SIZE.U64);
  b.writeBigUInt64LE(value);
  return b;
}

/** A vring state payload. */
function encodeVringState(s: VringState): Buffer {
  const b = Buffer.alloc(PAYLOAD_SIZE.VRING_STATE);
  b.writeUInt32LE(s.index >>> 0, 0);
  b.writeUInt32LE(s.num >>> 0, 4);
  return b;
}

/** A reply with a u64 payload (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS). */
export const encodeReplyU64 = (request: number, value: bigint): Buffer => encodeReply(request, encodeU64(value));

/** A reply with a vring state payload (GET_VRING_BASE). */
export const encodeReplyVringState = (request: number, s: VringState): Buffer =>
  encodeReply(request, encodeVringState(s));

/**
 * The REPLY_ACK answer: u64 0 on success, non-zero on failure (vhost-user.rst
 * "VHOST_USER_PROTOCOL_F_REPLY_ACK": "The payload should be set to zero on success or non-zero on failure").
 */
export const encodeReplyAck = (request: number, ok: boolean): Buffer => encodeReplyU64(request, ok ? 0n : 1n);
