/**
 * Lab: the kernel datapath without QEMU. The test is the guest's virtio driver (vring.ts) and the
 * VMM (kernel-rig.ts); frames go through a real /dev/vhost-net and a real tap, and the host side
 * of the tap is an AF_PACKET socket. As in the pasta vhost-kernel patches and DPDK virtio-user.
 */
import { expect } from 'chai';
import { maskOf } from '../../src/bits.js';
import { VHOST_F, VIRTIO_F } from '../../src/virtio.js';
import { pairRing } from '../../src/vhost-kernel/index.js';
import * as sys from '../../src/sys/index.js';
import { kernelAtLeast } from '../../lab/host.js';
import { requireLab } from './lab.js';
import { attach, detach, FEATURES, type PairRig, Rig, rxPackets, withNetHdr } from './kernel-rig.js';
import { frameTag, type FrameTag, NET_HDR, PAGE, type SplitVring, testFrame } from './vring.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Frame length for sequence number `seq`: varies so that lengths are checked too. */
const lenOf = (seq: number): number => 64 + ((seq * 37) % 1200);

/**
 * Guest -> host: send frames `from` .. `to - 1` of `pair` through `p.tx`, at most `batch` per
 * kick, and collect them on the host side; each batch must arrive complete, in order, byte for
 * byte, and its descriptors must come back in the used ring.
 */
async function txRun(rig: Rig, p: PairRig, from: number, to: number, batch = 128): Promise<void> {
  for (let seq = from; seq < to; ) {
    const n = Math.min(batch, to - seq, p.tx.freeCount);
    const sent: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const f = testFrame({ dir: 'T', pair: p.pair, seq: seq + i }, lenOf(seq + i));
      sent.push(f);
      p.tx.post({ data: withNetHdr(f) });
    }
    p.tx.publish();
    p.tx.notify();
    const got = await rig.host.collect(n, isTx(p.pair));
    for (let i = 0; i < n; i++) {
      if (!got[i].equals(sent[i])) {
        throw new Error(
          `TX frame ${i} of batch at ${seq}: expected ${JSON.stringify(frameTag(sent[i]))}, got ` +
            `${JSON.stringify(frameTag(got[i]))} (${got[i].length} bytes)`,
        );
      }
    }
    await p.tx.waitUsed(n);
    seq += n;
  }
}

/** Keep `ring` full of `size`-byte RX buffers. */
function refill(ring: SplitVring, size = 2048): void {
  const n = ring.freeCount;
  for (let i = 0; i < n; i++) ring.post({ writable: size });
  ring.publish();
  ring.notify();
}

/**
 * Host -> guest: send frames `from` .. `to - 1` towards `p.rx`, never more in flight than the
 * buffers posted (the tap queues 500 and drops beyond), and check each arrives once, in order,
 * byte for byte, with num_buffers 1.
 */
async function rxRun(rig: Rig, p: PairRig, from: number, to: number, batch = 128): Promise<void> {
  refill(p.rx);
  for (let seq = from; seq < to; ) {
    const n = Math.min(batch, to - seq);
    const sent: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const f = testFrame({ dir: 'R', pair: p.pair, seq: seq + i }, lenOf(seq + i));
      sent.push(f);
      await rig.host.send(f);
    }
    const pkts = rxPackets(await p.rx.waitUsed(n), true);
    expect(pkts).to.have.length(n);
    for (let i = 0; i < n; i++) {
      if (!pkts[i].frame.equals(sent[i])) {
        throw new Error(
          `RX frame ${i} of batch at ${seq}: expected ${JSON.stringify(frameTag(sent[i]))}, got ` +
            `${JSON.stringify(frameTag(pkts[i].frame))}`,
        );
      }
      expect(pkts[i].hdr.readUInt16LE(NET_HDR.numBuffers)).to.equal(1);
    }
    refill(p.rx);
    seq += n;
  }
}

const isTx =
  (pair?: number) =>
  (f: Buffer): boolean => {
    const t = frameTag(f);
    return t !== null && t.dir === 'T' && (pair === undefined || t.pair === pair);
  };

