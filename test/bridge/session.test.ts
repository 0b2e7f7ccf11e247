/**
 * The vhost-user session on the vhost-net datapath, on the recording kernel (fake-kernel.ts): what
 * reaches the kernel, in which order, for the request sequences QEMU 7.2 sends.
 */
import { expect } from 'chai';
import type { PortBackEnd } from '../../src/bridge/session.js';
import type { PortEvent } from '../../src/bridge/status.js';
import { bit, maskOf } from '../../src/bits.js';
import { mappedRegionCount } from '../../src/memtable/index.js';
import * as sys from '../../src/sys/index.js';
import { rarpFrame } from '../../src/vhost-kernel/index.js';
import { Refused } from '../../src/vhost-user/errors.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_NET_F } from '../../src/virtio.js';
import { openFdCount } from '../fdcount.js';
import { callsLike, callsTo, fakePort, indexOfCall } from './fake-kernel.js';

const MiB = 1n << 20n;
const QVA = 0x7f00_0000_0000n;
/**
 * What a QEMU 7.2 front-end acked in the lab (MRG_RXBUF, EVENT_IDX, INDIRECT, VERSION_1, PROTOCOL_FEATURES)
 * plus CSUM.
 */
const OFFERED = 0x1_7500_8000n | maskOf(VIRTIO_NET_F.CSUM, VIRTIO_NET_F.GUEST_CSUM);
const ACKED = 0x1_7000_8000n | maskOf(VIRTIO_NET_F.CSUM);
const NUM = 256;

/** Ring q of a 1 MiB guest: 16 KiB apart from gpa 0x10000. */
const ringAt = (q: number, base = QVA) => {
  const desc = base + 0x10000n + BigInt(q) * 0x4000n;
  return {
    index: q,
    flags: 0,
    desc,
    avail: desc + 0x1000n,
    used: desc + 0x2000n,
    log: 0x10000n + BigInt(q) * 0x4000n + 0x2000n,
  };
};

const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };
const live: PortBackEnd[] = [];
/** Installed in each describe: every device is disconnected, and no test leaves guest memory mapped. */
function leakGuard() {
  afterEach(() => {
    for (const d of live.splice(0)) d.disconnected();
    expect(mappedRegionCount(), 'a test left guest memory mapped').to.equal(0);
  });
}

/**
 * The session as the dispatcher drives it: every request is followed by afterRequest (where the
 * session decides which rings run), with its outcome.
 */
function asDispatched(session: PortBackEnd): PortBackEnd {
  return new Proxy(session, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function' || prop === 'afterRequest' || prop === 'disconnected' || prop === 'status') return v;
      return (...args: unknown[]) => {
        const request = String(prop);
        let out: unknown;
        try {
          out = v.apply(target, args);
        } catch (e) {
          target.afterRequest({ request, result: 'nack', reason: (e as Error).message });
          throw e;
        }
        target.afterRequest({ request, result: 'ok' });
        return out;
      };
    },
  });
}

function setup(queuePairs = 2) {
  const events: PortEvent[] = [];
  const onEvent = (e: PortEvent) => events.push(e);
  const { journal, vhostNet, tap, session } = fakePort({ queuePairs, offered: OFFERED, log: quiet, onEvent });
  live.push(session);
  session.connected();
  events.length = 0;
  return { journal, source: vhostNet, tap, dev: asDispatched(session), events };
}

function guestMemory(size = MiB) {
  const fd = sys.memfdCreate('guest');
  sys.ftruncate(fd, size);
  return { fd, region: { gpa: 0n, size, qva: QVA, mmapOffset: 0n } };
}

/**
 * SET_OWNER, the rings QEMU enables at realize, SET_FEATURES and one 1 MiB memory region: the device as QEMU
 * leaves it before the rings.
 */
function ready(dev: PortBackEnd, enable: number[] = []) {
  dev.setOwner();
  for (const q of enable) dev.setVringEnable(q, true);
  dev.setFeatures(ACKED);
  const mem = guestMemory();
  dev.setMemTable([mem.region], [mem.fd]);
  return mem;
}

