/**
 * The first Datapath (datapath.ts): the kernel's vhost-net, one fd per queue pair, serving its two
 * rings on the tap queue of that pair. No packet and no interrupt crosses this process: the kernel
 * gets the memory table (guest-physical -> this process's mapping), the translated ring
 * addresses and the front-end's kick, call and err eventfds as they are.
 *
 * The kernel's ordering rules live here (docs/kernel-ordering.md; verified in
 * the lab, test/qemu/kernel-errors.test.ts):
 *  - open: one vhost-net fd per queue pair, VHOST_SET_OWNER by this process (whose address space
 *    ring and region addresses refer to).
 *  - start = VHOST_NET_SET_BACKEND(tap queue fd): the kernel reads the memory table, NUM, BASE,
 *    ADDR and kick at that moment and fails with EFAULT without them; the session starts a ring
 *    only when it is configured.
 *  - While a ring is attached the kernel refuses SET_VRING_NUM/BASE (EBUSY) and checks a new
 *    ADDR or memory table against it: the ring is detached around such a change and re-attached.
 *  - GET_VRING_BASE detaches first, then reads the index.
 *  - A new memory table reaches every fd before the old mappings go (the session unmaps after
 *    setMemTable returns); at release the fds are given back before the session unmaps memory.
 *  - VHOST_SET_LOG_BASE before a feature word with LOG_ALL: a LOG_ALL that arrives first is held
 *    back and given with the log base (docs/migration.md).
 */
import { bit } from '../bits.js';
import { hex } from '../format.js';
import { log as defaultLog, type Logger } from '../log.js';
import type { MemTable } from '../memtable/index.js';
import { maxMemSlots } from '../memtable/index.js';
import { SysError } from '../sys/index.js';
import {
  type BackendSocket,
  rarpFrame,
  tapOffloadFlags,
  toKernel,
  VhostNet,
  type VhostNetDevice,
  vnetHdrSize,
  zeroCopyTx,
} from '../vhost-kernel/index.js';
import { VRING_ADDR_F } from '../vhost-user/constants.js';
import { ringName, ringToPair, VHOST_F } from '../virtio.js';
import {
  lastPid,
  placeWorker,
  type VhostWorker,
  type WorkerPlacement,
  workerStartedAfter,
} from '../vhost-kernel/workers.js';
import type { Datapath, DatapathRingAddr } from './datapath.js';
import type { DatapathStatus } from './status.js';

/** How the datapath gets a vhost-net fd for a queue pair at open(), and gives it back at release(). */
export interface VhostNetProvider {
  /** A vhost-net fd for `pair`, not yet owned (the datapath calls setOwner). */
  open(pair: number): VhostNetDevice;
  /**
   * The session is over: close the fd, or, for an fd adopted from a manager (`--vhost-fd`), which
   * cannot be reopened, reset it (VHOST_RESET_OWNER) and keep it for the next session.
   */
  release(pair: number, dev: VhostNetDevice): void;
}

/**
 * Opens /dev/vhost-net per session, or hands out the fds a manager gave (--vhost-fd): those cannot
 * be reopened, so between sessions they are reset (VHOST_RESET_OWNER: rings, memory table and
 * worker gone, owner cleared) and kept.
 */
export class KernelVhostNetProvider implements VhostNetProvider {
  constructor(
    private readonly adopted: VhostNet[] | null,
    private readonly log: Logger = defaultLog,
  ) {}

  open(pair: number): VhostNetDevice {
    return this.adopted ? this.adopted[pair] : VhostNet.open(pair);
  }

  release(pair: number, dev: VhostNetDevice): void {
    if (!this.adopted) {
      dev.close();
      return;
    }
    try {
      dev.resetOwner();
    } catch (e) {
      // EPERM: never owned in this session (SET_OWNER failed part way): nothing to reset.
      if (!(e instanceof SysError && e.errno === 1)) throw e;
    }
    this.log.debug(`vhost-net fd of queue pair ${pair} reset for the next session (adopted, kept open)`);
  }

