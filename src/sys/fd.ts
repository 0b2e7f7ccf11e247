/** File descriptors: open/close/read/write, fcntl, eventfd, memfd, fstat. */
import { C, errno, raw } from './libc.js';
import { check, E, lastError, SysError } from './errors.js';

/** open(2). O_CLOEXEC is always added: no fd of the bridge may leak into a child process. */
export function open(path: string, flags: number, mode = 0): number {
  return check(raw.open(path, flags | C.O_CLOEXEC, mode), `open ${path}`);
}

/** close(2); throws SysError (EBADF on a closed fd: a double close is a bug worth seeing). */
export function close(fd: number): void {
  check(raw.close(fd), 'close');
}

/** close(2) for cleanup paths: never throws, returns false if the fd was not open. */
export function closeQuiet(fd: number): boolean {
  return fd >= 0 && raw.close(fd) === 0;
}

/** Close every fd in the list (cleanup paths: errors ignored). */
export function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) closeQuiet(fd);
}

/** read(2). Returns the byte count (0 = EOF), or null when a non-blocking fd has nothing (EAGAIN). */
export function read(fd: number, buf: Buffer | ArrayBufferView, len = buf.byteLength): number | null {
  const n = raw.read(fd, buf, len);
  if (n >= 0) return n;
  const e = errno();
  if (e === E.EAGAIN) return null;
  throw new SysError('read', e);
}

/** write(2). Returns the byte count, or null when a non-blocking fd is full (EAGAIN). */
export function write(fd: number, buf: Buffer | ArrayBufferView, len = buf.byteLength): number | null {
  const n = raw.write(fd, buf, len);
  if (n >= 0) return n;
  const e = errno();
  if (e === E.EAGAIN) return null;
  throw new SysError('write', e);
}

/** fcntl(2) with an integer argument (F_GETFL, F_SETFL, F_GETFD, F_SETFD, F_DUPFD_CLOEXEC). */
export function fcntl(fd: number, cmd: number, arg = 0): number {
  return check(raw.fcntl(fd, cmd, arg), 'fcntl');
}

/** Set or clear O_NONBLOCK. */
export function setNonBlocking(fd: number, on = true): void {
  const fl = fcntl(fd, C.F_GETFL);
  fcntl(fd, C.F_SETFL, on ? fl | C.O_NONBLOCK : fl & ~C.O_NONBLOCK);
}

/** True if `fd` is an open descriptor of this process. */
export function isOpen(fd: number): boolean {
  return fd >= 0 && raw.fcntl(fd, C.F_GETFD, 0) !== -1;
}

/** Duplicate with O_CLOEXEC (used to adopt fds inherited from a manager without sharing their number). */
export function dup(fd: number): number {
  return check(raw.fcntl(fd, C.F_DUPFD_CLOEXEC, 0), 'fcntl(F_DUPFD_CLOEXEC)');
}

/** pipe2(2) with O_CLOEXEC: [read end, write end]. */
export function pipe(flags = 0): [number, number] {
  const fds = new Int32Array(2);
  check(raw.pipe2(fds, flags | C.O_CLOEXEC), 'pipe2');
  return [fds[0], fds[1]];
}

/** eventfd(2), always O_CLOEXEC. */
export function eventfd(initval = 0, flags: number = C.EFD_NONBLOCK): number {
  return check(raw.eventfd(initval, flags | C.EFD_CLOEXEC), 'eventfd');
}

/** Add `value` to an eventfd counter. */
export function eventfdWrite(fd: number, value = 1n): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  if (raw.write(fd, b, 8) !== 8) throw lastError('write(eventfd)');
}

/** Read and reset an eventfd counter; null if it is zero (non-blocking eventfd). */
export function eventfdRead(fd: number): bigint | null {
  const b = Buffer.alloc(8);
  return read(fd, b, 8) === null ? null : b.readBigUInt64LE();
}

/** memfd_create(2), always MFD_CLOEXEC. */
export function memfdCreate(name: string, flags = 0): number {
  return check(raw.memfd_create(name, flags | C.MFD_CLOEXEC), 'memfd_create');
}

/** ftruncate(2). */
export function ftruncate(fd: number, size: bigint | number): void {
  check(raw.ftruncate(fd, BigInt(size)), 'ftruncate');
}

/** The fields of struct stat the bridge needs. */
export interface Stat {
  /** st_size in bytes. */
  size: bigint;
  /** st_mode (file type bits and permissions). */
  mode: number;
  /** File type: the S_IFMT bits of st_mode. */
  type: 'file' | 'socket' | 'char' | 'fifo' | 'other';
  /** st_dev and st_ino: two fds with equal (dev, ino) refer to the same file (e.g. the same memfd). */
  dev: bigint;
  ino: bigint;
}

/**
 * struct stat offsets. x86-64: st_dev 0, st_ino 8, st_nlink 16, st_mode 24, st_size 48, size 144.
 * aarch64 (asm-generic): st_dev 0, st_ino 8, st_mode 16, st_size 48, size 128.
 */
const STAT = process.arch === 'arm64' ? { size: 128, mode: 16, stSize: 48 } : { size: 144, mode: 24, stSize: 48 };

/** fstat(2): size, mode and type of an open fd. */
export function fstat(fd: number): Stat {
  const b = Buffer.alloc(STAT.size);
  check(raw.fstat(fd, b), 'fstat');
  const mode = b.readUInt32LE(STAT.mode);
  const fmt = mode & C.S_IFMT;
  const type =
    fmt === C.S_IFREG
      ? 'file'
      : fmt === C.S_IFSOCK
        ? 'socket'
        : fmt === C.S_IFCHR
          ? 'char'
          : fmt === C.S_IFIFO
            ? 'fifo'
            : 'other';
  return { size: b.readBigInt64LE(STAT.stSize), mode, type, dev: b.readBigUInt64LE(0), ino: b.readBigUInt64LE(8) };
}

/** unlink(2); false if the path did not exist. */
export function unlink(path: string): boolean {
  if (raw.unlink(path) === 0) return true;
  const e = errno();
  if (e === E.ENOENT) return false;
  throw new SysError(`unlink ${path}`, e);
}

/** chmod(2). */
export function chmod(path: string, mode: number): void {
  check(raw.chmod(path, mode), `chmod ${path}`);
}

/** chown(2); -1 (or null) leaves the owner or the group as it is. */
export function chown(path: string, uid: number | null, gid: number | null): void {
  check(raw.chown(path, uid ?? -1, gid ?? -1), `chown ${path}`);
}
