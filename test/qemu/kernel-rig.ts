/**
 * The lab rig of the kernel tests: the test plays the VMM (memory table, ring setup, the ioctl
 * order of docs/kernel-ordering.md) and the guest driver (vring.ts), around a real
 * /dev/vhost-net and a real tap. Only the project's own kernel layer talks to the kernel.
 */
import { expect } from 'chai';
import { existsSync, writeFileSync } from 'node:fs';
import { maskOf } from '../../src/bits.js';
import { VIRTIO_F, VIRTIO_NET_F } from '../../src/virtio.js';
import { KernelError, pairRing, Tap, VhostNet, vnetHdrSize } from '../../src/vhost-kernel/index.js';
import { GuestMemory, HostSide, NET_HDR, SplitVring, type Used } from './vring.js';

/** VERSION_1 | MRG_RXBUF: what QEMU 7.2 acks with a Linux guest, minus the ring extras. */
export const FEATURES = maskOf(VIRTIO_F.VERSION_1, VIRTIO_NET_F.MRG_RXBUF);

let taps = 0;
/** A tap name unique to this process and call (at most 15 bytes). */
export function tapName(tag: string): string {
  return `vb${tag}${process.pid % 10000}n${taps++}`.slice(0, 15);
}

/**
 * A tap as the bridge would set it up: vnet header size from the features, sndbuf INT_MAX, link
 * up. IPv6 is turned off on it first so the kernel's own router/neighbour solicitations do not
 * land in the RX rings.
 */
export function openTap(name: string, queuePairs = 1, features = FEATURES): Tap {
  const tap = Tap.open(name, { queuePairs });
  try {
    const v6 = `/proc/sys/net/ipv6/conf/${tap.name}/disable_ipv6`;
    if (existsSync(v6)) writeFileSync(v6, '1');
    tap.setVnetHdrSize(vnetHdrSize(features));
    tap.setSndbuf();
    tap.setUp();
    return tap;
  } catch (e) {
    tap.close();
    throw e;
  }
}

/** One queue pair: its vhost-net fd and its two rings (RX = ring 2p, TX = ring 2p+1). */
export interface PairRig {
  pair: number;
  vn: VhostNet;
  rx: SplitVring;
  tx: SplitVring;
}

/** Options of {@link startPair}. */
export interface PairOptions {
  features?: bigint;
  num?: number;
  rxBuf?: number;
  txBuf?: number;
  /** First avail/used index of both rings (SET_VRING_BASE). */
  start?: number;
  /** Log the RX ring's used writes (VHOST_VRING_F_LOG) and set SET_LOG_BASE to this address first. */
  logBase?: bigint;
  /** Leave the rings detached (no NET_SET_BACKEND). */
  detached?: boolean;
}

/**
 * Open /dev/vhost-net for `pair` and set it up in QEMU's order (hw/virtio/vhost.c vhost_dev_start
 * + vhost_net_start_one): SET_OWNER, [SET_LOG_BASE], SET_FEATURES, SET_MEM_TABLE, then per ring
 * NUM, BASE, ADDR, KICK, CALL, then NET_SET_BACKEND(tap) for both rings.
 */
export function startPair(mem: GuestMemory, tap: Tap, pair: number, o: PairOptions = {}): PairRig {
  const num = o.num ?? 256;
  const start = o.start ?? 0;
  const rx = new SplitVring(mem, num, o.rxBuf ?? 2048, start);
  const tx = new SplitVring(mem, num, o.txBuf ?? 2048, start);
  const vn = VhostNet.open(pair);
  try {
    vn.setOwner();
    if (o.logBase !== undefined) vn.setLogBase(o.logBase);
    vn.setFeatures(o.features ?? FEATURES);
    vn.setMemTable(mem.table());
    for (const [index, ring] of [
      [0, rx],
      [1, tx],
    ] as const) {
      const q = pairRing(pair, index);
      vn.setVringNum(q, num);
      vn.setVringBase(q, start);
      vn.setVringAddr(q, ring.kernelAddr(index === 0 && o.logBase !== undefined));
      vn.setVringKick(q, ring.kick);
      vn.setVringCall(q, ring.call);
    }
    if (!o.detached) attach({ pair, vn, rx, tx }, tap);
    return { pair, vn, rx, tx };
  } catch (e) {
    vn.close();
    rx.close();
    tx.close();
    throw e;
  }
}

