/**
 * Kernel-layer failures that tell the operator what to do.
 *
 * A KernelError is a SysError (same call/errno/code/text fields, so callers can still match on
 * `code`) whose message ends with a hint: `TUNSETIFF tap0: EPERM: operation not permitted:
 * creating a tap needs CAP_NET_ADMIN; ...`.
 */
import { SysError } from '../sys/index.js';

/** A SysError with advice appended to its message. */
export class KernelError extends SysError {
  constructor(
    call: string,
    errno: number,
    readonly hint: string,
  ) {
    super(call, errno);
    this.name = 'KernelError';
    this.message = `${this.message}: ${hint}`;
  }
}

/**
 * Run `fn`; if it throws a SysError whose errno has a hint, throw a KernelError with that hint
 * instead. `hints` may compute the hint lazily (e.g. reading sysfs to say why TUNSETIFF failed).
 */
export function withHints<T>(fn: () => T, hints: Partial<Record<number, string | (() => string)>>): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof SysError && !(e instanceof KernelError)) {
      const h = hints[e.errno];
      if (h !== undefined) throw new KernelError(e.call, e.errno, typeof h === 'function' ? h() : h);
    }
    throw e;
  }
}

/** What an fd of the given fstat type is, for "fd 7 is a socket, not ..." messages. */
export function fdKind(type: 'file' | 'socket' | 'char' | 'fifo' | 'other'): string {
  switch (type) {
    case 'file':
      return 'a regular file';
    case 'socket':
      return 'a socket';
    case 'char':
      return 'a character device';
    case 'fifo':
      return 'a pipe';
    default:
      return 'an anonymous file (eventfd, epoll, memfd...)';
  }
}
