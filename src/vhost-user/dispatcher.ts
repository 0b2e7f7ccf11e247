/**
 * Security model. The socket is the bridge's one input from outside, and whoever is at the other
 * end is at most one step from the guest: a VMM that a guest has broken out into, or simply a
 * buggy one. The bridge holds what an attacker wants (CAP_NET_ADMIN or pre-opened /dev/vhost-net
 * and tap fds, and the mappings of guest memory it hands the kernel), so a front-end is trusted
 * with nothing. It may send any bytes in any order: any request id, header flags, size and
 * payload, any number of fds of any kind, ring indexes past the last ring, regions that overlap
 * or wrap around 2^64, addresses outside guest memory, requests before the features that enable
 * them, and it may hang up in the middle of a message.
 *
 * So nothing it sends is assumed. The framer refuses a size above LIMITS.MAX_PAYLOAD before it
 * reads the payload, and more fds than a message may carry end as MSG_CTRUNC. Before a handler
 * runs, the table (requests.ts) has checked the header, the exact payload size, the payload's
 * syntax (u64 overflow, alignment, undefined bits), the fd count, the negotiated gate and the
 * ring index; handlers therefore never re-check. What needs the session's state is checked where
 * that state lives, before anything reaches the kernel: every region's fd is a regular file
 * large enough to map, and every ring lies wholly inside mapped guest memory (src/memtable).
 * A failure closes every fd of the message, logs one line and NACKs or drops the connection;
 * the process lives on and leaks nothing (test/vhost-user/bad-input.test.ts, leak.test.ts).
 * The bridge never reads guest memory itself: descriptors and packets are the kernel's to check.
 *
 * The dispatcher: enforces the request table (requests.ts) on each message before any handler
 * runs, calls the handler, and builds the reply. One per connection: it holds what this front-end
 * negotiated.
 *
 * Checks, in order (rust-vmm handle_request / check_request_size / check_attached_files /
 * check_proto_feature; DPDK vhost_user_msg_handler / validate_msg_fds):
 *   1. version bits == 1, REPLY not set, no reserved flag bit   -> Malformed
 *   2. the request has a row                                     -> Malformed
 *   3. payload size matches the row's rule                       -> Malformed
 *   4. payload syntax (codec validate)                           -> Malformed
 *   5. fd count matches the row's rule                           -> Malformed
 *   6. the row's gate (protocol feature) is negotiated           -> Refused
 *   7. ring scope: index < backend.ringCount()                   -> Refused
 *   8. the row's semantic precondition                           -> Refused
 * then the handler (which may throw Refused, or any Error, treated alike), and after every message,
 * carried out or not, the back end's afterRequest (handler.ts): where it settles ring readiness.
 *
 * REPLY_ACK lives here only (vhost-user.rst "VHOST_USER_PROTOCOL_F_REPLY_ACK"): an `ack` row
 * answers u64 0/1 iff NEED_REPLY was set and REPLY_ACK negotiated; value rows always answer, and
 * NEED_REPLY "brings no behavioural change" for them.
 *
 * On every failure: every fd of the message is closed, ONE warning names the request and the
 * reason, and the outcome is a NACK (Refused, and the front-end asked for an ack) or a drop
 * (Malformed, or Refused with no way to tell the front-end).
 */
import { bit, describeBits, has } from '../bits.js';
import { hex } from '../format.js';
import { log as defaultLog, type Logger } from '../log.js';
import { closeAll } from '../sys/index.js';
import {
  memoryTableRegionCount,
  memoryTableSize,
  encodeReplyAck,
  encodeReplyU64,
  encodeReplyVringState,
} from './codec.js';
import {
  describeFlags,
  FrontendReq,
  HEADER_FLAGS,
  PROTOCOL_F,
  PROTOCOL_FEATURE_NAMES,
  requestName,
} from './constants.js';
import { Malformed, Refused } from './errors.js';
import type { Message } from './framer.js';
import type { VhostUserBackend } from './handler.js';
import type { VringState } from './messages.js';
import {
  gateFailure,
  offersProtocolFeatures,
  REQUESTS,
  type CallResult,
  type RequestSpec,
  type Session,
} from './requests.js';

