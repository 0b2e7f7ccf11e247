/**
 * The first Datapath (datapath.ts): the kernel's vhost-net, one fd per queue pair, serving its two
 * rings on the tap queue of that pair. No packet and no interrupt crosses this process: the kernel
 * gets the memory table (guest-physical -> this process's mapping), the translated ring
 * addresses and the front-end's kick, call and err eventfds as they are.
 *
 * It is told what the kernel should hold (a DatapathTarget, after every request) and gives the
 * kernel what differs from what it gave last, so the one fact it keeps is its own: what each fd
 * was given. The kernel's ordering rules live here (docs/kernel-ordering.md; verified in the lab,
 * test/qemu/kernel-errors.test.ts), and apply() keeps them in this order:
 *  - open: one vhost-net fd per queue pair, VHOST_SET_OWNER by this process (whose address space
 *    ring and region addresses refer to).
 *  - tap queue steering (TUNSETQUEUE) for the pairs the front-end enabled.
 *  - VHOST_SET_LOG_BASE before a feature word with LOG_ALL: a LOG_ALL that arrives first is held
 *    back and given with the log base (docs/migration.md); then the feature word, then the tap's
 *    share of it.
 *  - A new memory table reaches every fd before the old mappings go (the session unmaps after
 *    apply returns); a ring whose address moves with it is detached around the change.
 *  - Per ring: call and err (allowed while attached); then NUM, BASE, ADDR and kick, around which
 *    an attached ring is detached (the kernel refuses NUM/BASE with EBUSY and re-checks ADDR).
 *  - Last, attach = VHOST_NET_SET_BACKEND(tap queue fd) for the rings the session says run (the
 *    kernel reads the memory table, NUM, BASE, ADDR and kick at that moment and fails with EFAULT
 *    without them), and detach for the others.
 *  - GET_VRING_BASE detaches first, then reads the index.
 *  - At release the fds are given back before the session unmaps memory.
 */
import { bit } from '../bits.js';
import { hex } from '../format.js';
import { log as defaultLog, type Logger } from '../log.js';
import { type MemTable, maxMemSlots } from '../memtable/index.js';
import { E, SysError } from '../sys/index.js';
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
import type { Datapath, DatapathRingAddr, DatapathTarget, RingTarget } from './datapath.js';
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
      if (!(e instanceof SysError && e.errno === E.EPERM)) throw e;
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
   * the kernel's dirty log. Set only by lab/withheld-log-bridge.ts (VB_TEST_WITHHOLD_DIRTY_LOG), never by src.
   */
  withholdDirtyLog?: boolean;
}

/** A queue pair's vhost worker in this session, and where the datapath placed it (`workerCgroup`, else null). */
export interface PairWorker {
  pair: number;
  worker: VhostWorker;
  placement: WorkerPlacement | null;
}

/**
 * What this datapath gave the kernel for one ring: its own fact, not a copy of the session's
 * (the kernel's index moves while the ring runs; `base` is what was last given or read back).
 */
interface GivenRing {
  num: number | undefined;
  base: number | undefined;
  addr: DatapathRingAddr | null;
  kick: number | null;
  call: number | null;
  err: number | null;
  attached: boolean;
}

