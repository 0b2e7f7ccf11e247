/**
 * The tap device the kernel datapath reads and writes: one /dev/net/tun fd per queue pair, each
 * handed to the vhost-net fd of that pair with VHOST_NET_SET_BACKEND.
 *
 * Modelled on what QEMU does for `-netdev tap,vhost=on` (net/tap-linux.c tap_open,
 * tap_fd_set_offload, tap_set_sndbuf) and DPDK's virtio_user vhost_kernel_tap.c:
 * IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (+ IFF_MULTI_QUEUE for several queue pairs); the TAP owns the
 * virtio-net header (TUNSETVNETHDRSZ), never vhost-net (bit 27 stays off, see features.ts);
 * offloads come from the guest's negotiated GUEST_* bits (TUNSETOFFLOAD), retried without UFO as
 * QEMU does; TUNSETSNDBUF INT_MAX (QEMU's default: no sndbuf flow control between guests).
 *
 * Several settings are per DEVICE in drivers/net/tun.c (vnet header size, offloads, sndbuf live
 * in struct tun_struct), so they are applied through the first fd; MTU and link state are
 * interface ioctls on a socket (include/uapi/linux/sockios.h).
 */
import { C, close, closeAll, E, fcntl, fstat, ioctlInt, ioctlPtr, open, SysError, write } from '../sys/index.js';
import type { BackendKind, BackendSocket, VnetHdrSocket } from './backend.js';
import { fdKind, KernelError, withHints } from './errors.js';
import { IFF, NETDEV_IFF, SIOC, TUN, TUN_F } from './ioctls.js';
import { ifIoctl, interfaceExists, interfaceMtu, isMacvtap, setInterfaceUp, sysfs } from './netif.js';
import { checkIfName, ifreq, ifreqFlags, ifreqName, int32 } from './structs.js';

/** Where the tun/tap clone device is. */
export const TUN_PATH = '/dev/net/tun';

/** The flags every queue of the bridge's tap has. */
export const TAP_FLAGS = IFF.TAP | IFF.NO_PI | IFF.VNET_HDR;

/** tun.c's MAX_TAP_QUEUES. */
export const MAX_TAP_QUEUES = 256;

const INT_MAX = 0x7fffffff;

/** Options of {@link Tap.open}. */
export interface TapOpenOptions {
  /** One fd per queue pair; more than 1 needs (and sets) IFF_MULTI_QUEUE. Default 1. */
  queuePairs?: number;
  /**
   * true (default): create the tap if it does not exist (needs CAP_NET_ADMIN), else attach to it.
   * false: attach to an existing (persistent) tap only; a missing one is an error.
   */
  create?: boolean;
  /** The clone device; default /dev/net/tun. */
  path?: string;
}

/**
 * A tap device, or a macvtap (drivers/net/tap.c answers the same TUN* ioctls for what the bridge
 * sets: TUNSETIFF for the flags, TUNGETIFF, TUNSETVNETHDRSZ, TUNSETOFFLOAD, TUNSETSNDBUF,
 * TUNSETQUEUE), and this process's fds on it, one per queue pair.
 */
export class Tap implements BackendSocket, VnetHdrSocket {
  #fds: number[];

  private constructor(
    /** The interface name (as the kernel reports it, `%d` resolved). */
    readonly name: string,
    fds: number[],
    /** IFF_* flags TUNGETIFF reported when the tap was opened or adopted. */
    readonly flags: number,
    /** true if this process created the interface (a non-persistent one vanishes on close). */
    readonly created: boolean,
    /** true if the fds came from elsewhere (--tap-fd). */
    readonly adopted: boolean,
    /** A tap (/dev/net/tun) or a macvtap (/dev/tapN). */
    readonly kind: Extract<BackendKind, 'tap' | 'macvtap'> = 'tap',
  ) {
    this.#fds = fds;
  }

  /** Both kinds carry the virtio-net header (IFF_VNET_HDR). */
  get vnetHdr(): VnetHdrSocket {
    return this;
  }