/** What the connection does after a message. */
export interface Outcome {
  /** Bytes to send back (a reply or an ack), or null. */
  reply: Buffer | null;
  /** Drop the connection (after sending `reply`, if any). */
  close: boolean;
  /** ok: carried out; nack: refused and told; drop: failed, connection dropped. */
  result: 'ok' | 'nack' | 'drop';
  /** The reason of a nack or drop. */
  reason?: string;
}

/** What the checks learnt before failing: the row and the decoded payload. */
interface Seen {
  spec?: RequestSpec<unknown>;
  payload?: unknown;
}

const KNOWN_IDS = new Set<number>(Object.values(FrontendReq));

/** Where VHOST_USER_F_PROTOCOL_FEATURES stands on this connection (see requests.ts Gate). */
type ProtocolFeaturesBit = 'unknown' | 'taken' | 'declined';

export class Dispatcher implements Session {
  private acked = 0n;
  private pfBit: ProtocolFeaturesBit = 'unknown';
  private ended = false;

  constructor(
    readonly backend: VhostUserBackend,
    private readonly log: Logger = defaultLog,
  ) {}

  /** Protocol features in force: what SET_PROTOCOL_FEATURES acked, masked to the offer. */
  get protocolFeatures(): bigint {
    return this.acked & this.backend.getProtocolFeatures();
  }

  /** REPLY_ACK negotiated: `ack` rows answer when NEED_REPLY is set. */
  get replyAck(): boolean {
    return has(this.protocolFeatures, PROTOCOL_F.REPLY_ACK);
  }

  // Session (what rows see) -------------------------------------------------------------------

  maskProtocolFeatures(acked: bigint): bigint {
    const offered = this.backend.getProtocolFeatures();
    const extra = acked & ~offered;
    if (extra !== 0n) {
      this.log.warn(
        `SET_PROTOCOL_FEATURES: ignoring protocol features that were not offered: ` +
          `${describeBits(extra, PROTOCOL_FEATURE_NAMES)}`,
      );
    }
    return acked & offered;
  }

  protocolFeaturesAcked(masked: bigint): void {
    this.acked = masked;
    this.pfBit = 'taken';
  }

  featuresAcked(features: bigint): void {
    this.pfBit = offersProtocolFeatures(features) ? 'taken' : 'declined';
  }

  // -------------------------------------------------------------------------------------------

  /**
   * Handle one complete message. The fds in `msg` are owned by this call: they end up with the
   * back end (a handler that returned) or closed (every other path).
   */
  handle(msg: Message): Outcome {
    const name = requestName(msg.header.request);
    const needReply = (msg.header.flags & HEADER_FLAGS.NEED_REPLY) !== 0;
    const seen: Seen = {};
    let out = this.carryOut(msg, name, needReply, seen);
    try {
      this.backend.afterRequest({ request: name, result: out.result, reason: out.reason });
    } catch (e) {
      if (out.result === 'ok') out = this.fail(name, e, seen.spec, needReply);
      else this.log.error(`${name}: after the failure: ${(e as Error).message}`);
    }
    return out;
  }

  /**
   * A message the connection had to drop before the dispatcher could handle it (too many fds,
   * oversized payload, EOF mid-message): the back end hears of it like of any dropped request.
   */
  dropped(request: string, reason: string): void {
    try {
      this.backend.afterRequest({ request, result: 'drop', reason });
    } catch (e) {
      this.log.error(`${request}: after the drop: ${(e as Error).message}`);
    }
  }

