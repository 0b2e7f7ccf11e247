/**
 * One front-end connection: readiness of the socket (FdWatcher), recvmsg until EAGAIN, the framer,
 * the dispatcher, and replies by sendmsg. Everything here is synchronous except the wait for
 * readiness; handlers are synchronous (src/sys/poll.ts: one persistent poll handle per fd,
 * level-triggered, closed before the fd).
 *
 * Closing, on EOF, error, a dropped message or close(): the watcher first (libuv aborts the process
 * if an fd is closed under an active poll handle), then backend.disconnected(), which stops every
 * ring in the kernel, and only then the socket, then the fds of a partial message. The order
 * matters when the back-end hangs up (a reset, a removed port, shutdown): on EOF QEMU cannot ask
 * GET_VRING_BASE and takes each ring's used index from guest memory as the next session's base
 * (docs/qemu-quirks.md, "When the back-end hangs up"); a kernel still writing used entries after the
 * front-end saw EOF leaves that base behind the guest's avail index by more than the ring size, and
 * the next session's ring fails at once (the kernel signals the err eventfd; no traffic).
 */
import { log as defaultLog, type Logger } from '../log.js';
import {
  close as closeFd,
  closeAll,
  ControlTruncatedError,
  FdWatcher,
  MsgIo,
  SysError,
  type Readiness,
  type Received,
} from '../sys/index.js';
import { LIMITS, requestName } from './constants.js';
import { Dispatcher, type Outcome } from './dispatcher.js';
import { Disconnected, Oversized, type VhostUserError, WrongFds } from './errors.js';
import { Framer, type Message, truncated } from './framer.js';
import type { VhostUserBackend } from './handler.js';
import type { TraceWriter } from './trace.js';

/**
 * Reads per readiness callback. The poll is level-triggered, so a front-end with more to say is
 * called back on the next loop turn; meanwhile timers, the listener and other fds get their turn.
 */
const READS_PER_WAKEUP = 256;

interface ConnectionOptions {
  log?: Logger;
  /** Record every message and reply of this connection. */
  trace?: TraceWriter;
  /** Called once, after everything is closed, with the reason. */
  onClosed?: (reason: string) => void;
}

export class Connection {
  readonly dispatcher: Dispatcher;
  private readonly framer = new Framer(LIMITS.MAX_PAYLOAD);
  private readonly rx = new MsgIo(LIMITS.MAX_PAYLOAD, LIMITS.MAX_FDS);
  private readonly tx = new MsgIo(LIMITS.HEADER_SIZE + LIMITS.MAX_PAYLOAD, 0);
  private readonly log: Logger;
  private watcher: FdWatcher | null = null;
  private traceConn = 0;
  private open = true;

  /** Takes ownership of `fd`, a connected non-blocking AF_UNIX stream socket. */
  constructor(
    readonly fd: number,
    backend: VhostUserBackend,
    private readonly opts: ConnectionOptions = {},
  ) {
    this.log = opts.log ?? defaultLog;
    this.dispatcher = new Dispatcher(backend, this.log);
  }

  /** Start reading. Messages already queued on the socket are handled from the next event-loop turn. */
  start(): this {
    if (this.opts.trace) this.traceConn = this.opts.trace.connect();
    this.watcher = new FdWatcher(this.fd, { readable: true, disconnect: true }, (r) => this.onReady(r));
    return this;
  }

  get closed(): boolean {
    return !this.open;
  }

  /** Drop the connection (idempotent). */
  close(reason = 'closed by the back end'): void {
    if (!this.open) return;
    this.open = false;
    this.watcher?.close();
    this.watcher = null;
    try {
      this.dispatcher.disconnected();
    } catch (e) {
      this.log.error(`back end failed on disconnect: ${(e as Error).message}`);
    }
    try {
      closeFd(this.fd);
    } catch (e) {
      this.log.error(`closing the front-end socket: ${(e as Error).message}`);
    }
    closeAll(this.framer.discard());
    this.opts.trace?.disconnect(this.traceConn, reason);
    this.opts.onClosed?.(reason);
  }

  private onReady(r: Readiness): void {
    try {
      if (r.status < 0) {
        this.drop(new Disconnected(`poll error (libuv status ${r.status})`));
        return;
      }
      this.drain();
    } catch (e) {
      // Nothing may escape into libuv's callback: it would take the process down.
      this.log.error(`front-end connection: unexpected ${(e as Error).stack ?? e}; dropping the connection`);
      this.close('internal error');
    }
  }

  /** recvmsg exactly what the framer wants, until EAGAIN, EOF, a drop, or the read budget is spent. */
  private drain(): void {
    for (let reads = 0; this.open && reads < READS_PER_WAKEUP; reads++) {
      let got: Received | null;
      try {
        got = this.rx.recv(this.fd, this.framer.wanted());
      } catch (e) {
        if (e instanceof ControlTruncatedError) {
          const more = `more fds than the ${LIMITS.MAX_FDS} a message may carry (MSG_CTRUNC; the fds were closed)`;
          this.drop(new WrongFds(more, this.requestOf(this.rx.data.subarray(0, e.n))));
          return;
        }
        if (e instanceof SysError) {
          this.drop(new Disconnected(e.message, this.requestOf(Buffer.alloc(0))));
          return;
        }
        throw e;
      }
      if (got === null) return;
      if (got.n === 0) {
        const cut = truncated(this.framer.state());
        if (cut) {
          this.drop(cut);
        } else {
          this.log.info('front-end disconnected');
          this.close('EOF');
        }
        return;
      }
      let msg: Message | null;
      try {
        msg = this.framer.push(this.rx.data.subarray(0, got.n), got.fds);
      } catch (e) {
        if (!(e instanceof Oversized)) throw e;
        this.drop(e);
        return;
      }
      if (msg) this.deliver(msg);
    }
  }

  /** A failure outside a whole message: the dispatcher words it (errors.ts judge), then the connection drops. */
  private drop(e: VhostUserError): void {
    this.close(this.dispatcher.dropped(e.request, e));
  }

  private deliver(msg: Message): void {
    const out: Outcome = this.dispatcher.handle(msg);
    this.opts.trace?.message(this.traceConn, msg, out);
    if (out.reply && !this.send(msg, out.reply)) return;
    if (out.close) this.close(`${requestName(msg.header.request)}: ${out.reason ?? 'dropped'}`);
  }

  /** Replies are tiny: a short write or EAGAIN means the front-end is not reading; drop it. */
  private send(msg: Message, reply: Buffer): boolean {
    let why: string;
    try {
      const n = this.tx.send(this.fd, reply);
      if (n === reply.length) return true;
      why = `the reply could not be sent (${n === null ? 'socket full' : `${n} of ${reply.length} bytes`})`;
    } catch (e) {
      why = `sending the reply: ${(e as Error).message}`;
    }
    this.drop(new Disconnected(why, msg.header.request));
    return false;
  }

  /** The request a read belongs to (for a log line), from the partial message plus `bytes`; null if unknown. */
  private requestOf(bytes: Buffer): number | null {
    const s = this.framer.state();
    if (s.at === 'payload') return s.header.request;
    return this.framer.peekRequest(bytes);
  }
}
