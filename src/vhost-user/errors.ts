/**
 * Every way a vhost-user exchange fails, as one closed set of errors (rust-vmm's vhost_user::Error,
 * DPDK's RTE_VHOST_MSG_RESULT_ERR), and THE one place that turns a failure into its log line and
 * into what the back end can still do about it: answer (NACK), or hang up.
 *
 * The framer, the connection and the dispatcher raise these; a back end (handler.ts) throws
 * Refused, and any other error it throws is its own failure (Failed). `judge` words all of them
 * the same way: `SET_VRING_NUM: ring 3 does not exist (this back end has 2 rings) (refused; NACK
 * sent)`.
 *
 * vhost-user.rst "Communication": "If back-end detects some error such as incompatible features,
 * it may also close the connection." The front-end (QEMU) can reconnect; the process lives on.
 */
import { requestName } from './constants.js';

/** The kinds, as the log line names them. */
type FailureKind =
  | 'truncated'
  | 'oversized'
  | 'bad header'
  | 'wrong fds'
  | 'malformed'
  | 'refused'
  | 'failed'
  | 'disconnected';

/** A failure of one exchange. `request` is the request id when the raiser knows it (null: not yet read). */
export abstract class VhostUserError extends Error {
  abstract readonly kind: FailureKind;
  constructor(
    message: string,
    readonly request: number | null = null,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The front-end hung up in the middle of a message (header or payload): what came is dropped. */
export class Truncated extends VhostUserError {
  readonly kind = 'truncated';
}

/** The header announces a payload above LIMITS.MAX_PAYLOAD: refused before a payload byte is read. */
export class Oversized extends VhostUserError {
  readonly kind = 'oversized';
}

/** Bad version or flags, or a request this back end has no row for. */
export class BadHeader extends VhostUserError {
  readonly kind = 'bad header';
}

/** More or fewer fds than the request's row allows, or more than a message may carry (MSG_CTRUNC). */
export class WrongFds extends VhostUserError {
  readonly kind = 'wrong fds';
}

/** A payload whose size the row does not allow, or that fails its syntax check (codec validate). */
export class Malformed extends VhostUserError {
  readonly kind = 'malformed';
}

/**
 * A well-formed request the back end will not carry out: a protocol feature that was not
 * negotiated, a ring index beyond ringCount(), a value the back end cannot accept. Back ends
 * (handler.ts) throw it too.
 */
export class Refused extends VhostUserError {
  readonly kind = 'refused';
}

/** The back end's own failure carrying out a request (any error of a handler that is not a Refused). */
export class Failed extends VhostUserError {
  readonly kind = 'failed';
}

/** The socket failed (a poll or recvmsg error, a reply that could not be sent): nothing more can be said. */
export class Disconnected extends VhostUserError {
  readonly kind = 'disconnected';
}

/** `e` as one of the set: a VhostUserError as it is, anything else as the back end's own Failed. */
export function asVhostUserError(e: unknown, request: number | null = null): VhostUserError {
  if (e instanceof VhostUserError) return e;
  return new Failed(e instanceof Error ? e.message : String(e), request);
}

/** What the front-end asked of the failed request: the row's reply kind (if known), and whether it can be told. */
export interface FailedRequest {
  /** The request id (null: not known), for the line; a VhostUserError's own id is used when it has one. */
  request: number | null;
  /** The row's reply kind: `ack` rows can be NACKed; absent when no row was found. */
  reply?: 'ack' | 'u64' | 'vring-state' | 'log-base';
  /** NEED_REPLY was set and REPLY_ACK negotiated. */
  ackAsked: boolean;
}

/** What becomes of a failed request: NACK (u64 1) and stay, or drop; and the one line that says so. */
export interface Verdict {
  nack: boolean;
  /** A failure of the back end's own is an error; everything the front-end did is a warning. */
  level: 'warn' | 'error';
  line: string;
  /** `SET_MEM_TABLE` (or `request unknown`, `front-end socket`): the line's subject, for the back end's record. */
  subject: string;
}

/**
 * THE formatter. A Refused or Failed request on an `ack` row whose front-end asked for a reply
 * under REPLY_ACK is answered u64 1 (vhost-user.rst "VHOST_USER_PROTOCOL_F_REPLY_ACK"); every other
 * failure drops the connection: a stream that broke the protocol cannot be trusted, and a
 * front-end waiting for a value (or not waiting at all) cannot be told of a refusal.
 */
export function judge(e: VhostUserError, at: FailedRequest): Verdict {
  const id = e.request ?? at.request;
  const subject = id !== null ? requestName(id) : e.kind === 'disconnected' ? 'front-end socket' : 'request unknown';
  const told = e.kind === 'refused' || e.kind === 'failed';
  const level = e.kind === 'failed' ? 'error' : 'warn';
  if (told && at.reply === 'ack' && at.ackAsked)
    return { nack: true, level, subject, line: `${subject}: ${e.message} (${e.kind}; NACK sent)` };
  const why = !told
    ? ''
    : at.reply === 'ack'
      ? ', and the front-end asked for no reply'
      : at.reply
        ? ', and the front-end expects a value'
        : '';
  return { nack: false, level, subject, line: `${subject}: ${e.message} (${e.kind}${why}; dropping the connection)` };
}