  /** The checks, the handler and the reply of one message; afterRequest follows in handle(). */
  private carryOut(msg: Message, name: string, needReply: boolean, seen: Seen): Outcome {
    const { header, fds } = msg;
    try {
      this.check(msg, seen);
    } catch (e) {
      closeAll(fds);
      if (this.log.enabled('debug'))
        this.log.debug(this.line(name, msg, seen.spec && 'payload' in seen ? seen.spec.describe(seen.payload) : null));
      return this.fail(name, e, seen.spec, needReply);
    }
    const spec = seen.spec!;
    const decoded = seen.payload;
    if (this.log.enabled('debug')) this.log.debug(this.line(name, msg, spec.describe(decoded)));

    let held = fds;
    if (spec.fds.discard) {
      closeAll(fds);
      held = [];
    }
    let result: CallResult;
    try {
      result = spec.call(this, decoded, held);
    } catch (e) {
      // handler.ts: a method that throws keeps none of the fds it was given.
      closeAll(held);
      return this.fail(name, e, spec, needReply);
    }
    return this.succeed(name, spec, header.request, result, needReply);
  }

  /** The front-end is gone: tell the back end, once. */
  disconnected(): void {
    if (this.ended) return;
    this.ended = true;
    this.backend.disconnected();
  }

  // -------------------------------------------------------------------------------------------

  /** Steps 1-8 of the file comment; fills `seen` with the row and the decoded payload as they become known. */
  private check(msg: Message, seen: Seen): void {
    const { header, payload, fds } = msg;
    const version = header.flags & HEADER_FLAGS.VERSION_MASK;
    if (version !== HEADER_FLAGS.VERSION)
      throw new Malformed(`version bits are ${version}, not ${HEADER_FLAGS.VERSION}`);
    if (header.flags & HEADER_FLAGS.REPLY) throw new Malformed('the REPLY flag is set on a request from the front-end');
    const reserved = header.flags & ~HEADER_FLAGS.KNOWN;
    if (reserved) throw new Malformed(`reserved flag bits ${hex(reserved >>> 0)} are set`);

    const spec = REQUESTS.get(header.request);
    if (!spec) {
      throw new Malformed(
        !KNOWN_IDS.has(header.request)
          ? 'unknown request'
          : 'not supported by this back end (it offers no feature that enables it)',
      );
    }

    if (spec.size === 'memory-table') {
      const n = memoryTableRegionCount(payload);
      if (n === null)
        throw new Malformed(`payload size ${payload.length} is shorter than the 8-byte memory table head`);
      if (payload.length !== memoryTableSize(n)) {
        throw new Malformed(
          `payload size ${payload.length} does not match nregions ${n} (8 + 32 x ${n} = ${memoryTableSize(n)})`,
        );
      }
    } else if (payload.length !== spec.size.exact) {
      throw new Malformed(`payload size ${payload.length}, expected ${spec.size.exact}`);
    }

    seen.spec = spec;
    const p = spec.decode(payload);
    seen.payload = p;
    const why = spec.validate(p);
    if (why) throw new Malformed(why);

    const { min, max } = spec.fds.expected(p);
    if (fds.length < min || fds.length > max) {
      const want = min === max ? `${min}` : `${min} to ${max}`;
      throw new Malformed(
        `carries ${fds.length} fd${fds.length === 1 ? '' : 's'}, expected ${want} (${spec.fds.name})`,
      );
    }

    if (!this.gateOpen(spec)) throw new Refused(gateFailure(spec.gate));

    if (spec.ring) {
      const index = spec.ring(p);
      const rings = this.backend.ringCount();
      if (index >= rings) throw new Refused(ringBeyondPort(index, rings));
    }

    const refusal = spec.refuse?.(p, this);
    if (refusal) throw new Refused(refusal);
  }

  private gateOpen(spec: RequestSpec<unknown>): boolean {
    const g = spec.gate;
    if (g === null) return true;
    if (g === 'features-bit-offered') return offersProtocolFeatures(this.backend.getFeatures());
    if (g === 'protocol-features-negotiated')
      return offersProtocolFeatures(this.backend.getFeatures()) && this.pfBit === 'taken';
    return (this.protocolFeatures & bit(g)) !== 0n;
  }

