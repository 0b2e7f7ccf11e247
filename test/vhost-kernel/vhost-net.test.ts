/**
 * VhostNet without /dev/vhost-net (which this machine lacks; the lab tests use the real one):
 * the ring -> queue pair mapping, error naming (any character device that refuses the ioctls will
 * do: /dev/null answers ENOTTY), adoption checks, the short-buffer guard, and the recording fake
 * bridge tests may use.
 */
import { expect } from 'chai';
import * as sys from '../../src/sys/index.js';
import { KernelError, pairRing, ringToPair, VhostNet, type VhostNetDevice } from '../../src/vhost-kernel/index.js';
import { RecordingVhostNet } from './fake-vhost-net.js';

describe('vhost-kernel: VhostNet', () => {
  it('maps device ring q to queue pair q >> 1, index q & 1 (RX 0, TX 1), and back', () => {
    expect([0, 1, 2, 3, 6, 7].map(ringToPair)).to.deep.equal([
      { pair: 0, index: 0 },
      { pair: 0, index: 1 },
      { pair: 1, index: 0 },
      { pair: 1, index: 1 },
      { pair: 3, index: 0 },
      { pair: 3, index: 1 },
    ]);
    for (let q = 0; q < 16; q++) {
      const { pair, index } = ringToPair(q);
      expect(pairRing(pair, index)).to.equal(q);
    }
    expect(() => ringToPair(-1)).to.throw(RangeError);
    expect(() => ringToPair(1.5)).to.throw(RangeError);
  });

  it('open: a missing device says which module to load', () => {
    expect(() => VhostNet.open(0, '/nonexistent/vhost-net')).to.throw(
      KernelError,
      'open /nonexistent/vhost-net: ENOENT: no such file or directory: no /nonexistent/vhost-net: load the ' +
        'vhost_net module (modprobe vhost_net), or pass an open fd with --vhost-fd',
    );
  });

  it('names the ioctl and the DEVICE ring (or queue pair) in every error', () => {
    const vn = VhostNet.open(1, '/dev/null');
    try {
      expect(() => vn.setVringNum(3, 256)).to.throw(
        sys.SysError,
        /^VHOST_SET_VRING_NUM \(ring 3\): ENOTTY: inappropriate ioctl for device$/,
      );
      expect(() => vn.setVringAddr(2, { flags: 0, desc: 0n, used: 0n, avail: 0n, log: 0n })).to.throw(
        sys.SysError,
        /^VHOST_SET_VRING_ADDR \(ring 2\): ENOTTY/,
      );
      expect(() => vn.getVringBase(3)).to.throw(sys.SysError, /^VHOST_GET_VRING_BASE \(ring 3\): ENOTTY/);
      expect(() => vn.netSetBackend(2, -1)).to.throw(sys.SysError, /^VHOST_NET_SET_BACKEND \(ring 2\): ENOTTY/);
      expect(() => vn.setVringKick(3, -1)).to.throw(sys.SysError, /^VHOST_SET_VRING_KICK \(ring 3\): ENOTTY/);
      expect(() => vn.setFeatures(1n)).to.throw(sys.SysError, /^VHOST_SET_FEATURES \(queue pair 1\): ENOTTY/);
      expect(() => vn.setOwner()).to.throw(sys.SysError, /^VHOST_SET_OWNER \(queue pair 1\): ENOTTY/);
      expect(() => vn.setVringNum(1, 256)).to.throw(
        RangeError,
        'ring 1 belongs to queue pair 0, not to the vhost-net fd of pair 1',
      );
    } finally {
      vn.close();
    }
  });

  it('setMemTable refuses a buffer shorter than its nregions says, before the kernel reads past it', () => {
    const vn = VhostNet.open(0, '/dev/null');
    try {
      const t = Buffer.alloc(8 + 32);
      t.writeUInt32LE(2, 0);
      expect(() => vn.setMemTable(t)).to.throw(
        RangeError,
        'a 40-byte buffer cannot hold struct vhost_memory with 2 regions',
      );
      expect(() => vn.setMemTable(Buffer.alloc(4))).to.throw(RangeError);
      t.writeUInt32LE(1, 0);
      expect(() => vn.setMemTable(t)).to.throw(sys.SysError, /^VHOST_SET_MEM_TABLE \(queue pair 0\): ENOTTY/);
    } finally {
      vn.close();
    }
  });

  it('close is idempotent and later calls fail with EBADF', () => {
    const vn = VhostNet.open(0, '/dev/null');
    const fd = vn.fd;
    vn.close();
    vn.close();
    expect(vn.closed).to.equal(true);
    expect(vn.fd).to.equal(-1);
    expect(fd).to.be.greaterThan(2);
    expect(() => vn.getFeatures()).to.throw(sys.SysError, /EBADF/);
  });

  it('adopt refuses what is not vhost-net and leaves the fd to the caller', () => {
    const sock = sys.socket(sys.C.AF_UNIX, sys.C.SOCK_DGRAM);
    const devNull = sys.open('/dev/null', sys.C.O_RDWR);
    try {
      expect(() => VhostNet.adopt(sock, 0)).to.throw(
        KernelError,
        `vhost fd ${sock}: ENOTTY: inappropriate ioctl for device: fd ${sock} is a socket, not /dev/vhost-net`,
      );
      expect(() => VhostNet.adopt(devNull, 0)).to.throw(
        KernelError,
        `: fd ${devNull} is a character device but not a vhost device`,
      );
      expect(sys.isOpen(sock) && sys.isOpen(devNull)).to.equal(true);
      expect(() => VhostNet.adopt(987654, 0)).to.throw(KernelError, 'fd 987654 is not open in this process');
      expect(() => VhostNet.adopt(devNull, -1)).to.throw(RangeError);
    } finally {
      sys.close(sock);
      sys.close(devNull);
    }
  });

  it('a recording fake implements VhostNetDevice and enforces the rules the lab showed', () => {
    const vn: VhostNetDevice = new RecordingVhostNet(1);
    vn.setOwner();
    expect(() => vn.setOwner()).to.throw(sys.SysError, /^VHOST_SET_OWNER \(queue pair 1\): EBUSY/);
    expect(() => vn.setFeatures(1n)).to.throw(sys.SysError, /^VHOST_SET_FEATURES \(queue pair 1\): EOPNOTSUPP/);
    vn.setFeatures(0x130008000n);
    expect(() => vn.netSetBackend(2, 5)).to.throw(sys.SysError, /^VHOST_NET_SET_BACKEND \(ring 2\): EFAULT/);
    vn.setMemTable(Buffer.alloc(8));
    expect(() => vn.setVringNum(2, 100)).to.throw(sys.SysError, /^VHOST_SET_VRING_NUM \(ring 2\): EINVAL/);
    vn.setVringNum(2, 256);
    vn.setVringBase(2, 7);
    vn.setVringAddr(2, { flags: 0, desc: 0x1000n, used: 0x3000n, avail: 0x2000n, log: 0n });
    vn.netSetBackend(2, 5);
    expect(() => vn.setVringNum(2, 256)).to.throw(sys.SysError, /^VHOST_SET_VRING_NUM \(ring 2\): EBUSY/);
    expect(() => vn.setVringBase(2, 0)).to.throw(sys.SysError, /EBUSY/);
    vn.netSetBackend(2, -1);
    expect(vn.getVringBase(2)).to.equal(7);
    const fake = vn as RecordingVhostNet;
    expect(fake.calls.filter((c) => !c.error).map((c) => c.op)).to.deep.equal([
      'setOwner',
      'setFeatures',
      'setMemTable',
      'setVringNum',
      'setVringBase',
      'setVringAddr',
      'netSetBackend',
      'netSetBackend',
      'getVringBase',
    ]);
    expect(fake.calls.filter((c) => c.error).map((c) => `${c.op}:${c.error}`)).to.deep.equal([
      'setOwner:EBUSY',
      'setFeatures:EOPNOTSUPP',
      'netSetBackend:EFAULT',
      'setVringNum:EINVAL',
      'setVringNum:EBUSY',
      'setVringBase:EBUSY',
    ]);
    expect(fake.calls.find((c) => c.op === 'netSetBackend' && !c.error)).to.deep.equal({
      op: 'netSetBackend',
      ring: 2,
      fd: 5,
    });
    expect(fake.attached(2)).to.equal(false);
  });
});