  /**
   * Create the tap `name` or attach to an existing one (TUNSETIFF), one fd per queue pair.
   * Errors say what to do: EPERM (CAP_NET_ADMIN, or another user's tap), EBUSY (a single-queue
   * tap held by another process), EINVAL (flags do not match: multi_queue, tun vs tap, not a tun
   * device at all), ENODEV (create: false and no such tap).
   */
  static open(name: string, opts: TapOpenOptions = {}): Tap {
    const pairs = opts.queuePairs ?? 1;
    const path = opts.path ?? TUN_PATH;
    const bad = checkIfName(name);
    if (bad) throw new KernelError(`tap ${name}`, E.EINVAL, bad);
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > MAX_TAP_QUEUES) {
      throw new RangeError(`tap ${name}: ${pairs} queue pairs (1 to ${MAX_TAP_QUEUES})`);
    }
    const want = TAP_FLAGS | (pairs > 1 ? IFF.MULTI_QUEUE : 0);
    const existed = !name.includes('%') && interfaceExists(name);
    if (!existed && opts.create === false) {
      throw new KernelError(
        `tap ${name}`,
        E.ENODEV,
        `no such tap: create it (ip tuntap add dev ${name} mode tap${pairs > 1 ? ' multi_queue' : ''} vnet_hdr ` +
          `user $USER), or let the bridge create it (needs CAP_NET_ADMIN)`,
      );
    }
    const fds: number[] = [];
    try {
      let actual = name;
      for (let q = 0; q < pairs; q++) {
        const fd = withHints(() => open(path, C.O_RDWR | C.O_NONBLOCK), {
          [E.ENOENT]: `no ${path}: load the tun module (modprobe tun)`,
          [E.EACCES]:
            `${path} is not accessible to this user (it is mode 0666 on most systems): fix its mode, or ` +
            `pass open tap fds with --tap-fd`,
          [E.EPERM]:
            `${path} is not accessible here (device cgroup or container policy): allow it, or pass open ` +
            `tap fds with --tap-fd`,
        });
        fds.push(fd);
        const ifr = ifreq(actual, { flags: want });
        withHints(() => ioctlPtr(fd, TUN.SETIFF, ifr, `TUNSETIFF ${actual}`), {
          [E.EPERM]: () => permHint(actual, existed || q > 0, pairs),
          [E.EBUSY]:
            `tap ${actual} is single-queue and another process (QEMU, another bridge) already holds it: ` +
            `stop that process or use another tap`,
          [E.EINVAL]: () => mismatchHint(actual, want),
          [E.E2BIG]: `tap ${actual} already has the most queues the kernel allows (${MAX_TAP_QUEUES})`,
        });
        actual = ifreqName(ifr);
      }
      const flags = getIff(fds[0], actual);
      return new Tap(actual, fds, flags, !existed, false);
    } catch (e) {
      closeAll(fds);
      throw e;
    }
  }

  /**
   * Take over open tap fds (`--tap-fd N ...`, one per queue pair, in pair order), for a bridge
   * that may not create or attach taps itself. Each must be a tun/tap fd attached to a TAP with
   * IFF_NO_PI and IFF_VNET_HDR (TUNGETIFF); all on the same tap; IFF_MULTI_QUEUE if several.
   * The fds are TAKEN (not duplicated; FD_CLOEXEC is set): close() closes them. On failure they stay
   * open and stay the caller's. Two fds that are dups of one open file cannot be told apart here
   * and would be one queue: the manager must open one file per queue.
   */
  static adopt(fds: readonly number[]): Tap {
    if (fds.length < 1 || fds.length > MAX_TAP_QUEUES)
      throw new RangeError(`tap fds: ${fds.length} fds (1 to ${MAX_TAP_QUEUES})`);
    if (new Set(fds).size !== fds.length) throw new RangeError(`tap fds: ${fds.join(', ')} has duplicates`);
    let name = '';
    let flags = 0;
    for (const fd of fds) {
      const what = `tap fd ${fd}`;
      const st = withHints(() => fstat(fd), {
        [E.EBADF]: `fd ${fd} is not open in this process: check the manager passes it`,
      });
      if (st.type !== 'char')
        throw new KernelError(what, E.ENOTTY, `fd ${fd} is ${fdKind(st.type)}, not a /dev/net/tun fd`);
      const ifr = ifreq('');
      withHints(() => ioctlPtr(fd, TUN.GETIFF, ifr, `TUNGETIFF (${what})`), {
        [E.EBADFD]: `fd ${fd} is /dev/net/tun but not attached to an interface (TUNSETIFF was not done)`,
        [E.ENOTTY]: `fd ${fd} is a character device but not /dev/net/tun`,
        [E.EINVAL]: `fd ${fd} is a character device but not /dev/net/tun`,
      });
      const f = ifreqFlags(ifr);
      const n = ifreqName(ifr);
      if ((f & IFF.TYPE_MASK) !== IFF.TAP)
        throw new KernelError(what, E.EINVAL, `${n} is a tun (layer 3) device; the bridge needs a tap`);
      if (!(f & IFF.NO_PI))
        throw new KernelError(
          what,
          E.EINVAL,
          `${n} was opened without IFF_NO_PI: the manager must open it with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR`,
        );
      if (!(f & IFF.VNET_HDR))
        throw new KernelError(
          what,
          E.EINVAL,
          `${n} was opened without IFF_VNET_HDR (ip tuntap ... vnet_hdr): the tap must carry the virtio-net header`,
        );
      if (name && n !== name) throw new KernelError(what, E.EINVAL, `fds are on different taps (${name}, ${n})`);
      name = n;
      flags = f;
    }
    const kind = isMacvtap(name) ? 'macvtap' : 'tap';
    if (kind === 'macvtap' && fds.length > 1 && !(flags & IFF.MULTI_QUEUE)) {
      // Every open of /dev/tapN is a queue of its own (tap.c tap_open); IFF_MULTI_QUEUE is only recorded
      // per queue, so set it for a consistent TUNGETIFF.
      for (const fd of fds)
        ioctlPtr(fd, TUN.SETIFF, ifreq('', { flags: flags | IFF.MULTI_QUEUE }), `TUNSETIFF ${name}`);
      flags |= IFF.MULTI_QUEUE;
    }
    if (fds.length > 1 && !(flags & IFF.MULTI_QUEUE)) {
      throw new KernelError(
        `tap fds ${fds.join(', ')}`,
        E.EINVAL,
        `${name} is single-queue but ${fds.length} fds were passed (create it with multi_queue)`,
      );
    }
    for (const fd of fds) fcntl(fd, C.F_SETFD, fcntl(fd, C.F_GETFD) | C.FD_CLOEXEC);
    return new Tap(name, [...fds], flags, false, true, kind);
  }

  /**
   * Open the macvtap interface `name` (ip link add link PARENT name NAME type macvtap): its character
   * device is /dev/tapN, N = the interface's ifindex (drivers/net/tap.c, created by devtmpfs or udev).
   * Each open is one queue (tap_open), so one fd per queue pair; TUNSETIFF sets IFF_TAP | IFF_NO_PI |
   * IFF_VNET_HDR (tap.c accepts only those plus IFF_MULTI_QUEUE). The interface is never created here: its
   * parent, mode and MAC (the guest's: macvlan passes up only frames for its own address) are the
   * administrator's choice, as libvirt's `<interface type='direct'>` makes them.
   */
  static openMacvtap(name: string, opts: { queuePairs?: number; devDir?: string } = {}): Tap {
    const pairs = opts.queuePairs ?? 1;
    const bad = checkIfName(name);
    if (bad) throw new KernelError(`macvtap ${name}`, E.EINVAL, bad);
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > MAX_TAP_QUEUES)
      throw new RangeError(`macvtap ${name}: ${pairs} queue pairs (1 to ${MAX_TAP_QUEUES})`);
    const ifindex = sysfs(name, 'ifindex');
    if (ifindex === undefined) {
      throw new KernelError(
        `macvtap ${name}`,
        E.ENODEV,
        `no interface ${name}: create it on its parent (ip link add link PARENT name ${name} address GUEST-MAC type ` +
          'macvtap mode bridge; ip link set dev NAME up)',
      );
    }
    if (!isMacvtap(name)) throw new KernelError(`macvtap ${name}`, E.EINVAL, `${name} is not a macvtap interface`);
    const path = `${opts.devDir ?? '/dev'}/tap${ifindex}`;
    const want = TAP_FLAGS | (pairs > 1 ? IFF.MULTI_QUEUE : 0);
    const fds: number[] = [];
    try {
      for (let q = 0; q < pairs; q++) {
        const fd = withHints(() => open(path, C.O_RDWR | C.O_NONBLOCK), {
          [E.ENOENT]:
            `no ${path} for macvtap ${name}: devtmpfs or udev did not create it (its major:minor is in ` +
            `/sys/class/net/${name}/macvtap/tap${ifindex}/dev)`,
          [E.EACCES]: `${path} is not accessible to this user: run as root, or pass open macvtap fds with --tap-fd`,
          [E.EPERM]: `${path} is not accessible here (device cgroup?): allow it, or pass open fds with --tap-fd`,
        });
        fds.push(fd);
        ioctlPtr(fd, TUN.SETIFF, ifreq('', { flags: want }), `TUNSETIFF ${name} (${path})`);
      }
      return new Tap(name, fds, getIff(fds[0], name), false, false, 'macvtap');
    } catch (e) {
      closeAll(fds);
      throw e;
    }
  }

  /** TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports (0x7173 on Linux 6.1). */
  static tunFeatures(path: string = TUN_PATH): number {
    const fd = open(path, C.O_RDWR);
    try {
      const b = Buffer.alloc(4);
      ioctlPtr(fd, TUN.GETFEATURES, b, 'TUNGETFEATURES');
      return b.readUInt32LE();
    } finally {
      close(fd);
    }
  }

  /** The fds, index = queue pair. Empty after close(). */
  get fds(): readonly number[] {
    return this.#fds;
  }

  /** The fd of queue pair `pair` (for VHOST_NET_SET_BACKEND). */
  fd(pair: number): number {
    const fd = this.#fds[pair];
    if (fd === undefined) throw new RangeError(`tap ${this.name}: no queue pair ${pair} (${this.#fds.length} open)`);
    return fd;
  }

  get queuePairs(): number {
    return this.#fds.length;
  }

  get multiQueue(): boolean {
    return (this.flags & IFF.MULTI_QUEUE) !== 0;
  }

  /** IFF_* flags now (TUNGETIFF), e.g. to see IFF_PERSIST. */
  currentFlags(): number {
    return getIff(this.fd(0), this.name);
  }

  /**
   * TUNSETVNETHDRSZ: the header size the tap expects on write and prepends on read (10, 12 or 20), on every
   * fd: a tap keeps it per device, a macvtap per queue (tap.c struct tap_queue vnet_hdr_sz).
   */
  setVnetHdrSize(size: number): void {
    for (const fd of this.#fds) {
      withHints(() => ioctlPtr(fd, TUN.SETVNETHDRSZ, int32(size), `TUNSETVNETHDRSZ ${this.name}`), {
        [E.EINVAL]: `${size} is smaller than struct virtio_net_hdr (10)`,
      });
    }
  }

  /** TUNGETVNETHDRSZ. */
  getVnetHdrSize(): number {
    const b = int32(0);
    ioctlPtr(this.fd(0), TUN.GETVNETHDRSZ, b, `TUNGETVNETHDRSZ ${this.name}`);
    return b.readInt32LE();
  }

  /**
   * TUNSETOFFLOAD with TUN_F_* `flags` (features.tapOffloadFlags of the negotiated set): which
   * offloaded packets the tap may hand to vhost-net's RX path, i.e. to the guest. If the kernel
   * refuses, retry without UFO as QEMU's tap_fd_set_offload does (UFO left Linux in 4.14 and came
   * back as software segmentation in 4.15). Returns the flags applied.
   */
  setOffload(flags: number): number {
    const call = `TUNSETOFFLOAD ${this.name} 0x${flags.toString(16)}`;
    const hint =
      'the tap refuses these offloads (TSO/UFO/USO need CSUM; USO needs Linux 6.2): offer only what ' +
      'probeOffloads() reports';
    try {
      ioctlInt(this.fd(0), TUN.SETOFFLOAD, flags, call);
      return flags;
    } catch (e) {
      if (!(e instanceof SysError) || e.errno !== E.EINVAL) throw e;
      if (!(flags & TUN_F.UFO)) throw new KernelError(call, e.errno, hint);
    }
    const noUfo = flags & ~TUN_F.UFO;
    withHints(() => ioctlInt(this.fd(0), TUN.SETOFFLOAD, noUfo, `${call} (and 0x${noUfo.toString(16)} without UFO)`), {
      [E.EINVAL]: hint,
    });
    return noUfo;
  }

  /**
   * The TUN_F_* offloads the tap accepts, by trying each (with CSUM, which the others need:
   * tun.c set_offload refuses TSO without CSUM, and TSO_ECN without TSO). USO4 and USO6 are tried
   * as a pair: tun.c (Linux 6.2+) takes them only together, one alone is EINVAL (docs/kernels.md). There is no
   * TUNGETOFFLOAD, so the probe cannot restore what was set before: it leaves the tap with no
   * offloads, which is a new tap's state; apply the negotiated ones with setOffload() afterwards.
   */
  probeOffloads(): number {
    const fd = this.fd(0);
    const tries = (f: number): boolean => {
      try {
        ioctlInt(fd, TUN.SETOFFLOAD, f, `TUNSETOFFLOAD ${this.name}`);
        return true;
      } catch (e) {
        if (e instanceof SysError && e.errno === E.EINVAL) return false;
        throw e;
      }
    };
    let ok = 0;
    if (tries(TUN_F.CSUM)) {
      ok |= TUN_F.CSUM;
      for (const extra of [TUN_F.TSO4, TUN_F.TSO6, TUN_F.TSO4 | TUN_F.TSO_ECN, TUN_F.UFO, TUN_F.USO4 | TUN_F.USO6]) {
        if (tries(TUN_F.CSUM | extra)) ok |= extra;
      }
    }
    tries(0);
    return ok;
  }

  /**
   * TUNSETSNDBUF on every fd (a macvtap keeps it per queue). INT_MAX (the default) turns the tap's send-buffer
   * flow control off, as QEMU does.
   */
  setSndbuf(bytes: number = INT_MAX): void {
    for (const fd of this.#fds) {
      withHints(() => ioctlPtr(fd, TUN.SETSNDBUF, int32(bytes), `TUNSETSNDBUF ${this.name}`), {
        [E.EINVAL]: `${bytes} is not a positive send buffer size`,
      });
    }
  }

  /** TUNGETSNDBUF. */
  getSndbuf(): number {
    const b = int32(0);
    ioctlPtr(this.fd(0), TUN.GETSNDBUF, b, `TUNGETSNDBUF ${this.name}`);
    return b.readInt32LE();
  }

  /** SIOCGIFMTU. */
  getMtu(): number {
    return interfaceMtu(this.name);
  }

  /**
   * SIOCSIFMTU (needs CAP_NET_ADMIN). Nothing is done if the MTU already has that value, so an
   * unprivileged bridge can be given a tap whose MTU was set by whoever created it.
   */
  setMtu(mtu: number): void {
    if (this.getMtu() === mtu) return;
    withHints(() => ifIoctl(this.name, SIOC.SIFMTU, { mtu }, `SIOCSIFMTU ${this.name} ${mtu}`, () => 0), {
      [E.EPERM]:
        `setting the MTU needs CAP_NET_ADMIN: set it when creating the tap (ip link set ${this.name} mtu ` +
        `${mtu}) or run as root`,
      [E.EINVAL]: `${mtu} is outside the range a tap allows (68 to 65521)`,
    });
  }

  /** SIOCGIFFLAGS & IFF_UP. */
  isUp(): boolean {
    return (ifIoctl(this.name, SIOC.GIFFLAGS, {}, `SIOCGIFFLAGS ${this.name}`, ifreqFlags) & NETDEV_IFF.UP) !== 0;
  }

  /** Set the link up (or down); nothing is done if it already is (netif.ts setInterfaceUp). */
  setUp(up = true): void {
    setInterfaceUp(this.name, up);
  }

  /**
   * TUNSETQUEUE: attach (IFF_ATTACH_QUEUE) or detach (IFF_DETACH_QUEUE) queue `pair` of a
   * multi-queue tap. The host's transmit path spreads packets over the ATTACHED queues only, so a
   * queue pair the guest does not use must be detached or the packets steered to it wait forever
   * (QEMU's tap_enable/tap_disable do the same when the guest changes its number of queue pairs).
   * Nothing to do on a single-queue tap.
   */
  setQueueEnabled(pair: number, enabled: boolean): void {
    if (!this.multiQueue) return;
    const ifr = ifreq('', { flags: enabled ? IFF.ATTACH_QUEUE : IFF.DETACH_QUEUE });
    try {
      ioctlPtr(
        this.fd(pair),
        TUN.SETQUEUE,
        ifr,
        `TUNSETQUEUE ${this.name} queue ${pair} ${enabled ? 'attach' : 'detach'}`,
      );
    } catch (e) {
      // Attaching an attached queue is EINVAL; detaching a detached one too: both mean "already so".
      if (!(e instanceof SysError && e.errno === E.EINVAL)) throw e;
    }
  }

  /**
   * Write one Ethernet frame on queue `pair`, preceded by a zeroed virtio-net header of the size
   * the tap expects (no offload requested, num_buffers unused on this path). For SEND_RARP: the
   * bridge's only frame; everything else is the kernel's datapath.
   */
  writeFrame(frame: Buffer, pair = 0): void {
    const buf = Buffer.concat([Buffer.alloc(this.getVnetHdrSize()), frame]);
    if (write(this.fd(pair), buf) !== buf.length)
      throw new KernelError(`write ${this.name}`, E.EAGAIN, 'the tap queue is full');
  }

  /**
   * Close this process's fds. A persistent tap stays (with its settings); a non-persistent one
   * disappears with its last fd. Idempotent.
   */
  close(): void {
    const fds = this.#fds;
    this.#fds = [];
    for (const fd of fds) close(fd);
  }
}

