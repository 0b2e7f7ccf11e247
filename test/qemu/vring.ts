/**
 * A small userspace virtio driver for the kernel lab tests: the test is the guest (and the VMM).
 * Rings and buffers live in a memfd this process maps; vhost-net reaches them through this
 * process's address space, as it reaches guest RAM through the bridge's mapping.
 *
 * Memory table: ONE region, guest-physical addresses from 0 (gpa = offset in the memfd) and
 * userspace_addr = where the memfd is mapped here. Ring addresses given to SET_VRING_ADDR are
 * userspace addresses; descriptors and the dirty log use GPAs. This is the layout QEMU gives the
 * kernel (real GPAs, local addresses), and it keeps the dirty bitmap small (bit n = gpa page n),
 * which an identity map (gpa = address here, ~2^47) would not.
 *
 * Split virtqueues per virtio spec 1.2 section 2.7: descriptor table (16 bytes each), available
 * ring (flags, idx, ring[num], used_event), used ring (flags, idx, {id, len}[num], avail_event).
 * EVENT_IDX is not negotiated here: the kernel signals the call eventfd on every used batch.
 * Index fields are read and published with Atomics (sequentially consistent) so descriptor and
 * ring writes are visible to the kernel before the index that exposes them.
 */
import * as sys from '../../src/sys/index.js';
import type { KernelVringAddr } from '../../src/vhost-kernel/index.js';

export const PAGE = 4096;

/** struct vring_desc flags (virtio spec 2.7.5). */
export const VRING_DESC_F = { NEXT: 1, WRITE: 2, INDIRECT: 4 } as const;

/**
 * struct virtio_net_hdr_mrg_rxbuf (virtio spec 5.1.6): flags u8, gso_type u8, hdr_len, gso_size, csum_start,
 * csum_offset, num_buffers (u16 LE).
 */
export const NET_HDR = {
  flags: 0,
  gsoType: 1,
  hdrLen: 2,
  gsoSize: 4,
  csumStart: 6,
  csumOffset: 8,
  numBuffers: 10,
} as const;

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Guest memory: one memfd of `size` bytes mapped shared, GPAs from 0, bump-allocated. */
export class GuestMemory {
  readonly fd: number;
  readonly base: bigint;
  /** The whole memory as a Buffer (offset = gpa). Invalid after close(). */
  readonly bytes: Buffer;
  private next = 0;

  constructor(readonly size: number) {
    this.fd = sys.memfdCreate('vb-guest');
    sys.ftruncate(this.fd, size);
    this.base = sys.mmapShared(this.fd, size);
    this.bytes = sys.memoryView(this.base, size);
  }

  /** Allocate `len` bytes aligned to `alignment`; returns the GPA. */
  alloc(len: number, alignment = 16): number {
    const gpa = align(this.next, alignment);
    if (gpa + len > this.size) throw new RangeError(`guest memory: ${len} bytes do not fit (${this.size - gpa} left)`);
    this.next = gpa + len;
    return gpa;
  }

  /** This process's address of `gpa` (what the kernel dereferences for ring addresses). */
  uaddr(gpa: number): bigint {
    return this.base + BigInt(gpa);
  }

  /**
   * struct vhost_memory with the single region {gpa 0, size, userspace_addr = base}. The bridge
   * gets this from src/memtable; the test encodes its one region itself to stay independent.
   */
  table(): Buffer {
    const b = Buffer.alloc(8 + 32);
    b.writeUInt32LE(1, 0);
    b.writeBigUInt64LE(0n, 8);
    b.writeBigUInt64LE(BigInt(this.size), 16);
    b.writeBigUInt64LE(this.base, 24);
    return b;
  }

  close(): void {
    sys.munmap(this.base, this.size);
    sys.close(this.fd);
  }
}

/** One used-ring entry with a copy of the bytes the device wrote (RX) into the head's buffer. */
export interface Used {
  id: number;
  len: number;
  data: Buffer;
}

/**
 * A split virtqueue whose descriptors each own one fixed buffer (descriptor i <-> buffer i,
 * `bufSize` bytes), single-descriptor chains only: enough for TX and for RX with or without
 * MRG_RXBUF. Starts at index `start` (for SET_VRING_BASE): avail and used idx in memory are set to
 * it, as a ring that already carried `start` buffers would have them.
 */
