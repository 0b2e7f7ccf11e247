/**
 * Session traces (`--record FILE`): every message a front-end sent (header, payload bytes, fd
 * count) and the bytes sent back, per connection, as a stream of MessagePack values (msgpackr).
 *
 * Traces of real front-ends are test fixtures: test/vhost-user/replay.test.ts feeds a recorded
 * QEMU session to the dispatcher again and checks every reply byte for byte. The fds themselves
 * cannot be recorded (they are gone with the session); a replay substitutes fresh ones.
 *
 * File layout: one TraceHeader, then TraceEvents in order. Written synchronously, one event at a
 * time, so a trace is complete up to the last event even if the process is killed.
 */
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { Packr, unpackMultiple } from 'msgpackr';
import type { Outcome } from './dispatcher.js';
import type { Message } from './framer.js';

const TRACE_FORMAT = 'vhost-bridge-trace';
const TRACE_VERSION = 1;

/** The first value of a trace file. `meta` says how the back end was configured (feature words as hex strings). */
interface TraceHeader {
  format: typeof TRACE_FORMAT;
  version: number;
  started: string;
  meta: Record<string, unknown>;
}

/** A front-end connected; `conn` numbers connections from 1. `t` is milliseconds since the trace started. */
interface TraceConnect {
  e: 'connect';
  t: number;
  conn: number;
}

/** One message and what it got back. */
export interface TraceMessage {
  e: 'msg';
  t: number;
  conn: number;
  request: number;
  flags: number;
  size: number;
  payload: Buffer;
  /** How many fds came with the message. */
  fds: number;
  /** The bytes sent back (header included), or null. */
  reply: Buffer | null;
  result: Outcome['result'];
}

/** The connection ended. */
interface TraceDisconnect {
  e: 'disconnect';
  t: number;
  conn: number;
  reason: string;
}

type TraceEvent = TraceConnect | TraceMessage | TraceDisconnect;

const packr = new Packr({ useRecords: false });

/** Appends events to a trace file. */
export class TraceWriter {
  private fd: number | null;
  private readonly t0 = performance.now();
  private conns = 0;

  /** Create (truncate) `path` and write the header. */
  constructor(
    readonly path: string,
    meta: Record<string, unknown> = {},
  ) {
    this.fd = openSync(path, 'w');
    const header: TraceHeader = {
      format: TRACE_FORMAT,
      version: TRACE_VERSION,
      started: new Date().toISOString(),
      meta,
    };
    this.write(header);
  }

  /** A front-end connected: returns its connection number. */
  connect(): number {
    const conn = ++this.conns;
    this.write({ e: 'connect', t: this.now(), conn } satisfies TraceConnect);
    return conn;
  }

  message(conn: number, msg: Message, out: Outcome): void {
    const { request, flags, size } = msg.header;
    this.write({
      e: 'msg',
      t: this.now(),
      conn,
      request,
      flags,
      size,
      payload: msg.payload,
      fds: msg.fds.length,
      reply: out.reply,
      result: out.result,
    } satisfies TraceMessage);
  }

  disconnect(conn: number, reason: string): void {
    this.write({ e: 'disconnect', t: this.now(), conn, reason } satisfies TraceDisconnect);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private now(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  private write(v: unknown): void {
    if (this.fd === null) return;
    writeSync(this.fd, packr.pack(v));
  }
}

/** Read a trace file (or its bytes). Throws if it is not one. */
export function readTrace(source: string | Buffer): { header: TraceHeader; events: TraceEvent[] } {
  const bytes = typeof source === 'string' ? readFileSync(source) : source;
  const [header, ...events] = unpackMultiple(bytes) as [TraceHeader, ...TraceEvent[]];
  if (header?.format !== TRACE_FORMAT) throw new Error('not a vhost-bridge trace');
  if (header.version !== TRACE_VERSION)
    throw new Error(`trace version ${header.version}, this reader knows ${TRACE_VERSION}`);
  return { header, events };
}
