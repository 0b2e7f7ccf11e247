/**
 * Migration on the recording kernel (fake-kernel.ts): the order in which the dirty log, LOG_ALL and
 * the ring stop reach vhost-net for the request sequences QEMU 7.2 sends (hw/virtio/vhost.c
 * vhost_migration_log, vhost_dev_start, vhost_dev_stop; docs/migration.md). The lab test
 * (test/qemu/migration.test.ts) shows a real migration.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import type { PortBackEnd } from '../../src/bridge/session.js';
import { bit, maskOf } from '../../src/bits.js';
import { portLog, log as processLog } from '../../src/log.js';
import { captureLog } from '../log-capture.js';
import { mappedRegionCount } from '../../src/memtable/index.js';
import * as sys from '../../src/sys/index.js';
import { FrontendReq, PROTOCOL_F, requestName } from '../../src/vhost-user/constants.js';
import { readTrace, type TraceMessage } from '../../src/vhost-user/trace.js';
import { FdFactory } from '../vhost-user/replay-fds.js';
import { Dispatcher } from '../../src/vhost-user/dispatcher.js';
import { VHOST_F, VIRTIO_NET_F } from '../../src/virtio.js';
import { ID, NEED_REPLY, V1 } from '../../lab/frontend/builder.js';
import { type Call, callsTo, fakePort, indexOfCall } from './fake-kernel.js';

const MiB = 1n << 20n;
const QVA = 0x7f00_0000_0000n;
const OFFERED = 0x1_7500_8000n | maskOf(VIRTIO_NET_F.CSUM, VIRTIO_NET_F.GUEST_CSUM, VHOST_F.LOG_ALL);
/** What QEMU 7.2 acked in the lab (MRG_RXBUF, EVENT_IDX, INDIRECT, VERSION_1, PROTOCOL_FEATURES) plus CSUM. */
const ACKED = 0x1_7000_8000n | maskOf(VIRTIO_NET_F.CSUM);
const LOG_ALL = bit(VHOST_F.LOG_ALL);
const VRING_F_LOG = 1;
const NUM = 256;
const LOG_NAME = 'vb-test-log';

const ringAt = (q: number, flags = 0) => {
  const desc = QVA + 0x10000n + BigInt(q) * 0x4000n;
  return { index: q, flags, desc, avail: desc + 0x1000n, used: desc + 0x2000n, log: 0x12000n + BigInt(q) * 0x4000n };
};

const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };
const live: PortBackEnd[] = [];
const fds: number[] = [];

/** Every request followed by afterRequest, as the dispatcher does (session.test.ts). */
function asDispatched(session: PortBackEnd): PortBackEnd {
  return new Proxy(session, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function' || prop === 'afterRequest' || prop === 'disconnected' || prop === 'status') return v;
      return (...args: unknown[]) => {
        const request = String(prop);
        try {
          const out = v.apply(target, args);
          target.afterRequest({ request, result: 'ok' });
          return out;
        } catch (e) {
          target.afterRequest({ request, result: 'nack', reason: (e as Error).message });
          throw e;
        }
      };
    },
  });
}

/** What QEMU 7.2 acks of the bridge's protocol features (LOG_SHMFD among them). */
const PROTOCOL = maskOf(PROTOCOL_F.REPLY_ACK, PROTOCOL_F.MQ, PROTOCOL_F.LOG_SHMFD, PROTOCOL_F.RARP, PROTOCOL_F.MTU);

function setup(queuePairs = 1) {
  const port = fakePort({ queuePairs, offered: OFFERED, log: quiet });
  live.push(port.session);
  port.session.connected();
  port.session.attach({ protocolFeatures: PROTOCOL });
  return { ...port, dev: asDispatched(port.session) };
}

const guestMemory = () => {
  const fd = sys.memfdCreate('guest');
  sys.ftruncate(fd, MiB);
  return { fd, region: { gpa: 0n, size: MiB, qva: QVA, mmapOffset: 0n } };
};

/** A log memfd as QEMU makes one (vhost_log_alloc): one bit per 4 KiB page of guest memory. */
function logFd(size = 0x1000): number {
  const fd = sys.memfdCreate(LOG_NAME);
  sys.ftruncate(fd, size);
  return fd;
}

