/**
 * The control socket server: a unix stream socket (mode 0660 by default, an optional group) on
 * which `vhost-bridge ctl` and other tools send framed requests (protocol.ts). Requests are handled
 * synchronously, one at a time, in the daemon's event loop; replies are queued and written when the
 * socket takes them. A bad request gets an error reply naming the field; bytes that cannot be
 * framed (an oversize length) drop that connection; nothing a client sends reaches the ports'
 * sockets or ends the daemon. Like the ports, it costs nothing when idle: readiness callbacks only.
 */
import { z } from 'zod';
import type { Logger } from '../log.js';
import {
  accept,
  close as closeFd,
  closeQuiet,
  FdWatcher,
  fstat,
  type PeerCred,
  peerCred,
  recv,
  send,
  setNonBlocking,
  type Readiness,
  unixListen,
  unlink,
} from '../sys/index.js';
import { describePeer, type PeerRule, peerRefusal } from '../vhost-user/peer.js';
import { removeStaleSocket } from '../vhost-user/transport.js';
import {
  decodeBody,
  encodeFrame,
  FrameReader,
  FrameTooLarge,
  MAX_REQUEST,
  type Reply,
  type Request,
  type RequestId,
} from './protocol.js';

/** An error reply: what is wrong, and the parameter at fault (`port`, `config.queues`). */
export class ControlError extends Error {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

/** Handles one request; returns the result or throws (ControlError for the client's mistakes). */
export type RequestHandler = (req: Request, peer: PeerCred | null) => unknown;

/** Output a client may leave unread before it is dropped. */
const MAX_QUEUED = 128 * 1024 * 1024;
const READ_SIZE = 64 * 1024;

const envelope = z.object(
  {
    id: z.union([z.number(), z.string()], { error: 'expected a number or a string' }),
    method: z.string({ error: 'expected a method name' }),
    params: z.record(z.string(), z.unknown(), { error: 'expected a map of parameters' }).optional(),
  },
  { error: 'expected a map {id, method, params}' },
);

class ControlConnection {
  private watcher: FdWatcher | null = null;
  private readonly reader = new FrameReader(MAX_REQUEST);
  private readonly buf = Buffer.alloc(READ_SIZE);
  private out: Buffer[] = [];
  private queued = 0;
  private open = true;

  constructor(
    readonly fd: number,
    readonly peer: PeerCred | null,
    private readonly handler: RequestHandler,
    private readonly log: Logger,
    private readonly onClosed: (c: ControlConnection) => void,
  ) {
    this.watch();
  }

  close(why: string): void {
    if (!this.open) return;
    this.open = false;
    this.watcher?.close();
    this.watcher = null;
    closeQuiet(this.fd);
    this.log.debug(`control: client ${this.who()} gone (${why})`);
    this.onClosed(this);
  }

  private who(): string {
    return this.peer ? `pid ${this.peer.pid} uid ${this.peer.uid}` : `fd ${this.fd}`;
  }

  /** Read while nothing waits to be written; else wait until the socket takes the output. */
  private watch(): void {
    this.watcher?.close();
    const writing = this.out.length > 0;
    this.watcher = new FdWatcher(
      this.fd,
      writing ? { writable: true, disconnect: true } : { readable: true, disconnect: true },
      (r) => this.onReady(r),
    );
  }

  private onReady(r: Readiness): void {
    try {
      if (r.status < 0) {
        this.close('poll error');
        return;
      }
      if (this.out.length) {
        this.flush();
        if (!this.out.length && this.open) this.watch();
        return;
      }
      this.drain();
    } catch (e) {
      this.log.error(`control: client ${this.who()}: unexpected ${(e as Error).stack ?? e}; dropping it`);
      this.close('internal error');
    }
  }

  private drain(): void {
    for (let reads = 0; this.open && reads < 64 && !this.out.length; reads++) {
      let n: number | null;
      try {
        n = recv(this.fd, this.buf);
      } catch (e) {
        this.close((e as Error).message);
        return;
      }
      if (n === null) return;
      if (n === 0) {
        this.close('EOF');
        return;
      }
      let bodies: Buffer[];
      try {
        bodies = this.reader.push(this.buf.subarray(0, n));
      } catch (e) {
        if (!(e instanceof FrameTooLarge)) throw e;
        this.log.warn(`control: client ${this.who()} sent ${e.message}; dropping the connection`);
        this.close('oversize frame');
        return;
      }
      for (const b of bodies) this.reply(this.handle(b));
    }
  }