/** NET_SET_BACKEND(tap fd of the pair) on both rings. */
export function attach(p: PairRig, tap: Tap): void {
  p.vn.netSetBackend(pairRing(p.pair, 0), tap.fd(p.pair));
  p.vn.netSetBackend(pairRing(p.pair, 1), tap.fd(p.pair));
}

/** NET_SET_BACKEND(-1) on both rings. */
export function detach(p: PairRig): void {
  p.vn.netSetBackend(pairRing(p.pair, 0), -1);
  p.vn.netSetBackend(pairRing(p.pair, 1), -1);
}

export function stopPair(p: PairRig): void {
  p.vn.close();
  p.rx.close();
  p.tx.close();
}

/** A 12-byte virtio-net header (no offload, num_buffers 0 as a driver sends it) followed by `frame`. */
export function withNetHdr(frame: Buffer, hdrLen = 12): Buffer {
  return Buffer.concat([Buffer.alloc(hdrLen), frame]);
}

/** Everything a datapath test needs, torn down by close(). */
export class Rig {
  readonly pairs: PairRig[] = [];
  readonly host: HostSide;

  constructor(
    readonly mem: GuestMemory,
    readonly tap: Tap,
  ) {
    this.host = new HostSide(tap.name);
  }

  static create(tag: string, o: { queuePairs?: number; memSize?: number } = {}): Rig {
    const mem = new GuestMemory(o.memSize ?? 8 << 20);
    let tap: Tap | undefined;
    try {
      tap = openTap(tapName(tag), o.queuePairs ?? 1);
      return new Rig(mem, tap);
    } catch (e) {
      tap?.close();
      mem.close();
      throw e;
    }
  }

  start(pair: number, o: PairOptions = {}): PairRig {
    const p = startPair(this.mem, this.tap, pair, o);
    this.pairs.push(p);
    return p;
  }

  close(): void {
    for (const p of this.pairs) stopPair(p);
    this.pairs.length = 0;
    this.host.close();
    this.tap.close();
    this.mem.close();
  }
}

/** A packet as the guest received it: its virtio-net header, its frame, how many buffers it took. */
export interface RxPacket {
  hdr: Buffer;
  frame: Buffer;
  buffers: number;
}

/**
 * Turn used RX entries into packets. With MRG_RXBUF the first buffer's header says how many
 * buffers (num_buffers) the packet spans, and the kernel adds all of them to the used ring in one
 * update (vhost_add_used_n), so a packet is never split across two reaps.
 */
export function rxPackets(used: Used[], mergeable: boolean, hdrLen = 12): RxPacket[] {
  const out: RxPacket[] = [];
  for (let i = 0; i < used.length; ) {
    const first = used[i].data;
    const n = mergeable ? first.readUInt16LE(NET_HDR.numBuffers) : 1;
    if (n < 1 || i + n > used.length)
      throw new Error(`RX packet at used entry ${i} claims ${n} buffers, ${used.length - i} left`);
    const all = Buffer.concat(used.slice(i, i + n).map((u) => u.data));
    out.push({ hdr: all.subarray(0, hdrLen), frame: all.subarray(hdrLen), buffers: n });
    i += n;
  }
  return out;
}

/** The KernelError `fn` throws (fails the test if it throws nothing or something else). */
export function thrown(fn: () => unknown): KernelError {
  try {
    fn();
  } catch (e) {
    expect(e).to.be.instanceOf(KernelError);
    return e as KernelError;
  }
  throw new Error('expected a KernelError, nothing was thrown');
}
