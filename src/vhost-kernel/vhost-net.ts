/**
 * /dev/vhost-net: one fd per queue pair, one method per ioctl (linux include/uapi/linux/vhost.h;
 * behaviour from drivers/vhost/vhost.c and drivers/vhost/net.c).
 *
 * A vhost-net fd serves exactly two rings, index 0 = RX and 1 = TX (VHOST_NET_VQ_RX/TX), so
 * device ring q of a multi-queue virtio-net device goes to the fd of its queue pair as index
 * q & 1 (virtio.ts ringToPair), as DPDK's virtio_user vhost_kernel.c does. Ring methods here take
 * the DEVICE ring number and map it themselves, so errors name the ring the front-end knows:
 * `VHOST_SET_VRING_NUM (ring 3): EINVAL`.
 *
 * The layer stays thin on purpose, like QEMU's hw/virtio/vhost-backend.c: it does not remember
 * state or enforce order. The order the kernel needs (docs/kernel-ordering.md) is kept by the
 * datapath that drives it (src/bridge/vhost-net-datapath.ts).
 */
import { readFileSync } from 'node:fs';
import { C, close, E, fcntl, fstat, ioctlInt, ioctlPtr, open } from '../sys/index.js';
import { describeBits, has } from '../bits.js';
import { hex } from '../format.js';
import { FEATURE_NAMES, MAX_RING_SIZE, ringToPair, VIRTIO_NET_F } from '../virtio.js';
import { fdKind, KernelError, withHints } from './errors.js';
import { VHOST } from './ioctls.js';
import { type KernelVringAddr, u64, VHOST_VRING_STATE, vringAddr, vringFile, vringState } from './structs.js';

/** Where the device usually is. */
const VHOST_NET_PATH = '/dev/vhost-net';

/**
 * One vhost-net fd (one queue pair): one method per ioctl. {@link VhostNet} implements it on the
 * real device; bridge unit tests implement it with a recording fake.
 * Ring arguments are DEVICE ring numbers (2 * pair + 0/1). fd arguments may be -1 to unbind.
 */
export interface VhostNetDevice {
  /** The queue pair this fd serves. */
  readonly pair: number;
  /**
   * VHOST_SET_OWNER: the calling process owns the device; its address space is the one ring and region
   * addresses refer to.
   */
  setOwner(): void;
  /** VHOST_RESET_OWNER: detach both rings, drop the memory table and ring state; SET_OWNER may follow. */
  resetOwner(): void;
  /** VHOST_GET_FEATURES. */
  getFeatures(): bigint;
  /** VHOST_SET_FEATURES: only bits getFeatures() offered (EOPNOTSUPP otherwise); see features.toKernel. */
  setFeatures(features: bigint): void;
  /** VHOST_GET_BACKEND_FEATURES (VHOST_BACKEND_F_* mask). */
  getBackendFeatures(): bigint;
  /** VHOST_SET_MEM_TABLE with a struct vhost_memory (src/memtable encodes it). */
  setMemTable(table: Buffer): void;
  /** VHOST_SET_LOG_BASE: address, in this process, of the dirty bitmap (bit n = guest page n). */
  setLogBase(addr: bigint): void;
  /** VHOST_SET_VRING_NUM: ring size, a power of two up to {@link MAX_RING_SIZE}. */
  setVringNum(ring: number, num: number): void;
  /** VHOST_SET_VRING_ADDR: local (this process's) ring addresses; log = used ring GPA. */
  setVringAddr(ring: number, addr: KernelVringAddr): void;
  /** VHOST_SET_VRING_BASE: the next avail index the kernel will read. */
  setVringBase(ring: number, base: number): void;
  /** VHOST_GET_VRING_BASE: the next avail index (read it after detaching the ring). */
  getVringBase(ring: number): number;
  /** VHOST_SET_VRING_KICK: the eventfd the kernel polls for the guest's notifications, or -1. */
  setVringKick(ring: number, fd: number): void;
  /** VHOST_SET_VRING_CALL: the eventfd the kernel signals to interrupt the guest, or -1. */
  setVringCall(ring: number, fd: number): void;
  /** VHOST_SET_VRING_ERR: the eventfd the kernel signals on a ring error, or -1. */
  setVringErr(ring: number, fd: number): void;
  /** VHOST_SET_VRING_BUSYLOOP_TIMEOUT: busy-poll the ring for this many microseconds (0 = off). */
  setVringBusyloopTimeout(ring: number, usecs: number): void;
  /** VHOST_GET_VRING_BUSYLOOP_TIMEOUT. */
  getVringBusyloopTimeout(ring: number): number;
  /** VHOST_NET_SET_BACKEND: attach the ring to a tap fd, or detach it with -1. */
  netSetBackend(ring: number, fd: number): void;
  /** Close the fd (the kernel stops the rings and releases the device). Idempotent. */
  close(): void;
}

