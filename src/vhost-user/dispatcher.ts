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
 * runs, calls the handler, and builds the reply. One per connection: its ConnectionState
 * (connection-state.ts) holds what this front-end negotiated.
 *
 * Checks, in order (rust-vmm handle_request / check_request_size / check_attached_files /
 * check_proto_feature; DPDK vhost_user_msg_handler / validate_msg_fds):
 *   1. version bits == 1, REPLY not set, no reserved flag bit   -> BadHeader
 *   2. the request has a row                                     -> BadHeader
 *   3. payload size matches the row's rule                       -> Malformed
 *   4. payload syntax (codec validate)                           -> Malformed
 *   5. fd count matches the row's rule                           -> WrongFds
 *   6. the row's gate (protocol feature) is negotiated           -> Refused
 *   7. ring scope: index < backend.ringCount()                   -> Refused
 *   8. the row's semantic precondition                           -> Refused
 * then the handler (which may throw Refused, or any Error: Failed, treated alike), and after every
 * message, carried out or not, the back end's afterRequest (handler.ts): where it settles ring
 * readiness.
 *
 * REPLY_ACK is answered here only (vhost-user.rst "VHOST_USER_PROTOCOL_F_REPLY_ACK"): an `ack`
 * row answers u64 0 on success and u64 1 when judge says NACK, iff NEED_REPLY was set and
 * REPLY_ACK negotiated; value rows always answer, and NEED_REPLY "brings no behavioural change"
 * for them.
 *
 * On every failure: every fd of the message is closed, ONE line names the request and the reason,
 * and the outcome is a NACK (Refused or Failed, and the front-end asked for an ack) or a drop
 * (anything else, or no way to tell the front-end): errors.ts `judge` decides and words it, for
 * the failures the connection meets before a message is whole too ({@link Dispatcher.dropped}).
 */
import { bit } from '../bits.js';
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
import { ConnectionState, offersProtocolFeatures } from './connection-state.js';
import { describeFlags, FrontendReq, HEADER_FLAGS, requestName } from './constants.js';
import { asVhostUserError, BadHeader, judge, Malformed, Refused, type VhostUserError, WrongFds } from './errors.js';
import type { Message } from './framer.js';
import type { VhostUserBackend } from './handler.js';
import { gateFailure, REQUESTS, type RequestSpec } from './requests.js';

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
  spec?: RequestSpec;
  payload?: unknown;
}

const KNOWN_IDS = new Set<number>(Object.values(FrontendReq));

export class Dispatcher {
  /** What this connection negotiated: its one owner, which rows and the back end read. */
  readonly state: ConnectionState;
  private ended = false;

  constructor(
    readonly backend: VhostUserBackend,
    private readonly log: Logger = defaultLog,
  ) {
    this.state = new ConnectionState(backend, log);
    backend.attach(this.state);
  }

  /**
   * Handle one complete message. The fds in `msg` are owned by this call: they end up with the
   * back end (a handler that returned) or closed (every other path).
   */
  handle(msg: Message): Outcome {
    const { request } = msg.header;
    const name = requestName(request);
    const needReply = (msg.header.flags & HEADER_FLAGS.NEED_REPLY) !== 0;
    const seen: Seen = {};
    let out = this.carryOut(msg, name, needReply, seen);
    try {
      this.backend.afterRequest({ request: name, result: out.result, reason: out.reason });
    } catch (e) {
      if (out.result === 'ok') out = this.fail(request, asVhostUserError(e), seen.spec, needReply);
      else this.log.error(`${name}: after the failure: ${(e as Error).message}`);
    }
    return out;
  }

  /**
   * A failure the connection met outside a whole message (too many fds, an oversized payload, EOF
   * mid-message, the socket failing): one line by the same formatter, and the connection drops.
   * The back end hears of a dropped message like of any dropped request; a failing socket is only
   * a disconnect. `request` is the id of the message under way, if its header said. Returns the
   * reason the connection closes for (`SET_MEM_TABLE: the front-end closed ...`).
   */
  dropped(request: number | null, e: VhostUserError): string {
    const v = judge(e, { request, ackAsked: false });
    this.log[v.level](v.line);
    if (e.kind !== 'disconnected') {
      try {
        this.backend.afterRequest({ request: v.subject, result: 'drop', reason: e.message });
      } catch (err) {
        this.log.error(`${v.subject}: after the drop: ${(err as Error).message}`);
      }
    }
    return `${v.subject}: ${e.message}`;
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
      return this.fail(header.request, asVhostUserError(e), seen.spec, needReply);
    }
    const spec = seen.spec!;
    if (this.log.enabled('debug')) this.log.debug(this.line(name, msg, spec.describe(seen.payload)));

