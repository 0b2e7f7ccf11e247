/**
 * Readiness of raw fds inside Node's event loop, through koffi.node.poll (a libuv uv_poll_t: it
 * reports readiness and consumes nothing; level-triggered).
 *
 * libuv aborts the process (uncatchable) on three misuses, which this wrapper prevents:
 * a second poll handle on the same fd, a poll on a bad fd or a regular file, and closing the fd
 * while its handle is active. Hence: one FdWatcher per fd (checked), the fd validated first, and
 * `close()` of the watcher always before close(2) of the fd. A handle that is garbage-collected
 * stops silently, so FdWatcher keeps it referenced until close().
 */
import koffi from 'koffi';
import { fstat, isOpen } from './fd.js';
import { E, SysError } from './errors.js';

/** What a readiness callback learns. `status` < 0 is a libuv error (the fd went bad). */
export interface Readiness {
  status: number;
  readable: boolean;
  writable: boolean;
  disconnect: boolean;
}

const active = new Map<number, FdWatcher>();

/** A persistent readiness watch on one fd; call close() before closing the fd. */
export class FdWatcher {
  private handle: ReturnType<typeof koffi.node.poll> | null;

  constructor(
    readonly fd: number,
    events: { readable?: boolean; writable?: boolean; disconnect?: boolean },
    onReady: (r: Readiness) => void,
  ) {
    if (active.has(fd)) throw new Error(`FdWatcher: fd ${fd} is already watched (one poll handle per fd)`);
    if (!isOpen(fd)) throw new SysError(`FdWatcher fd ${fd}`, E.EBADF);
    if (fstat(fd).type === 'file') throw new Error(`FdWatcher: fd ${fd} is a regular file, which cannot be polled`);
    // The runtime callback is (status, events); koffi's typings declare only (events).
    const cb = (status: number, ev?: { readable: boolean; writable: boolean; disconnect: boolean }): void =>
      onReady({ status, readable: !!ev?.readable, writable: !!ev?.writable, disconnect: !!ev?.disconnect });
    this.handle = koffi.node.poll(
      fd,
      events,
      cb as unknown as Parameters<typeof koffi.node.poll>[1] & ((ev: never) => void),
    );
    active.set(fd, this);
  }

  /** Do not keep the process alive for this watch alone. */
  unref(): this {
    this.handle?.unref();
    return this;
  }

  /** Stop watching. Idempotent. Must happen before close(2) of the fd. */
  close(): void {
    if (!this.handle) return;
    this.handle.close();
    this.handle = null;
    if (active.get(this.fd) === this) active.delete(this.fd);
  }

  get closed(): boolean {
    return this.handle === null;
  }
}

/** Resolve once `fd` is readable (or hung up). */
export function waitReadable(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = new FdWatcher(fd, { readable: true, disconnect: true }, (r) => {
      w.close();
      if (r.status < 0) reject(new Error(`poll fd ${fd}: libuv status ${r.status}`));
      else resolve();
    });
  });
}

/** Number of fds watched right now (tests assert it returns to zero). */
export const watchedCount = (): number => active.size;
