/**
 * The control protocol: each frame is a 4-byte big-endian length followed by that many bytes of
 * one MessagePack value (msgpackr, plain maps: any MessagePack library can speak it).
 *
 *   request  {id, method, params?}
 *   reply    {id, result} | {id, error: {message, field?}}
 *
 * `id` is the client's (a number or a string) and comes back unchanged; `field` names the
 * parameter at fault (`port`, `config.queues`). A request frame over {@link MAX_REQUEST} bytes drops
 * the connection (nothing the daemon is asked needs more).
 */
import { Packr } from 'msgpackr';

/** The largest request frame the daemon reads. */
export const MAX_REQUEST = 64 * 1024;
/** The largest reply frame a client reads (`status` of hundreds of ports is well under this). */
export const MAX_REPLY = 64 * 1024 * 1024;

export type RequestId = number | string | null;

export interface Request {
  id: RequestId;
  method: string;
  params?: Record<string, unknown>;
}

export interface ControlErrorBody {
  message: string;
  /** The parameter at fault, as a dotted path. */
  field?: string;
}

export type Reply = { id: RequestId; result: unknown } | { id: RequestId; error: ControlErrorBody };

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/** One frame: length, then the MessagePack bytes of `value`. */
export function encodeFrame(value: unknown): Buffer {
  const body = packr.pack(value);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

/** The decoded value of a frame's body (throws on bytes that are not one MessagePack value). */
export function decodeBody(body: Buffer): unknown {
  return packr.unpack(body);
}

/** A frame larger than the reader accepts. */
export class FrameTooLarge extends Error {
  constructor(
    readonly size: number,
    readonly max: number,
  ) {
    super(`a frame of ${size} bytes (at most ${max})`);
    this.name = 'FrameTooLarge';
  }
}

/** Splits a byte stream into frame bodies. */
export class FrameReader {
  private buf = Buffer.alloc(0);

  constructor(private readonly max: number) {}

  /** Add bytes; returns every complete frame body. Throws FrameTooLarge as soon as a length says so. */
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : Buffer.from(chunk);
    const out: Buffer[] = [];
    while (this.buf.length >= 4) {
      const size = this.buf.readUInt32BE(0);
      if (size > this.max) throw new FrameTooLarge(size, this.max);
      if (this.buf.length < 4 + size) break;
      out.push(this.buf.subarray(4, 4 + size));
      this.buf = this.buf.subarray(4 + size);
    }
    return out;
  }

  /** Bytes of an incomplete frame held. */
  get pending(): number {
    return this.buf.length;
  }
}
