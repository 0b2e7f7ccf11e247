/**
 * Sockets: AF_UNIX stream sockets with SCM_RIGHTS fd passing (the vhost-user transport), and the
 * AF_PACKET sockets that lab tests use to see frames on the host side of a tap.
 *
 * All sockets are created SOCK_CLOEXEC; stream sockets SOCK_NONBLOCK, so that reads happen only
 * when poll.ts reports readiness and never block Node's event loop.
 */
import { addressOf, C, errno, raw } from './libc.js';
import { check, E, lastError, SysError } from './errors.js';
import { chmod, chown, closeAll, closeQuiet } from './fd.js';

/** struct msghdr (LP64), struct cmsghdr and struct iovec offsets; layout-tested against C rules (test/c-layouts.ts). */
export const MSGHDR = {
  size: 56,
  name: 0,
  namelen: 8,
  iov: 16,
  iovlen: 24,
  control: 32,
  controllen: 40,
  flags: 48,
} as const;
export const CMSGHDR = { size: 16, len: 0, level: 8, type: 12 } as const;
const IOVEC = { size: 16, base: 0, len: 8 } as const;
const SOCKADDR_UN_SIZE = 110; // sa_family_t sun_family; char sun_path[108]
/** The longest AF_UNIX socket path in bytes: sun_path is 108 bytes including its terminating NUL (unix(7)). */
export const SUN_PATH_MAX = 107;

const align8 = (n: number): number => (n + 7) & ~7;
/** CMSG_LEN(n): header plus n data bytes. */
export const cmsgLen = (n: number): number => CMSGHDR.size + n;
/** CMSG_SPACE(n): header plus n data bytes, padded to the 8-byte alignment of the next header. */
export const cmsgSpace = (n: number): number => CMSGHDR.size + align8(n);

/** The most fds one message may carry here; vhost-user sends at most 8 (one per memory region). */
export const MAX_FDS = 32;

function sockaddrUn(path: string): Buffer {
  const b = Buffer.alloc(SOCKADDR_UN_SIZE);
  if (Buffer.byteLength(path) > SUN_PATH_MAX)
    throw new SysError(`bind ${path} (path longer than ${SUN_PATH_MAX} bytes)`, E.ENAMETOOLONG);
  b.writeUInt16LE(C.AF_UNIX, 0);
  b.write(path, 2, 'utf8');
  return b;
}

/** socket(2), always SOCK_CLOEXEC. */
export function socket(domain: number, type: number, protocol = 0): number {
  return check(raw.socket(domain, type | C.SOCK_CLOEXEC, protocol), 'socket');
}

/** Options of {@link unixListen}. */
export interface ListenOptions {
  /** File mode of the socket; default 0600. */
  mode?: number;
  /** Owner and group of the socket file (null or absent: this process's). */
  uid?: number | null;
  gid?: number | null;
  backlog?: number;
}

/**
 * A listening AF_UNIX stream socket at `path`, its file given `mode` (and owner and group) before
 * listen() so that no peer can connect through looser permissions. The caller removes stale files first.
 */
export function unixListen(path: string, opts: ListenOptions = {}): number {
  const fd = socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK);
  try {
    check(raw.bind(fd, sockaddrUn(path), SOCKADDR_UN_SIZE), `bind ${path}`);
    if ((opts.uid ?? null) !== null || (opts.gid ?? null) !== null) chown(path, opts.uid ?? null, opts.gid ?? null);
    chmod(path, opts.mode ?? 0o600);
    check(raw.listen(fd, opts.backlog ?? 4), `listen ${path}`);
    return fd;
  } catch (e) {
    closeQuiet(fd);
    throw e;
  }
}

/** Connect to an AF_UNIX stream socket; the returned fd is non-blocking. ENOENT/ECONNREFUSED throw SysError. */
export function unixConnect(path: string): number {
  const fd = socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK);
  if (raw.connect(fd, sockaddrUn(path), SOCKADDR_UN_SIZE) === -1) {
    const e = errno();
    closeQuiet(fd);
    throw new SysError(`connect ${path}`, e);
  }
  return fd;
}

/** accept4(2) with SOCK_NONBLOCK|SOCK_CLOEXEC; null when no connection is pending. */
export function accept(listenFd: number): number | null {
  const fd = raw.accept4(listenFd, null, null, C.SOCK_NONBLOCK | C.SOCK_CLOEXEC);
  if (fd >= 0) return fd;
  const e = errno();
  if (e === E.EAGAIN || e === E.EINTR) return null;
  throw new SysError('accept4', e);
}

/** A connected pair of non-blocking AF_UNIX stream sockets. */
export function socketPair(): [number, number] {
  const sv = new Int32Array(2);
  check(raw.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, 0, sv), 'socketpair');
  return [sv[0], sv[1]];
}