/** The ring configuration of one pair as vhost_virtqueue_start sends it, `flags` on SET_VRING_ADDR. */
function startRings(dev: PortBackEnd, rings: number[], flags = 0) {
  for (const q of rings) {
    dev.setVringNum(q, NUM);
    dev.setVringBase(q, 0);
    dev.setVringAddr(ringAt(q, flags));
    const kick = sys.eventfd();
    const call = sys.eventfd();
    fds.push(sys.dup(kick));
    dev.setVringKick(q, kick);
    dev.setVringCall(q, call);
  }
}

/** A device that runs as after boot: owner, features, memory, both rings of pair 0 enabled and attached. */
function running(dev: PortBackEnd) {
  dev.setOwner();
  dev.setVringEnable(0, true);
  dev.setVringEnable(1, true);
  dev.setFeatures(ACKED);
  const mem = guestMemory();
  dev.setMemTable([mem.region], [mem.fd]);
  startRings(dev, [0, 1]);
}

/** Mappings of this process whose name contains `name` (the log memfd), from /proc/self/maps. */
function mappingsOf(name: string): { start: bigint; end: bigint }[] {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(name))
    .map((l) => {
      const [start, end] = l.split(' ')[0].split('-');
      return { start: BigInt(`0x${start}`), end: BigInt(`0x${end}`) };
    });
}
const isMapped = (addr: bigint) => mappingsOf(LOG_NAME).some((m) => m.start <= addr && addr < m.end);

const featureWords = (journal: readonly Call[], who: Call['who']) =>
  callsTo(journal, who)
    .filter((c) => c.op === 'setFeatures')
    .map((c) => c.features as bigint);