/** A start of one queue pair as QEMU 7.2 sends it (NUM, BASE, ADDR, KICK, CALL per ring): rings 2p and 2p+1 running. */
function startPair(dev: PortBackEnd, p: number, fds: number[]) {
  for (const q of [2 * p, 2 * p + 1]) {
    dev.setVringNum(q, NUM);
    dev.setVringBase(q, 0);
    dev.setVringAddr(ringAt(q));
    const kick = sys.eventfd(),
      call = sys.eventfd();
    fds.push(kick, call);
    dev.setVringKick(q, kick);
    dev.setVringCall(q, call);
  }
}

describe('bridge session on vhost-net: the QEMU 7.2 start sequence on the recording kernel', () => {
  leakGuard();
  it('attaches a ring only when started, enabled and configured', () => {
    const fdsBefore = openFdCount();
    const { journal, source, dev } = setup(2);
    const fds: number[] = [];
    expect(dev.getFeatures()).to.equal(OFFERED);
    dev.setOwner();
    for (let q = 0; q < 4; q++) {
      const c = sys.eventfd(),
        e = sys.eventfd();
      dev.setVringCall(q, c);
      dev.setVringErr(q, e);
    }
    // At realize QEMU enables pair 0 and disables pair 1, before any ring exists.
    for (const [q, en] of [1, 1, 0, 0].entries()) dev.setVringEnable(q, en === 1);
    dev.setFeatures(ACKED);
    const mem = guestMemory();
    dev.setMemTable([mem.region], [mem.fd]);
    startPair(dev, 0, fds);
    startPair(dev, 1, fds);
    expect(source.live(0).attached(0)).to.equal(true);
    expect(source.live(0).attached(1)).to.equal(true);
    expect(source.live(1).attached(2), 'pair 1 is disabled').to.equal(false);
    // The guest turns on its second queue pair (ethtool -L combined 2).
    dev.setVringEnable(2, true);
    dev.setVringEnable(3, true);
    expect(source.live(1).attached(2)).to.equal(true);
    expect(source.live(1).attached(3)).to.equal(true);
    // Order on pair 0: everything the kernel reads at attach came before the attach.
    const attach = indexOfCall(journal, { who: 'vhost0', op: 'netSetBackend', ring: 0, fd: 100 });
    expect(attach).to.be.greaterThan(indexOfCall(journal, { who: 'vhost0', op: 'setVringKick', ring: 0 }));
    expect(indexOfCall(journal, { who: 'vhost0', op: 'setMemTable', regions: 1 })).to.be.lessThan(
      indexOfCall(journal, { who: 'vhost0', op: 'setVringAddr', ring: 0 }),
    );
    // The kernel got the negotiated word without what it does not know (CSUM, PROTOCOL_FEATURES).
    expect(source.live(0).features).to.equal(0x1_3000_8000n);
    dev.disconnected();
    expect(openFdCount(), 'every eventfd and memfd closed').to.equal(fdsBefore);
    expect(mappedRegionCount()).to.equal(0);
  });

  it('translates ring addresses into its own mapping and passes the log address through', () => {
    const { source, dev } = setup(1);
    ready(dev);
    const given = source.live(0).memory![0];
    expect(given.gpa).to.equal(0n);
    expect(given.uaddr).to.not.equal(QVA);
    startPair(dev, 0, []);
    const vq = source.live(0).ringState(0);
    expect(vq.addr!.desc).to.equal(given.uaddr + 0x10000n);
    expect(vq.addr!.avail).to.equal(given.uaddr + 0x11000n);
    expect(vq.addr!.used).to.equal(given.uaddr + 0x12000n);
    dev.disconnected();
  });

  it('refuses a ring outside guest memory without touching the kernel', () => {
    const { journal, dev } = setup(1);
    ready(dev);
    dev.setVringNum(0, NUM);
    const before = journal.length;
    const outside = { ...ringAt(0), used: QVA + MiB - 8n }; // the used ring runs past the end
    expect(() => dev.setVringAddr(outside)).to.throw(Refused, /ring 0: used area .* is not inside guest memory/);
    expect(journal.length).to.equal(before);
    expect(() => dev.setVringAddr({ ...ringAt(0), desc: 0x1000n })).to.throw(Refused, /desc area/);
    dev.disconnected();
  });

  it('starts a ring from the used index when the base counts buffers no device used (CH sends avail)', () => {
    const { source, dev } = setup(1);
    ready(dev, [0, 1]);
    startPair(dev, 0, []);
    const k = source.live(0);
    k.advance(0, 40); // the kernel used 40 receive buffers: used idx 40 in guest memory
    dev.getVringBase(0);
    // A front-end that sends the available index (40 + the 216 buffers the guest posted since):
    dev.setVringBase(0, 40 + 216);
    dev.setVringKick(0, sys.eventfd());
    expect(k.attached(0)).to.equal(true);
    expect(k.ringState(0).base, 'resumed from the used index').to.equal(40);
    dev.getVringBase(0);
    // A base more than a ring's worth past the used index is not a count of unused buffers: kept.
    dev.setVringBase(0, 40 + NUM + 1);
    dev.setVringKick(0, sys.eventfd());
    expect(k.ringState(0).base, 'kept as sent').to.equal(40 + NUM + 1);
    dev.disconnected();
  });

  it('stops a ring at GET_VRING_BASE: detach first, then read; ENABLE does not restart it, a new kick does', () => {
    const { journal, source, dev, events } = setup(1);
    ready(dev, [0, 1]);
    startPair(dev, 0, []);
    expect(events.filter((e) => e.kind.startsWith('ring-'))).to.deep.equal([
      { kind: 'ring-running', ring: 0 },
      { kind: 'ring-running', ring: 1 },
    ]);
    const k = source.live(0);
    k.advance(1, 14);
    journal.length = 0;
    expect(dev.getVringBase(1)).to.equal(14);
    expect(callsTo(journal, 'vhost0')).to.deep.equal([
      { op: 'netSetBackend', ring: 1, fd: -1 },
      { op: 'getVringBase', ring: 1 },
    ]);
    expect(k.attached(1)).to.equal(false);
    dev.setVringEnable(1, true);
    expect(k.attached(1), 'SET_VRING_ENABLE after a stop must not re-attach').to.equal(false);
    // Restart as after a reconnect: base from GET_VRING_BASE, new kick.
    dev.setVringBase(1, 14);
    dev.setVringKick(1, sys.eventfd());
    expect(k.attached(1)).to.equal(true);
    expect(k.ringState(1).base).to.equal(14);
    expect(events.filter((e) => e.kind.startsWith('ring-')).slice(2)).to.deep.equal([
      { kind: 'ring-stopped', ring: 1 },
      { kind: 'ring-running', ring: 1 },
    ]);
    dev.disconnected();
  });

  const replacedCallSignalled =
    'signals a call fd that replaces another on a started ring once (reconnect I/O hang), and not before the ring ' +
    'starts';
  it(replacedCallSignalled, () => {
    const { dev } = setup(1);
    dev.setOwner();
    dev.setFeatures(ACKED);
    const early = sys.eventfd();
    dev.setVringCall(0, early); // at realize, before the ring exists: QEMU's masked notifier
    const mem = guestMemory();
    dev.setMemTable([mem.region], [mem.fd]);
    const mine = sys.dup(early);
    expect(sys.eventfdRead(mine), 'no signal before the ring started').to.equal(null);
    dev.setVringNum(0, NUM);
    dev.setVringAddr(ringAt(0));
    dev.setVringKick(0, sys.eventfd());
    const irqfd = sys.eventfd();
    const watch = sys.dup(irqfd);
    dev.setVringCall(0, irqfd); // the guest's real notifier, after the kick
    expect(sys.eventfdRead(watch), 'one spurious interrupt so the guest looks at the used ring').to.equal(1n);
    sys.closeAll([mine, watch]);
    dev.disconnected();
  });

  it('without PROTOCOL_FEATURES, SET_FEATURES enables every ring', () => {
    const { source, dev } = setup(1);
    dev.setOwner();
    const mem = guestMemory();
    dev.setMemTable([mem.region], [mem.fd]);
    dev.setFeatures(ACKED & ~bit(VHOST_USER_F_PROTOCOL_FEATURES));
    startPair(dev, 0, []);
    expect(source.live(0).attached(0)).to.equal(true);
    expect(source.live(0).attached(1)).to.equal(true);
    dev.disconnected();
  });

  it('detaches around NUM/BASE/ADDR changes of an attached ring (the kernel says EBUSY otherwise)', () => {
    const { source, dev } = setup(1);
    ready(dev, [0]);
    startPair(dev, 0, []);
    dev.setVringNum(0, 128);
    dev.setVringBase(0, 7);
    dev.setVringAddr(ringAt(0));
    expect(source.live(0).ringState(0)).to.include({ num: 128, base: 7 });
    expect(source.live(0).attached(0)).to.equal(true);
    dev.disconnected();
  });

  it('refuses ring sizes that are not powers of two, ADDR before NUM, and a kick without fd', () => {
    const { dev } = setup(1);
    dev.setOwner();
    expect(() => dev.setVringNum(0, 255)).to.throw(Refused, 'power of two');
    expect(() => dev.setVringNum(0, 65536)).to.throw(Refused, 'power of two');
    expect(() => dev.setVringAddr(ringAt(1))).to.throw(Refused, 'before SET_VRING_NUM');
    expect(() => dev.setVringKick(0, null)).to.throw(Refused, 'polling');
    dev.disconnected();
  });

  it('keeps state that arrives before SET_OWNER and gives it to the kernel at SET_OWNER', () => {
    const { source, dev } = setup(1);
    dev.setVringCall(0, sys.eventfd());
    dev.setVringEnable(0, true);
    dev.setFeatures(ACKED);
    dev.setOwner();
    expect(source.live(0).calls.some((c) => c.op === 'setVringCall' && c.ring === 0 && c.fd >= 0)).to.equal(true);
    expect(source.live(0).features).to.equal(0x1_3000_8000n);
    dev.disconnected();
  });
});