/**
 * A RARP request announcing `mac` (RFC 903; the frame QEMU's qemu_announce_self sends): broadcast
 * destination, ethertype 0x8035, hardware type Ethernet, protocol IPv4, sender = target = mac,
 * zero IP addresses, padded to the 60-byte Ethernet minimum. Written on the tap after a migration
 * (vhost-user.rst VHOST_USER_SEND_RARP) so that switches learn where the guest's MAC now is.
 */
export function rarpFrame(mac: Buffer): Buffer {
  if (mac.length !== 6) throw new RangeError(`RARP: a MAC of ${mac.length} bytes`);
  const f = Buffer.alloc(60);
  f.fill(0xff, 0, 6);
  mac.copy(f, 6);
  f.writeUInt16BE(0x8035, 12);
  f.writeUInt16BE(1, 14); // htype Ethernet
  f.writeUInt16BE(0x0800, 16); // ptype IPv4
  f.writeUInt8(6, 18);
  f.writeUInt8(4, 19);
  f.writeUInt16BE(3, 20); // RARP request (reverse)
  mac.copy(f, 22); // sender hardware address
  mac.copy(f, 32); // target hardware address
  return f;
}

/** TUNGETIFF flags of an attached fd. */
function getIff(fd: number, name: string): number {
  const ifr = ifreq('');
  ioctlPtr(fd, TUN.GETIFF, ifr, `TUNGETIFF ${name}`);
  return ifreqFlags(ifr);
}