  private handle(body: Buffer): Reply {
    let value: unknown;
    try {
      value = decodeBody(body);
    } catch (e) {
      return { id: null, error: { message: `the request is not one MessagePack value (${(e as Error).message})` } };
    }
    const maybeId = (value as { id?: unknown } | null)?.id;
    const id: RequestId = typeof maybeId === 'number' || typeof maybeId === 'string' ? maybeId : null;
    const env = envelope.safeParse(value);
    if (!env.success) {
      const i = env.error.issues[0];
      return { id, error: { message: i.message, ...(i.path.length ? { field: i.path.join('.') } : {}) } };
    }
    const req: Request = env.data;
    try {
      return { id, result: this.handler(req, this.peer) ?? null };
    } catch (e) {
      if (e instanceof ControlError)
        return { id, error: { message: e.message, ...(e.field ? { field: e.field } : {}) } };
      this.log.error(`control: ${req.method}: unexpected ${(e as Error).stack ?? e}`);
      return { id, error: { message: `internal error: ${(e as Error).message}` } };
    }
  }

  private reply(r: Reply): void {
    let frame: Buffer;
    try {
      frame = encodeFrame(r);
    } catch (e) {
      frame = encodeFrame({ id: r.id, error: { message: `the reply cannot be encoded: ${(e as Error).message}` } });
    }
    this.out.push(frame);
    this.queued += frame.length;
    if (this.queued > MAX_QUEUED) {
      this.close('the client does not read its replies');
      return;
    }
    this.flush();
    if (this.out.length && this.open) this.watch();
  }

  private flush(): void {
    while (this.open && this.out.length) {
      let n: number | null;
      try {
        n = send(this.fd, this.out[0]);
      } catch (e) {
        this.close((e as Error).message);
        return;
      }
      if (n === null) return;
      this.queued -= n;
      if (n === this.out[0].length) this.out.shift();
      else this.out[0] = this.out[0].subarray(n);
    }
  }
}

export interface ControlListenOptions {
  mode: number;
  /** Group of the socket file (members may use the control socket), or null. */
  gid: number | null;
}

export class ControlServer {
  private watcher: FdWatcher | null;
  private readonly clients = new Set<ControlConnection>();
  private open = true;
  /** Clients turned away by the allow-list (metrics). */
  refused = 0;

  private constructor(
    private readonly fd: number,
    /** The socket file this server created (removed on close), or null for an inherited socket. */
    readonly path: string | null,
    private readonly handler: RequestHandler,
    private readonly log: Logger,
    /** Who may send requests (vhost-user/peer.ts), checked on accept before anything is read; null: anyone. */
    private readonly peers: PeerRule | null,
  ) {
    this.watcher = new FdWatcher(fd, { readable: true }, (r) => this.onReady(r));
  }

  /** Listen on `path` (a stale socket file is replaced; a live one is refused). */
  static listen(
    path: string,
    opts: ControlListenOptions,
    handler: RequestHandler,
    log: Logger,
    peers: PeerRule | null = null,
  ): ControlServer {
    removeStaleSocket(path, log);
    const fd = unixListen(path, { mode: opts.mode, gid: opts.gid, backlog: 16 });
    try {
      const s = new ControlServer(fd, path, handler, log, peers);
      log.info(
        `control socket ${path} (mode ` +
          `${opts.mode.toString(8).padStart(4, '0')}${opts.gid !== null ? `, group ${opts.gid}` : ''})`,
      );
      return s;
    } catch (e) {
      closeQuiet(fd);
      unlink(path);
      throw e;
    }
  }

  /** Serve on an inherited listening socket (systemd, LISTEN_FDNAMES `control`); the server owns it. */
  static fromFd(fd: number, handler: RequestHandler, log: Logger, peers: PeerRule | null = null): ControlServer {
    const type = fstat(fd).type;
    if (type !== 'socket') throw new Error(`control fd ${fd} is not a socket (it is a ${type})`);
    setNonBlocking(fd);
    log.info(`control socket on inherited fd ${fd}`);
    return new ControlServer(fd, null, handler, log, peers);
  }

  /** Connected clients (tests). */
  get clientCount(): number {
    return this.clients.size;
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    for (const c of [...this.clients]) c.close('daemon stopping');
    this.watcher?.close();
    this.watcher = null;
    closeFd(this.fd);
    if (this.path) unlink(this.path);
  }

  private onReady(r: Readiness): void {
    try {
      if (r.status < 0) {
        this.log.error(`control socket: poll error (libuv status ${r.status})`);
        return;
      }
      for (let fd = accept(this.fd); fd !== null; fd = accept(this.fd)) {
        let peer: PeerCred | null = null;
        try {
          peer = peerCred(fd);
        } catch {
          // not a unix socket peer with credentials: served without them, unless there is a rule
        }
        const why = this.peers ? peerRefusal(peer, this.peers) : null;
        if (why !== null) {
          closeQuiet(fd);
          this.refused++;
          this.log.warn(`control: refused ${describePeer(peer)}: ${why}; closed before any request was read`);
          continue;
        }
        const c = new ControlConnection(fd, peer, this.handler, this.log, (x) => this.clients.delete(x));
        this.clients.add(c);
      }
    } catch (e) {
      this.log.error(`control socket: accepting a client: ${(e as Error).message}`);
    }
  }
}
