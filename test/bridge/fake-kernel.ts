/**
 * A recording fake of the kernel side for bridge unit tests. It is not the proof that the bridge
 * works (the lab tests are): it records every call in one journal, and it enforces the rules
 * drivers/vhost imposes that the bridge must respect (kernel-ordering.md), so an ordering mistake
 * fails here first:
 *  - nothing before SET_OWNER (EPERM), a second SET_OWNER is EBUSY;
 *  - SET_FEATURES with a bit the kernel does not offer: EOPNOTSUPP;
 *  - NET_SET_BACKEND(tap) without memory table, NUM, ADDR and kick: EFAULT;
 *  - SET_VRING_NUM/BASE/ADDR while attached: EBUSY;
 *  - ring addresses outside the memory table given to it: EFAULT at SET_VRING_ADDR.
 */
import { SysError } from '../../src/sys/index.js';
import type { TapPort, VhostNetPort, VhostNetSource } from '../../src/bridge/ports.js';

export type Call = [who: string, op: string, ...args: unknown[]];

const EPERM = 1, EFAULT = 14, EBUSY = 16, EINVAL = 22, EOPNOTSUPP = 95;
/** The lab kernel's VHOST_GET_FEATURES. */
export const LAB_KERNEL_FEATURES = 0x33d008000n;

interface FakeVq { num?: number; base: number; addr?: { desc: bigint; used: bigint; avail: bigint }; kick?: number; call?: number; err?: number; backend: number }

export class FakeVhostNet implements VhostNetPort {
  owned = false;
  closed = false;
  features = 0n;
  memory: { gpa: bigint; size: bigint; uaddr: bigint }[] | null = null;
  logBase: bigint | null = null;
  readonly vqs: [FakeVq, FakeVq] = [{ base: 0, backend: -1 }, { base: 0, backend: -1 }];
  /** Added to the base GET_VRING_BASE returns, to simulate buffers the kernel processed. */
  processed = [0, 0];

  constructor(readonly pair: number, private readonly journal: Call[], readonly kernelFeatures = LAB_KERNEL_FEATURES) {}

  private rec(op: string, ...args: unknown[]): void {
    this.journal.push([`vhost${this.pair}`, op, ...args]);
  }

  private need(op: string, index?: number): FakeVq | undefined {
    if (this.closed) throw new SysError(op, 9);
    if (!this.owned) throw new SysError(op, EPERM);
    if (index === undefined) return undefined;
    if (index !== 0 && index !== 1) throw new SysError(op, 105 /* ENOBUFS, as vhost for a bad index */);
    return this.vqs[index];
  }

  private idle(op: string, vq: FakeVq): void {
    if (vq.backend >= 0) throw new SysError(op, EBUSY);
  }

  setOwner(): void {
    this.rec('SET_OWNER');
    if (this.owned) throw new SysError('VHOST_SET_OWNER', EBUSY);
    this.owned = true;
  }

  setFeatures(features: bigint): void {
    this.rec('SET_FEATURES', features);
    this.need('VHOST_SET_FEATURES');
    if (features & ~this.kernelFeatures) throw new SysError('VHOST_SET_FEATURES', EOPNOTSUPP);
    this.features = features;
  }

  setMemTable(memory: Buffer): void {
    this.need('VHOST_SET_MEM_TABLE');
    const n = memory.readUInt32LE(0);
    const regions = Array.from({ length: n }, (_, i) => ({
      gpa: memory.readBigUInt64LE(8 + 32 * i), size: memory.readBigUInt64LE(16 + 32 * i), uaddr: memory.readBigUInt64LE(24 + 32 * i),
    }));
    this.rec('SET_MEM_TABLE', regions.length);
    this.memory = regions;
  }

  setLogBase(address: bigint): void {
    this.rec('SET_LOG_BASE', address);
    this.need('VHOST_SET_LOG_BASE');
    this.logBase = address;
  }

  setVringNum(index: number, num: number): void {
    this.rec('SET_VRING_NUM', index, num);
    const vq = this.need('VHOST_SET_VRING_NUM', index)!;
    this.idle('VHOST_SET_VRING_NUM', vq);
    if (!num || num & (num - 1) || num > 32768) throw new SysError('VHOST_SET_VRING_NUM', EINVAL);
    vq.num = num;
  }

  setVringBase(index: number, base: number): void {
    this.rec('SET_VRING_BASE', index, base);
    const vq = this.need('VHOST_SET_VRING_BASE', index)!;
    this.idle('VHOST_SET_VRING_BASE', vq);
    vq.base = base;
    this.processed[index] = 0;
  }