const sameAddr = (a: DatapathRingAddr | null, b: DatapathRingAddr | null): boolean =>
  a === b ||
  (a !== null &&
    b !== null &&
    a.flags === b.flags &&
    a.desc === b.desc &&
    a.avail === b.avail &&
    a.used === b.used &&
    a.log === b.log);

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
  // What the kernel and the socket were given (each field set once the ioctl returned).
  private given: GivenRing[];
  /** The feature word every fd has, and the tap's share of the negotiated word. */
  private kernelWord: bigint | null = null;
  private tapShare: { hdr: number; offloads: number } | null = null;
  /** The table every fd has. */
  private memory: MemTable | null = null;
  /** The log address of the target last applied, and whether the kernel has it (not under withholdDirtyLog). */
  private logAddr: bigint | null = null;
  private logInKernel = false;
  /** Per queue pair: attached to the tap (TUNSETQUEUE); undefined until first steered. */
  private queueOn: (boolean | undefined)[] = [];

  constructor(private readonly cfg: VhostNetDatapathConfig) {
    this.queuePairs = cfg.queuePairs;
    this.offered = cfg.offered;
    this.socket = cfg.socket;
    this.log = cfg.log ?? defaultLog;
    this.given = this.freshRings();
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

  /** Between open() and release(): the fds of a session that owns them. */
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
    for (const q of this.given.keys()) step(`detach ${ringName(q)}`, () => this.detach(q, why));
    if (this.devices) {
      for (const [p, v] of this.devices.entries()) {
        step(`release vhost-net fd of pair ${p}`, () => this.cfg.vhostNet.release(p, v));
      }
    }
    this.devices = null;
    this.ownWorkers = [];
    this.placements = [];
    this.given = this.freshRings();
    this.kernelWord = this.tapShare = this.memory = this.logAddr = null;
    this.logInKernel = false;
    for (let p = 1; p < this.queuePairs; p++)
      step(`detach tap queue ${p}`, () => {
        this.queueOn[p] = false;
        this.socket.setQueueEnabled(p, false);
      });
  }

  apply(target: DatapathTarget): void {
    this.steer(target.rings);
    if (!this.devices) return;
    this.applyLog(target.log);
    this.applyFeatures(target.features);
    this.applyMemory(target);
    for (const [q, r] of target.rings.entries()) this.applyRing(q, r);
    for (const [q, r] of target.rings.entries()) {
      if (r.attached) this.attach(q);
      else this.detach(q, 'not ready');
    }
  }

  running(ring: number): boolean {
    return this.given[ring].attached;
  }

  getRingBase(ring: number): number {
    this.detach(ring, 'GET_VRING_BASE');
    const base = this.device(ring).getVringBase(ring);
    this.given[ring].base = base;
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
        kernel = [...this.given.keys()].map((q) => this.device(q).getVringBusyloopTimeout(q));
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

  // ---- Applying a target, step by step ---------------------------------------------------------

  /**
   * A multi-queue tap spreads host traffic over its ATTACHED queues only: a queue pair neither of
   * whose rings is enabled is detached from the tap (TUNSETQUEUE), as QEMU's tap_enable/tap_disable
   * do. Pair 0 always stays. Port-level: steered with or without an owner.
   */
  private steer(rings: readonly RingTarget[]): void {
    for (let p = 1; p < this.queuePairs; p++) {
      const on = rings[2 * p].enabled || rings[2 * p + 1].enabled;
      if (this.queueOn[p] === on) continue;
      this.socket.setQueueEnabled(p, on);
      this.queueOn[p] = on;
    }
  }

  /**
   * VHOST_SET_LOG_BASE on every fd (the LOG_ALL held back for want of it follows in applyFeatures).
   * A new address replaces the old: the kernel switches under its ring locks, so the session may
   * unmap the old log once apply returns.
   */
  private applyLog(addr: bigint | null): void {
    if (addr === null || addr === this.logAddr) return;
    if (this.cfg.withholdDirtyLog) {
      this.log.warn(`SET_LOG_BASE: NOT given to the kernel (test-only VB_TEST_WITHHOLD_DIRTY_LOG): no dirty log`);
      this.logAddr = addr;
      return;
    }
    for (const v of this.ownedDevices()) v.setLogBase(addr);
    this.logAddr = addr;
    this.logInKernel = true;
  }

  /**
   * The kernel gets its share of the negotiated word (features.toKernel), without LOG_ALL until
   * the kernel has a log base: vhost_net_set_features checks the log only as far as access_ok()
   * of the log range, so a LOG_ALL before VHOST_SET_LOG_BASE is accepted and the kernel would mark
   * pages at address 0 (and fail silently). QEMU sends SET_FEATURES with LOG_ALL before
   * SET_LOG_BASE when it starts a device during migration (hw/virtio/vhost.c vhost_dev_start, e.g.
   * after a reconnect).
   *
   * The tap gets the virtio-net header size (12 with VERSION_1 or MRG_RXBUF) and the offloaded
   * packets the guest accepts (TUNSETOFFLOAD from GUEST_CSUM/TSO/ECN/UFO): offloads are what make
   * the throughput equal to QEMU's tap,vhost=on. Both only when their share changes: QEMU sends
   * SET_FEATURES once per queue pair and again to toggle LOG_ALL while the rings run, and neither
   * must touch a tap that is carrying traffic.
   */
  private applyFeatures(negotiated: bigint | null): void {
    if (negotiated === null) return;
    let word = toKernel(negotiated, this.cfg.vhostNetFeatures, this.socket.vnetHdr !== null);
    if (!this.logInKernel) word &= ~bit(VHOST_F.LOG_ALL);
    if (word !== this.kernelWord) {
      this.kernelWord = null; // until every fd has it
      for (const v of this.ownedDevices()) v.setFeatures(word);
      this.kernelWord = word;
    }
    const hdr = vnetHdrSize(negotiated);
    const hdrSocket = this.socket.vnetHdr;
    const share = { hdr, offloads: hdrSocket ? tapOffloadFlags(negotiated) : 0 };
    if (this.tapShare?.hdr === share.hdr && this.tapShare.offloads === share.offloads) return;
    if (!hdrSocket) {
      this.log.debug(`${this.socket.name}: packet socket: vhost-net adds and strips the ${hdr}-byte virtio-net header`);
      this.tapShare = share;
      return;
    }
    hdrSocket.setVnetHdrSize(share.hdr);
    const applied = hdrSocket.setOffload(share.offloads);
    this.tapShare = share;
    this.log.debug(`${this.socket.name}: vnet header ${share.hdr} bytes, offloads ${hex(applied)}`);
  }

  /**
   * A new table on every fd. An attached ring whose address moves with it is detached first (the
   * kernel would serve it from the old address under the new table); applyRing then gives the new
   * address and the last step re-attaches it.
   */
  private applyMemory(target: DatapathTarget): void {
    const table = target.memory;
    if (table === null || table === this.memory) return;
    for (const [q, r] of target.rings.entries()) {
      const addr = r.addr && this.kernelAddr(r.addr);
      if (addr && !sameAddr(addr, this.given[q].addr)) this.detach(q, 'new memory table');
    }
    const encoded = table.toVhostMemory();
    this.memory = null; // until every fd has it
    for (const v of this.ownedDevices()) v.setMemTable(encoded);
    this.memory = table;
  }

  /**
   * One ring's eventfds, then its configuration, detached around a change the kernel refuses or
   * re-checks while attached. A base equal to the one last given or read back is not given again.
   */
  private applyRing(q: number, r: RingTarget): void {
    const g = this.given[q];
    const dev = this.device(q);
    if (r.call !== g.call) {
      dev.setVringCall(q, r.call ?? -1);
      g.call = r.call;
    }
    if (r.err !== g.err) {
      dev.setVringErr(q, r.err ?? -1);
      g.err = r.err;
    }
    const addr = r.addr && this.kernelAddr(r.addr);
    const num = r.num !== undefined && r.num !== g.num;
    const base = r.base !== g.base;
    const moved = addr !== null && !sameAddr(addr, g.addr);
    const kick = r.kick !== null && r.kick !== g.kick;
    if (!num && !base && !moved && !kick) return;
    const why = [num && 'SET_VRING_NUM', base && 'SET_VRING_BASE', moved && 'SET_VRING_ADDR', kick && 'SET_VRING_KICK'];
    this.detach(q, why.filter(Boolean).join(', '));
    if (num) {
      dev.setVringNum(q, r.num!);
      g.num = r.num;
    }
    if (base) {
      dev.setVringBase(q, r.base);
      g.base = r.base;
    }
    if (moved) {
      dev.setVringAddr(q, addr);
      g.addr = addr;
    }
    if (kick) {
      dev.setVringKick(q, r.kick!);
      g.kick = r.kick;
    }
  }

  private attach(ring: number): void {
    const g = this.given[ring];
    if (g.attached) return;
    const { pair } = ringToPair(ring);
    this.device(ring).netSetBackend(ring, this.socket.fd(pair));
    g.attached = true;
    this.log.info(`${ringName(ring)}: attached to ${this.socket.name} (size ${g.num}, base ${g.base})`);
  }

  private detach(ring: number, why: string): void {
    const g = this.given[ring];
    if (!g.attached) return;
    g.attached = false; // even if the ioctl fails: the fd is about to be released, or the ring is broken
    if (this.devices) this.device(ring).netSetBackend(ring, -1);
    this.log.debug(`${ringName(ring)}: detached (${why})`);
  }

  // ---- Internals ------------------------------------------------------------------------------

  private freshRings(): GivenRing[] {
    const fresh = (): GivenRing => ({
      num: undefined,
      base: undefined,
      addr: null,
      kick: null,
      call: null,
      err: null,
      attached: false,
    });
    return Array.from({ length: 2 * this.queuePairs }, fresh);
  }

  /** A ring's addresses as the kernel gets them: without VHOST_VRING_F_LOG under the test-only switch. */
  private kernelAddr(addr: DatapathRingAddr): DatapathRingAddr {
    return this.cfg.withholdDirtyLog ? { ...addr, flags: addr.flags & ~(1 << VRING_ADDR_F.LOG) } : addr;
  }

  /** The fds of the session that owns them (between open() and release()). */
  private ownedDevices(): VhostNetDevice[] {
    if (!this.devices) throw new Error('vhost-net datapath: not open (no SET_OWNER)');
    return this.devices;
  }

  private device(ring: number): VhostNetDevice {
    return this.ownedDevices()[ringToPair(ring).pair];
  }
}