/**
 * recvmsg dropped fds because the control buffer was too small (MSG_CTRUNC); the fds that did arrive
 * were closed. The `n` data bytes that came with them are in MsgIo.data (so the caller can still name
 * the message they belong to).
 */
export class ControlTruncatedError extends Error {
  constructor(readonly n = 0) {
    super('recvmsg: MSG_CTRUNC: more fds arrived than the control buffer holds (the ones received were closed)');
    this.name = 'ControlTruncatedError';
  }
}

/** What one recvmsg returned: `n` data bytes (0 = the peer closed), and the fds that came with them. */
export interface Received {
  n: number;
  fds: number[];
}

/**
 * sendmsg/recvmsg with SCM_RIGHTS over preallocated buffers. The msghdr holds raw addresses of
 * `iov`, `data` and `ctrl`; this object keeps those Buffers referenced (a raw address does not keep
 * a Buffer alive, and Node Buffers never move).
 */
export class MsgIo {
  readonly data: Buffer;
  private readonly ctrl: Buffer;
  private readonly iov = Buffer.alloc(IOVEC.size);
  private readonly msg = Buffer.alloc(MSGHDR.size);

  constructor(dataSize: number, maxFds = MAX_FDS) {
    this.data = Buffer.alloc(dataSize);
    this.ctrl = Buffer.alloc(cmsgSpace(4 * maxFds));
    this.msg.writeBigUInt64LE(addressOf(this.iov), MSGHDR.iov);
    this.msg.writeBigUInt64LE(1n, MSGHDR.iovlen);
  }

  private prepare(len: number, ctrlLen: number): void {
    this.iov.writeBigUInt64LE(addressOf(this.data), IOVEC.base);
    this.iov.writeBigUInt64LE(BigInt(len), IOVEC.len);
    this.msg.writeBigUInt64LE(ctrlLen ? addressOf(this.ctrl) : 0n, MSGHDR.control);
    this.msg.writeBigUInt64LE(BigInt(ctrlLen), MSGHDR.controllen);
    this.msg.writeInt32LE(0, MSGHDR.flags);
  }

  /**
   * recvmsg(2) of at most `len` bytes into `data`, with MSG_CMSG_CLOEXEC so received fds never leak
   * into children. Returns null when nothing is ready (EAGAIN), `{n: 0}` at EOF (ECONNRESET counts as EOF).
   * Throws ControlTruncatedError (after closing what arrived) if fds were dropped.
   */
  recv(fd: number, len = this.data.length): Received | null {
    if (len > this.data.length) throw new RangeError(`MsgIo.recv: ${len} > buffer ${this.data.length}`);
    this.prepare(len, this.ctrl.length);
    const n = raw.recvmsg(fd, this.msg, C.MSG_CMSG_CLOEXEC | C.MSG_DONTWAIT);
    if (n < 0) {
      const e = errno();
      if (e === E.EAGAIN || e === E.EINTR) return null;
      if (e === E.ECONNRESET) return { n: 0, fds: [] };
      throw new SysError('recvmsg', e);
    }
    const fds: number[] = [];
    const clen = Number(this.msg.readBigUInt64LE(MSGHDR.controllen));
    for (let off = 0; off + CMSGHDR.size <= clen; ) {
      const cl = Number(this.ctrl.readBigUInt64LE(off + CMSGHDR.len));
      if (cl < CMSGHDR.size || off + cl > clen) break;
      if (
        this.ctrl.readInt32LE(off + CMSGHDR.level) === C.SOL_SOCKET &&
        this.ctrl.readInt32LE(off + CMSGHDR.type) === C.SCM_RIGHTS
      ) {
        for (let p = off + CMSGHDR.size; p + 4 <= off + cl; p += 4) fds.push(this.ctrl.readInt32LE(p));
      }
      off += align8(cl);
    }
    if (this.msg.readInt32LE(MSGHDR.flags) & C.MSG_CTRUNC) {
      closeAll(fds);
      throw new ControlTruncatedError(n);
    }
    return { n, fds };
  }

  /** sendmsg(2) of `payload` with `fds` attached (MSG_NOSIGNAL: a gone peer is EPIPE, not SIGPIPE). Null on EAGAIN. */
  send(fd: number, payload: Buffer, fds: readonly number[] = []): number | null {
    if (payload.length > this.data.length)
      throw new RangeError(`MsgIo.send: ${payload.length} > buffer ${this.data.length}`);
    if (4 * fds.length > this.ctrl.length - CMSGHDR.size)
      throw new RangeError(`MsgIo.send: ${fds.length} fds is too many`);
    payload.copy(this.data);
    let ctrlLen = 0;
    if (fds.length) {
      ctrlLen = cmsgSpace(4 * fds.length);
      this.ctrl.fill(0, 0, ctrlLen);
      this.ctrl.writeBigUInt64LE(BigInt(cmsgLen(4 * fds.length)), CMSGHDR.len);
      this.ctrl.writeInt32LE(C.SOL_SOCKET, CMSGHDR.level);
      this.ctrl.writeInt32LE(C.SCM_RIGHTS, CMSGHDR.type);
      for (const [i, f] of fds.entries()) this.ctrl.writeInt32LE(f, CMSGHDR.size + 4 * i);
    }
    this.prepare(payload.length, ctrlLen);
    const n = raw.sendmsg(fd, this.msg, C.MSG_NOSIGNAL | C.MSG_DONTWAIT);
    if (n >= 0) return n;
    const e = errno();
    if (e === E.EAGAIN) return null;
    throw new SysError('sendmsg', e);
  }
}

