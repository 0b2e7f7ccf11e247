/**
 * Lab: what the real /dev/vhost-net refuses, and how the project's kernel layer reports it: each
 * error names the ioctl, the DEVICE ring number (or queue pair) and the errno.
 */
import { expect } from 'chai';
import { maskOf } from '../../src/bits.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F, VIRTIO_NET_F } from '../../src/virtio.js';
import { KernelError, pairRing, VhostNet } from '../../src/vhost-kernel/index.js';
import * as sys from '../../src/sys/index.js';
import { requireLab } from './lab.js';
import { FEATURES, Rig, startPair, thrown } from './kernel-rig.js';
import { GuestMemory, PAGE, readable, SplitVring } from './vring.js';

describe('lab: kernel refusals, named with ioctl, ring and errno', function () {
  this.timeout(120000);
  let rig: Rig | undefined;
  const closers: (() => void)[] = [];

  before(function () {
    requireLab(this);
  });

  afterEach(() => {
    rig?.close();
    rig = undefined;
    for (const c of closers.splice(0).reverse()) c();
  });

  const inaccessibleRing =
    'a ring in memory this process cannot access: SET_VRING_ADDR accepts it, NET_SET_BACKEND refuses it with EFAULT';
  it(inaccessibleRing, () => {
    rig = Rig.create('eflt');
    const p = rig.start(0, { detached: true });
    const noAccess = sys.mmap(PAGE, sys.C.PROT_NONE, sys.C.MAP_PRIVATE | sys.C.MAP_ANONYMOUS, -1);
    closers.push(() => sys.munmap(noAccess, PAGE));
    // Detached, the kernel checks alignment only ("we will verify when backend is configured").
    p.vn.setVringAddr(pairRing(0, 0), { ...p.rx.kernelAddr(), used: noAccess });
    const e = thrown(() => p.vn.netSetBackend(pairRing(0, 0), rig!.tap.fd(0)));
    expect(e.message).to.match(/^VHOST_NET_SET_BACKEND \(ring 0\): EFAULT: bad address: /);
    expect(e.code).to.equal('EFAULT');
    // The other ring of the pair is unaffected.
    p.vn.netSetBackend(pairRing(0, 1), rig.tap.fd(0));
  });

  const ringOutsideTable =
    "a ring in this process's memory but outside the memory table is accepted: the kernel checks rings against the " +
    'address space, not the table';
  it(ringOutsideTable, () => {
    rig = Rig.create('otbl');
    const p = rig.start(0, { detached: true });
    const other = new GuestMemory(64 * PAGE); // mapped here, never given to SET_MEM_TABLE
    closers.push(() => other.close());
    const ring = new SplitVring(other, 256, 256);
    closers.push(() => ring.close());
    p.vn.setVringAddr(pairRing(0, 0), ring.kernelAddr());
    p.vn.netSetBackend(pairRing(0, 0), rig.tap.fd(0));
    // So the bridge must check ring ranges against its table itself (src/memtable does).
  });

  const bufferOutsideTable =
    "a descriptor whose buffer is outside the memory table: the kernel signals the ring's ERR eventfd and sends " +
    'nothing';
  it(bufferOutsideTable, async () => {
    rig = Rig.create('errfd');
    const p = rig.start(0, { detached: true });
    const err = sys.eventfd();
    closers.push(() => sys.close(err));
    p.vn.setVringErr(pairRing(0, 1), err);
    p.vn.netSetBackend(pairRing(0, 0), rig.tap.fd(0));
    p.vn.netSetBackend(pairRing(0, 1), rig.tap.fd(0));
    p.tx.postRaw(64 << 20, 100); // the table covers [0, 8 MiB)
    p.tx.publish();
    p.tx.notify();
    expect(await readable(err, 20000), 'ERR eventfd signalled').to.equal(true);
    expect(Number(sys.eventfdRead(err))).to.be.greaterThanOrEqual(1);
    expect(p.tx.deviceUsedIdx(), 'the descriptor was not consumed').to.equal(0);
  });

  it('SET_VRING_NUM with a size that is not a power of two: EINVAL', () => {
    rig = Rig.create('enum');
    const p = rig.start(0, { detached: true });
    for (const num of [100, 0, 65536]) {
      const e = thrown(() => p.vn.setVringNum(pairRing(0, 0), num));
      expect(e.message).to.equal(
        `VHOST_SET_VRING_NUM (ring 0): EINVAL: invalid argument: ${num} is not a ring size: a power of two from ` +
          `1 to 32768`,
      );
    }
    p.vn.setVringNum(pairRing(0, 0), 32768);
    p.vn.setVringNum(pairRing(0, 0), 256);
  });

  it('errors name the device ring: ring 3 is index 1 of the vhost-net fd of queue pair 1', () => {
    const vn = VhostNet.open(1);
    closers.push(() => vn.close());
    vn.setOwner();
    expect(thrown(() => vn.setVringNum(3, 100)).message).to.match(/^VHOST_SET_VRING_NUM \(ring 3\): EINVAL: /);
    expect(() => vn.setVringNum(1, 256)).to.throw(RangeError, 'ring 1 belongs to queue pair 0');
  });

  it('SET_FEATURES with a bit the kernel does not offer (a net offload, PROTOCOL_FEATURES): EOPNOTSUPP', () => {
    const vn = VhostNet.open(0);
    closers.push(() => vn.close());
    vn.setOwner();
    for (const extra of [VIRTIO_NET_F.CSUM, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_NET_F.MQ]) {
      const e = thrown(() => vn.setFeatures(FEATURES | maskOf(extra)));
      expect(e.errno).to.equal(95);
      // errno 95: EOPNOTSUPP (== ENOTSUP on Linux), as drivers/vhost names it.
      expect(e.message).to.match(
        new RegExp(
          /^VHOST_SET_FEATURES \(queue pair 0\): EOPNOTSUPP: operation not supported: 0x[0-9a-f]+ \(.*\) /.source +
            /has a bit VHOST_GET_FEATURES does not offer/.source,
        ),
      );
    }
    vn.setFeatures(FEATURES);
  });

  const whileAttached =
    'while a ring is attached: SET_VRING_NUM and SET_VRING_BASE are EBUSY; SET_VRING_ADDR is re-checked, not refused';
  it(whileAttached, () => {
    rig = Rig.create('busy');
    const p = rig.start(0);
    const tx = pairRing(0, 1);
    expect(thrown(() => p.vn.setVringNum(tx, 256)).message).to.equal(
      'VHOST_SET_VRING_NUM (ring 1): EBUSY: device or resource busy: the ring is attached to the tap: ' +
        'NET_SET_BACKEND -1 first',
    );
    expect(thrown(() => p.vn.setVringBase(tx, 0)).message).to.match(/^VHOST_SET_VRING_BASE \(ring 1\): EBUSY: /);
    // vhost.c vhost_vring_set_addr: with a backend attached it re-verifies the range instead of
    // refusing (docs/kernel-ordering.md, "Where Linux 6.1 differs": no EBUSY for ADDR). A kernel-half
    // address passes while detached and fails the re-check while attached.
    p.vn.setVringAddr(tx, p.tx.kernelAddr());
    const kernelHalf = 0xffff800000000000n;
    expect(thrown(() => p.vn.setVringAddr(tx, { ...p.tx.kernelAddr(), used: kernelHalf })).message).to.equal(
      'VHOST_SET_VRING_ADDR (ring 1): EINVAL: invalid argument: misaligned (avail 2, used and log 4 bytes), or, ' +
        'while attached, not accessible',
    );
    p.vn.netSetBackend(tx, -1);
    p.vn.setVringAddr(tx, { ...p.tx.kernelAddr(), used: kernelHalf });
    p.vn.setVringAddr(tx, p.tx.kernelAddr());
  });

  it('SET_OWNER twice: EBUSY with a hint', () => {
    const vn = VhostNet.open(0);
    closers.push(() => vn.close());
    vn.setOwner();
    expect(thrown(() => vn.setOwner()).message).to.match(
      /^VHOST_SET_OWNER \(queue pair 0\): EBUSY: device or resource busy: the device already has an owner/,
    );
  });

  it('VhostNet.adopt takes an open /dev/vhost-net fd, and refuses /dev/null, a tap fd and a socket', () => {
    const fd = sys.open('/dev/vhost-net', sys.C.O_RDWR);
    const vn = VhostNet.adopt(fd, 0);
    closers.push(() => vn.close());
    expect(vn.fd).to.equal(fd);
    expect(vn.adopted).to.equal(true);
    vn.setOwner();
    expect(vn.getFeatures() & maskOf(VIRTIO_F.VERSION_1)).to.not.equal(0n);

    const devNull = sys.open('/dev/null', sys.C.O_RDWR);
    closers.push(() => sys.close(devNull));
    expect(thrown(() => VhostNet.adopt(devNull, 0)).message).to.match(
      /^VHOST_GET_FEATURES \(queue pair 0\): ENOTTY: .*: fd \d+ is a character device but not a vhost device$/,
    );
    expect(sys.isOpen(devNull), "a refused fd stays the caller's").to.equal(true);

    rig = Rig.create('adpt');
    const tapErr = (() => {
      try {
        VhostNet.adopt(rig!.tap.fd(0), 0);
      } catch (e) {
        return e as Error;
      }
      return null;
    })();
    expect(tapErr?.message).to.match(/^VHOST_GET_FEATURES \(queue pair 0\): E\w+: .*not a vhost device/);

    const sock = sys.socket(sys.C.AF_UNIX, sys.C.SOCK_DGRAM);
    closers.push(() => sys.close(sock));
    expect(thrown(() => VhostNet.adopt(sock, 0)).message).to.equal(
      `vhost fd ${sock}: ENOTTY: inappropriate ioctl for device: fd ${sock} is a socket, not /dev/vhost-net`,
    );
  });

  it('startPair cleans up: a failing setup closes its vhost-net fd and eventfds', () => {
    const mem = new GuestMemory(4 << 20);
    closers.push(() => mem.close());
    rig = Rig.create('clean');
    const count = (): number => {
      let n = 0;
      for (let fd = 0; fd < 1024; fd++) if (sys.isOpen(fd)) n++;
      return n;
    };
    const n0 = count();
    expect(() => startPair(mem, rig!.tap, 0, { num: 100 })).to.throw(
      KernelError,
      /VHOST_SET_VRING_NUM \(ring 0\): EINVAL/,
    );
    expect(count()).to.equal(n0);
  });
});