  /** Close adopted fds at shutdown. */
  close(): void {
    for (const v of this.adopted ?? []) v.close();
  }
}

export interface VhostNetDatapathConfig {
  queuePairs: number;
  /** The feature word offered to the front-end (vhost-kernel/features.ts offeredToFrontEnd). */
  offered: bigint;
  /**
   * VHOST_GET_FEATURES of the kernel's vhost-net: VHOST_SET_FEATURES gets its share of the
   * negotiated word (features.toKernel).
   */
  vhostNetFeatures: bigint;
  vhostNet: VhostNetProvider;
  /** The socket the rings are attached to: a tap, a macvtap or a packet socket (vhost-kernel/backend.ts). */
  socket: BackendSocket;
  /** GET_MAX_MEM_SLOTS; default: the kernel's max_mem_regions. */
  maxMemSlots?: number;
  /**
   * VHOST_SET_VRING_BUSYLOOP_TIMEOUT for every ring, in microseconds (QEMU's `-netdev tap,poll-us=N`): after
   * its last work the worker polls the ring and the socket this long before sleeping. 0 or absent: off.
   */
  busyPollUs?: number;
  /**
   * A cgroup v2 directory each queue pair's worker is moved into right after its VHOST_SET_OWNER,
   * every session (a port's `workerCgroup`; docs/operating.md "Placing each port's worker"). A move
   * that fails is a warning and a status field, never a failed session. Absent: the worker stays
   * where the kernel put it (the owner's cgroup).
   */
  workerCgroup?: string;
  log?: Logger;
  /**
   * TEST ONLY (docs/migration.md, "The test-only switch"): never give the kernel a log base,
   * LOG_ALL or a ring's VHOST_VRING_F_LOG, so that the lab can show its page compare fails without
   * the kernel's dirty log. Set from VB_TEST_WITHHOLD_DIRTY_LOG in daemon.ts, nowhere else.
   */
  withholdDirtyLog?: boolean;
}

/** A queue pair's vhost worker in this session, and where the datapath placed it (`workerCgroup`, else null). */
export interface PairWorker {
  pair: number;
  worker: VhostWorker;
  placement: WorkerPlacement | null;
}

/** What the datapath remembers of a ring: enough to log, and whether the kernel serves it. */
interface RingState {
  num: number | undefined;
  base: number;
  attached: boolean;
  enabled: boolean;
}

export class VhostNetDatapath implements Datapath {
  readonly queuePairs: number;
  readonly offered: bigint;
  private readonly socket: BackendSocket;
  /** vhost_net's experimental_zcopytx, read once (a module parameter: it changes only with a module reload). */
  private readonly zeroCopyTx = zeroCopyTx();
  private readonly log: Logger;
  /** One per queue pair, from open() to release(). */
  private devices: VhostNetDevice[] | null = null;
  /** The vhost worker each device's SET_OWNER started (null if not found), by queue pair. */
  private ownWorkers: (VhostWorker | null)[] = [];
  /** Where each of those was placed (`workerCgroup`), by queue pair; null without workerCgroup. */
  private placements: (WorkerPlacement | null)[] = [];
  private rings: RingState[];
  /** This session's negotiated word, and what of it the kernel and the tap were given. */
  private negotiated: bigint | null = null;
  private kernelWord: bigint | null = null;
  private tapShare: { hdr: number; offloads: number } | null = null;
  /** The VHOST_SET_LOG_BASE every fd of this session has. */
  private logBase: bigint | null = null;

  constructor(private readonly cfg: VhostNetDatapathConfig) {
    this.queuePairs = cfg.queuePairs;
    this.offered = cfg.offered;
    this.socket = cfg.socket;
    this.log = cfg.log ?? defaultLog;
    this.rings = this.freshRings();
  }

  get name(): string {
    return this.socket.name;
  }

  /**
   * GET_MAX_MEM_SLOTS: the vhost module's max_mem_regions as it is now (read at each request, so a module
   * reloaded with another value while the port runs is followed), unless the configuration fixes it.
   */
  get maxMemSlots(): number {
    return this.cfg.maxMemSlots ?? maxMemSlots();
  }