export class SplitVring {
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  readonly bufGpa: number;
  /** The driver's notification to the device (VHOST_SET_VRING_KICK). */
  readonly kick = sys.eventfd();
  /** The device's interrupt (VHOST_SET_VRING_CALL). */
  readonly call = sys.eventfd();
  private readonly availIdx: Uint16Array;
  private readonly availRing: Uint16Array;
  private readonly usedIdx: Uint16Array;
  private readonly usedRing: Uint32Array;
  private readonly free: number[] = [];
  private shadowAvail: number;
  private lastUsed: number;

  constructor(
    readonly mem: GuestMemory,
    readonly num: number,
    readonly bufSize: number,
    readonly start = 0,
  ) {
    this.descGpa = mem.alloc(16 * num, PAGE);
    this.availGpa = mem.alloc(6 + 2 * num, PAGE);
    this.usedGpa = mem.alloc(6 + 8 * num, PAGE);
    this.bufGpa = mem.alloc(bufSize * num, PAGE);
    const ab = mem.bytes.buffer;
    const off = mem.bytes.byteOffset;
    this.availIdx = new Uint16Array(ab, off + this.availGpa + 2, 1);
    this.availRing = new Uint16Array(ab, off + this.availGpa + 4, num);
    this.usedIdx = new Uint16Array(ab, off + this.usedGpa + 2, 1);
    this.usedRing = new Uint32Array(ab, off + this.usedGpa + 4, 2 * num);
    for (let i = num - 1; i >= 0; i--) this.free.push(i);
    this.shadowAvail = start & 0xffff;
    this.lastUsed = start & 0xffff;
    Atomics.store(this.availIdx, 0, this.shadowAvail);
    Atomics.store(this.usedIdx, 0, this.lastUsed);
  }

  /** The addresses for VHOST_SET_VRING_ADDR (local addresses; log = used ring GPA). */
  kernelAddr(logUsed = false): KernelVringAddr {
    return {
      flags: logUsed ? 1 : 0,
      desc: this.mem.uaddr(this.descGpa),
      avail: this.mem.uaddr(this.availGpa),
      used: this.mem.uaddr(this.usedGpa),
      log: BigInt(this.usedGpa),
    };
  }

  /** GPA of descriptor `id`'s buffer. */
  bufferGpa(id: number): number {
    return this.bufGpa + id * this.bufSize;
  }

  /** Descriptors not in flight. */
  get freeCount(): number {
    return this.free.length;
  }

  /** The next avail index the driver will publish (what GET_VRING_BASE reports once all are consumed). */
  get availIndex(): number {
    return this.shadowAvail;
  }

  /**
   * Put one buffer in the avail ring (not yet published): device-readable with `data` (TX), or
   * device-writable of `len` bytes (RX). Returns the descriptor id.
   */
  post(opts: { data: Buffer } | { writable: number }): number {
    const id = this.free.pop();
    if (id === undefined) throw new Error('SplitVring.post: no free descriptor');
    const gpa = this.bufferGpa(id);
    let len: number;
    let flags = 0;
    if ('data' in opts) {
      if (opts.data.length > this.bufSize)
        throw new RangeError(`SplitVring.post: ${opts.data.length} > buffer ${this.bufSize}`);
      opts.data.copy(this.mem.bytes, gpa);
      len = opts.data.length;
    } else {
      len = opts.writable;
      flags = VRING_DESC_F.WRITE;
      this.mem.bytes.fill(0xa5, gpa, gpa + len); // poison: what the device did not write shows
    }
    this.putAvail(id, gpa, len, flags);
    return id;
  }

  /**
   * Put a descriptor with an arbitrary `gpa` in the avail ring (not yet published), for tests of
   * what the kernel does with addresses outside the memory table. Returns the descriptor id.
   */
  postRaw(gpa: number, len: number, flags = 0): number {
    const id = this.free.pop();
    if (id === undefined) throw new Error('SplitVring.postRaw: no free descriptor');
    this.putAvail(id, gpa, len, flags);
    return id;
  }