/** if_nametoindex(3); throws ENODEV-style SysError naming the interface. */
export function ifNameToIndex(name: string): number {
  const i = raw.if_nametoindex(name);
  if (i === 0) throw lastError(`if_nametoindex ${name}`);
  return i;
}

const ETH_P_ALL_BE = 0x0300; // htons(ETH_P_ALL = 0x0003)

/**
 * An AF_PACKET raw socket bound to one interface, seeing every frame it sends and receives
 * (the bridge's packet-socket back-end, vhost-kernel/packet.ts; lab tests read the host side of a tap with it).
 */
export function packetSocket(ifname: string): number {
  const fd = socket(C.AF_PACKET, C.SOCK_RAW | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, ETH_P_ALL_BE);
  try {
    const sll = Buffer.alloc(20); // struct sockaddr_ll
    sll.writeUInt16LE(C.AF_PACKET, 0);
    sll.writeUInt16LE(ETH_P_ALL_BE, 2);
    sll.writeInt32LE(ifNameToIndex(ifname), 4);
    check(raw.bind(fd, sll, sll.length), `bind AF_PACKET ${ifname}`);
    return fd;
  } catch (e) {
    closeQuiet(fd);
    throw e;
  }
}

const SOL_PACKET = 263;
const PACKET_ADD_MEMBERSHIP = 1;
const PACKET_MR_PROMISC = 1;

/**
 * Put the interface a packet socket is bound to in promiscuous mode for as long as the socket is
 * open (packet(7) PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC: the kernel counts it and drops it at
 * close, unlike `ip link set promisc on`). struct packet_mreq {int mr_ifindex; unsigned short
 * mr_type, mr_alen; unsigned char mr_address[8];}: 16 bytes.
 */
export function packetPromisc(fd: number, ifname: string): void {
  const mreq = Buffer.alloc(16);
  mreq.writeInt32LE(ifNameToIndex(ifname), 0);
  mreq.writeUInt16LE(PACKET_MR_PROMISC, 4);
  check(raw.setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq, mreq.length), `PACKET_ADD_MEMBERSHIP ${ifname}`);
}

/** recv(2) on a non-blocking socket: byte count, or null on EAGAIN. */
export function recv(fd: number, buf: Buffer, flags = 0): number | null {
  const n = raw.recv(fd, buf, buf.length, flags | C.MSG_DONTWAIT);
  if (n >= 0) return n;
  const e = errno();
  if (e === E.EAGAIN) return null;
  throw new SysError('recv', e);
}

/** send(2) with MSG_NOSIGNAL: byte count, or null on EAGAIN. */
export function send(fd: number, buf: Buffer, flags = 0): number | null {
  const n = raw.send(fd, buf, buf.length, flags | C.MSG_NOSIGNAL | C.MSG_DONTWAIT);
  if (n >= 0) return n;
  const e = errno();
  if (e === E.EAGAIN) return null;
  throw new SysError('send', e);
}

/** The credentials of a unix socket's peer (SO_PEERCRED: as they were at connect() or listen(), unix(7)). */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** getsockopt(SO_PEERCRED): struct ucred { pid_t pid; uid_t uid; gid_t gid; }. */
export function peerCred(fd: number): PeerCred {
  const b = Buffer.alloc(12);
  const len = new Uint32Array([12]);
  check(raw.getsockopt(fd, C.SOL_SOCKET, C.SO_PEERCRED, b, len), 'getsockopt(SO_PEERCRED)');
  return { pid: b.readInt32LE(0), uid: b.readUInt32LE(4), gid: b.readUInt32LE(8) };
}

/**
 * Whether a socket is listening (getsockopt(SO_ACCEPTCONN), socket(7)): an inherited socket is
 * either one to accept() front-ends on or one already connected to a front-end.
 */
export function isListening(fd: number): boolean {
  const b = Buffer.alloc(4);
  const len = new Uint32Array([4]);
  check(raw.getsockopt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN, b, len), 'getsockopt(SO_ACCEPTCONN)');
  return b.readInt32LE(0) !== 0;
}

/** setsockopt(2) with an int value. */
export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value);
  check(raw.setsockopt(fd, level, name, b, 4), 'setsockopt');
}
