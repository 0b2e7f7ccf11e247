/**
 * Golden-byte builders for vhost-user messages, in pg-protocol's testing/test-buffers.ts style:
 * one builder per message, fields written one by one, so no test types hex by hand.
 *
 * Deliberately independent of src/vhost-user: request ids, flag bits and layouts are written here
 * again from vhost-user.rst ("Message Specification", "Front-end message types"), so a mistake in
 * codec.ts or constants.ts cannot hide behind the same mistake in the expected bytes.
 */

/** A growable little-endian byte list (pg-protocol's BufferList). */
export class Bytes {
  private parts: Buffer[] = [];
  u8(v: number): this {
    const b = Buffer.alloc(1);
    b.writeUInt8(v);
    return this.add(b);
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    return this.add(b);
  }
  u64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    return this.add(b);
  }
  add(b: Buffer): this {
    this.parts.push(b);
    return this;
  }
  join(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** vhost-user.rst request ids (the spec's list, written out again). */
export const ID = {
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

/** Header flags: version 1 in bits 0-1, REPLY bit 2, NEED_REPLY bit 3. */
export const V1 = 0x1;
export const REPLY = 0x4;
export const NEED_REPLY = 0x8;

/** A region as tests write it (offset defaults to 0). */
export interface R {
  gpa: bigint;
  size: bigint;
  qva: bigint;
  offset?: bigint;
}

/** One built message: its bytes and how many fds go with it. Modifiers return a new Built. */
export class Built {
  constructor(
    readonly request: number,
    readonly flags: number,
    readonly payload: Buffer,
    readonly fds: number,
    readonly headerSize?: number,
  ) {}

  /** The wire bytes: header (u32 request, u32 flags, u32 size) then the payload. */
  get bytes(): Buffer {
    return new Bytes()
      .u32(this.request)
      .u32(this.flags)
      .u32(this.headerSize ?? this.payload.length)
      .add(this.payload)
      .join();
  }
  /** Set NEED_REPLY. */
  needReply(): Built {
    return new Built(this.request, this.flags | NEED_REPLY, this.payload, this.fds, this.headerSize);
  }
  withFlags(flags: number): Built {
    return new Built(this.request, flags, this.payload, this.fds, this.headerSize);
  }
  withFds(n: number): Built {
    return new Built(this.request, this.flags, this.payload, n, this.headerSize);
  }
  /** Payload cut or zero-padded to `n` bytes (header size follows). */
  withPayloadLength(n: number): Built {
    const p = Buffer.alloc(n);
    this.payload.copy(p, 0, 0, Math.min(n, this.payload.length));
    return new Built(this.request, this.flags, p, this.fds, undefined);
  }
  /** A header size field that differs from the payload actually sent. */
  withHeaderSize(n: number): Built {
    return new Built(this.request, this.flags, this.payload, this.fds, n);
  }
}

const m = (request: number, payload: Bytes | Buffer = Buffer.alloc(0), fds = 0): Built =>
  new Built(request, V1, payload instanceof Bytes ? payload.join() : payload, fds);

const region = (b: Bytes, r: R): Bytes =>
  b
    .u64(r.gpa)
    .u64(r.size)
    .u64(r.qva)
    .u64(r.offset ?? 0n);
const u64 = (v: bigint): Bytes => new Bytes().u64(v);
const state = (index: number, num: number): Bytes => new Bytes().u32(index).u32(num);

/** Front-end requests. */
export const msg = {
  raw: (request: number, payload: Buffer = Buffer.alloc(0)) => m(request, payload),
  getFeatures: () => m(ID.GET_FEATURES),
  setFeatures: (v: bigint) => m(ID.SET_FEATURES, u64(v)),
  setOwner: () => m(ID.SET_OWNER),
  resetOwner: () => m(ID.RESET_OWNER),
  /** u32 nregions, u32 padding, 32 bytes per region; one fd per region. */
  setMemTable: (regions: R[], o: { nregions?: number; padding?: number } = {}) => {
    const b = new Bytes().u32(o.nregions ?? regions.length).u32(o.padding ?? 0);
    for (const r of regions) region(b, r);
    return m(ID.SET_MEM_TABLE, b, regions.length);
  },
  /** u64 size, u64 offset; one fd. */
  setLogBase: (size: bigint, offset: bigint) => m(ID.SET_LOG_BASE, new Bytes().u64(size).u64(offset), 1),
  setVringNum: (index: number, num: number) => m(ID.SET_VRING_NUM, state(index, num)),
  /** u32 index, u32 flags, u64 desc, u64 used, u64 avail, u64 log. */
  setVringAddr: (a: { index: number; flags?: number; desc: bigint; used: bigint; avail: bigint; log?: bigint }) =>
    m(
      ID.SET_VRING_ADDR,
      new Bytes()
        .u32(a.index)
        .u32(a.flags ?? 0)
        .u64(a.desc)
        .u64(a.used)
        .u64(a.avail)
        .u64(a.log ?? 0n),
    ),
  setVringBase: (index: number, num: number) => m(ID.SET_VRING_BASE, state(index, num)),
  getVringBase: (index: number) => m(ID.GET_VRING_BASE, state(index, 0)),
  /** u64: bits 0-7 index, bit 8 no-fd; one fd unless no-fd. */
  setVringKick: (index: number, o: { noFd?: boolean } = {}) => vringFile(ID.SET_VRING_KICK, index, o.noFd),
  setVringCall: (index: number, o: { noFd?: boolean } = {}) => vringFile(ID.SET_VRING_CALL, index, o.noFd),
  setVringErr: (index: number, o: { noFd?: boolean } = {}) => vringFile(ID.SET_VRING_ERR, index, o.noFd),
  getProtocolFeatures: () => m(ID.GET_PROTOCOL_FEATURES),
  setProtocolFeatures: (v: bigint) => m(ID.SET_PROTOCOL_FEATURES, u64(v)),
  getQueueNum: () => m(ID.GET_QUEUE_NUM),
  setVringEnable: (index: number, enable: number) => m(ID.SET_VRING_ENABLE, state(index, enable)),
  /** The MAC in the first 6 bytes of a u64. */
  sendRarp: (mac: number[]) => m(ID.SEND_RARP, new Bytes().add(Buffer.from(mac)).u8(0).u8(0)),
  netSetMtu: (mtu: bigint) => m(ID.NET_SET_MTU, u64(mtu)),
  resetDevice: () => m(ID.RESET_DEVICE),
  getMaxMemSlots: () => m(ID.GET_MAX_MEM_SLOTS),
  /** u64 padding, then a region; one fd. */
  addMemReg: (r: R, o: { padding?: bigint } = {}) => m(ID.ADD_MEM_REG, region(new Bytes().u64(o.padding ?? 0n), r), 1),
  remMemReg: (r: R, o: { padding?: bigint } = {}) => m(ID.REM_MEM_REG, region(new Bytes().u64(o.padding ?? 0n), r), 0),
};

function vringFile(request: number, index: number, noFd = false): Built {
  return m(request, u64(BigInt(index) | (noFd ? 1n << 8n : 0n)), noFd ? 0 : 1);
}

/** Back-end replies: flags = version 1 | REPLY. */
export const reply = {
  u64: (request: number, v: bigint): Buffer =>
    new Bytes()
      .u32(request)
      .u32(V1 | REPLY)
      .u32(8)
      .u64(v)
      .join(),
  vringState: (request: number, index: number, num: number): Buffer =>
    new Bytes()
      .u32(request)
      .u32(V1 | REPLY)
      .u32(8)
      .u32(index)
      .u32(num)
      .join(),
  ack: (request: number): Buffer => reply.u64(request, 0n),
  nack: (request: number): Buffer => reply.u64(request, 1n),
};