describe('bridge session on vhost-net: memory', () => {
  leakGuard();
  it('an identical SET_MEM_TABLE changes nothing and closes the new fds', () => {
    const { journal, dev } = setup(1);
    dev.setOwner();
    const mem = guestMemory();
    const again = sys.dup(mem.fd);
    dev.setMemTable([mem.region], [mem.fd]);
    const n = journal.length;
    dev.setMemTable([mem.region], [again]);
    expect(journal.length).to.equal(n);
    expect(sys.isOpen(again)).to.equal(false);
    dev.disconnected();
  });

  it('a new table reaches the kernel before the old mapping goes, and rings that move are re-addressed', () => {
    const { journal, source, dev } = setup(1);
    ready(dev, [0]);
    startPair(dev, 0, []);
    expect(mappedRegionCount()).to.equal(1);
    const b = guestMemory(); // another memfd: a different table with the same layout
    journal.length = 0;
    dev.setMemTable([b.region], [b.fd]);
    expect(mappedRegionCount()).to.equal(1);
    const k = source.live(0);
    const addr = (q: number) => ({ ...k.ringState(q).addr!, log: ringAt(q).log });
    expect(callsTo(journal, 'vhost0')).to.deep.equal([
      { op: 'netSetBackend', ring: 0, fd: -1 },
      { op: 'setMemTable', regions: 1 },
      { op: 'setVringAddr', ring: 0, addr: addr(0) },
      { op: 'setVringAddr', ring: 1, addr: addr(1) },
      { op: 'netSetBackend', ring: 0, fd: 100 },
    ]);
    expect(source.live(0).ringState(0).addr!.desc).to.equal(source.live(0).memory![0].uaddr + 0x10000n);
    dev.disconnected();
  });

  it('refuses a table that would leave a ring outside guest memory, and keeps the old one', () => {
    const { dev, source } = setup(1);
    ready(dev);
    startPair(dev, 0, []);
    const small = sys.memfdCreate('small');
    sys.ftruncate(small, 0x10000);
    expect(() => dev.setMemTable([{ gpa: 0n, size: 0x10000n, qva: QVA, mmapOffset: 0n }], [small])).to.throw(
      Refused,
      /ring 0/,
    );
    expect(mappedRegionCount()).to.equal(1);
    expect(source.live(0).memory![0].size).to.equal(MiB);
    sys.close(small); // on a refusal the fds stay with the caller (the dispatcher closes them)
    dev.disconnected();
  });

  const memRegRepeats =
    'ADD_MEM_REG and REM_MEM_REG update the kernel table; repeats (QEMU 7.2 sends them per queue pair) change nothing';
  it(memRegRepeats, () => {
    const { dev, source, journal } = setup(1);
    dev.setOwner();
    const a = guestMemory();
    const aAgain = sys.dup(a.fd);
    dev.addMemReg(a.region, a.fd);
    const tables = () => callsLike(journal, { op: 'setMemTable' }).length;
    const n = tables();
    dev.addMemReg(a.region, aAgain);
    expect(tables(), 'a repeated region is not given to the kernel again').to.equal(n);
    expect(sys.isOpen(aAgain), 'the repeat fd is closed').to.equal(false);
    const b = sys.memfdCreate('b');
    sys.ftruncate(b, MiB);
    const rb = { gpa: MiB * 4n, size: MiB, qva: QVA + MiB * 16n, mmapOffset: 0n };
    dev.addMemReg(rb, b);
    expect(source.live(0).memory!.map((r) => r.gpa)).to.deep.equal([0n, MiB * 4n]);
    dev.remMemReg(rb);
    expect(source.live(0).memory!.map((r) => r.gpa)).to.deep.equal([0n]);
    expect(mappedRegionCount()).to.equal(1);
    const m = tables();
    dev.remMemReg(rb);
    expect(tables(), 'removing a region that is gone changes nothing').to.equal(m);
    // The same guest range on ANOTHER file is an overlap, refused.
    const other = guestMemory();
    expect(() => dev.addMemReg(other.region, other.fd)).to.throw(Refused, 'overlaps');
    sys.close(other.fd);
    dev.disconnected();
    expect(mappedRegionCount()).to.equal(0);
  });

  it('SET_LOG_BASE maps the log and gives the kernel its address plus the offset', () => {
    const { dev, source } = setup(1);
    dev.setOwner();
    const logfd = sys.memfdCreate('log');
    sys.ftruncate(logfd, 0x3000);
    dev.setLogBase({ size: 0x2000n, offset: 0x1000n }, logfd);
    const addr = source.live(0).logBase!;
    expect(addr).to.be.a('bigint');
    expect(sys.isOpen(logfd)).to.equal(false);
    sys.memoryView(addr, 0x2000).writeUInt8(0xaa, 0); // the mapping is there and writable
    dev.disconnected();
  });
});

