/**
 * Reassembles vhost-user messages from what recvmsg(2) returns.
 *
 * A message is a 12-byte header then `size` payload bytes (vhost-user.rst "Message
 * Specification"); its fds travel as SCM_RIGHTS ancillary data of the sendmsg that carried it,
 * so they arrive with its first bytes. The reader asks for exactly `wanted()` bytes at a time:
 * first the rest of the header, then the rest of the payload. A read then never crosses into the
 * next message, and fds are never attributed to the wrong message even when the front-end's
 * messages arrive back to back in one burst (test/sys/sys.test.ts shows it on a real socket;
 * rust-vmm's recv_header then recv_data).
 *
 * Pure: no I/O. The connection feeds it; tests feed it scripted chunks.
 */
import { decodeHeader, type Header } from './codec.js';
import { LIMITS } from './constants.js';
import { Oversized, Truncated } from './errors.js';

/** A complete message: header, payload, and every fd that came with its bytes. */
export interface Message {
  header: Header;
  payload: Buffer;
  fds: number[];
}

/** Where the framer is: the request under way, and how much of it came. */
type FramerState =
  | { at: 'idle' }
  | { at: 'header'; have: number; request: number | null }
  | { at: 'payload'; header: Header; have: number };

export class Framer {
  private head = Buffer.alloc(LIMITS.HEADER_SIZE);
  private headHave = 0;
  private header: Header | null = null;
  private payload: Buffer | null = null;
  private payloadHave = 0;
  private fds: number[] = [];

  /** @param maxPayload a header announcing more is refused before any payload byte is read. */
  constructor(private readonly maxPayload: number = LIMITS.MAX_PAYLOAD) {}

  /** How many bytes to read next: the rest of the header, or the rest of the payload. Never 0. */
  wanted(): number {
    return this.header ? this.header.size - this.payloadHave : LIMITS.HEADER_SIZE - this.headHave;
  }

  /**
   * Feed the bytes and fds one recvmsg returned (`bytes.length` <= wanted(); the bytes are
   * copied). Returns the message they complete, or null if more is needed.
   *
   * Throws Oversized if the header announces a payload above the maximum; the fds received so far
   * are then still held (take them with `discard()`).
   */
  push(bytes: Buffer, fds: readonly number[] = []): Message | null {
    const want = this.wanted();
    if (bytes.length > want)
      throw new RangeError(`Framer.push: ${bytes.length} bytes, but only ${want} belong to this message`);
    this.fds.push(...fds);
    if (!this.header) {
      bytes.copy(this.head, this.headHave);
      this.headHave += bytes.length;
      if (this.headHave < LIMITS.HEADER_SIZE) return null;
      const h = decodeHeader(this.head);
      if (h.size > this.maxPayload) {
        throw new Oversized(`payload size ${h.size} is more than the maximum ${this.maxPayload}`, h.request);
      }
      this.header = h;
      this.payload = Buffer.alloc(h.size);
      this.payloadHave = 0;
      if (h.size > 0) return null;
    } else {
      bytes.copy(this.payload!, this.payloadHave);
      this.payloadHave += bytes.length;
      if (this.payloadHave < this.header.size) return null;
    }
    const msg: Message = { header: this.header!, payload: this.payload!, fds: this.fds };
    this.reset();
    return msg;
  }

  /** Where a partly received message stands. */
  state(): FramerState {
    if (this.header) return { at: 'payload', header: this.header, have: this.payloadHave };
    if (this.headHave > 0)
      return { at: 'header', have: this.headHave, request: this.headHave >= 4 ? this.head.readUInt32LE(0) : null };
    return { at: 'idle' };
  }

  /**
   * The request id of the message being received if `more` header bytes were added (without
   * adding them), or null if that is not yet 4 bytes. For naming a message whose read failed.
   */
  peekRequest(more: Buffer): number | null {
    if (this.header) return this.header.request;
    const b = Buffer.concat([this.head.subarray(0, this.headHave), more]);
    return b.length >= 4 ? b.readUInt32LE(0) : null;
  }

  /** Drop a partial message and hand over the fds it had collected (the caller closes them). */
  discard(): number[] {
    const fds = this.fds;
    this.reset();
    return fds;
  }

  private reset(): void {
    this.head = Buffer.alloc(LIMITS.HEADER_SIZE);
    this.headHave = 0;
    this.header = null;
    this.payload = null;
    this.payloadHave = 0;
    this.fds = [];
  }
}

/**
 * The front-end hung up: where a message was cut off (`the front-end closed the connection
 * mid-payload (10 of 40 bytes)`, of SET_MEM_TABLE), or null if none was under way.
 */
export function truncated(s: FramerState): Truncated | null {
  if (s.at === 'idle') return null;
  if (s.at === 'header') {
    return new Truncated(
      `the front-end closed the connection mid-header (${s.have} of ${LIMITS.HEADER_SIZE} bytes)`,
      s.request,
    );
  }
  return new Truncated(
    `the front-end closed the connection mid-payload (${s.have} of ${s.header.size} bytes)`,
    s.header.request,
  );
}
