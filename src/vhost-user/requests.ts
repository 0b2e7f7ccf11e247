/**
 * THE request table: one row per front-end request this back end supports, holding every rule the
 * dispatcher enforces before a handler runs (DPDK's VHOST_MESSAGE_HANDLERS, passt's vu_handle[]).
 * Handlers never re-check what a row states.
 *
 * A row says:
 * - `size`: the payload size, exact, or the memory-table rule (8 + 32 x nregions);
 * - `decode` / `validate`: the payload type and its syntax check (codec.ts);
 * - `fds`: how many fds the message must carry (0, 1, 0-or-1 by the no-fd bit, one per region,
 *   or 0-or-1 closed unused);
 * - `reply`: `ack` (a u64 0/1 only if NEED_REPLY was set and REPLY_ACK negotiated), `u64` and
 *   `vring-state` (a value reply, always), `log-base` (always a u64 0: SET_LOG_BASE under LOG_SHMFD);
 * - `gate`: the protocol feature that must be negotiated, or the PROTOCOL_FEATURES rule;
 * - `ring`: for ring-scope requests, where the ring index is, so the dispatcher bounds it by
 *   backend.ringCount(); device-scope rows have none;
 * - `refuse`: a semantic precondition stated by the spec (not a back-end policy);
 * - `call`: the VhostUserBackend method.
 *
 * Requests a net back end does not implement (SET_LOG_FD, SET_BACKEND_REQ_FD, IOTLB_MSG,
 * SET_VRING_ENDIAN, GET/SET_CONFIG, crypto, postcopy, inflight, GPU, VRING_KICK, SET/GET_STATUS,
 * shared objects, device state) have no row: each is gated by a protocol feature (or
 * VIRTIO_F_IOMMU_PLATFORM) this back end never offers, so a conforming front-end never sends them,
 * and the dispatcher treats them as malformed.
 */
import { describeBits, has } from '../bits.js';
import { hex, mac } from '../format.js';
import { FEATURE_NAMES, VHOST_USER_F_PROTOCOL_FEATURES } from '../virtio.js';
import type { VhostUserBackend } from './handler.js';
import type { LogArea, VringAddr, VringFileRef, VringState } from './messages.js';
import { FrontendReq, PAYLOAD_SIZE, PROTOCOL_F, PROTOCOL_FEATURE_NAMES } from './constants.js';
import * as codec from './codec.js';
import type { MemoryTable, SingleMemoryRegion } from './codec.js';

/** Payload size rule. */
type SizeRule = { exact: number } | 'memory-table';

/** Fd rule: how many fds a decoded payload must come with. */
interface FdRule<P> {
  /** For logs and the report: none / one / by no-fd bit / one per region / optional, closed unused. */
  readonly name: 'none' | 'one' | 'by no-fd bit' | 'one per region' | 'optional, closed unused';
  /** The accepted count range for this payload. */
  expected(p: P): { min: number; max: number };
  /** Close the fd (if any) before the handler runs: the handler never sees it. */
  readonly discard?: boolean;
}

/** Reply kind (vhost-user.rst "Communication" and "VHOST_USER_PROTOCOL_F_REPLY_ACK"). */
type ReplyKind = 'ack' | 'u64' | 'vring-state' | 'log-base';

/**
 * What must have been negotiated:
 * - a protocol feature bit number: acked by SET_PROTOCOL_FEATURES (and offered);
 * - `features-bit-offered`: GET_FEATURES offers VHOST_USER_F_PROTOCOL_FEATURES
 *   (GET/SET_PROTOCOL_FEATURES: "Only legal if feature bit VHOST_USER_F_PROTOCOL_FEATURES is
 *   present in VHOST_USER_GET_FEATURES");
 * - `protocol-features-negotiated`: that bit is offered and the front-end took it up, by
 *   SET_PROTOCOL_FEATURES or by acking it in SET_FEATURES, and has not declined it in a later
 *   SET_FEATURES (SET_VRING_ENABLE: "should be sent only when VHOST_USER_F_PROTOCOL_FEATURES has
 *   been negotiated"; QEMU sends it BEFORE SET_FEATURES, so it cannot wait for SET_FEATURES).
 */
