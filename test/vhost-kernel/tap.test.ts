/**
 * Tap checks that need no privileges (creating taps is tested in the lab, test/qemu/kernel-tap.test.ts):
 * names, a missing clone device, adoption of fds that are not taps.
 */
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import * as sys from '../../src/sys/index.js';
import { KernelError, PacketSocket, Tap } from '../../src/vhost-kernel/index.js';
import { withHints } from '../../src/vhost-kernel/errors.js';

describe('vhost-kernel: Tap (unprivileged checks)', () => {
  it('refuses bad names before any syscall', () => {
    expect(() => Tap.open('')).to.throw(KernelError, 'tap : EINVAL: invalid argument: the name is empty');
    expect(() => Tap.open('sixteen-bytes-xx')).to.throw(KernelError, 'is 16 bytes; interface names have at most 15');
    expect(() => Tap.open('tap0', { queuePairs: 0 })).to.throw(RangeError);
    expect(() => Tap.open('tap0', { queuePairs: 257 })).to.throw(RangeError);
  });

  it('a missing /dev/net/tun says which module to load', () => {
    expect(() => Tap.open('vbtest0', { path: '/nonexistent/tun' })).to.throw(
      KernelError,
      'open /nonexistent/tun: ENOENT: no such file or directory: no /nonexistent/tun: load the tun module ' +
        '(modprobe tun)',
    );
  });

  it('create: false on a missing tap says how to create it', () => {
    expect(() => Tap.open('vbnosuch9', { create: false, queuePairs: 2 })).to.throw(
      KernelError,
      'tap vbnosuch9: ENODEV: no such device: no such tap: create it (ip tuntap add dev vbnosuch9 mode tap ' +
        'multi_queue vnet_hdr user $USER)',
    );
  });

  it('openMacvtap: a missing interface says how to create one; an interface that is not a macvtap is refused', () => {
    expect(() => Tap.openMacvtap('vbnosuch9')).to.throw(
      KernelError,
      'macvtap vbnosuch9: ENODEV: no such device: no interface vbnosuch9: create it on its parent (ip link add link ' +
        'PARENT name vbnosuch9 address GUEST-MAC type macvtap mode bridge',
    );
    expect(() => Tap.openMacvtap('lo')).to.throw(
      KernelError,
      'macvtap lo: EINVAL: invalid argument: lo is not a macvtap',
    );
    expect(() => Tap.openMacvtap('sixteen-bytes-xx')).to.throw(KernelError, 'interface names have at most 15');
    expect(() => Tap.openMacvtap('lo', { queuePairs: 0 })).to.throw(RangeError);
  });

  it('PacketSocket: one queue pair only, and a checked name, before any syscall', () => {
    expect(() => PacketSocket.open('eth0', { queuePairs: 2 })).to.throw(RangeError, 'a packet socket serves one');
    expect(() => PacketSocket.open('')).to.throw(KernelError, 'the name is empty');
  });

  it('adopt refuses fds that are not taps and leaves them to the caller', () => {
    const efd = sys.eventfd();
    const devNull = sys.open('/dev/null', sys.C.O_RDWR);
    try {
      expect(() => Tap.adopt([efd])).to.throw(
        KernelError,
        `fd ${efd} is an anonymous file (eventfd, epoll, memfd...), not a /dev/net/tun fd`,
      );
      expect(() => Tap.adopt([devNull])).to.throw(
        KernelError,
        /^TUNGETIFF \(tap fd \d+\): ENOTTY: .*not \/dev\/net\/tun$/,
      );
      expect(sys.isOpen(efd) && sys.isOpen(devNull)).to.equal(true);
      expect(() => Tap.adopt([])).to.throw(RangeError);
      expect(() => Tap.adopt([devNull, devNull])).to.throw(RangeError, 'has duplicates');
    } finally {
      sys.close(efd);
      sys.close(devNull);
    }
  });

  it('adopt refuses a /dev/net/tun fd attached to nothing', function () {
    if (!existsSync('/dev/net/tun')) {
      // Every Linux with tun has it; in CI its absence is a failure, not a skip.
      if (process.env.CI === 'true') throw new Error('/dev/net/tun is missing (load the tun module)');
      this.skip();
    }
    const fd = sys.open('/dev/net/tun', sys.C.O_RDWR);
    try {
      expect(() => Tap.adopt([fd])).to.throw(
        KernelError,
        'is /dev/net/tun but not attached to an interface (TUNSETIFF was not done)',
      );
    } finally {
      sys.close(fd);
    }
  });

  it('withHints adds advice to the errnos it knows and passes others through', () => {
    const fail = (errno: number) => (): never => {
      throw new sys.SysError('TEST', errno);
    };
    expect(() => withHints(fail(16), { 16: 'do this' })).to.throw(
      KernelError,
      'TEST: EBUSY: device or resource busy: do this',
    );
    expect(() => withHints(fail(16), { 16: () => 'lazily' })).to.throw(KernelError, ': lazily');
    const e = (() => {
      try {
        withHints(fail(2), { 16: 'x' });
      } catch (err) {
        return err;
      }
    })();
    expect(e).to.be.instanceOf(sys.SysError).and.not.instanceOf(KernelError);
    const k = new KernelError('TEST', 16, 'hint');
    expect(k.code).to.equal('EBUSY');
    expect(k.hint).to.equal('hint');
    expect(k.name).to.equal('KernelError');
  });
});