  get opened(): boolean {
    return this.devices !== null;
  }

  /**
   * The vhost worker of each queue pair of this session (the one its SET_OWNER started), or an
   * empty list when no session owns the devices (docs/kernels.md: a kthread, or a thread of this
   * process from 6.4).
   */
  workers(): PairWorker[] {
    if (!this.devices) return [];
    return this.ownWorkers.flatMap((w, pair) =>
      w ? [{ pair, worker: w, placement: this.placements[pair] ?? null }] : [],
    );
  }

  /**
   * Move the worker a SET_OWNER just started into `workerCgroup` (placeWorker). Never throws: the
   * session goes on with the worker where the kernel put it, and the failure is a line and a status field.
   */
  private place(pair: number, w: VhostWorker | null): WorkerPlacement | null {
    const dir = this.cfg.workerCgroup;
    if (dir === undefined) return null;
    if (!w) {
      this.log.warn(`queue pair ${pair}: no vhost worker found after SET_OWNER; nothing placed in cgroup ${dir}`);
      return { cgroup: dir, error: 'no vhost worker found after SET_OWNER' };
    }
    try {
      placeWorker(w, dir);
    } catch (e) {
      const error = (e as Error).message;
      this.log.warn(`queue pair ${pair}: vhost worker (${w.kind} ${w.pid}) not placed in cgroup ${dir}: ${error}`);
      return { cgroup: dir, error };
    }
    this.log.info(`queue pair ${pair}: vhost worker (${w.kind} ${w.pid}) placed in cgroup ${dir}`);
    return { cgroup: dir, error: null };
  }

  open(): void {
    if (this.devices) throw new Error('vhost-net datapath: already open');
    const opened: VhostNetDevice[] = [];
    try {
      for (let p = 0; p < this.queuePairs; p++) {
        const v = this.cfg.vhostNet.open(p);
        opened.push(v);
        const mark = lastPid();
        v.setOwner();
        this.ownWorkers[p] = workerStartedAfter(mark);
        this.placements[p] = this.place(p, this.ownWorkers[p]);
        // Per ring state of the device, kept until RESET_OWNER or close (vhost.c vhost_vq_reset): set once.
        const us = this.cfg.busyPollUs ?? 0;
        if (us > 0) for (const r of [2 * p, 2 * p + 1]) v.setVringBusyloopTimeout(r, us);
      }
    } catch (e) {
      for (const [p, v] of opened.entries()) this.cfg.vhostNet.release(p, v);
      throw e;
    }
    this.devices = opened;
  }

  release(why: string): void {
    // Each step runs even if an earlier one failed: a release that stops halfway leaks.
    const step = (what: string, f: () => void): void => {
      try {
        f();
      } catch (e) {
        this.log.warn(`${why}: ${what}: ${(e as Error).message}`);
      }
    };
    for (const q of this.rings.keys()) step(`detach ${ringName(q)}`, () => this.detach(q, why));
    if (this.devices) {
      for (const [p, v] of this.devices.entries()) {
        step(`release vhost-net fd of pair ${p}`, () => this.cfg.vhostNet.release(p, v));
      }
    }
    this.devices = null;
    this.ownWorkers = [];
    this.placements = [];
    this.rings = this.freshRings();
    this.negotiated = this.kernelWord = this.logBase = this.tapShare = null;
    for (let p = 1; p < this.queuePairs; p++)
      step(`detach tap queue ${p}`, () => this.socket.setQueueEnabled(p, false));
  }

