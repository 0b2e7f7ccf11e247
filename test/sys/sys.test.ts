import { expect } from 'chai';
import { statSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as sys from '../../src/sys/index.js';
import { openFdCount, tempDir } from '../fdcount.js';
import { socketLayouts } from '../c-layouts.js';

describe('sys: errors', () => {
  it('maps errno to a SysError naming the call, the code and the text', () => {
    const err = (() => {
      try {
        sys.close(987654);
      } catch (e) {
        return e;
      }
    })();
    expect(err).to.be.instanceOf(sys.SysError);
    const e = err as sys.SysError;
    expect(e.code).to.equal('EBADF');
    expect(e.errno).to.equal(9);
    expect(e.call).to.equal('close');
    expect(e.message).to.equal('close: EBADF: bad file descriptor');
  });

  it('reads errno right after the call (ENOENT from open, not a later syscall)', () => {
    expect(() => sys.open('/nonexistent/vhost-bridge', sys.C.O_RDONLY)).to.throw(
      sys.SysError,
      'open /nonexistent/vhost-bridge: ENOENT: no such file or directory',
    );
  });

  it('names errnos, including ones libuv does not know', () => {
    expect(sys.errnoName(11)).to.equal('EAGAIN');
    expect(sys.errnoName(16)).to.equal('EBUSY');
    expect(sys.errnoName(95)).to.equal('EOPNOTSUPP'); // == ENOTSUP on Linux; vhost returns it as EOPNOTSUPP
    expect(sys.errnoName(77)).to.equal('EBADFD');
    expect(sys.errnoName(4000)).to.equal('E4000');
  });

  it('names the ioctl in the error', () => {
    expect(() =>
      sys.ioctlPtr(987654, sys.IOW(0xaf, 0x10, 8), Buffer.alloc(8), 'VHOST_SET_VRING_NUM (ring 1)'),
    ).to.throw(sys.SysError, 'VHOST_SET_VRING_NUM (ring 1): EBADF: bad file descriptor');
  });
});

describe('sys: ioctl numbers', () => {
  it('encodes _IO/_IOR/_IOW/_IOWR as <asm-generic/ioctl.h> does', () => {
    expect(sys.IO(0xaf, 0x01)).to.equal(0xaf01); // VHOST_SET_OWNER
    expect(sys.IOR(0xaf, 0x00, 8)).to.equal(0x8008af00); // VHOST_GET_FEATURES
    expect(sys.IOW(0xaf, 0x10, 8)).to.equal(0x4008af10); // VHOST_SET_VRING_NUM
    expect(sys.IOW(0xaf, 0x11, 40)).to.equal(0x4028af11); // VHOST_SET_VRING_ADDR
    expect(sys.IOWR(0xaf, 0x12, 8)).to.equal(0xc008af12); // VHOST_GET_VRING_BASE
    expect(sys.IOW(0x54, 0xca, 4)).to.equal(0x400454ca); // TUNSETIFF
  });
});

describe('sys: fds, eventfd, memfd, mmap', () => {
  it('eventfd counts, and reads null when empty', () => {
    const fd = sys.eventfd();
    try {
      expect(sys.eventfdRead(fd)).to.equal(null);
      sys.eventfdWrite(fd, 2n);
      sys.eventfdWrite(fd, 3n);
      expect(sys.eventfdRead(fd)).to.equal(5n);
      expect(sys.fcntl(fd, sys.C.F_GETFD) & sys.C.FD_CLOEXEC).to.equal(sys.C.FD_CLOEXEC);
    } finally {
      sys.close(fd);
    }
  });

  it('memfd: ftruncate, fstat size and type, shared mmap seen through read()', () => {
    const fd = sys.memfdCreate('vb-test');
    try {
      sys.ftruncate(fd, 3 * 4096);
      const st = sys.fstat(fd);
      expect(st.size).to.equal(3n * 4096n);
      expect(st.type).to.equal('file');
      const d = sys.dup(fd);
      expect([sys.fstat(d).dev, sys.fstat(d).ino]).to.deep.equal([st.dev, st.ino]);
      sys.close(d);
      const other = sys.memfdCreate('vb-other');
      expect(sys.fstat(other).ino).to.not.equal(st.ino);
      sys.close(other);
      const addr = sys.mmapShared(fd, 3 * 4096);
      const view = sys.memoryView(addr, 3 * 4096);
      view.write('guest bytes', 0, 'latin1');
      const b = Buffer.alloc(11);
      expect(sys.read(fd, b)).to.equal(11);
      expect(b.toString('latin1')).to.equal('guest bytes');
      sys.munmap(addr, 3 * 4096);
    } finally {
      sys.close(fd);
    }
  });

  it('mmap of a bad fd and munmap of a bad range fail with named errors', () => {
    expect(() => sys.mmapShared(987654, 4096)).to.throw(sys.SysError, 'mmap: EBADF');
    expect(() => sys.munmap(1n, 4096)).to.throw(sys.SysError, 'munmap: EINVAL');
  });

  it('dup gives a new cloexec fd to the same file; isOpen tells open from closed', () => {
    const fd = sys.eventfd();
    const d = sys.dup(fd);
    expect(d).to.not.equal(fd);
    sys.eventfdWrite(fd, 7n);
    expect(sys.eventfdRead(d)).to.equal(7n);
    sys.close(d);
    expect(sys.isOpen(d)).to.equal(false);
    expect(sys.isOpen(fd)).to.equal(true);
    sys.close(fd);
  });
});

describe('sys: struct layouts (LP64)', () => {
  it('msghdr, cmsghdr and iovec offsets match C', () => {
    const m = socketLayouts.msghdr();
    expect(m.size).to.equal(sys.MSGHDR.size).and.to.equal(56);
    expect(m.offsets).to.deep.equal({
      name: 0,
      namelen: 8,
      iov: 16,
      iovlen: 24,
      control: 32,
      controllen: 40,
      flags: 48,
    });
    for (const k of Object.keys(m.offsets)) expect(m.offsets[k], k).to.equal(sys.MSGHDR[k as keyof typeof sys.MSGHDR]);
    const c = socketLayouts.cmsghdr();
    expect(c).to.deep.equal({
      size: sys.CMSGHDR.size,
      offsets: { len: sys.CMSGHDR.len, level: sys.CMSGHDR.level, type: sys.CMSGHDR.type },
    });
    const v = socketLayouts.iovec();
    expect(v).to.deep.equal({ size: 16, offsets: { base: 0, len: 8 } });
  });

  it('CMSG_LEN and CMSG_SPACE', () => {
    expect(sys.cmsgLen(4)).to.equal(20);
    expect(sys.cmsgSpace(4)).to.equal(24);
    expect(sys.cmsgSpace(8)).to.equal(24);
    expect(sys.cmsgSpace(12)).to.equal(32);
  });
});

describe('sys: SCM_RIGHTS fd passing', () => {
  it('passes a memfd and an eventfd; both work on the other side', async () => {
    const before = openFdCount();
    const [a, b] = sys.socketPair();
    const memfd = sys.memfdCreate('vb-guest');
    sys.ftruncate(memfd, 65536);
    const efd = sys.eventfd();
    const tx = new sys.MsgIo(64);
    const rx = new sys.MsgIo(64);
    expect(tx.send(a, Buffer.from('two fds'), [memfd, efd])).to.equal(7);
    await sys.waitReadable(b);
    const r = rx.recv(b)!;
    expect(r.n).to.equal(7);
    expect(rx.data.toString('latin1', 0, 7)).to.equal('two fds');
    expect(r.fds).to.have.length(2);
    for (const fd of r.fds) {
      expect(fd).to.not.be.oneOf([memfd, efd]);
      expect(sys.fcntl(fd, sys.C.F_GETFD) & sys.C.FD_CLOEXEC, 'MSG_CMSG_CLOEXEC').to.equal(sys.C.FD_CLOEXEC);
    }
    // The received memfd maps the same pages as the original.
    const mine = sys.mmapShared(memfd, 65536);
    const theirs = sys.mmapShared(r.fds[0], 65536);
    sys.memoryView(theirs, 65536).write('written through the passed fd', 4096, 'latin1');
    expect(sys.memoryView(mine, 65536).toString('latin1', 4096, 4096 + 29)).to.equal('written through the passed fd');
    // The received eventfd signals the original.
    sys.eventfdWrite(r.fds[1], 42n);
    expect(sys.eventfdRead(efd)).to.equal(42n);
    sys.munmap(mine, 65536);
    sys.munmap(theirs, 65536);
    sys.closeAll([...r.fds, memfd, efd, a, b]);
    expect(openFdCount()).to.equal(before);
  });

  it('keeps fds with the bytes they were sent with when messages coalesce', async () => {
    const [a, b] = sys.socketPair();
    const e1 = sys.eventfd(),
      e2 = sys.eventfd();
    const tx = new sys.MsgIo(64),
      rx = new sys.MsgIo(64);
    tx.send(a, Buffer.from('AAAA'), [e1]);
    tx.send(a, Buffer.from('BBBB'));
    tx.send(a, Buffer.from('CCCC'), [e2]);
    await sys.waitReadable(b);
    // Reading exactly one message's length at a time (as the framer does), each fd comes with
    // the bytes it was sent with, never with a neighbour's.
    const got: [string, number][] = [];
    const all: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = rx.recv(b, 4)!;
      got.push([rx.data.toString('latin1', 0, r.n), r.fds.length]);
      all.push(...r.fds);
    }
    expect(got).to.deep.equal([
      ['AAAA', 1],
      ['BBBB', 0],
      ['CCCC', 1],
    ]);
    expect(rx.recv(b, 4)).to.equal(null);
    sys.closeAll([...all, e1, e2, a, b]);
  });

  it('detects MSG_CTRUNC and closes the fds that did arrive', async () => {
    const before = openFdCount();
    const [a, b] = sys.socketPair();
    const efds = [sys.eventfd(), sys.eventfd(), sys.eventfd(), sys.eventfd()];
    new sys.MsgIo(16).send(a, Buffer.from('x'), efds);
    await sys.waitReadable(b);
    expect(() => new sys.MsgIo(16, 1).recv(b)).to.throw(sys.ControlTruncatedError, 'MSG_CTRUNC');
    sys.closeAll([...efds, a, b]);
    expect(openFdCount()).to.equal(before);
  });

  const ctruncKeepsData =
    'on MSG_CTRUNC, the error still carries the data bytes that arrived (to name the message they belong to)';
  it(ctruncKeepsData, async () => {
    const before = openFdCount();
    const [a, b] = sys.socketPair();
    const efds = [sys.eventfd(), sys.eventfd(), sys.eventfd()];
    new sys.MsgIo(16).send(a, Buffer.from('hello'), efds);
    await sys.waitReadable(b);
    const rx = new sys.MsgIo(16, 1);
    let err: unknown;
    try {
      rx.recv(b);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(sys.ControlTruncatedError);
    expect((err as sys.ControlTruncatedError).n).to.equal(5);
    expect(rx.data.toString('latin1', 0, 5)).to.equal('hello');
    sys.closeAll([...efds, a, b]);
    expect(openFdCount()).to.equal(before);
  });

  it('reports EOF as n = 0', async () => {
    const [a, b] = sys.socketPair();
    sys.close(a);
    await sys.waitReadable(b);
    expect(new sys.MsgIo(16).recv(b)).to.deep.equal({ n: 0, fds: [] });
    sys.close(b);
  });
});

describe('sys: AF_UNIX listen / connect / accept', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('creates the socket file with the requested mode and accepts a connection', async () => {
    const path = join(dir, 's.sock');
    const l = sys.unixListen(path, { mode: 0o600 });
    expect(statSync(path).mode & 0o777).to.equal(0o600);
    expect(sys.accept(l)).to.equal(null);
    const c = sys.unixConnect(path);
    await sys.waitReadable(l);
    const s = sys.accept(l)!;
    expect(s).to.be.a('number');
    new sys.MsgIo(8).send(c, Buffer.from('hi'));
    await sys.waitReadable(s);
    expect(new sys.MsgIo(8).recv(s)!.n).to.equal(2);
    sys.closeAll([c, s, l]);
  });

  it('connect fails with ENOENT for a missing path and ECONNREFUSED for a stale socket file', () => {
    const path = join(dir, 'gone.sock');
    expect(() => sys.unixConnect(path)).to.throw(sys.SysError, 'ENOENT');
    sys.close(sys.unixListen(path));
    expect(() => sys.unixConnect(path)).to.throw(sys.SysError, 'ECONNREFUSED');
    expect(sys.unlink(path)).to.equal(true);
    expect(sys.unlink(path)).to.equal(false);
  });

  it('refuses a path longer than sun_path', () => {
    expect(() => sys.unixListen(join(dir, 'x'.repeat(120)))).to.throw(sys.SysError, 'ENAMETOOLONG');
  });
});