  /** Write descriptor `id` (virtio 1.2 2.7.5: addr, len, flags, next) and queue it in the avail ring, unpublished. */
  private putAvail(id: number, gpa: number, len: number, flags: number): void {
    const d = this.descGpa + 16 * id;
    this.mem.bytes.writeBigUInt64LE(BigInt(gpa), d);
    this.mem.bytes.writeUInt32LE(len, d + 8);
    this.mem.bytes.writeUInt16LE(flags, d + 12);
    this.mem.bytes.writeUInt16LE(0, d + 14);
    this.availRing[this.shadowAvail % this.num] = id;
    this.shadowAvail = (this.shadowAvail + 1) & 0xffff;
  }

  /** Make posted buffers visible: store avail->idx (after the descriptors and ring entries). */
  publish(): void {
    Atomics.store(this.availIdx, 0, this.shadowAvail);
  }

  /** Notify the device (write the kick eventfd). */
  notify(): void {
    sys.eventfdWrite(this.kick);
  }

  /** used->idx as the device last wrote it. */
  deviceUsedIdx(): number {
    return Atomics.load(this.usedIdx, 0);
  }

  /** Take every new used entry (in ring order), copying what the device wrote, and free the descriptors. */
  reap(): Used[] {
    const end = Atomics.load(this.usedIdx, 0);
    const out: Used[] = [];
    while (this.lastUsed !== end) {
      const slot = this.lastUsed % this.num;
      const id = this.usedRing[2 * slot];
      const len = this.usedRing[2 * slot + 1];
      const gpa = this.bufferGpa(id);
      out.push({ id, len, data: Buffer.from(this.mem.bytes.subarray(gpa, gpa + Math.min(len, this.bufSize))) });
      this.free.push(id);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Wait (call eventfd) until at least `n` used entries arrived; returns them. Throws on timeout. */
  async waitUsed(n: number, ms = 20000): Promise<Used[]> {
    const got: Used[] = [];
    const deadline = Date.now() + ms;
    for (;;) {
      got.push(...this.reap());
      if (got.length >= n) return got;
      const left = deadline - Date.now();
      if (left <= 0 || !(await readable(this.call, left))) {
        got.push(...this.reap());
        if (got.length >= n) return got;
        throw new Error(
          `waited ${ms} ms for ${n} used entries, got ${got.length} (used idx ${this.deviceUsedIdx()}, avail idx ` +
            `${this.shadowAvail})`,
        );
      }
      sys.eventfdRead(this.call);
    }
  }

  close(): void {
    sys.closeQuiet(this.kick);
    sys.closeQuiet(this.call);
  }
}

/** Resolve true when `fd` is readable, false after `ms`. The watcher is always closed. */
export function readable(fd: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      w.close();
      resolve(v);
    };
    const w = new sys.FdWatcher(fd, { readable: true }, () => finish(true));
    const timer = setTimeout(() => finish(false), ms);
  });
}

// ---------------------------------------------------------------- test frames

/** Marker at the start of the UDP payload of every test frame. */
const MAGIC = 0x56425431; // 'VBT1'
export const GUEST_MAC = Buffer.from([0x02, 0, 0, 0, 0, 0x0a]);
export const PEER_MAC = Buffer.from([0x02, 0, 0, 0, 0, 0x0b]);
const ETH = 14,
  IP = 20,
  UDP = 8,
  TAG = 12;
/** Smallest test frame: Ethernet + IPv4 + UDP + tag. */
export const MIN_FRAME = ETH + IP + UDP + TAG;

/** What a test frame says about itself. */
export interface FrameTag {
  /** 'T' guest -> host (TX), 'R' host -> guest (RX). */
  dir: 'T' | 'R';
  pair: number;
  seq: number;
}

/**
 * An Ethernet/IPv4/UDP frame of `len` bytes carrying `tag` (IPv4/UDP so that the tap's flow hash
 * spreads frames of different `flow`s over queues). Filler bytes depend on seq, so a frame put
 * together from the wrong pieces does not compare equal.
 */