  private succeed(
    name: string,
    spec: RequestSpec<unknown>,
    request: number,
    result: CallResult,
    needReply: boolean,
  ): Outcome {
    let reply: Buffer | null = null;
    switch (spec.reply) {
      case 'ack':
        if (needReply && this.replyAck) reply = encodeReplyAck(request, true);
        break;
      case 'u64':
        if (typeof result !== 'bigint') return this.internal(name, `handler returned ${typeof result}, not a u64`);
        reply = encodeReplyU64(request, result);
        break;
      case 'vring-state':
        if (typeof result !== 'object' || result === null)
          return this.internal(name, 'handler returned no vring state');
        reply = encodeReplyVringState(request, result as VringState);
        break;
      case 'log-base':
        reply = encodeReplyU64(request, 0n);
        break;
    }
    if (spec.describeReply && this.log.enabled('debug')) this.log.debug(`${name}: reply ${spec.describeReply(result)}`);
    return { reply, close: false, result: 'ok' };
  }

  /**
   * One warning line, and NACK or drop. A Refused (or a handler's own error) on an `ack` row whose
   * front-end asked for a reply under REPLY_ACK is answered u64 1; everything else drops the
   * connection: a malformed stream cannot be trusted, and a front-end waiting for a value (or not
   * waiting at all) cannot be told of a refusal.
   */
  private fail(name: string, e: unknown, spec: RequestSpec<unknown> | undefined, needReply: boolean): Outcome {
    const reason = e instanceof Error ? e.message : String(e);
    const malformed = e instanceof Malformed;
    // A Refused is the front-end's doing (warn); any other error is the back end's own failure (error).
    const own = !malformed && !(e instanceof Refused);
    const say = (text: string) => (own ? this.log.error(text) : this.log.warn(text));
    const kind = malformed ? 'malformed' : own ? 'failed' : 'refused';
    if (!malformed && spec?.reply === 'ack' && needReply && this.replyAck) {
      say(`${name}: ${reason} (${kind}; NACK sent)`);
      return { reply: encodeReplyAck(spec.id, false), close: false, result: 'nack', reason };
    }
    const why = malformed
      ? ''
      : spec?.reply === 'ack'
        ? ', and the front-end asked for no reply'
        : ', and the front-end expects a value';
    say(`${name}: ${reason} (${kind}${why}; dropping the connection)`);
    return { reply: null, close: true, result: 'drop', reason };
  }

  private internal(name: string, reason: string): Outcome {
    this.log.error(`${name}: ${reason} (back-end bug; dropping the connection)`);
    return { reply: null, close: true, result: 'drop', reason };
  }

  /** The debug line of a message: name, flags, size, fds, decoded payload. */
  private line(name: string, msg: Message, payload: string | null): string {
    const { header, fds } = msg;
    const body = payload === null ? '' : payload ? ` ${payload}` : '';
    return `${name} flags ${describeFlags(header.flags)} size ${header.size} fds ${fds.length}${body}`;
  }
}

/**
 * The refusal of a ring index beyond the port's rings: a front-end configured for more queue pairs
 * than the port has (QEMU `queues=` above the pairs: GET_QUEUE_NUM counts virtqueues, so QEMU's own
 * check lets up to twice through; DPDK virtio-user does not ask). Names both numbers and the fix.
 */
function ringBeyondPort(index: number, rings: number): string {
  const pairs = Math.floor(rings / 2);
  const asked = Math.floor(index / 2) + 1;
  return (
    `ring ${index}: this port has ${pairs} queue pair${pairs === 1 ? '' : 's'} (rings 0-${rings - 1}); the ` +
    `front-end asked for more (start the port with --queues ${asked})`
  );
}
