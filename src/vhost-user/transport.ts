/**
 * How the bridge meets its front-end (vhost-user.rst "Introduction": "The front-end and back-end
 * can be either a client (i.e. connecting) or server (listening) in the socket communication"):
 *
 * - server: `VhostUserServer.listen(path)` binds a socket (mode 0600 unless told otherwise) and
 *   waits for the VMM to connect (QEMU `-chardev socket,path=...` without server=on).
 * - inherited fd: `VhostUserServer.fromFd(n)`, for vhost-user.rst "Backend program conventions"
 *   `--fd=FDNUM` and systemd socket activation. A listening socket is served like the server's; a
 *   socket already connected to a front-end (SO_ACCEPTCONN is 0: passt's `--fd`, systemd's
 *   Accept=yes) is served alone, and the server is `finished` when that front-end leaves.
 * - client: `VhostUserClient.connect(path)` connects to a VMM that listens (QEMU
 *   `server=on`), retrying with backoff until the socket appears, and again after the front-end
 *   goes away.
 *
 * One front-end at a time: a vhost-user back end serves one device, and two front-ends driving the
 * same rings would corrupt each other. A second one is accepted and closed at once, with a log line.
 *
 * With an allow-list (peer.ts), each new connection's SO_PEERCRED is checked first, before the
 * second-front-end rule and before any byte is read: a peer outside it is closed, logged and
 * reported as `refused` (docs/operating.md "Who may connect").
 */
import { EventEmitter } from 'node:events';
import { lstatSync, type Stats } from 'node:fs';
import { log as defaultLog, type Logger } from '../log.js';
import {
  accept,
  close as closeFd,
  closeQuiet,
  FdWatcher,
  fstat,
  isListening,
  setNonBlocking,
  SysError,
  unixConnect,
  unixListen,
  unlink,
  type PeerCred,
  peerCred,
  type Readiness,
} from '../sys/index.js';
import { Connection } from './connection.js';
import type { VhostUserBackend } from './handler.js';
import { describePeer, describeRule, type PeerRule, peerRefusal } from './peer.js';
import type { TraceWriter } from './trace.js';

interface TransportOptions {
  log?: Logger;
  /** Record every connection's messages and replies. */
  trace?: TraceWriter;
  /** Who may be the front-end (peer.ts); absent: whoever can open the socket. */
  peers?: PeerRule | null;
}

interface ServerOptions extends TransportOptions {
  /** File mode of the socket; default 0600 (only the VMM's user may connect). */
  mode?: number;
  /** Owner and group of the socket file (default: this process's), set before listen() like the mode. */
  uid?: number | null;
  gid?: number | null;
  backlog?: number;
}

/** A peer turned away by the transport's {@link PeerRule}, before any message was read. */
export interface PeerRefusal {
  /** Its credentials, or null if SO_PEERCRED failed. */
  peer: PeerCred | null;
  /** The rule it failed (peer.ts describeRule). */
  rule: string;
}

/**
 * Events of both transports: `connection` (Connection), `disconnect` (reason: string),
 * `refused` (a peer outside the allow-list was turned away), and for the server `rejected` (a
 * second front-end was turned away) and `finished` (it will serve no other front-end: the one of
 * an inherited connected socket left).
 */
interface TransportEvents {
  connection: [Connection];
  disconnect: [string];
  refused: [PeerRefusal];
  rejected: [];
  finished: [];
}

/**
 * Check a just-connected socket's peer against `rule` before anything is read from it. A refused
 * peer gets one log line (the caller's logger names the port), its fd is closed, and `emit` is told.
 * Returns true if the peer is let in.
 */
function admitPeer(
  fd: number,
  rule: PeerRule | null | undefined,
  log: Logger,
  emit: (r: PeerRefusal) => void,
  who: string,
): boolean {
  if (!rule) return true;
  let peer: PeerCred | null = null;
  try {
    peer = peerCred(fd);
  } catch {
    // handled as a peer without credentials: refused
  }
  const why = peerRefusal(peer, rule);
  if (why === null) return true;
  closeQuiet(fd);
  log.warn(`refused ${who} ${describePeer(peer)}: ${why}; closed before any message was read`);
  emit({ peer, rule: describeRule(rule) });
  return false;
}