describe('sys: FdWatcher', () => {
  it('reports readiness of an eventfd until closed', async () => {
    const fd = sys.eventfd();
    let fired = 0;
    const done = new Promise<void>((resolve) => {
      const w = new sys.FdWatcher(fd, { readable: true }, (r) => {
        expect(r.status).to.equal(0);
        expect(r.readable).to.equal(true);
        fired++;
        expect(sys.eventfdRead(fd)).to.equal(1n);
        w.close();
        resolve();
      });
    });
    sys.eventfdWrite(fd);
    await done;
    expect(fired).to.equal(1);
    expect(sys.watchedCount()).to.equal(0);
    sys.close(fd);
  });

  it('refuses what would abort the process: a second handle, a bad fd, a regular file', () => {
    const fd = sys.eventfd();
    const w = new sys.FdWatcher(fd, { readable: true }, () => undefined);
    expect(() => new sys.FdWatcher(fd, { readable: true }, () => undefined)).to.throw('already watched');
    w.close();
    w.close(); // idempotent
    sys.close(fd);
    expect(() => new sys.FdWatcher(fd, { readable: true }, () => undefined)).to.throw(sys.SysError, 'EBADF');
    const mfd = sys.memfdCreate('regular');
    expect(() => new sys.FdWatcher(mfd, { readable: true }, () => undefined)).to.throw('regular file');
    sys.close(mfd);
    expect(sys.watchedCount()).to.equal(0);
  });
});
