/**
 * A scripted front-end for tests: a real AF_UNIX connection that sends built messages with real
 * fds (SCM_RIGHTS) and reads replies, EOF, or nothing, the way QEMU's vhost_user_write/_read do.
 */
import * as sys from '../../src/sys/index.js';
import type { Built } from './builder.js';

/** Resolve when `fd` is readable or hung up; reject after `ms`. The watcher is always closed. */
export function readable(fd: number, ms = 2000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      w.close();
      reject(new Error(`fd ${fd}: nothing to read after ${ms} ms`));
    }, ms);
    const w = new sys.FdWatcher(fd, { readable: true, disconnect: true }, () => {
      clearTimeout(timer);
      w.close();
      resolve();
    });
  });
}

/** Wait for `emitter` to emit `event` (with a timeout), resolving with its first argument. */
export function once<T = unknown>(
  emitter: {
    once(e: string, f: (...a: never[]) => void): unknown;
    off(e: string, f: (...a: never[]) => void): unknown;
  },
  event: string,
  ms = 2000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const f = (...a: unknown[]) => {
      clearTimeout(timer);
      resolve(a[0] as T);
    };
    const timer = setTimeout(() => {
      emitter.off(event, f);
      reject(new Error(`no '${event}' within ${ms} ms`));
    }, ms);
    emitter.once(event, f);
  });
}

/** fds to send with a message: eventfds by default, or memfds of given sizes. */
export function eventfds(n: number): number[] {
  return Array.from({ length: n }, () => sys.eventfd());
}

export function memfd(size: bigint | number, name = 'vb-guest'): number {
  const fd = sys.memfdCreate(name);
  sys.ftruncate(fd, size);
  return fd;
}

export class TestFrontEnd {
  private readonly io = new sys.MsgIo(8192, 32);
  private open = true;

  private constructor(readonly fd: number) {}

  static connect(path: string): TestFrontEnd {
    return new TestFrontEnd(sys.unixConnect(path));
  }

  /** Wrap a connected socket (e.g. one end of a socketpair). */
  static over(fd: number): TestFrontEnd {
    return new TestFrontEnd(fd);
  }

  /**
   * Send a message in ONE sendmsg, with fds: the given ones, or as many fresh eventfds as the
   * message says. Our copies of the fds are closed afterwards (the peer has its own).
   */
  send(b: Built | Buffer, fds?: number[]): void {
    const bytes = Buffer.isBuffer(b) ? b : b.bytes;
    const list = fds ?? (Buffer.isBuffer(b) ? [] : eventfds(b.fds));
    try {
      const n = this.io.send(this.fd, bytes, list);
      if (n !== bytes.length) throw new Error(`sent ${n} of ${bytes.length} bytes`);
    } finally {
      sys.closeAll(list);
    }
  }

  /** Read one reply (header, then its payload), or 'eof' if the back end hung up. */
  async reply(ms = 2000): Promise<Buffer | 'eof'> {
    const head = await this.readExactly(12, ms);
    if (head === 'eof') return 'eof';
    const size = head.readUInt32LE(8);
    if (size === 0) return head;
    const body = await this.readExactly(size, ms);
    if (body === 'eof') throw new Error('EOF in the middle of a reply');
    return Buffer.concat([head, body]);
  }

  /** Nothing arrives within `ms` (a request that must not be answered). */
  async silent(ms = 50): Promise<boolean> {
    try {
      await readable(this.fd, ms);
      return false;
    } catch {
      return true;
    }
  }

  /** Send, then read the reply. */
  async ask(b: Built, fds?: number[]): Promise<Buffer | 'eof'> {
    this.send(b, fds);
    return this.reply();
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    sys.close(this.fd);
  }

  private async readExactly(n: number, ms: number): Promise<Buffer | 'eof'> {
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      const r = this.io.recv(this.fd, n - have);
      if (r === null) {
        await readable(this.fd, ms);
        continue;
      }
      sys.closeAll(r.fds);
      if (r.n === 0) {
        if (have === 0) return 'eof';
        throw new Error(`EOF after ${have} of ${n} bytes`);
      }
      parts.push(Buffer.from(this.io.data.subarray(0, r.n)));
      have += r.n;
    }
    return Buffer.concat(parts);
  }
}