/** A listening back end: accepts one front-end at a time. */
export class VhostUserServer extends EventEmitter<TransportEvents> {
  private watcher: FdWatcher | null;
  private conn: Connection | null = null;
  private readonly log: Logger;
  private open = true;

  private constructor(
    /** The listening socket, or null when serving one inherited connected socket. */
    private readonly listenFd: number | null,
    private readonly backend: VhostUserBackend,
    private readonly opts: TransportOptions,
    /** The socket path this server created (removed on close), if any. */
    readonly path: string | null,
  ) {
    super();
    this.log = opts.log ?? defaultLog;
    this.watcher = listenFd === null ? null : new FdWatcher(listenFd, { readable: true }, (r) => this.onReady(r));
  }

  /**
   * Listen on `path`. A stale socket file (nobody accepts: connect() gets ECONNREFUSED) is removed;
   * if another process is listening there, or the path is not a socket, this throws instead of
   * taking the path away from it.
   */
  static listen(path: string, backend: VhostUserBackend, opts: ServerOptions = {}): VhostUserServer {
    const log = opts.log ?? defaultLog;
    removeStaleSocket(path, log);
    const fd = unixListen(path, { mode: opts.mode ?? 0o600, uid: opts.uid, gid: opts.gid, backlog: opts.backlog });
    try {
      const server = new VhostUserServer(fd, backend, opts, path);
      log.info(`listening on ${path} (mode ${(opts.mode ?? 0o600).toString(8).padStart(4, '0')})`);
      return server;
    } catch (e) {
      closeQuiet(fd);
      unlink(path);
      throw e;
    }
  }

  /**
   * Serve on an inherited socket (`--fd N`; systemd socket activation). A listening one is served as
   * listen() would; a connected one (passt's `--fd` convention, systemd `Accept=yes`) is that one
   * front-end, admitted on the next turn of the event loop (after the caller has subscribed), and the
   * server is `finished` once it leaves. SO_ACCEPTCONN tells which, so no option has to.
   * The server owns the fd from here on and closes it on close().
   */
  static fromFd(fd: number, backend: VhostUserBackend, opts: TransportOptions = {}): VhostUserServer {
    const type = fstat(fd).type;
    if (type !== 'socket') throw new Error(`fd ${fd} is not a socket (it is a ${type})`);
    const listening = isListening(fd);
    setNonBlocking(fd);
    const log = opts.log ?? defaultLog;
    if (listening) {
      const server = new VhostUserServer(fd, backend, opts, null);
      log.info(`serving on inherited listening fd ${fd}`);
      return server;
    }
    const server = new VhostUserServer(null, backend, opts, null);
    log.info(`serving the front-end connected on inherited fd ${fd}; ending when it leaves`);
    setImmediate(() => (server.open ? server.admit(fd) : closeQuiet(fd)));
    return server;
  }

  /** True when this server serves one inherited connected front-end only (it has no listening socket). */
  get servesOne(): boolean {
    return this.listenFd === null;
  }

  /** The connected front-end, if any. */
  get connection(): Connection | null {
    return this.conn;
  }