export function testFrame(tag: FrameTag, len = 128, flow = tag.seq): Buffer {
  if (len < MIN_FRAME) throw new RangeError(`testFrame: ${len} < ${MIN_FRAME}`);
  const b = Buffer.alloc(len);
  const toGuest = tag.dir === 'R';
  (toGuest ? GUEST_MAC : PEER_MAC).copy(b, 0);
  (toGuest ? PEER_MAC : GUEST_MAC).copy(b, 6);
  b.writeUInt16BE(0x0800, 12);
  const ip = ETH;
  b.writeUInt8(0x45, ip);
  b.writeUInt16BE(len - ETH, ip + 2);
  b.writeUInt16BE(tag.seq & 0xffff, ip + 4);
  b.writeUInt8(64, ip + 8);
  b.writeUInt8(17, ip + 9);
  Buffer.from(toGuest ? [10, 99, 0, 1] : [10, 99, 0, 2]).copy(b, ip + 12);
  Buffer.from(toGuest ? [10, 99, 0, 2] : [10, 99, 0, 1]).copy(b, ip + 16);
  let sum = 0;
  for (let i = 0; i < IP; i += 2) sum += b.readUInt16BE(ip + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  b.writeUInt16BE(~sum & 0xffff, ip + 10);
  const udp = ip + IP;
  b.writeUInt16BE(10000 + (flow % 50000), udp);
  b.writeUInt16BE(9999, udp + 2);
  b.writeUInt16BE(len - ETH - IP, udp + 4);
  const t = udp + UDP;
  b.writeUInt32BE(MAGIC, t);
  b.write(tag.dir, t + 4, 'latin1');
  b.writeUInt8(tag.pair, t + 5);
  b.writeUInt32BE(tag.seq >>> 0, t + 6);
  for (let i = t + TAG; i < len; i++) b[i] = (tag.seq + i) & 0xff;
  return b;
}

/** The tag of a test frame, or null for any other frame (IPv6 noise, ARP...). */
export function frameTag(b: Buffer): FrameTag | null {
  if (b.length < MIN_FRAME || b.readUInt16BE(12) !== 0x0800 || b[ETH + 9] !== 17) return null;
  const t = ETH + IP + UDP;
  if (b.readUInt32BE(t) !== MAGIC) return null;
  const dir = b.toString('latin1', t + 4, t + 5);
  if (dir !== 'T' && dir !== 'R') return null;
  return { dir, pair: b[t + 5], seq: b.readUInt32BE(t + 6) };
}

// ---------------------------------------------------------------- the host side of the tap

const SO_RCVBUFFORCE = 33;
const SO_SNDBUFFORCE = 32;

/** An AF_PACKET socket on the tap: reads what the guest sent, sends what the guest should receive. */
export class HostSide {
  readonly fd: number;
  private readonly buf = Buffer.alloc(65536);

  constructor(readonly ifname: string) {
    this.fd = sys.packetSocket(ifname);
    // Root in the lab: lift the rmem_max cap so bursts of frames are not dropped before we read.
    sys.setsockoptInt(this.fd, sys.C.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20);
    sys.setsockoptInt(this.fd, sys.C.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20);
  }

  /** Send one frame out of the tap towards the guest; retries briefly on EAGAIN. */
  async send(frame: Buffer): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      if (sys.send(this.fd, frame) !== null) return;
      await new Promise((r) => setTimeout(r, 1));
    }
    throw new Error(`HostSide.send on ${this.ifname}: socket stayed full`);
  }

  /** Every frame waiting now. */
  drain(): Buffer[] {
    const out: Buffer[] = [];
    for (;;) {
      const n = sys.recv(this.fd, this.buf);
      if (n === null) return out;
      out.push(Buffer.from(this.buf.subarray(0, n)));
    }
  }

  /** Collect frames accepted by `keep` until there are `n`; throws on timeout. */
  async collect(n: number, keep: (f: Buffer) => boolean, ms = 20000): Promise<Buffer[]> {
    const got: Buffer[] = [];
    const deadline = Date.now() + ms;
    for (;;) {
      for (const f of this.drain()) if (keep(f)) got.push(f);
      if (got.length >= n) return got;
      const left = deadline - Date.now();
      if (left <= 0 || !(await readable(this.fd, left))) {
        for (const f of this.drain()) if (keep(f)) got.push(f);
        if (got.length >= n) return got;
        throw new Error(`waited ${ms} ms on ${this.ifname} for ${n} frames, got ${got.length}`);
      }
    }
  }

  close(): void {
    sys.closeQuiet(this.fd);
  }
}