describe('bridge session on vhost-net: lifecycle', () => {
  leakGuard();
  it('on disconnect: detach, close vhost-net, and only then unmap; fds closed; tap kept', () => {
    const fdsBefore = openFdCount();
    const { journal, source, dev, tap } = setup(1);
    ready(dev, [0]);
    startPair(dev, 0, []);
    let mappedAtRelease = -1;
    source.onRelease = () => {
      mappedAtRelease = mappedRegionCount();
    };
    journal.length = 0;
    dev.disconnected();
    expect(callsTo(journal, 'vhost0')).to.deep.equal([{ op: 'netSetBackend', ring: 0, fd: -1 }, { op: 'close' }]);
    expect(mappedAtRelease, 'guest memory still mapped while the kernel holds it').to.equal(1);
    expect(mappedRegionCount()).to.equal(0);
    expect(openFdCount()).to.equal(fdsBefore);
    expect(tap.frames).to.have.length(0);
  });

  it('RESET_DEVICE starts over with a fresh owned vhost-net and no rings', () => {
    const { source, dev } = setup(1);
    ready(dev, [0]);
    startPair(dev, 0, []);
    const first = source.live(0);
    dev.resetDevice();
    expect(first.closed).to.equal(true);
    const second = source.live(0);
    expect(second).to.not.equal(first);
    expect(second.owned).to.equal(true);
    expect(second.attached(0)).to.equal(false);
    expect(mappedRegionCount()).to.equal(0);
    dev.disconnected();
  });

  it('SEND_RARP writes a RARP request for the MAC; NET_SET_MTU sets the tap MTU', () => {
    const { dev, tap } = setup(1);
    const mac = Buffer.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    dev.sendRarp(mac);
    const f = tap.frames[0];
    expect(f).to.deep.equal(rarpFrame(mac));
    expect(f.subarray(0, 6)).to.deep.equal(Buffer.alloc(6, 0xff));
    expect(f.readUInt16BE(12)).to.equal(0x8035);
    expect(f.subarray(22, 28)).to.deep.equal(mac);
    dev.netSetMtu(9000);
    expect(tap.mtu).to.equal(9000);
  });

  it('GET_QUEUE_NUM and the protocol features it implements', () => {
    const { dev } = setup(2);
    expect(dev.getQueueNum(), 'two virtqueues per pair').to.equal(4n);
    expect(dev.ringCount()).to.equal(4);
    // REPLY_ACK(3), MQ(0), CONFIGURE_MEM_SLOTS(15), LOG_SHMFD(1), RARP(2), MTU(4), RESET_DEVICE(13)
    expect(dev.getProtocolFeatures()).to.equal(maskOf(0, 1, 2, 3, 4, 13, 15));
  });
});