  /** Stop: drop the front-end, stop listening, remove the socket file this server created. Idempotent. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.conn?.close('back end shutting down');
    this.watcher?.close();
    this.watcher = null;
    if (this.listenFd !== null) closeFd(this.listenFd);
    if (this.path) unlink(this.path);
  }

  private onReady(r: Readiness): void {
    try {
      if (r.status < 0) {
        this.log.error(`listening socket: poll error (libuv status ${r.status})`);
        return;
      }
      const lfd = this.listenFd;
      if (lfd === null) return;
      for (let fd = accept(lfd); fd !== null; fd = accept(lfd)) this.admit(fd);
    } catch (e) {
      this.log.error(`accepting a front-end: ${(e as Error).message}`);
    }
  }

  private admit(fd: number): void {
    if (!admitPeer(fd, this.opts.peers, this.log, (r) => this.emit('refused', r), 'a front-end')) return;
    if (this.conn) {
      this.log.warn('a second front-end connected while one is being served; closing it');
      closeQuiet(fd);
      this.emit('rejected');
      return;
    }
    this.log.info('front-end connected');
    const conn = new Connection(fd, this.backend, {
      log: this.log,
      trace: this.opts.trace,
      onClosed: (reason) => {
        if (this.conn === conn) this.conn = null;
        this.emit('disconnect', reason);
        if (this.servesOne && this.open) {
          this.open = false;
          this.emit('finished');
        }
      },
    });
    this.conn = conn;
    conn.start();
    this.emit('connection', conn);
  }
}

/** Remove `path` if it is a socket nobody listens on; throw if someone does or it is not a socket. */
export function removeStaleSocket(path: string, log: Logger): void {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  let fd: number;
  try {
    fd = unixConnect(path);
  } catch (e) {
    if (e instanceof SysError && e.code === 'ECONNREFUSED') {
      log.info(`removing stale socket ${path} (nobody is listening on it)`);
      unlink(path);
      return;
    }
    if (e instanceof SysError && e.code === 'ENOENT') return;
    throw e;
  }
  closeQuiet(fd);
  throw new Error(`another process is listening on ${path}; refusing to start`);
}

interface ClientOptions extends TransportOptions {
  /** First retry delay after a failed connect or a disconnect, in ms (default 100). */
  retryInitialMs?: number;
  /** The delay doubles up to this (default 2000). */
  retryMaxMs?: number;
  /** Connect again after the front-end goes away (default true). */
  reconnect?: boolean;
}

/** A connecting back end (the VMM listens): retries until the socket appears, reconnects after a disconnect. */
export class VhostUserClient extends EventEmitter<TransportEvents> {
  private conn: Connection | null = null;
  private timer: NodeJS.Timeout | null = null;
  private delay: number;
  private failures = 0;
  private open = true;
  private readonly log: Logger;
  private readonly initial: number;
  private readonly max: number;

  private constructor(
    readonly path: string,
    private readonly backend: VhostUserBackend,
    private readonly opts: ClientOptions,
  ) {
    super();
    this.log = opts.log ?? defaultLog;
    this.initial = opts.retryInitialMs ?? 100;
    this.max = opts.retryMaxMs ?? 2000;
    this.delay = this.initial;
  }

  /** Start connecting to `path` (first attempt right away). */
  static connect(path: string, backend: VhostUserBackend, opts: ClientOptions = {}): VhostUserClient {
    const c = new VhostUserClient(path, backend, opts);
    c.attempt();
    return c;
  }

  get connection(): Connection | null {
    return this.conn;
  }

  /** Stop retrying and drop the front-end. Idempotent. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.conn?.close('back end shutting down');
  }

  private attempt(): void {
    this.timer = null;
    if (!this.open) return;
    let fd: number;
    try {
      fd = unixConnect(this.path);
    } catch (e) {
      const code = e instanceof SysError ? e.code : String(e);
      const transient = code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN';
      const text =
        `cannot connect to ${this.path}: ${e instanceof Error ? e.message : e}; retrying in ` + `${this.delay} ms`;
      if (!transient) this.log.warn(text);
      else if (this.failures === 0) this.log.info(text);
      else this.log.debug(text);
      this.failures++;
      this.schedule();
      return;
    }
    if (!admitPeer(fd, this.opts.peers, this.log, (r) => this.emit('refused', r), `the front-end at ${this.path},`)) {
      this.failures++;
      this.schedule();
      return;
    }
    this.failures = 0;
    this.delay = this.initial;
    this.log.info(`connected to the front-end at ${this.path}`);
    const conn = new Connection(fd, this.backend, {
      log: this.log,
      trace: this.opts.trace,
      onClosed: (reason) => {
        if (this.conn === conn) this.conn = null;
        this.emit('disconnect', reason);
        if (this.open && (this.opts.reconnect ?? true)) this.schedule();
      },
    });
    this.conn = conn;
    conn.start();
    this.emit('connection', conn);
  }

  private schedule(): void {
    if (!this.open || this.timer) return;
    const wait = this.delay;
    this.delay = Math.min(this.delay * 2, this.max);
    this.timer = setTimeout(() => this.attempt(), wait);
  }
}