type Gate = number | 'features-bit-offered' | 'protocol-features-negotiated' | null;

/** What a row's call and refuse hooks see of the connection (implemented by the dispatcher). */
export interface Session {
  readonly backend: VhostUserBackend;
  /** Protocol features acked by SET_PROTOCOL_FEATURES, masked to the offer. */
  readonly protocolFeatures: bigint;
  /** SET_PROTOCOL_FEATURES: mask the ack to the offer (warning about the rest) and return it. */
  maskProtocolFeatures(acked: bigint): bigint;
  /** SET_PROTOCOL_FEATURES succeeded with this (masked) set. */
  protocolFeaturesAcked(masked: bigint): void;
  /** SET_FEATURES succeeded with this feature word. */
  featuresAcked(features: bigint): void;
}

/** What a call returns: nothing (ack), a u64 value, or a vring state. */
// biome-ignore lint/suspicious/noConfusingVoidType: a handler that only acks returns nothing
export type CallResult = void | bigint | VringState;

/** One row of the table. */
export interface RequestSpec<P> {
  readonly id: number;
  readonly size: SizeRule;
  readonly decode: (payload: Buffer) => P;
  readonly validate: (p: P) => string | null;
  readonly fds: FdRule<P>;
  readonly reply: ReplyKind;
  readonly gate: Gate;
  /** Ring scope: the ring index in the payload. Absent for device scope. */
  readonly ring?: (p: P) => number;
  /** Why a well-formed request is refused on semantic grounds the spec states, or null. */
  readonly refuse?: (p: P, s: Session) => string | null;
  /** The payload, for the debug line of each message. */
  readonly describe: (p: P) => string;
  /** The reply value, for the debug line of each reply. */
  readonly describeReply?: (r: CallResult) => string;
  readonly call: (s: Session, p: P, fds: number[]) => CallResult;
}

// ---------------------------------------------------------------------------------------------
// Building blocks

const valid = (): null => null;

const NONE: FdRule<unknown> = { name: 'none', expected: () => ({ min: 0, max: 0 }) };
const ONE: FdRule<unknown> = { name: 'one', expected: () => ({ min: 1, max: 1 }) };

/** Payload types of the rows. */
type Empty = null;
/** SET_VRING_KICK/CALL/ERR: the raw u64 (validated) and what it says. */
interface VringFilePayload extends VringFileRef {
  raw: bigint;
}

const empty = { size: { exact: 0 }, decode: (): Empty => null, validate: valid, describe: () => '' } as const;
const u64 = { size: { exact: PAYLOAD_SIZE.U64 }, decode: codec.decodeU64 } as const;
const vringState = {
  size: { exact: PAYLOAD_SIZE.VRING_STATE },
  decode: codec.decodeVringState,
  ring: (p: VringState) => p.index,
} as const;

const vringFile = {
  size: { exact: PAYLOAD_SIZE.U64 },
  decode: (b: Buffer): VringFilePayload => {
    const raw = codec.decodeU64(b);
    return { raw, ...codec.decodeVringFile(raw) };
  },
  validate: (p: VringFilePayload) => codec.validateVringFile(p.raw),
  /** "This flag is set when there is no file descriptor in the ancillary data." */
  fds: {
    name: 'by no-fd bit',
    expected: (p: VringFilePayload) => (p.noFd ? { min: 0, max: 0 } : { min: 1, max: 1 }),
  } as FdRule<VringFilePayload>,
  ring: (p: VringFilePayload) => p.index,
  describe: (p: VringFilePayload) => `ring ${p.index} ${p.noFd ? 'no fd (bit 8)' : 'fd'}`,
} as const;

const describeRegion = (r: { gpa: bigint; size: bigint; qva: bigint; mmapOffset: bigint }): string =>
  `[gpa ${hex(r.gpa)} size ${hex(r.size)} qva ${hex(r.qva)} offset ${hex(r.mmapOffset)}]`;

const singleRegion = {
  size: { exact: PAYLOAD_SIZE.SINGLE_MEMORY_REGION },
  decode: codec.decodeSingleMemoryRegion,
  describe: (p: SingleMemoryRegion) => describeRegion(p.region),
} as const;