describe('bridge session on vhost-net: the kernel gets what changed, nothing else', () => {
  leakGuard();
  it('a repeated identical request (NUM, BASE, ADDR, ENABLE, FEATURES, memory) gives kernel and tap nothing', () => {
    const { journal, dev } = setup(2);
    dev.setOwner();
    for (const q of [0, 1, 2, 3]) dev.setVringEnable(q, true);
    dev.setFeatures(ACKED);
    const mem = guestMemory();
    const again = sys.dup(mem.fd);
    dev.setMemTable([mem.region], [mem.fd]);
    startPair(dev, 0, []);
    startPair(dev, 1, []);
    journal.length = 0;
    for (const q of [0, 1, 2, 3]) {
      dev.setVringNum(q, NUM);
      dev.setVringBase(q, 0);
      dev.setVringAddr(ringAt(q));
      dev.setVringEnable(q, true);
    }
    dev.setFeatures(ACKED);
    dev.setMemTable([mem.region], [again]);
    expect(journal).to.deep.equal([]);
  });

  it('a ring change detaches and re-attaches that ring only, on its own queue pair', () => {
    const { journal, source, dev } = setup(2);
    ready(dev, [0, 1, 2, 3]);
    startPair(dev, 0, []);
    startPair(dev, 1, []);
    journal.length = 0;
    dev.setVringNum(3, 128);
    expect(journal).to.deep.equal([
      { who: 'vhost1', op: 'netSetBackend', ring: 3, fd: -1 },
      { who: 'vhost1', op: 'setVringNum', ring: 3, num: 128 },
      { who: 'vhost1', op: 'netSetBackend', ring: 3, fd: 101 },
    ]);
    journal.length = 0;
    dev.setVringAddr({ ...ringAt(2), flags: 1 });
    expect(journal.map(({ who, op }) => `${who} ${op}`)).to.deep.equal([
      'vhost1 netSetBackend',
      'vhost1 setVringAddr',
      'vhost1 netSetBackend',
    ]);
    expect([0, 1, 2, 3].map((q) => source.live(q >> 1).attached(q))).to.deep.equal([true, true, true, true]);
  });

  it('a refused kernel change is undone: the session keeps what the kernel has, and the ring runs on', () => {
    const { journal, source, dev } = setup(1);
    ready(dev, [0, 1]);
    startPair(dev, 0, []);
    journal.length = 0;
    expect(() => dev.setVringBase(1, 0x10000)).to.throw(/EINVAL/);
    expect(source.live(0).attached(1)).to.equal(true);
    journal.length = 0;
    dev.setVringCall(1, sys.eventfd()); // the next request does not retry the refused base
    expect(callsTo(journal, 'vhost0').map((c) => c.op)).to.deep.equal(['setVringCall']);
  });
});
