/**
 * A recording fake of one vhost-net fd, for unit tests of bridge logic on machines without
 * /dev/vhost-net (rust-vmm's DummyBackendReqHandler plays the same role). It records every call
 * and refuses what the real kernel refused in the lab (test/qemu/kernel-errors.test.ts), with the
 * same call names and errnos as VhostNet, so an ordering bug fails here as it would in the lab:
 * - anything but GET/SET_FEATURES before SET_OWNER: EPERM; SET_OWNER twice: EBUSY;
 * - SET_FEATURES with a bit the kernel did not offer: EOPNOTSUPP;
 * - SET_VRING_NUM not a power of two in 1..32768, SET_VRING_BASE over 0xffff, misaligned ADDR: EINVAL;
 * - SET_VRING_NUM / SET_VRING_BASE while attached: EBUSY;
 * - NET_SET_BACKEND before the memory table, NUM and ADDR: EFAULT.
 * It moves no packets: GET_VRING_BASE returns the last SET_VRING_BASE, moved on by advance() (the
 * kernel's last_avail_idx, which its worker moves while the ring runs).
 */
import { E, memoryView, SysError } from '../../src/sys/index.js';
import { type KernelVringAddr, ringToPair, type VhostNetDevice } from '../../src/vhost-kernel/index.js';

/** One call of VhostNetDevice as a typed record: the method and its arguments (ring = DEVICE ring number). */
export type VhostNetCall =
  | { op: 'setOwner' | 'resetOwner' | 'getFeatures' | 'getBackendFeatures' | 'close' }
  | { op: 'setFeatures'; features: bigint }
  | { op: 'setMemTable'; table: Buffer }
  | { op: 'setLogBase'; addr: bigint }
  | { op: 'setVringNum'; ring: number; num: number }
  | { op: 'setVringBase'; ring: number; base: number }
  | { op: 'getVringBase'; ring: number }
  | { op: 'setVringAddr'; ring: number; addr: KernelVringAddr }
  | { op: 'setVringKick' | 'setVringCall' | 'setVringErr' | 'netSetBackend'; ring: number; fd: number }
  | { op: 'setVringBusyloopTimeout'; ring: number; usecs: number };

/** One recorded call, with the errno code if the fake refused it. */
export type Call = VhostNetCall & { error?: string };

const { EPERM, EBADF, EFAULT, EBUSY, EINVAL, EOPNOTSUPP } = E;

interface RingState {
  num?: number;
  base: number;
  addr?: KernelVringAddr;
  backend: number;
  /** VHOST_SET_VRING_BUSYLOOP_TIMEOUT (µs), 0 until set. */
  busyloop: number;
}

export class RecordingVhostNet implements VhostNetDevice {
  readonly calls: Call[] = [];
  private owner = false;
  private closedFlag = false;
  private memTable?: Buffer;
  private rings: [RingState, RingState] = [
    { base: 0, backend: -1, busyloop: 0 },
    { base: 0, backend: -1, busyloop: 0 },
  ];
  features = 0n;
  logBase?: bigint;

  /**
   * @param vhostNetFeatures what VHOST_GET_FEATURES answers (Linux 6.1 by default).
   * @param onCall also reports every recorded call here (a journal shared by several fakes).
   */
  constructor(
    readonly pair: number,
    readonly vhostNetFeatures = 0x33d008000n,
    private readonly onCall?: (pair: number, call: Call) => void,
  ) {}

  /**
   * Simulate the kernel consuming and using `n` available buffers of `ring`: its index moves on by
   * `n`, and, as vhost-net uses buffers in order, so does the used ring's idx in guest memory (its
   * address as SET_VRING_ADDR gave it, in this process; virtio 1.2 2.7.8: le16 flags, le16 idx).
   */
  advance(ring: number, n: number): void {
    const r = this.rings[this.index(ring)];
    r.base = (r.base + n) & 0xffff;
    if (r.addr) memoryView(r.addr.used + 2n, 2).writeUInt16LE(r.base, 0);
  }

  /** What the kernel holds for device ring `ring` (tests read it). */
  ringState(ring: number): Readonly<RingState> {
    return this.rings[this.index(ring)];
  }