describe('bridge migration on the recording kernel: the dirty log and LOG_ALL', () => {
  afterEach(() => {
    for (const d of live.splice(0)) d.disconnected();
    sys.closeAll(fds.splice(0));
    expect(mappedRegionCount(), 'a test left guest memory mapped').to.equal(0);
    expect(mappingsOf(LOG_NAME), 'a test left a dirty log mapped').to.deep.equal([]);
  });

  it('migration start: SET_LOG_BASE reaches the kernel before LOG_ALL; rings stay attached; tap untouched', () => {
    const { dev, journal, vhostNet } = setup();
    running(dev);
    journal.length = 0;
    // vhost_migration_log(true): vhost_dev_log_resize (SET_LOG_BASE), then vhost_dev_set_log
    // (SET_FEATURES with LOG_ALL, SET_VRING_ADDR with VHOST_VRING_F_LOG per ring).
    dev.setLogBase({ size: 0x1000n, offset: 0n }, logFd());
    dev.setFeatures(ACKED | LOG_ALL);
    dev.setVringAddr(ringAt(0, VRING_F_LOG));
    dev.setVringAddr(ringAt(1, VRING_F_LOG));
    const k = vhostNet.live(0);
    const logBase = indexOfCall(journal, { who: 'vhost0', op: 'setLogBase' });
    const logAll = journal.findIndex((c) => c.op === 'setFeatures' && ((c.features as bigint) & LOG_ALL) !== 0n);
    expect(logBase).to.be.at.least(0);
    expect(logAll, 'the LOG_ALL word comes after the log base').to.be.greaterThan(logBase);
    expect(k.features & LOG_ALL).to.equal(LOG_ALL);
    expect(k.ringState(0).addr!.flags).to.equal(VRING_F_LOG);
    expect(k.ringState(1).addr!.log).to.equal(ringAt(1).log, 'the used ring is logged at its guest-physical address');
    expect(k.attached(0) && k.attached(1)).to.equal(true);
    expect(isMapped(k.logBase!)).to.equal(true);
    expect(callsTo(journal, 'tap'), 'a LOG_ALL toggle does not reconfigure the tap').to.deep.equal([]);
    // Migration cancelled: LOG_ALL goes again, the rings run on, the tap is still untouched.
    dev.setFeatures(ACKED);
    expect(k.features & LOG_ALL).to.equal(0n);
    expect(k.attached(0) && k.attached(1)).to.equal(true);
    expect(callsTo(journal, 'tap')).to.deep.equal([]);
  });

  it('a start during migration (SET_LOG_BASE last): LOG_ALL held back, logged rings wait for the log', () => {
    const { dev, journal, vhostNet } = setup();
    // vhost_dev_start with log_enabled: SET_FEATURES(LOG_ALL), memory, rings with the log flag, SET_LOG_BASE.
    dev.setOwner();
    dev.setVringEnable(0, true);
    dev.setVringEnable(1, true);
    dev.setFeatures(ACKED | LOG_ALL);
    const mem = guestMemory();
    dev.setMemTable([mem.region], [mem.fd]);
    startRings(dev, [0, 1], VRING_F_LOG);
    const k = vhostNet.live(0);
    expect(
      featureWords(journal, 'vhost0').every((w) => (w & LOG_ALL) === 0n),
      'no LOG_ALL without a log',
    ).to.equal(true);
    expect(k.attached(0) || k.attached(1), 'no ring runs before the log is there').to.equal(false);
    dev.setLogBase({ size: 0x1000n, offset: 0n }, logFd());
    const at = indexOfCall(journal, { who: 'vhost0', op: 'setLogBase' });
    const after = callsTo(journal.slice(at), 'vhost0').map((c) => c.op);
    expect(after).to.deep.equal(['setLogBase', 'setFeatures', 'netSetBackend', 'netSetBackend']);
    expect(k.features & LOG_ALL).to.equal(LOG_ALL);
    expect(k.attached(0) && k.attached(1)).to.equal(true);
  });

  it('a reconnect during migration: the new session gives the log to its new vhost-net fd before LOG_ALL', () => {
    const { dev, journal, vhostNet, session } = setup();
    running(dev);
    dev.setLogBase({ size: 0x1000n, offset: 0n }, logFd());
    dev.setFeatures(ACKED | LOG_ALL);
    const first = vhostNet.live(0);
    dev.disconnected();
    expect(first.closed).to.equal(true);
    expect(mappingsOf(LOG_NAME), 'the old session unmapped its log').to.deep.equal([]);
    session.connected();
    session.attach({ protocolFeatures: PROTOCOL });
    journal.length = 0;
    dev.setOwner();
    dev.setVringEnable(0, true);
    dev.setVringEnable(1, true);
    dev.setFeatures(ACKED | LOG_ALL);
    const mem = guestMemory();
    dev.setMemTable([mem.region], [mem.fd]);
    startRings(dev, [0, 1], VRING_F_LOG);
    dev.setLogBase({ size: 0x1000n, offset: 0n }, logFd());
    const second = vhostNet.live(0);
    expect(second).to.not.equal(first);
    const logBase = indexOfCall(journal, { who: 'vhost0', op: 'setLogBase' });
    const logAll = journal.findIndex((c) => c.op === 'setFeatures' && ((c.features as bigint) & LOG_ALL) !== 0n);
    const attach = indexOfCall(journal, { who: 'vhost0', op: 'netSetBackend', fd: 100 });
    expect(logBase).to.be.at.least(0);
    expect(logAll).to.be.greaterThan(logBase);
    expect(attach).to.be.greaterThan(logBase);
    expect(second.features & LOG_ALL).to.equal(LOG_ALL);
    expect(session.status().memory.dirtyLog).to.equal(true);
  });

  it('without LOG_SHMFD (no log can come), a LOG_ALL ack does not hold the rings back', () => {
    const { dev, vhostNet, session } = setup();
    session.attach({ protocolFeatures: maskOf(PROTOCOL_F.REPLY_ACK, PROTOCOL_F.MQ) });
    dev.setOwner();
    dev.setVringEnable(0, true);
    dev.setVringEnable(1, true);
    dev.setFeatures(ACKED | LOG_ALL);
    const mem = guestMemory();
    dev.setMemTable([mem.region], [mem.fd]);
    startRings(dev, [0, 1]);
    const k = vhostNet.live(0);
    expect(k.attached(0) && k.attached(1)).to.equal(true);
    expect(k.features & LOG_ALL, 'still no LOG_ALL for a kernel without a log').to.equal(0n);
  });

  it('a log that arrives before SET_OWNER is given at SET_OWNER, before the features', () => {
    const { dev, journal, vhostNet } = setup();
    dev.setFeatures(ACKED | LOG_ALL);
    dev.setLogBase({ size: 0x1000n, offset: 0x0n }, logFd());
    dev.setOwner();
    expect(
      callsTo(journal, 'vhost0')
        .map((c) => c.op)
        .slice(0, 3),
    ).to.deep.equal(['setOwner', 'setLogBase', 'setFeatures']);
    expect(vhostNet.live(0).features & LOG_ALL).to.equal(LOG_ALL);
    expect(isMapped(vhostNet.live(0).logBase!)).to.equal(true);
  });

  it('a second SET_LOG_BASE: the kernel gets the new log while the old is mapped, then the old goes', () => {
    const { dev, journal, vhostNet } = setup();
    running(dev);
    const firstFd = logFd();
    dev.setLogBase({ size: 0x1000n, offset: 0n }, firstFd);
    dev.setFeatures(ACKED | LOG_ALL);
    const k = vhostNet.live(0);
    const old = k.logBase!;
    expect(sys.isOpen(firstFd), 'the fd is closed once mapped').to.equal(false);
    let oldMappedAtSwitch: boolean | null = null;
    const push = journal.push.bind(journal);
    journal.push = (...calls: Call[]) => {
      if (calls.some((c) => c.op === 'setLogBase')) oldMappedAtSwitch = isMapped(old);
      return push(...calls);
    };
    // QEMU resizes the log (guest memory grew): a new, larger memfd, with an offset this time.
    const secondFd = logFd(0x3000);
    dev.setLogBase({ size: 0x2000n, offset: 0x1000n }, secondFd);
    expect(oldMappedAtSwitch, 'the old log was still mapped when the kernel got the new one').to.equal(true);
    expect(k.logBase).to.not.equal(old);
    expect(isMapped(old), 'the old log is unmapped').to.equal(false);
    expect(isMapped(k.logBase!)).to.equal(true);
    expect(mappingsOf(LOG_NAME)).to.have.length(1);
    expect(sys.isOpen(secondFd)).to.equal(false);
    expect(k.features & LOG_ALL, 'LOG_ALL stays on across the switch').to.equal(LOG_ALL);
    expect(k.attached(0) && k.attached(1), 'the rings ran on').to.equal(true);
  });

  it('a SET_LOG_BASE the kernel refuses leaves the old log in place and its fd to the dispatcher', () => {
    const { dev, vhostNet } = setup();
    running(dev);
    dev.setLogBase({ size: 0x1000n, offset: 0n }, logFd());
    const k = vhostNet.live(0);
    const old = k.logBase!;
    k.setLogBase = () => {
      throw new sys.SysError('VHOST_SET_LOG_BASE (queue pair 0)', 14);
    };
    const fd = logFd();
    expect(() => dev.setLogBase({ size: 0x1000n, offset: 0n }, fd)).to.throw(/EFAULT/);
    expect(sys.isOpen(fd), "not closed by the session: the dispatcher closes a refused message's fds").to.equal(true);
    sys.close(fd);
    expect(mappingsOf(LOG_NAME), 'only the old log is mapped').to.have.length(1);
    expect(isMapped(old)).to.equal(true);
  });

  it('while rings run, SET_FEATURES may only toggle LOG_ALL: else refused, one line naming port and request', () => {
    const { session, journal, vhostNet } = setup();
    const cap = captureLog('warn');
    try {
      const d = new Dispatcher(session, portLog(processLog, 'vbtap0'));
      const send = (request: number, payload: Buffer, flags = V1) =>
        d.handle({ header: { request, flags, size: payload.length }, payload, fds: [] });
      const u64 = (v: bigint) => {
        const b = Buffer.alloc(8);
        b.writeBigUInt64LE(v);
        return b;
      };
      send(ID.SET_FEATURES, u64(ACKED));
      send(ID.SET_PROTOCOL_FEATURES, u64(maskOf(PROTOCOL_F.REPLY_ACK, PROTOCOL_F.LOG_SHMFD)));
      const dev = asDispatched(session);
      dev.setOwner();
      dev.setVringEnable(0, true);
      dev.setVringEnable(1, true);
      const mem = guestMemory();
      dev.setMemTable([mem.region], [mem.fd]);
      startRings(dev, [0, 1]);
      journal.length = 0;
      const out = send(ID.SET_FEATURES, u64(ACKED | bit(VIRTIO_NET_F.GUEST_CSUM)), V1 | NEED_REPLY);
      expect(out.result).to.equal('nack');
      expect(cap.texts('warn')).to.have.length(1);
      expect(cap.texts('warn')[0]).to.match(
        /^WARN vbtap0: SET_FEATURES: changes 0x2 \(GUEST_CSUM\) while ring 0 .* run/,
      );
      expect(journal, 'neither the kernel nor the tap heard of it').to.deep.equal([]);
      expect(session.status().features.negotiated).to.equal(`0x${ACKED.toString(16)}`);
      expect(vhostNet.live(0).attached(0)).to.equal(true);
      // Once the rings are stopped (a guest reset: GET_VRING_BASE on each), the driver may renegotiate.
      dev.getVringBase(0);
      dev.getVringBase(1);
      expect(send(ID.SET_FEATURES, u64(ACKED | bit(VIRTIO_NET_F.GUEST_CSUM)), V1 | NEED_REPLY).result).to.equal('ok');
      expect(callsTo(journal, 'tap').map((c) => c.op)).to.deep.equal(['setVnetHdrSize', 'setOffload']);
    } finally {
      cap.stop();
    }
  });

  it('migration end: GET_VRING_BASE detaches (the kernel flushes its worker), then reads; the log stays', () => {
    const { dev, journal, vhostNet } = setup();
    running(dev);
    dev.setLogBase({ size: 0x1000n, offset: 0n }, logFd());
    dev.setFeatures(ACKED | LOG_ALL);
    const k = vhostNet.live(0);
    k.advance(0, 40);
    journal.length = 0;
    expect(dev.getVringBase(0)).to.equal(40);
    expect(dev.getVringBase(1)).to.equal(0);
    expect(callsTo(journal, 'vhost0')).to.deep.equal([
      { op: 'netSetBackend', ring: 0, fd: -1 },
      { op: 'getVringBase', ring: 0 },
      { op: 'netSetBackend', ring: 1, fd: -1 },
      { op: 'getVringBase', ring: 1 },
    ]);
    expect(isMapped(k.logBase!), 'the log is mapped while QEMU syncs it').to.equal(true);
  });

  it('GET_VRING_BASE gives no index if the ring cannot be detached (the worker may still move it)', () => {
    const { dev, journal, vhostNet } = setup();
    running(dev);
    const k = vhostNet.live(0);
    const attach = k.netSetBackend.bind(k);
    k.netSetBackend = (ring: number, fd: number) => {
      if (fd < 0) throw new sys.SysError(`VHOST_NET_SET_BACKEND (ring ${ring})`, 14);
      attach(ring, fd);
    };
    journal.length = 0;
    expect(() => dev.getVringBase(0)).to.throw(/EFAULT/);
    expect(indexOfCall(journal, { op: 'getVringBase' }), 'the index was not read').to.equal(-1);
  });

  it('offers neither postcopy (PAGEFAULT) nor DEVICE_STATE', () => {
    const { dev } = setup();
    const p = dev.getProtocolFeatures();
    expect(p & bit(PROTOCOL_F.PAGEFAULT)).to.equal(0n);
    expect(p & bit(PROTOCOL_F.DEVICE_STATE)).to.equal(0n);
    expect(p & bit(PROTOCOL_F.LOG_SHMFD)).to.not.equal(0n);
  });
});

