/**
 * The socket kinds behind the vhost-net datapath and its busy-poll knob, on the recording kernel
 * (fake-kernel.ts): what reaches the kernel and the socket for a packet socket (no header: bit 27
 * to the kernel, no header or offload ioctl) and with busy polling on (every ring, read back in status).
 */
import { expect } from 'chai';
import type { PortBackEnd } from '../../src/bridge/session.js';
import { has, maskOf } from '../../src/bits.js';
import { mappedRegionCount } from '../../src/memtable/index.js';
import * as sys from '../../src/sys/index.js';
import { rarpFrame } from '../../src/vhost-kernel/index.js';
import { VHOST_F, VIRTIO_F, VIRTIO_NET_F } from '../../src/virtio.js';
import { callsLike, callsTo, fakePort } from './fake-kernel.js';

const MiB = 1n << 20n;
const QVA = 0x7f00_0000_0000n;
/** What a packet socket port offers on the lab kernel: ring bits and PROTOCOL_FEATURES, no offload. */
const OFFERED = 0x1_7000_8000n;
const ACKED = 0x1_7000_8000n;
const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };

const live: PortBackEnd[] = [];
/** Installed in each describe: every session is disconnected, and no test leaves guest memory mapped. */
function leakGuard(): void {
  afterEach(() => {
    for (const s of live.splice(0)) s.disconnected();
    expect(mappedRegionCount(), 'a test left guest memory mapped').to.equal(0);
  });
}

/** SET_OWNER, features, 1 MiB of memory, and both rings of pair 0 configured and started. */
function run(session: PortBackEnd): void {
  live.push(session);
  session.connected();
  session.setOwner();
  session.setFeatures(ACKED);
  const mem = sys.memfdCreate('guest');
  sys.ftruncate(mem, MiB);
  session.setMemTable([{ gpa: 0n, size: MiB, qva: QVA, mmapOffset: 0n }], [mem]);
  session.afterRequest({ request: 'setMemTable', result: 'ok' });
  for (const q of [0, 1]) {
    const desc = QVA + 0x10000n + BigInt(q) * 0x4000n;
    session.setVringNum(q, 256);
    session.setVringBase(q, 0);
    session.setVringAddr({ index: q, flags: 0, desc, avail: desc + 0x1000n, used: desc + 0x2000n, log: 0n });
    const kick = sys.eventfd();
    const call = sys.eventfd();
    session.setVringKick(q, kick);
    session.setVringCall(q, call);
    session.setVringEnable(q, true);
    session.afterRequest({ request: 'setVringCall', result: 'ok' });
  }
}

describe('bridge datapath on a packet socket (recording kernel)', () => {
  leakGuard();
  it('gives the kernel VHOST_NET_F_VIRTIO_NET_HDR and the socket no header or offload call; rings attach', () => {
    const { journal, session, vhostNet } = fakePort({ queuePairs: 1, offered: OFFERED, log: quiet, packet: true });
    run(session);
    const set = callsLike(journal, { who: 'vhost0', op: 'setFeatures' });
    expect(set).to.have.length(1);
    const kernel = (set[0] as { features: bigint }).features;
    expect(has(kernel, VHOST_F.NET_VIRTIO_NET_HDR), 'bit 27: vhost-net adds and strips the header').to.equal(true);
    expect(kernel & ~maskOf(VHOST_F.NET_VIRTIO_NET_HDR)).to.equal(
      maskOf(VIRTIO_F.VERSION_1, VIRTIO_NET_F.MRG_RXBUF, VIRTIO_F.RING_EVENT_IDX, VIRTIO_F.RING_INDIRECT_DESC),
    );
    const socketOps = callsTo(journal, 'tap').map((c) => c.op);
    expect(socketOps).to.not.include('setVnetHdrSize');
    expect(socketOps).to.not.include('setOffload');
    expect(vhostNet.live(0).attached(0)).to.equal(true);
    expect(vhostNet.live(0).attached(1)).to.equal(true);
    expect(session.status().datapath).to.include({ socket: 'packet', interface: 'vbraw0', busyPollUs: 0 });
  });

  it('announces with a bare RARP frame (no header in front)', () => {
    const { session, tap } = fakePort({ queuePairs: 1, offered: OFFERED, log: quiet, packet: true });
    run(session);
    const mac = Buffer.from([0x52, 0x54, 0, 1, 2, 3]);
    session.sendRarp(mac);
    expect(tap.frames).to.deep.equal([rarpFrame(mac)]);
  });

  it('a tap port keeps bit 27 away from the kernel and gets the header size and offloads', () => {
    const { journal, session } = fakePort({ queuePairs: 1, offered: OFFERED, log: quiet });
    run(session);
    const kernel = (callsLike(journal, { who: 'vhost0', op: 'setFeatures' })[0] as { features: bigint }).features;
    expect(has(kernel, VHOST_F.NET_VIRTIO_NET_HDR)).to.equal(false);
    expect(callsLike(journal, { who: 'tap', op: 'setVnetHdrSize', size: 12 })).to.have.length(1);
    expect(session.status().datapath.socket).to.equal('tap');
  });
});

describe('bridge datapath: busy polling (VHOST_SET_VRING_BUSYLOOP_TIMEOUT)', () => {
  leakGuard();
  it('is set on every ring of every queue pair right after SET_OWNER, and read back in the status', () => {
    const { journal, session } = fakePort({ queuePairs: 2, offered: OFFERED, log: quiet, busyPollUs: 50 });
    live.push(session);
    expect(session.status().datapath.kernelBusyPollUs, 'no front-end: nothing to read').to.deep.equal([]);
    session.connected();
    session.setOwner();
    for (const p of [0, 1]) {
      const ops = callsTo(journal, `vhost${p}`);
      expect(ops.slice(0, 3)).to.deep.equal([
        { op: 'setOwner' },
        { op: 'setVringBusyloopTimeout', ring: 2 * p, usecs: 50 },
        { op: 'setVringBusyloopTimeout', ring: 2 * p + 1, usecs: 50 },
      ]);
    }
    expect(session.status().datapath).to.deep.include({ busyPollUs: 50, kernelBusyPollUs: [50, 50, 50, 50] });
  });

  it('is set again on the fresh vhost-net fds of the next session, and never when off', () => {
    const on = fakePort({ queuePairs: 1, offered: OFFERED, log: quiet, busyPollUs: 20 });
    live.push(on.session);
    on.session.connected();
    on.session.setOwner();
    on.session.disconnected();
    on.session.connected();
    on.session.setOwner();
    expect(callsLike(on.journal, { op: 'setVringBusyloopTimeout', usecs: 20 })).to.have.length(4);
    expect(on.session.status().datapath.kernelBusyPollUs).to.deep.equal([20, 20]);

    const off = fakePort({ queuePairs: 1, offered: OFFERED, log: quiet });
    live.push(off.session);
    off.session.connected();
    off.session.setOwner();
    expect(callsLike(off.journal, { op: 'setVringBusyloopTimeout' })).to.have.length(0);
    expect(off.session.status().datapath.kernelBusyPollUs).to.deep.equal([0, 0]);
  });
});