function permHint(name: string, existed: boolean, pairs: number): string {
  const mq = pairs > 1 ? ' multi_queue' : '';
  const make = `ip tuntap add dev ${name} mode tap${mq} vnet_hdr user $USER`;
  if (!existed) {
    return (
      `creating a tap needs CAP_NET_ADMIN: run as root, or create a persistent tap owned by this user ` +
      `(${make}) and name it, or pass open tap fds with --tap-fd`
    );
  }
  const owner = sysfs(name, 'owner');
  const group = sysfs(name, 'group');
  const who =
    owner && owner !== '-1'
      ? ` (owner uid ${owner}${group && group !== '-1' ? `, group ${group}` : ''})`
      : ' (no owner: root only)';
  return (
    `tap ${name} belongs to another user${who}: run as that user or root, recreate it for this user (ip ` +
    `tuntap del dev ${name} mode tap; ${make}), or pass open tap fds with --tap-fd`
  );
}

function mismatchHint(name: string, want: number): string {
  const raw = sysfs(name, 'tun_flags');
  if (raw === undefined) {
    return interfaceExists(name)
      ? `${name} exists and is not a tun/tap device: choose another name`
      : `TUNSETIFF refused ${name} (flags 0x${want.toString(16)})`;
  }
  const have = Number.parseInt(raw, 16);
  if ((have & IFF.TYPE_MASK) !== IFF.TAP) return `${name} is a tun (layer 3) device, not a tap: choose another name`;
  const wantMq = (want & IFF.MULTI_QUEUE) !== 0;
  if (((have & IFF.MULTI_QUEUE) !== 0) !== wantMq) {
    return wantMq
      ? `${name} was created single-queue but several queue pairs need multi_queue: recreate it (ip tuntap del dev ` +
          `${name} mode tap; ip tuntap add dev ${name} mode tap multi_queue vnet_hdr)`
      : `${name} was created multi_queue but one queue pair opens it single-queue: recreate it without ` +
          `multi_queue, or use queues > 1`;
  }
  return `TUNSETIFF refused ${name} (its flags 0x${have.toString(16)}, requested 0x${want.toString(16)})`;
}