    let held = fds;
    if (spec.fds.discard) {
      closeAll(fds);
      held = [];
    }
    try {
      return { reply: this.reply(spec, seen.payload, held, header.request, needReply), close: false, result: 'ok' };
    } catch (e) {
      // handler.ts: a method that throws keeps none of the fds it was given.
      closeAll(held);
      return this.fail(header.request, asVhostUserError(e), spec, needReply);
    }
  }

  /**
   * Call the row's handler and encode its reply: the row's reply kind says what the call returns.
   * An `ack` row answers u64 0 iff NEED_REPLY was set and REPLY_ACK negotiated; value rows always
   * answer, and NEED_REPLY "brings no behavioural change" for them.
   */
  private reply(
    spec: RequestSpec,
    payload: unknown,
    fds: number[],
    request: number,
    needReply: boolean,
  ): Buffer | null {
    const shown = (text: () => string) => {
      if (this.log.enabled('debug')) this.log.debug(`${requestName(request)}: reply ${text()}`);
    };
    switch (spec.reply) {
      case 'ack':
        spec.call(this.state, payload, fds);
        return needReply && this.state.replyAck ? encodeReplyAck(request, true) : null;
      case 'u64': {
        const v = spec.call(this.state, payload, fds);
        if (spec.describeReply) shown(() => spec.describeReply!(v));
        return encodeReplyU64(request, v);
      }
      case 'vring-state': {
        const v = spec.call(this.state, payload, fds);
        if (spec.describeReply) shown(() => spec.describeReply!(v));
        return encodeReplyVringState(request, v);
      }
      case 'log-base':
        spec.call(this.state, payload, fds);
        return encodeReplyU64(request, 0n);
    }
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
      throw new BadHeader(`version bits are ${version}, not ${HEADER_FLAGS.VERSION}`);
    if (header.flags & HEADER_FLAGS.REPLY) throw new BadHeader('the REPLY flag is set on a request from the front-end');
    const reserved = header.flags & ~HEADER_FLAGS.KNOWN;
    if (reserved) throw new BadHeader(`reserved flag bits ${hex(reserved >>> 0)} are set`);

    const spec = REQUESTS.get(header.request);
    if (!spec) {
      throw new BadHeader(
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
      throw new WrongFds(`carries ${fds.length} fd${fds.length === 1 ? '' : 's'}, expected ${want} (${spec.fds.name})`);
    }

    if (!this.gateOpen(spec)) throw new Refused(gateFailure(spec.gate));

    if (spec.ring) {
      const index = spec.ring(p);
      const rings = this.backend.ringCount();
      if (index >= rings) throw new Refused(ringBeyondPort(index, rings));
    }

    const refusal = spec.refuse?.(p, this.state);
    if (refusal) throw new Refused(refusal);
  }

  private gateOpen(spec: RequestSpec): boolean {
    const g = spec.gate;
    if (g === null) return true;
    if (g === 'features-bit-offered') return offersProtocolFeatures(this.backend.getFeatures());
    if (g === 'protocol-features-negotiated')
      return offersProtocolFeatures(this.backend.getFeatures()) && this.state.protocolFeaturesTaken;
    return ((this.state.protocolFeatures ?? 0n) & bit(g)) !== 0n;
  }

  /** One line and NACK or drop, as errors.ts judge decides. */
  private fail(request: number, e: VhostUserError, spec: RequestSpec | undefined, needReply: boolean): Outcome {
    const v = judge(e, { request, reply: spec?.reply, ackAsked: needReply && this.state.replyAck });
    this.log[v.level](v.line);
    if (v.nack) return { reply: encodeReplyAck(request, false), close: false, result: 'nack', reason: e.message };
    return { reply: null, close: true, result: 'drop', reason: e.message };
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