  getVringBase(index: number): number {
    this.rec('GET_VRING_BASE', index);
    const vq = this.need('VHOST_GET_VRING_BASE', index)!;
    return (vq.base + this.processed[index]) & 0xffff;
  }

  private inMemory(addr: bigint, len: bigint): boolean {
    return !!this.memory?.some((r) => addr >= r.uaddr && addr + len <= r.uaddr + r.size);
  }

  setVringAddr(a: { index: number; flags: number; desc: bigint; used: bigint; avail: bigint; log: bigint }): void {
    this.rec('SET_VRING_ADDR', a.index, a.desc, a.used, a.avail, a.log);
    const vq = this.need('VHOST_SET_VRING_ADDR', a.index)!;
    this.idle('VHOST_SET_VRING_ADDR', vq);
    const num = BigInt(vq.num ?? 256);
    if (!this.inMemory(a.desc, 16n * num) || !this.inMemory(a.avail, 6n + 2n * num) || !this.inMemory(a.used, 6n + 8n * num)) {
      throw new SysError('VHOST_SET_VRING_ADDR', EFAULT);
    }
    vq.addr = { desc: a.desc, used: a.used, avail: a.avail };
  }

  setVringKick(index: number, fd: number): void {
    this.rec('SET_VRING_KICK', index, fd >= 0);
    this.need('VHOST_SET_VRING_KICK', index)!.kick = fd;
  }

  setVringCall(index: number, fd: number): void {
    this.rec('SET_VRING_CALL', index, fd >= 0);
    this.need('VHOST_SET_VRING_CALL', index)!.call = fd;
  }

  setVringErr(index: number, fd: number): void {
    this.rec('SET_VRING_ERR', index, fd >= 0);
    this.need('VHOST_SET_VRING_ERR', index)!.err = fd;
  }

  netSetBackend(index: number, fd: number): void {
    this.rec('NET_SET_BACKEND', index, fd);
    const vq = this.need('VHOST_NET_SET_BACKEND', index)!;
    if (fd >= 0 && (!this.memory || vq.num === undefined || !vq.addr || vq.kick === undefined || vq.kick < 0)) {
      throw new SysError('VHOST_NET_SET_BACKEND', EFAULT);
    }
    vq.backend = fd;
  }

  close(): void {
    this.rec('close');
    this.closed = true;
    for (const vq of this.vqs) vq.backend = -1;
  }

  attached(index: number): boolean {
    return this.vqs[index].backend >= 0;
  }
}

/** Hands out FakeVhostNets and records their release; `onRelease` lets a test observe state at that moment. */
export class FakeSource implements VhostNetSource {
  readonly devices: FakeVhostNet[] = [];
  onRelease: ((pair: number) => void) | null = null;
  constructor(private readonly journal: Call[]) {}
  open(pair: number): FakeVhostNet {
    this.journal.push(['source', 'open', pair]);
    const d = new FakeVhostNet(pair, this.journal);
    this.devices.push(d);
    return d;
  }
  release(pair: number, dev: VhostNetPort): void {
    this.onRelease?.(pair);
    (dev as FakeVhostNet).close();
  }
  /** The live (not closed) device of a pair. */
  live(pair: number): FakeVhostNet {
    const d = this.devices.filter((x) => x.pair === pair && !x.closed).at(-1);
    if (!d) throw new Error(`no live vhost-net for pair ${pair}`);
    return d;
  }
}

export class FakeTap implements TapPort {
  readonly name = 'vbtap0';
  readonly frames: Buffer[] = [];
  mtu = 1500;
  configured: bigint | null = null;
  readonly queueEnabled = new Map<number, boolean>();
  constructor(private readonly journal: Call[]) {}
  queueFd(pair: number): number {
    return 100 + pair;
  }
  configure(negotiated: bigint): void {
    this.journal.push(['tap', 'configure', negotiated]);
    this.configured = negotiated;
  }
  setMtu(mtu: number): void {
    this.journal.push(['tap', 'setMtu', mtu]);
    this.mtu = mtu;
  }
  setQueueEnabled(pair: number, enabled: boolean): void {
    this.journal.push(['tap', 'setQueueEnabled', pair, enabled]);
    this.queueEnabled.set(pair, enabled);
  }
  writeFrame(frame: Buffer, pair = 0): void {
    this.journal.push(['tap', 'writeFrame', pair, frame.length]);
    this.frames.push(frame);
  }
}