  /**
   * The kernel gets its share of the negotiated word (features.toKernel); the tap the virtio-net
   * header size (12 with VERSION_1 or MRG_RXBUF) and the offloaded packets the guest accepts
   * (TUNSETOFFLOAD from GUEST_CSUM/TSO/ECN/UFO): offloads are what make the throughput equal to
   * QEMU's tap,vhost=on. The tap is set only when its share changes: QEMU sends SET_FEATURES once
   * per queue pair and again to toggle LOG_ALL while the rings run, and neither must touch a tap
   * that is carrying traffic.
   */
  setFeatures(negotiated: bigint): void {
    this.open_();
    this.negotiated = negotiated;
    this.giveKernelFeatures(true);
    const hdr = vnetHdrSize(negotiated);
    const hdrSocket = this.socket.vnetHdr;
    if (!hdrSocket) {
      this.log.debug(`${this.socket.name}: packet socket: vhost-net adds and strips the ${hdr}-byte virtio-net header`);
      return;
    }
    const share = { hdr, offloads: tapOffloadFlags(negotiated) };
    if (this.tapShare?.hdr === share.hdr && this.tapShare.offloads === share.offloads) return;
    hdrSocket.setVnetHdrSize(share.hdr);
    const applied = hdrSocket.setOffload(share.offloads);
    this.tapShare = share;
    this.log.debug(`${this.socket.name}: vnet header ${share.hdr} bytes, offloads ${hex(applied)}`);
  }

  setMemTable(table: MemTable, readdress: { ring: number; addr: DatapathRingAddr }[]): void {
    const devices = this.open_();
    const reattach = readdress.filter((m) => this.rings[m.ring].attached);
    for (const m of reattach) this.detach(m.ring, 'new memory table');
    const encoded = table.toVhostMemory();
    for (const v of devices) v.setMemTable(encoded);
    for (const m of readdress) this.device(m.ring).setVringAddr(m.ring, this.kernelAddr(m.addr));
    for (const m of reattach) this.start(m.ring);
  }

  /**
   * VHOST_SET_LOG_BASE on every fd, then the LOG_ALL that was held back for want of it. A second
   * call replaces the first: the kernel switches to the new address under its ring locks, so the
   * session may unmap the old log once this returns.
   */
  setLogBase(addr: bigint): void {
    const devices = this.open_();
    if (this.cfg.withholdDirtyLog) {
      this.log.warn(`SET_LOG_BASE: NOT given to the kernel (test-only VB_TEST_WITHHOLD_DIRTY_LOG): no dirty log`);
      return;
    }
    for (const v of devices) v.setLogBase(addr);
    this.logBase = addr;
    this.giveKernelFeatures(false);
  }

  setRingNum(ring: number, num: number): void {
    this.whileDetached(ring, 'SET_VRING_NUM', () => {
      this.device(ring).setVringNum(ring, num);
      this.rings[ring].num = num;
    });
  }

  setRingBase(ring: number, base: number): void {
    this.whileDetached(ring, 'SET_VRING_BASE', () => {
      this.device(ring).setVringBase(ring, base);
      this.rings[ring].base = base;
    });
  }

  setRingAddr(ring: number, addr: DatapathRingAddr): void {
    this.whileDetached(ring, 'SET_VRING_ADDR', () => this.device(ring).setVringAddr(ring, this.kernelAddr(addr)));
  }

  setRingKick(ring: number, fd: number): void {
    this.whileDetached(ring, 'SET_VRING_KICK', () => this.device(ring).setVringKick(ring, fd));
  }

  setRingCall(ring: number, fd: number | null): void {
    this.device(ring).setVringCall(ring, fd ?? -1);
  }

  setRingErr(ring: number, fd: number | null): void {
    this.device(ring).setVringErr(ring, fd ?? -1);
  }

  /**
   * A multi-queue tap spreads host traffic over its ATTACHED queues only: a queue pair neither of
   * whose rings is enabled is detached from the tap (TUNSETQUEUE), as QEMU's tap_enable/tap_disable
   * do. Pair 0 always stays.
   */
  setRingEnabled(ring: number, enabled: boolean): void {
    this.rings[ring].enabled = enabled;
    const { pair } = ringToPair(ring);
    if (pair > 0) this.socket.setQueueEnabled(pair, this.rings[2 * pair].enabled || this.rings[2 * pair + 1].enabled);
  }

  start(ring: number): void {
    const r = this.rings[ring];
    if (r.attached) return;
    const { pair } = ringToPair(ring);
    this.device(ring).netSetBackend(ring, this.socket.fd(pair));
    r.attached = true;
    this.log.info(`${ringName(ring)}: attached to ${this.socket.name} (size ${r.num}, base ${r.base})`);
  }