  /** The memory table it was given, decoded (struct vhost_memory), or null. */
  get memory(): { gpa: bigint; size: bigint; uaddr: bigint }[] | null {
    const t = this.memTable;
    if (!t) return null;
    return Array.from({ length: t.readUInt32LE(0) }, (_, i) => ({
      gpa: t.readBigUInt64LE(8 + 32 * i),
      size: t.readBigUInt64LE(16 + 32 * i),
      uaddr: t.readBigUInt64LE(24 + 32 * i),
    }));
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  get owned(): boolean {
    return this.owner;
  }

  /** true if device ring `ring` has a backend attached. */
  attached(ring: number): boolean {
    return this.rings[this.index(ring)].backend >= 0;
  }

  setOwner(): void {
    this.dev({ op: 'setOwner' }, 'VHOST_SET_OWNER', false);
    if (this.owner) throw this.refuse(this.devName('VHOST_SET_OWNER'), EBUSY);
    this.owner = true;
  }

  resetOwner(): void {
    this.dev({ op: 'resetOwner' }, 'VHOST_RESET_OWNER');
    this.owner = false;
    this.memTable = undefined;
    this.rings = [
      { base: 0, backend: -1, busyloop: 0 },
      { base: 0, backend: -1, busyloop: 0 },
    ];
    this.features = 0n;
  }

  getFeatures(): bigint {
    this.dev({ op: 'getFeatures' }, 'VHOST_GET_FEATURES', false);
    return this.vhostNetFeatures;
  }

  setFeatures(features: bigint): void {
    this.dev({ op: 'setFeatures', features }, 'VHOST_SET_FEATURES', false);
    if (features & ~this.vhostNetFeatures) throw this.refuse(this.devName('VHOST_SET_FEATURES'), EOPNOTSUPP);
    this.features = features;
  }

  getBackendFeatures(): bigint {
    this.dev({ op: 'getBackendFeatures' }, 'VHOST_GET_BACKEND_FEATURES', false);
    return 0x2n;
  }

  setMemTable(table: Buffer): void {
    this.dev({ op: 'setMemTable', table: Buffer.from(table) }, 'VHOST_SET_MEM_TABLE');
    this.memTable = Buffer.from(table);
  }

  setLogBase(addr: bigint): void {
    this.dev({ op: 'setLogBase', addr }, 'VHOST_SET_LOG_BASE');
    this.logBase = addr;
  }

  setVringNum(ring: number, num: number): void {
    const r = this.ring({ op: 'setVringNum', ring, num }, 'VHOST_SET_VRING_NUM');
    if (r.backend >= 0) throw this.refuse(`VHOST_SET_VRING_NUM (ring ${ring})`, EBUSY);
    if (!num || num > 0xffff || num & (num - 1)) throw this.refuse(`VHOST_SET_VRING_NUM (ring ${ring})`, EINVAL);
    r.num = num;
  }

  setVringAddr(ring: number, addr: KernelVringAddr): void {
    const r = this.ring({ op: 'setVringAddr', ring, addr: { ...addr } }, 'VHOST_SET_VRING_ADDR');
    if (addr.flags & ~1) throw this.refuse(`VHOST_SET_VRING_ADDR (ring ${ring})`, EOPNOTSUPP);
    if (addr.avail & 1n || addr.used & 3n || addr.log & 3n)
      throw this.refuse(`VHOST_SET_VRING_ADDR (ring ${ring})`, EINVAL);
    r.addr = { ...addr };
  }

  setVringBase(ring: number, base: number): void {
    const r = this.ring({ op: 'setVringBase', ring, base }, 'VHOST_SET_VRING_BASE');
    if (r.backend >= 0) throw this.refuse(`VHOST_SET_VRING_BASE (ring ${ring})`, EBUSY);
    if (base > 0xffff) throw this.refuse(`VHOST_SET_VRING_BASE (ring ${ring})`, EINVAL);
    r.base = base;
  }

  getVringBase(ring: number): number {
    return this.ring({ op: 'getVringBase', ring }, 'VHOST_GET_VRING_BASE').base;
  }

  setVringKick(ring: number, fd: number): void {
    this.ring({ op: 'setVringKick', ring, fd }, 'VHOST_SET_VRING_KICK');
  }

  setVringCall(ring: number, fd: number): void {
    this.ring({ op: 'setVringCall', ring, fd }, 'VHOST_SET_VRING_CALL');
  }

  setVringErr(ring: number, fd: number): void {
    this.ring({ op: 'setVringErr', ring, fd }, 'VHOST_SET_VRING_ERR');
  }

  setVringBusyloopTimeout(ring: number, usecs: number): void {
    this.ring({ op: 'setVringBusyloopTimeout', ring, usecs }, 'VHOST_SET_VRING_BUSYLOOP_TIMEOUT').busyloop = usecs;
  }

  /** A read, not journalled (the port's status reads it after every event); refused as the kernel does. */
  getVringBusyloopTimeout(ring: number): number {
    const call = `VHOST_GET_VRING_BUSYLOOP_TIMEOUT (ring ${ring})`;
    if (this.closedFlag) throw new SysError(call, EBADF);
    if (!this.owner) throw new SysError(call, EPERM);
    return this.rings[this.index(ring)].busyloop;
  }

  netSetBackend(ring: number, fd: number): void {
    const r = this.ring({ op: 'netSetBackend', ring, fd }, 'VHOST_NET_SET_BACKEND');
    if (fd >= 0 && (!this.memTable || r.num === undefined || r.addr === undefined)) {
      throw this.refuse(`VHOST_NET_SET_BACKEND (ring ${ring})`, EFAULT);
    }
    r.backend = fd;
  }

  close(): void {
    this.record({ op: 'close' });
    this.closedFlag = true;
  }

  private record(c: Call): void {
    this.calls.push(c);
    this.onCall?.(this.pair, c);
  }

  private dev(call: VhostNetCall, ioctl: string, needOwner = true): void {
    this.record(call);
    if (this.closedFlag) throw this.refuse(this.devName(ioctl), EBADF);
    if (needOwner && !this.owner) throw this.refuse(this.devName(ioctl), EPERM);
  }

  private ring(call: VhostNetCall & { ring: number }, ioctl: string): RingState {
    const ring = call.ring;
    const index = this.index(ring);
    this.record(call);
    if (this.closedFlag) throw this.refuse(`${ioctl} (ring ${ring})`, EBADF);
    if (!this.owner) throw this.refuse(`${ioctl} (ring ${ring})`, EPERM);
    return this.rings[index];
  }

  private index(ring: number): 0 | 1 {
    const { pair, index } = ringToPair(ring);
    if (pair !== this.pair)
      throw new RangeError(`ring ${ring} belongs to queue pair ${pair}, not to the vhost-net fd of pair ${this.pair}`);
    return index;
  }

  /** The error to throw for the call just recorded, which is marked with its code. */
  private refuse(call: string, errno: number): SysError {
    const e = new SysError(call, errno);
    this.calls[this.calls.length - 1].error = e.code;
    return e;
  }

  private devName(ioctl: string): string {
    return `${ioctl} (queue pair ${this.pair})`;
  }
}
