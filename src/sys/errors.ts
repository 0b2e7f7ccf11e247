/** Failures of libc calls, named after the call and carrying errno (as Node's ErrnoException does). */
import { getSystemErrorName } from 'node:util';
import { errno as liveErrno, raw } from './libc.js';

/**
 * `call: EBADF: bad file descriptor`. `call` may be more precise than the syscall, e.g. `VHOST_SET_VRING_NUM
 * (ring 1)`.
 */
export class SysError extends Error {
  /** The errno name, e.g. `EBADF` (the shape of Node's ErrnoException.code). */
  readonly code: string;
  /** The strerror text, lower-cased first letter, e.g. `bad file descriptor`. */
  readonly text: string;
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    const code = errnoName(errno);
    const s = raw.strerror(errno) ?? `errno ${errno}`;
    const text = s.charAt(0).toLowerCase() + s.slice(1);
    super(`${call}: ${code}: ${text}`);
    this.name = 'SysError';
    this.code = code;
    this.text = text;
  }
}

/**
 * THE errno table: every errno value the bridge compares or gives a hint for, by its name in
 * include/uapi/asm-generic/errno-base.h and errno.h (the same on every architecture the bridge
 * targets).
 */
export const E = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  EPIPE: 32,
  ENAMETOOLONG: 36,
  EBADFD: 77,
  ENOTSOCK: 88,
  EOPNOTSUPP: 95,
  ECONNRESET: 104,
  ECONNREFUSED: 111,
  EINPROGRESS: 115,
} as const;

/**
 * Names libuv does not give as the kernel headers do: EBADFD is unknown to it, and EOPNOTSUPP comes
 * back as ENOTSUP, while drivers/vhost returns it as -EOPNOTSUPP (the same number on Linux).
 */
const LINUX_NAMES: Record<number, string> = { [E.EBADFD]: 'EBADFD', [E.EOPNOTSUPP]: 'EOPNOTSUPP' };

/** `EBADF` for 9; libuv knows most Linux names. */
export function errnoName(errno: number): string {
  if (LINUX_NAMES[errno]) return LINUX_NAMES[errno];
  const n = getSystemErrorName(-errno);
  return n.startsWith('Unknown') ? `E${errno}` : n;
}

/**
 * Throw a SysError if `ret` is -1. errno is read here, immediately after the call returned, before
 * any other JS can run a syscall that would overwrite it.
 */
export function check(ret: number, call: string): number {
  if (ret === -1) throw new SysError(call, liveErrno());
  return ret;
}

/** The current errno as a SysError (for callers that inspect errno before deciding to throw). */
export function lastError(call: string): SysError {
  return new SysError(call, liveErrno());
}