  stop(ring: number, why: string): void {
    this.detach(ring, why);
  }

  running(ring: number): boolean {
    return this.rings[ring].attached;
  }

  getRingBase(ring: number): number {
    this.detach(ring, 'GET_VRING_BASE');
    const base = this.device(ring).getVringBase(ring);
    this.rings[ring].base = base;
    return base;
  }

  setMtu(mtu: number): void {
    this.socket.setMtu(mtu);
  }

  announce(mac: Buffer): void {
    this.socket.writeFrame(rarpFrame(mac), 0);
  }

  /** The socket and the busy-poll setting, read back from the kernel (a lab test checks it reached it). */
  describe(): DatapathStatus {
    let kernel: number[] = [];
    if (this.devices) {
      try {
        kernel = [...this.rings.keys()].map((q) => this.device(q).getVringBusyloopTimeout(q));
      } catch (e) {
        // A status is read after every event and must not throw; the read-back is then simply missing.
        this.log.debug(`status: VHOST_GET_VRING_BUSYLOOP_TIMEOUT: ${(e as Error).message}`);
      }
    }
    return {
      socket: this.socket.kind,
      interface: this.socket.name,
      busyPollUs: this.cfg.busyPollUs ?? 0,
      kernelBusyPollUs: kernel,
      zeroCopyTx: this.zeroCopyTx,
    };
  }

  // ---- Internals ------------------------------------------------------------------------------

  private freshRings(): RingState[] {
    const fresh = (): RingState => ({ num: undefined, base: 0, attached: false, enabled: false });
    return Array.from({ length: 2 * this.queuePairs }, fresh);
  }

  /**
   * The kernel's share of the negotiated word, without LOG_ALL until the kernel has a log base:
   * vhost_net_set_features checks the log only as far as access_ok() of the log range, so a
   * LOG_ALL before VHOST_SET_LOG_BASE is accepted and the kernel would mark pages at address 0
   * (and fail silently). QEMU sends SET_FEATURES with LOG_ALL before SET_LOG_BASE when it starts
   * a device during migration (hw/virtio/vhost.c vhost_dev_start, e.g. after a reconnect).
   * `always`: give the word even if it is the one the kernel has (SET_FEATURES); else only a change.
   */
  private giveKernelFeatures(always: boolean): void {
    if (this.negotiated === null) return;
    let word = toKernel(this.negotiated, this.cfg.vhostNetFeatures, this.socket.vnetHdr !== null);
    if (this.logBase === null) word &= ~bit(VHOST_F.LOG_ALL);
    if (!always && word === this.kernelWord) return;
    for (const v of this.open_()) v.setFeatures(word);
    this.kernelWord = word;
  }

  /** A ring's addresses as the kernel gets them: without VHOST_VRING_F_LOG under the test-only switch. */
  private kernelAddr(addr: DatapathRingAddr): DatapathRingAddr {
    return this.cfg.withholdDirtyLog ? { ...addr, flags: addr.flags & ~(1 << VRING_ADDR_F.LOG) } : addr;
  }

  private open_(): VhostNetDevice[] {
    if (!this.devices) throw new Error('vhost-net datapath: not open (no SET_OWNER)');
    return this.devices;
  }

  private device(ring: number): VhostNetDevice {
    return this.open_()[ringToPair(ring).pair];
  }

  /** Apply a change the kernel refuses or re-checks while the ring is attached (EBUSY), then restore. */
  private whileDetached(ring: number, why: string, change: () => void): void {
    const was = this.rings[ring].attached;
    if (was) this.detach(ring, why);
    change();
    if (was) this.start(ring);
  }

  private detach(ring: number, why: string): void {
    const r = this.rings[ring];
    if (!r.attached) return;
    r.attached = false; // even if the ioctl fails: the fd is about to be released, or the ring is broken
    if (this.devices) this.device(ring).netSetBackend(ring, -1);
    this.log.debug(`${ringName(ring)}: detached (${why})`);
  }
}