/**
 * A real migration: bridge B's trace from the lab test (test/qemu/migration.test.ts, recorded with
 * --record): QEMU 7.2 starts as a paused migration destination, runs, is then migrated away (the
 * source side: SET_LOG_BASE, LOG_ALL, logged rings, GET_VRING_BASE) and killed; a second QEMU
 * restores the guest from a file. Replayed through the dispatcher onto the recording kernel.
 */
describe('bridge migration: a real QEMU 7.2 migration replayed (test/fixtures/qemu72-migration.msgpack)', () => {
  const fixture = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'qemu72-migration.msgpack');
  const { header, events } = readTrace(fixture);
  const msgs = events.filter((e): e is TraceMessage => e.e === 'msg');
  const getFeatures = msgs.find((m) => m.request === FrontendReq.GET_FEATURES)!;
  const offered = getFeatures.reply!.readBigUInt64LE(12);
  const queuePairs = (header.meta as { queuePairs: number }).queuePairs;

  function replay() {
    const port = fakePort({ queuePairs, offered, log: quiet });
    const factory = new FdFactory();
    const cap = captureLog('warn');
    const replies: { request: string; same: boolean; reply: Buffer | null }[] = [];
    /** Per connection: where its calls start in the journal; at its first GET_VRING_BASE, the kernel's rings. */
    const conns: { from: number; atStop: { attached: boolean; flags: number }[] | null }[] = [];
    try {
      let d: Dispatcher | null = null;
      for (const e of events) {
        if (e.e === 'connect') {
          d = new Dispatcher(port.session);
          port.session.connected();
          conns.push({ from: port.journal.length, atStop: null });
        } else if (e.e === 'msg') {
          const c = conns.at(-1)!;
          if (e.request === FrontendReq.GET_VRING_BASE && !c.atStop) {
            c.atStop = [0, 1].map((q) => ({
              attached: port.vhostNet.live(0).attached(q),
              flags: port.vhostNet.live(0).ringState(q).addr?.flags ?? -1,
            }));
          }
          const out = d!.handle({
            header: { request: e.request, flags: e.flags, size: e.size },
            payload: e.payload,
            fds: factory.forMessage(e),
          });
          replies.push({
            request: requestName(e.request),
            same: Buffer.compare(out.reply ?? Buffer.alloc(0), e.reply ?? Buffer.alloc(0)) === 0,
            reply: out.reply,
          });
        } else d!.disconnected();
      }
    } finally {
      cap.stop();
      factory.close();
    }
    return { port, replies, conns, warnings: cap.texts() };
  }

  it('holds a migration: SET_LOG_BASE, LOG_ALL, logged rings, then GET_VRING_BASE', () => {
    const requests = msgs.map((m) => m.request);
    expect(requests).to.include(FrontendReq.SET_LOG_BASE);
    expect(
      msgs.some((m) => m.request === FrontendReq.SET_FEATURES && (m.payload.readBigUInt64LE(0) & LOG_ALL) !== 0n),
    ).to.equal(true);
    expect(requests.indexOf(FrontendReq.SET_LOG_BASE)).to.be.below(requests.lastIndexOf(FrontendReq.GET_VRING_BASE));
  });

  it('replays without a warning, every reply byte for byte as recorded (but the ring indexes)', () => {
    const r = replay();
    expect(r.warnings).to.deep.equal([]);
    // GET_VRING_BASE answered the real kernel's index; the recording kernel moves no packets.
    // GET_QUEUE_NUM was recorded as 1 (pairs); the bridge answers virtqueues, 2 (docs/frontends.md).
    const asRecorded = (x: { request: string }) => x.request !== 'GET_VRING_BASE' && x.request !== 'GET_QUEUE_NUM';
    expect(r.replies.filter((x) => !x.same && asRecorded(x)).map((x) => x.request)).to.deep.equal([]);
    const queueNum = r.replies.filter((x) => x.request === 'GET_QUEUE_NUM');
    expect(queueNum).to.have.length.above(0);
    for (const x of queueNum) expect(x.reply?.readBigUInt64LE(12), 'GET_QUEUE_NUM: 2 virtqueues').to.equal(2n);
    expect(r.replies.filter((x) => x.request === 'SET_LOG_BASE')).to.have.length.above(0);
    expect(mappedRegionCount()).to.equal(0);
    expect(mappingsOf('dirty-log')).to.deep.equal([]);
  });

  it('as the destination, gave the kernel the migrated ring indexes before attaching', () => {
    const { port, conns } = replay();
    const sent = msgs.filter((m) => m.conn === 1 && m.request === FrontendReq.SET_VRING_BASE);
    const calls = callsTo(port.journal.slice(conns[0].from), 'vhost0');
    for (const m of sent) {
      const [ring, base] = [m.payload.readUInt32LE(0), m.payload.readUInt32LE(4)];
      const set = calls.findIndex((x) => x.op === 'setVringBase' && x.ring === ring && x.base === base);
      const attach = calls.findIndex((x) => x.op === 'netSetBackend' && x.ring === ring && (x.fd as number) >= 0);
      expect(set, `ring ${ring}: VHOST_SET_VRING_BASE ${base}`).to.be.at.least(0);
      expect(attach, `ring ${ring}: attached after its base`).to.be.above(set);
    }
    expect(
      sent.some((m) => m.payload.readUInt32LE(4) !== 0),
      'a migrated index, not a fresh ring',
    ).to.equal(true);
  });

  it('gave the kernel the log before LOG_ALL, and the rings ran logged until GET_VRING_BASE', () => {
    const { port, conns } = replay();
    const source = conns.find(
      (c) => c.atStop !== null && callsTo(port.journal.slice(c.from), 'vhost0').some((x) => x.op === 'setLogBase'),
    );
    expect(source, 'a connection that was migrated away').to.not.equal(undefined);
    const calls = callsTo(port.journal.slice(source!.from), 'vhost0');
    const logBase = calls.findIndex((x) => x.op === 'setLogBase');
    const logAll = calls.findIndex((x) => x.op === 'setFeatures' && ((x.features as bigint) & LOG_ALL) !== 0n);
    expect(logAll, 'LOG_ALL reached the kernel').to.be.at.least(0);
    expect(logAll, 'after the log base').to.be.above(logBase);
    expect(source!.atStop).to.deep.equal([
      { attached: true, flags: VRING_F_LOG },
      { attached: true, flags: VRING_F_LOG },
    ]);
    const stop = calls.findIndex((x) => x.op === 'getVringBase');
    expect(calls[stop - 1], 'detached before the index is read').to.deep.include({ op: 'netSetBackend', fd: -1 });
  });
});