/** Erase a row's payload type for the table (each row is type-checked where it is written). */
const row = <P>(spec: RequestSpec<P>): RequestSpec<unknown> => spec as unknown as RequestSpec<unknown>;

// ---------------------------------------------------------------------------------------------
// The table (vhost-user.rst "Front-end message types"; reply rules from "Communication")

const ROWS: RequestSpec<unknown>[] = [
  row<Empty>({
    id: FrontendReq.GET_FEATURES,
    ...empty,
    fds: NONE,
    reply: 'u64',
    gate: null,
    describeReply: (r) => describeBits(r as bigint, FEATURE_NAMES),
    call: (s) => s.backend.getFeatures(),
  }),
  row<bigint>({
    id: FrontendReq.SET_FEATURES,
    ...u64,
    validate: valid,
    fds: NONE,
    reply: 'ack',
    gate: null,
    // A front-end may only ack what was offered (virtio 1.2 3.1.1: "the driver ... MUST NOT accept a
    // feature which the device did not offer"); QEMU masks with the back end's word.
    refuse: (v, s) => {
      const extra = v & ~s.backend.getFeatures();
      return extra === 0n ? null : `acks features that were not offered: ${describeBits(extra, FEATURE_NAMES)}`;
    },
    describe: (v) => describeBits(v, FEATURE_NAMES),
    call: (s, v) => {
      s.backend.setFeatures(v);
      s.featuresAcked(v);
    },
  }),
  row<Empty>({
    id: FrontendReq.SET_OWNER,
    ...empty,
    fds: NONE,
    reply: 'ack',
    gate: null,
    call: (s) => s.backend.setOwner(),
  }),
  row<Empty>({
    // Deprecated: "It is recommended that back-ends either ignore this message, or use it to disable all rings."
    id: FrontendReq.RESET_OWNER,
    ...empty,
    fds: NONE,
    reply: 'ack',
    gate: null,
    call: (s) => s.backend.resetOwner(),
  }),
  row<MemoryTable>({
    // "In the ancillary data there is an array of file descriptors for each memory mapped region.
    // The size and ordering of the fds matches the number and ordering of memory regions."
    id: FrontendReq.SET_MEM_TABLE,
    size: 'memory-table',
    decode: codec.decodeMemoryTable,
    validate: codec.validateMemoryTable,
    fds: { name: 'one per region', expected: (t) => ({ min: t.nregions, max: t.nregions }) },
    reply: 'ack',
    gate: null,
    describe: (t) => `nregions ${t.nregions}: ${t.regions.map(describeRegion).join(' ')}`,
    call: (s, t, fds) => s.backend.setMemTable(t.regions, fds),
  }),
  row<LogArea>({
    // With LOG_SHMFD the log fd comes in the ancillary data, and the message is one of those that
    // "require replies" ("Communication"). QEMU reads a reply of any size and checks only its
    // request (vhost_user_set_log_base); the reply here is u64 0, as libvhost-user sends.
    id: FrontendReq.SET_LOG_BASE,
    size: { exact: PAYLOAD_SIZE.LOG },
    decode: codec.decodeLog,
    validate: codec.validateLog,
    fds: ONE,
    reply: 'log-base',
    gate: PROTOCOL_F.LOG_SHMFD,
    describe: (l) => `size ${hex(l.size)} offset ${hex(l.offset)}`,
    call: (s, l, fds) => s.backend.setLogBase(l, fds[0]),
  }),
  row<VringState>({
    id: FrontendReq.SET_VRING_NUM,
    ...vringState,
    validate: valid,
    fds: NONE,
    reply: 'ack',
    gate: null,
    describe: (p) => `ring ${p.index} num ${p.num}`,
    call: (s, p) => s.backend.setVringNum(p.index, p.num),
  }),
  row<VringAddr>({
    // "Sets the addresses of the different aspects of the vring": front-end virtual addresses.
    id: FrontendReq.SET_VRING_ADDR,
    size: { exact: PAYLOAD_SIZE.VRING_ADDR },
    decode: codec.decodeVringAddr,
    validate: codec.validateVringAddr,
    fds: NONE,
    reply: 'ack',
    gate: null,
    ring: (a) => a.index,
    describe: (a) =>
      `ring ${a.index} flags ${hex(a.flags)} desc ${hex(a.desc)} used ${hex(a.used)} avail ${hex(a.avail)} log ` +
      `${hex(a.log)}`,
    call: (s, a) => s.backend.setVringAddr(a),
  }),
  row<VringState>({
    id: FrontendReq.SET_VRING_BASE,
    ...vringState,
    validate: valid,
    fds: NONE,
    reply: 'ack',
    gate: null,
    describe: (p) => `ring ${p.index} base ${p.num}`,
    call: (s, p) => s.backend.setVringBase(p.index, p.num),
  }),
  row<VringState>({
    // "Stops the vring and returns the current descriptor index"; always replies.
    id: FrontendReq.GET_VRING_BASE,
    ...vringState,
    validate: valid,
    fds: NONE,
    reply: 'vring-state',
    gate: null,
    describe: (p) => `ring ${p.index}`,
    describeReply: (r) => `ring ${(r as VringState).index} base ${(r as VringState).num}`,
    call: (s, p) => ({ index: p.index, num: s.backend.getVringBase(p.index) }),
  }),
  row<VringFilePayload>({
    id: FrontendReq.SET_VRING_KICK,
    ...vringFile,
    reply: 'ack',
    gate: null,
    call: (s, p, fds) => s.backend.setVringKick(p.index, p.noFd ? null : fds[0]),
  }),
  row<VringFilePayload>({
    id: FrontendReq.SET_VRING_CALL,
    ...vringFile,
    reply: 'ack',
    gate: null,
    call: (s, p, fds) => s.backend.setVringCall(p.index, p.noFd ? null : fds[0]),
  }),
  row<VringFilePayload>({
    id: FrontendReq.SET_VRING_ERR,
    ...vringFile,
    reply: 'ack',
    gate: null,
    call: (s, p, fds) => s.backend.setVringErr(p.index, p.noFd ? null : fds[0]),
  }),
  row<Empty>({
    // "Back-ends that report VHOST_USER_F_PROTOCOL_FEATURES must support this message even before
    // VHOST_USER_SET_FEATURES was called."
    id: FrontendReq.GET_PROTOCOL_FEATURES,
    ...empty,
    fds: NONE,
    reply: 'u64',
    gate: 'features-bit-offered',
    describeReply: (r) => describeBits(r as bigint, PROTOCOL_FEATURE_NAMES),
    call: (s) => s.backend.getProtocolFeatures(),
  }),
  row<bigint>({
    id: FrontendReq.SET_PROTOCOL_FEATURES,
    ...u64,
    validate: valid,
    fds: NONE,
    reply: 'ack',
    gate: 'features-bit-offered',
    describe: (v) => describeBits(v, PROTOCOL_FEATURE_NAMES),
    call: (s, v) => {
      const masked = s.maskProtocolFeatures(v);
      s.backend.setProtocolFeatures(masked);
      s.protocolFeaturesAcked(masked);
    },
  }),
  row<Empty>({
    // "This request should be sent only when VHOST_USER_PROTOCOL_F_MQ is set"; always replies.
    id: FrontendReq.GET_QUEUE_NUM,
    ...empty,
    fds: NONE,
    reply: 'u64',
    gate: PROTOCOL_F.MQ,
    describeReply: (r) => `${r as bigint} virtqueues`,
    call: (s) => s.backend.getQueueNum(),
  }),
  row<VringState>({
    id: FrontendReq.SET_VRING_ENABLE,
    ...vringState,
    validate: codec.validateVringEnable,
    fds: NONE,
    reply: 'ack',
    gate: 'protocol-features-negotiated',
    describe: (p) => `ring ${p.index} enable ${p.num}`,
    call: (s, p) => s.backend.setVringEnable(p.index, p.num === 1),
  }),
  row<Buffer>({
    // "The first 6 bytes of the payload contain the mac address of the guest".
    id: FrontendReq.SEND_RARP,
    size: { exact: PAYLOAD_SIZE.U64 },
    decode: codec.decodeRarpMac,
    validate: valid,
    fds: NONE,
    reply: 'ack',
    gate: PROTOCOL_F.RARP,
    describe: (m) => `mac ${mac(m)}`,
    call: (s, m) => s.backend.sendRarp(m),
  }),
  row<bigint>({
    // "If VHOST_USER_PROTOCOL_F_REPLY_ACK is negotiated, the back-end must respond with zero in case
    // the specified MTU is valid, or non-zero otherwise." virtio 1.2 5.1.4.1: mtu is between 68 and 65535.
    id: FrontendReq.NET_SET_MTU,
    ...u64,
    validate: valid,
    fds: NONE,
    reply: 'ack',
    gate: PROTOCOL_F.MTU,
    refuse: (v) => (v >= 68n && v <= 65535n ? null : `MTU ${v} is outside 68..65535`),
    describe: (v) => `mtu ${v}`,
    call: (s, v) => s.backend.netSetMtu(Number(v)),
  }),
  row<Empty>({
    // "Only valid if the VHOST_USER_PROTOCOL_F_RESET_DEVICE protocol feature is set by the back-end."
    id: FrontendReq.RESET_DEVICE,
    ...empty,
    fds: NONE,
    reply: 'ack',
    gate: PROTOCOL_F.RESET_DEVICE,
    call: (s) => s.backend.resetDevice(),
  }),
  row<Empty>({
    id: FrontendReq.GET_MAX_MEM_SLOTS,
    ...empty,
    fds: NONE,
    reply: 'u64',
    gate: PROTOCOL_F.CONFIGURE_MEM_SLOTS,
    describeReply: (r) => `${r as bigint} slots`,
    call: (s) => s.backend.getMaxMemSlots(),
  }),
  row<SingleMemoryRegion>({
    // "Exactly one file descriptor from which the memory is mapped is passed in the ancillary data."
    id: FrontendReq.ADD_MEM_REG,
    ...singleRegion,
    validate: (p) => codec.validateSingleMemoryRegion(p),
    fds: ONE,
    reply: 'ack',
    gate: PROTOCOL_F.CONFIGURE_MEM_SLOTS,
    call: (s, p, fds) => s.backend.addMemReg(p.region, fds[0]),
  }),
  row<SingleMemoryRegion>({
    // "No file descriptors SHOULD be passed ... the back-end MAY accept messages with one file
    // descriptor. If a file descriptor is passed, the back-end MUST close it without using it."
    // (QEMU 7.2 still passes one.) "The mmap offset is ignored."
    id: FrontendReq.REM_MEM_REG,
    ...singleRegion,
    validate: (p) => codec.validateSingleMemoryRegion(p, { checkOffset: false }),
    fds: { name: 'optional, closed unused', expected: () => ({ min: 0, max: 1 }), discard: true },
    reply: 'ack',
    gate: PROTOCOL_F.CONFIGURE_MEM_SLOTS,
    call: (s, p) => s.backend.remMemReg(p.region),
  }),
];

/** The table, by request id. */
export const REQUESTS: ReadonlyMap<number, RequestSpec<unknown>> = new Map(ROWS.map((r) => [r.id, r]));

/** Why a closed gate refuses, for the log line: `protocol feature MQ was not negotiated`. */
export function gateFailure(g: Gate): string {
  const pf = `VHOST_USER_F_PROTOCOL_FEATURES (bit ${VHOST_USER_F_PROTOCOL_FEATURES})`;
  if (g === null) return 'no gate';
  if (g === 'features-bit-offered') return `GET_FEATURES does not offer ${pf}`;
  if (g === 'protocol-features-negotiated') return `${pf} was not negotiated`;
  return `protocol feature ${PROTOCOL_FEATURE_NAMES[g] ?? `bit ${g}`} was not negotiated`;
}

/** True if `features` offers VHOST_USER_F_PROTOCOL_FEATURES. */
export const offersProtocolFeatures = (features: bigint): boolean => has(features, VHOST_USER_F_PROTOCOL_FEATURES);