/** The one vhost-net fd of one queue pair. */
export class VhostNet implements VhostNetDevice {
  #fd: number;

  private constructor(
    fd: number,
    readonly pair: number,
    readonly adopted: boolean,
  ) {
    this.#fd = fd;
  }

  /**
   * Open the device for queue pair `pair`. Does not SET_OWNER: the caller does, so that the
   * owner (whose address space the kernel uses) is explicit.
   */
  static open(pair: number, path: string = VHOST_NET_PATH): VhostNet {
    checkPair(pair);
    const fd = withHints(() => open(path, C.O_RDWR), {
      [E.ENOENT]: `no ${path}: load the vhost_net module (modprobe vhost_net), or pass an open fd with --vhost-fd`,
      [E.EACCES]:
        `${path} is root-only by default: run as root, give this user access (udev rule or group), or ` +
        `pass an open fd with --vhost-fd`,
      [E.EPERM]:
        `${path} is not accessible here (device cgroup or container policy): allow it, or pass an open fd ` +
        `with --vhost-fd`,
    });
    return new VhostNet(fd, pair, false);
  }

  /**
   * Take over an already open vhost-net fd (`--vhost-fd N`, opened by a manager that may have
   * privileges the bridge lacks).
   *
   * The fd is TAKEN, not duplicated: from a successful return it belongs to this object, which
   * closes it in close(); a dup would keep a second reference to the same open file and stop the
   * kernel from releasing the device (workers, pinned memory) when the bridge closes its copy.
   * Since an adopted fd cannot be reopened, a bridge serving a later connection with it should
   * resetOwner() rather than close(). FD_CLOEXEC is set so it does not leak into children.
   * On failure the fd stays open and stays the caller's.
   *
   * Checks: a character device that answers VHOST_GET_FEATURES with VIRTIO_NET_F_MRG_RXBUF, a
   * bit only vhost-net offers (vhost-vsock and vhost-scsi answer GET_FEATURES too).
   */
  static adopt(fd: number, pair: number): VhostNet {
    checkPair(pair);
    const what = `vhost fd ${fd}`;
    const st = withHints(() => fstat(fd), {
      [E.EBADF]: `fd ${fd} is not open in this process: check the manager passes it`,
    });
    if (st.type !== 'char') throw new KernelError(what, E.ENOTTY, `fd ${fd} is ${fdKind(st.type)}, not /dev/vhost-net`);
    const vn = new VhostNet(fd, pair, true);
    const features = withHints(() => vn.getFeatures(), {
      [E.ENOTTY]: `fd ${fd} is a character device but not a vhost device`,
      [E.EINVAL]: `fd ${fd} is a character device but not a vhost device`,
    });
    if (!has(features, VIRTIO_NET_F.MRG_RXBUF)) {
      throw new KernelError(
        what,
        E.ENOTTY,
        `fd ${fd} is a vhost device but not vhost-net (features ${describeBits(features, FEATURE_NAMES)})`,
      );
    }
    fcntl(fd, C.F_SETFD, fcntl(fd, C.F_GETFD) | C.FD_CLOEXEC);
    return vn;
  }

  /** The fd (-1 after close). */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  setOwner(): void {
    withHints(() => ioctlInt(this.#fd, VHOST.SET_OWNER, 0, this.dev('VHOST_SET_OWNER')), {
      [E.EBUSY]:
        'the device already has an owner (a second SET_OWNER, or an adopted fd another process set up): ' +
        'RESET_OWNER first',
    });
  }