describe('lab: kernel datapath (the test is the guest driver)', function () {
  this.timeout(180000);
  let rig: Rig | undefined;

  before(function () {
    requireLab(this);
  });

  afterEach(() => {
    rig?.close();
    rig = undefined;
  });

  const txFrame =
    'TX: a frame in a descriptor reaches the host side of the tap byte for byte; used ring and call eventfd show ' +
    'completion';
  it(txFrame, async () => {
    rig = Rig.create('tx');
    const p = rig.start(0);
    const frame = testFrame({ dir: 'T', pair: 0, seq: 1 }, 200);
    const id = p.tx.post({ data: withNetHdr(frame) });
    p.tx.publish();
    p.tx.notify();
    const [seen] = await rig.host.collect(1, isTx());
    expect(seen.equals(frame), 'the host got the same bytes').to.equal(true);
    const used = await p.tx.waitUsed(1);
    expect(used.map((u) => u.id)).to.deep.equal([id]);
    expect(p.tx.deviceUsedIdx()).to.equal(1);
  });

  const rxFrame =
    'RX: a frame sent on the host side lands in a posted buffer with a virtio-net header (num_buffers 1) and the ' +
    'call eventfd fires';
  it(rxFrame, async () => {
    rig = Rig.create('rx');
    const p = rig.start(0);
    for (let i = 0; i < 8; i++) p.rx.post({ writable: 2048 });
    p.rx.publish();
    p.rx.notify();
    const frame = testFrame({ dir: 'R', pair: 0, seq: 7 }, 300);
    await rig.host.send(frame);
    const used = await p.rx.waitUsed(1);
    expect(used).to.have.length(1);
    expect(used[0].len).to.equal(12 + frame.length);
    const [pkt] = rxPackets(used, true);
    expect(pkt.frame.equals(frame), 'the guest got the same bytes').to.equal(true);
    // A frame from a packet socket has no offload: flags 0, GSO_NONE, zero sizes; num_buffers = 1.
    const hdr = Buffer.alloc(12);
    hdr.writeUInt16LE(1, NET_HDR.numBuffers);
    expect(pkt.hdr.toString('hex')).to.equal(hdr.toString('hex'));
  });

  it('RX with MRG_RXBUF: a 1000-byte frame spread over 256-byte buffers, num_buffers says how many', async () => {
    rig = Rig.create('mrg');
    const p = rig.start(0, { rxBuf: 256 });
    for (let i = 0; i < 16; i++) p.rx.post({ writable: 256 });
    p.rx.publish();
    p.rx.notify();
    const frame = testFrame({ dir: 'R', pair: 0, seq: 9 }, 1000);
    await rig.host.send(frame);
    const used = await p.rx.waitUsed(4);
    expect(used.map((u) => u.len)).to.deep.equal([256, 256, 256, 1012 - 768]);
    const [pkt] = rxPackets(used, true);
    expect(pkt.buffers).to.equal(4);
    expect(pkt.frame.equals(frame)).to.equal(true);
  });

  it('RX with VERSION_1 but no MRG_RXBUF: 12-byte header, num_buffers as the kernel leaves it', async () => {
    rig = Rig.create('v1');
    const p = rig.start(0, { features: maskOf(VIRTIO_F.VERSION_1) });
    for (let i = 0; i < 4; i++) p.rx.post({ writable: 2048 });
    p.rx.publish();
    p.rx.notify();
    const frame = testFrame({ dir: 'R', pair: 0, seq: 3 }, 100);
    await rig.host.send(frame);
    const [u] = await p.rx.waitUsed(1);
    expect(u.len).to.equal(12 + frame.length);
    expect(u.data.subarray(12).equals(frame)).to.equal(true);
    // virtio 1.2 5.1.6.4: without MRG_RXBUF the device MUST set num_buffers to 1. vhost-net
    // does so only from Linux 6.14 ("vhost/net: Set num_buffers for virtio 1.0"; not in Debian's
    // 6.12.95 either): older kernels leave whatever the buffer held. Linux guests ignore the field
    // then (docs/kernels.md).
    const nb = u.data.readUInt16LE(NET_HDR.numBuffers);
    console.log(
      `      num_buffers without MRG_RXBUF: ` +
        `0x${nb.toString(16)}${nb === 0xa5a5 ? ' (untouched: the buffer was poisoned with 0xa5)' : ''}`,
    );
    expect(nb).to.equal(kernelAtLeast(6, 14) ? 1 : 0xa5a5);
  });

  it('batch and wrap: 3000 frames each way from ring index 65400, past 65535, none lost or reordered', async () => {
    const start = 65400;
    const count = 3000;
    rig = Rig.create('wrap');
    const p = rig.start(0, { start });
    const t0 = Date.now();
    await txRun(rig, p, 0, count);
    const t1 = Date.now();
    await rxRun(rig, p, 0, count);
    const t2 = Date.now();
    console.log(
      `      TX ${count} frames ${t1 - t0} ms, RX ${count} frames ${t2 - t1} ms (ring index ${start} -> ` +
        `${(start + count) & 0xffff})`,
    );
    expect(p.tx.deviceUsedIdx()).to.equal((start + count) & 0xffff);
    expect(p.rx.deviceUsedIdx()).to.equal((start + count) & 0xffff);
    detach(p);
    expect(p.vn.getVringBase(pairRing(0, 1)), 'TX next avail index').to.equal((start + count) & 0xffff);
    // RX: every posted buffer the kernel took; the ring was refilled after the last batch.
    expect(p.vn.getVringBase(pairRing(0, 0)), 'RX next avail index').to.equal((start + count) & 0xffff);
  });

  const twoQueuePairs =
    'two queue pairs on a multi-queue tap: two vhost-net fds, both TX rings and both RX rings carry frames';
  it(twoQueuePairs, async () => {
    rig = Rig.create('mq', { queuePairs: 2 });
    expect(rig.tap.multiQueue).to.equal(true);
    const pairs = [rig.start(0), rig.start(1)];
    expect(pairs[0].vn.fd).to.not.equal(pairs[1].vn.fd);
    // TX: both pairs send; the host sees each pair's frames complete and in order.
    for (const p of pairs) await txRun(rig, p, 0, 100, 50);
    // RX: the tap picks the queue by flow hash; 200 flows must spread over both queues, and each
    // frame must arrive exactly once, in order within its queue.
    for (const p of pairs) refill(p.rx);
    const total = 200;
    for (let seq = 0; seq < total; seq++) await rig.host.send(testFrame({ dir: 'R', pair: 9, seq }, 100, 20000 + seq));
    const got: FrameTag[][] = [[], []];
    const deadline = Date.now() + 30000;
    while (got[0].length + got[1].length < total && Date.now() < deadline) {
      for (const p of pairs) {
        for (const pkt of rxPackets(p.rx.reap(), true)) {
          const t = frameTag(pkt.frame);
          if (t) got[p.pair].push(t);
        }
      }
      await sleep(20);
    }
    console.log(`      RX frames per queue pair: ${got[0].length}, ${got[1].length}`);
    const seqs = [...got[0], ...got[1]].map((t) => t.seq).sort((a, b) => a - b);
    expect(seqs).to.deep.equal([...Array(total).keys()]);
    for (const g of got) {
      expect(g.length, 'each RX ring got frames').to.be.greaterThan(0);
      const q = g.map((t) => t.seq);
      expect(q).to.deep.equal([...q].sort((a, b) => a - b));
    }
  });

  const dirtyLogMarks =
    'dirty log: with LOG_ALL and VHOST_VRING_F_LOG on the RX ring, the pages the kernel wrote are marked (bit n = ' +
    'guest page n)';
  it(dirtyLogMarks, async () => {
    const memSize = 8 << 20;
    const logLen = PAGE; // memSize / 4096 pages / 8 bits = 256 bytes
    const logBase = sys.mmap(logLen, sys.C.PROT_READ | sys.C.PROT_WRITE, sys.C.MAP_SHARED | sys.C.MAP_ANONYMOUS, -1);
    try {
      const bitmap = sys.memoryView(logBase, logLen);
      const dirty = (): number[] => {
        const pages: number[] = [];
        for (let page = 0; page < memSize / PAGE; page++) if (bitmap[page >> 3] & (1 << (page & 7))) pages.push(page);
        return pages;
      };
      rig = Rig.create('log', { memSize });
      const features = FEATURES | (1n << BigInt(VHOST_F.LOG_ALL));
      const p = rig.start(0, { features, logBase });
      for (let i = 0; i < 8; i++) p.rx.post({ writable: 2048 });
      p.rx.publish();
      p.rx.notify();
      // Attaching already wrote (and logged) used->flags: vhost_vq_init_access ->
      // vhost_update_used_flags. Clear the log as a migration's sync would.
      expect(dirty(), 'NET_SET_BACKEND wrote the RX used ring').to.deep.equal([p.rx.usedGpa >> 12]);
      bitmap.fill(0);
      // TX only reads guest memory, and the TX ring has no VHOST_VRING_F_LOG: nothing logged.
      await txRun(rig, p, 0, 3);
      // The worker may handle the RX kick above only now, rewriting RX's own used->flags/avail_event,
      // which is logged (RX has F_LOG): CI saw page rx.usedGpa >> 12 here once on 6.12. TX's pages only.
      const rxUsedPage = p.rx.usedGpa >> 12;
      expect(
        dirty().filter((page) => page !== rxUsedPage),
        'TX writes only its used ring, which is not logged without F_LOG',
      ).to.deep.equal([]);
      for (let seq = 0; seq < 3; seq++) await rig.host.send(testFrame({ dir: 'R', pair: 0, seq }, 1500));
      const used = await p.rx.waitUsed(3);
      const bufPages = new Set(used.map((u) => p.rx.bufferGpa(u.id) >> 12));
      const expected = [...bufPages, p.rx.usedGpa >> 12].sort((a, b) => a - b);
      console.log(
        `      dirty pages ${JSON.stringify(dirty())}: RX buffers ${JSON.stringify([...bufPages])}, RX used ring ` +
          `${p.rx.usedGpa >> 12}`,
      );
      expect(dirty()).to.deep.equal(expected);
    } finally {
      rig?.close();
      rig = undefined;
      sys.munmap(logBase, logLen);
    }
  });

  const stopAndResume =
    'stop and resume: NET_SET_BACKEND -1, GET_VRING_BASE, restart from that base; frames sent while stopped arrive, ' +
    'none lost';
  it(stopAndResume, async () => {
    const start = 500;
    rig = Rig.create('stop');
    const p = rig.start(0, { start });
    await txRun(rig, p, 0, 10);
    await rxRun(rig, p, 0, 10);

    // Stop both rings the way QEMU does before GET_VRING_BASE.
    detach(p);
    const txBase = p.vn.getVringBase(pairRing(0, 1));
    const rxBase = p.vn.getVringBase(pairRing(0, 0));
    expect(txBase, 'TX: every published buffer consumed').to.equal(start + 10);
    expect(rxBase, 'RX: buffers consumed by 10 frames').to.equal(start + 10);

    // While stopped: the guest queues 5 TX frames and the host sends 5 RX frames.
    const txLate = [10, 11, 12, 13, 14].map((seq) => testFrame({ dir: 'T', pair: 0, seq }, lenOf(seq)));
    for (const f of txLate) p.tx.post({ data: withNetHdr(f) });
    p.tx.publish();
    p.tx.notify();
    const rxLate = [10, 11, 12, 13, 14].map((seq) => testFrame({ dir: 'R', pair: 0, seq }, lenOf(seq)));
    for (const f of rxLate) await rig.host.send(f);
    await sleep(500);
    expect(rig.host.drain().filter(isTx()), 'no TX while stopped').to.deep.equal([]);
    expect(p.rx.reap(), 'no RX while stopped').to.deep.equal([]);

    // Restart from the bases read (SET_VRING_BASE is refused while attached, so it comes first).
    p.vn.setVringBase(pairRing(0, 1), txBase);
    p.vn.setVringBase(pairRing(0, 0), rxBase);
    attach(p, rig.tap);
    p.tx.notify();
    const got = await rig.host.collect(5, isTx());
    expect(got.map((f) => frameTag(f)?.seq)).to.deep.equal([10, 11, 12, 13, 14]);
    for (const [i, f] of got.entries()) expect(f.equals(txLate[i])).to.equal(true);
    await p.tx.waitUsed(5);
    const pkts = rxPackets(await p.rx.waitUsed(5), true);
    expect(pkts.map((k) => frameTag(k.frame)?.seq)).to.deep.equal([10, 11, 12, 13, 14]);
    // And traffic goes on.
    await txRun(rig, p, 15, 30);
    await rxRun(rig, p, 15, 30);
  });
});