  resetOwner(): void {
    ioctlInt(this.#fd, VHOST.RESET_OWNER, 0, this.dev('VHOST_RESET_OWNER'));
  }

  getFeatures(): bigint {
    const b = Buffer.alloc(8);
    ioctlPtr(this.#fd, VHOST.GET_FEATURES, b, this.dev('VHOST_GET_FEATURES'));
    return b.readBigUInt64LE();
  }

  setFeatures(features: bigint): void {
    withHints(() => ioctlPtr(this.#fd, VHOST.SET_FEATURES, u64(features), this.dev('VHOST_SET_FEATURES')), {
      [E.EOPNOTSUPP]:
        `${describeBits(features, FEATURE_NAMES)} has a bit VHOST_GET_FEATURES does not offer (net ` +
        `offloads and PROTOCOL_FEATURES never go to the kernel: features.toKernel)`,
      [E.EFAULT]: 'LOG_ALL was set but the dirty log base does not cover the memory table (SET_LOG_BASE)',
    });
  }

  getBackendFeatures(): bigint {
    const b = Buffer.alloc(8);
    ioctlPtr(this.#fd, VHOST.GET_BACKEND_FEATURES, b, this.dev('VHOST_GET_BACKEND_FEATURES'));
    return b.readBigUInt64LE();
  }

  setMemTable(table: Buffer): void {
    // The kernel reads nregions * 32 bytes after the 8-byte header from our memory: a short
    // buffer would make it read whatever follows.
    const n = table.length >= 8 ? table.readUInt32LE(0) : -1;
    if (n < 0 || table.length < 8 + 32 * n) {
      throw new RangeError(
        `${this.dev('VHOST_SET_MEM_TABLE')}: a ${table.length}-byte buffer cannot hold struct vhost_memory with ` +
          `${n} regions`,
      );
    }
    withHints(() => ioctlPtr(this.#fd, VHOST.SET_MEM_TABLE, table, this.dev('VHOST_SET_MEM_TABLE')), {
      [E.E2BIG]: `${n} regions is more than /sys/module/vhost/parameters/max_mem_regions allows`,
      [E.EFAULT]: "a region (or its dirty log range, with LOG_ALL) is outside this process's address space",
      [E.EINVAL]: 'regions overlap, or a region has size 0 or wraps around',
    });
  }

  setLogBase(addr: bigint): void {
    ioctlPtr(this.#fd, VHOST.SET_LOG_BASE, u64(addr), this.dev('VHOST_SET_LOG_BASE'));
  }

  setVringNum(ring: number, num: number): void {
    withHints(
      () =>
        ioctlPtr(
          this.#fd,
          VHOST.SET_VRING_NUM,
          vringState(this.index(ring), num),
          this.ring('VHOST_SET_VRING_NUM', ring),
        ),
      {
        [E.EINVAL]: `${num} is not a ring size: a power of two from 1 to ${MAX_RING_SIZE}`,
        [E.EBUSY]: 'the ring is attached to the tap: NET_SET_BACKEND -1 first',
      },
    );
  }

  setVringAddr(ring: number, addr: KernelVringAddr): void {
    withHints(
      () =>
        ioctlPtr(
          this.#fd,
          VHOST.SET_VRING_ADDR,
          vringAddr(this.index(ring), addr),
          this.ring('VHOST_SET_VRING_ADDR', ring),
        ),
      {
        [E.EINVAL]: 'misaligned (avail 2, used and log 4 bytes), or, while attached, not accessible',
        [E.EOPNOTSUPP]: `flags ${hex(addr.flags)} has a bit other than VHOST_VRING_F_LOG`,
      },
    );
  }

  setVringBase(ring: number, base: number): void {
    withHints(
      () =>
        ioctlPtr(
          this.#fd,
          VHOST.SET_VRING_BASE,
          vringState(this.index(ring), base),
          this.ring('VHOST_SET_VRING_BASE', ring),
        ),
      {
        [E.EBUSY]: 'the ring is attached to the tap: NET_SET_BACKEND -1 first',
        [E.EINVAL]: `${base} is not a 16-bit ring index`,
      },
    );
  }

  getVringBase(ring: number): number {
    const b = vringState(this.index(ring), 0);
    ioctlPtr(this.#fd, VHOST.GET_VRING_BASE, b, this.ring('VHOST_GET_VRING_BASE', ring));
    return b.readUInt32LE(VHOST_VRING_STATE.num);
  }

  setVringKick(ring: number, fd: number): void {
    ioctlPtr(this.#fd, VHOST.SET_VRING_KICK, vringFile(this.index(ring), fd), this.ring('VHOST_SET_VRING_KICK', ring));
  }

  setVringCall(ring: number, fd: number): void {
    ioctlPtr(this.#fd, VHOST.SET_VRING_CALL, vringFile(this.index(ring), fd), this.ring('VHOST_SET_VRING_CALL', ring));
  }

  setVringErr(ring: number, fd: number): void {
    ioctlPtr(this.#fd, VHOST.SET_VRING_ERR, vringFile(this.index(ring), fd), this.ring('VHOST_SET_VRING_ERR', ring));
  }

  setVringBusyloopTimeout(ring: number, usecs: number): void {
    ioctlPtr(
      this.#fd,
      VHOST.SET_VRING_BUSYLOOP_TIMEOUT,
      vringState(this.index(ring), usecs),
      this.ring('VHOST_SET_VRING_BUSYLOOP_TIMEOUT', ring),
    );
  }

  getVringBusyloopTimeout(ring: number): number {
    const b = vringState(this.index(ring), 0);
    ioctlPtr(this.#fd, VHOST.GET_VRING_BUSYLOOP_TIMEOUT, b, this.ring('VHOST_GET_VRING_BUSYLOOP_TIMEOUT', ring));
    return b.readUInt32LE(VHOST_VRING_STATE.num);
  }

  netSetBackend(ring: number, fd: number): void {
    withHints(
      () =>
        ioctlPtr(
          this.#fd,
          VHOST.NET_SET_BACKEND,
          vringFile(this.index(ring), fd),
          this.ring('VHOST_NET_SET_BACKEND', ring),
        ),
      {
        [E.EFAULT]:
          'the kernel could not access the ring: set the memory table, NUM and ADDR first, with addresses mapped ' +
          'in this process',
        [E.ENOTSOCK]: `fd ${fd} is not a tap or packet socket`,
      },
    );
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    close(fd);
  }

  private index(ring: number): 0 | 1 {
    const { pair, index } = ringToPair(ring);
    if (pair !== this.pair)
      throw new RangeError(`ring ${ring} belongs to queue pair ${pair}, not to the vhost-net fd of pair ${this.pair}`);
    return index;
  }

  private ring(ioctl: string, ring: number): string {
    return `${ioctl} (ring ${ring})`;
  }

  private dev(ioctl: string): string {
    return `${ioctl} (queue pair ${this.pair})`;
  }
}

/** vhost_net's module parameter for zero-copy transmit (drivers/vhost/net.c experimental_zcopytx). */
export const ZCOPYTX_PATH = '/sys/module/vhost_net/parameters/experimental_zcopytx';

/**
 * experimental_zcopytx: with it, vhost-net transmits large packets from guest pages without a copy
 * when the socket allows it (a tap or macvtap; net.c vhost_sock_zcopy). It is set when vhost_net is
 * loaded (modprobe vhost_net experimental_zcopytx=1), per host: the bridge can only report it.
 * null when the module is not loaded (or the parameter cannot be read).
 */
export function zeroCopyTx(path: string = ZCOPYTX_PATH): boolean | null {
  try {
    return Number(readFileSync(path, 'utf8').trim()) !== 0;
  } catch {
    return null;
  }
}

function checkPair(pair: number): void {
  if (!Number.isInteger(pair) || pair < 0 || pair > 0x7fff)
    throw new RangeError(`queue pair ${pair} is not a queue pair number`);
}
