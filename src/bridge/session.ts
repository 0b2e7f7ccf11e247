/**
 * The vhost-user back-end of one port (handler.ts VhostUserBackend), on a Datapath (datapath.ts).
 * It serves one front-end connection at a time: what the front-end said (features, memory table,
 * per-ring state) lives for that connection and is forgotten at its end; the datapath and the
 * port's counters live as long as the port. A second port is a second session + datapath pair.
 *
 * It owns the vhost-user state and the guest memory (src/memtable: mapping, translation of ring
 * addresses), records in each handler what the front-end said and passes the datapath its share,
 * and decides which rings run in ONE place, afterRequest() (settle), after every request, as
 * DPDK's vhost_user_msg_handler does: a ring runs when started, enabled and configured, and the
 * session owns a datapath (SET_OWNER). Before SET_OWNER it keeps what arrives and gives it to the
 * datapath at SET_OWNER.
 *
 * Status is data (status.ts): status() is a typed snapshot, and listeners get every lifecycle
 * event with the status after it. Events caused by a request are delivered once the request is
 * settled, so their status is the one the front-end sees next.
 */
import { bit, bitsOf, describeBits, has, maskOf } from '../bits.js';
import { log as defaultLog, type Logger } from '../log.js';
import { hex, mac as formatMac } from '../format.js';
import { type MemoryLimit, MemTable, MemTableError } from '../memtable/index.js';
import { closeAll, closeQuiet, dup, eventfdWrite, memoryView, mmapShared, munmap, SysError } from '../sys/index.js';
import { LIMITS, PROTOCOL_F, PROTOCOL_FEATURE_NAMES, VRING_ADDR_F } from '../vhost-user/constants.js';
import { Refused } from '../vhost-user/errors.js';
import type { RequestDone, VhostUserBackend } from '../vhost-user/handler.js';
import type { LogArea, MemoryRegion, VringAddr } from '../vhost-user/messages.js';
import { FEATURE_NAMES, MAX_RING_SIZE, VHOST_F, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F } from '../virtio.js';
import type { Datapath } from './datapath.js';
import { type LocalRing, Ring } from './ring.js';
import type { DeviceEvent, DeviceListener, DeviceStatus } from './status.js';

/**
 * Protocol features the bridge implements (vhost-user.rst "Protocol features"), each for a reason:
 *  - REPLY_ACK: the front-end learns when a memory table or ring address was refused.
 *  - MQ: GET_QUEUE_NUM announces the queue pairs (one vhost-net fd and tap queue each).
 *  - CONFIGURE_MEM_SLOTS: ADD/REM_MEM_REG beyond the 8 regions of SET_MEM_TABLE, up to what the
 *    kernel's max_mem_regions allows.
 *  - LOG_SHMFD: the dirty log for migration is shared memory the kernel writes (VHOST_SET_LOG_BASE).
 *  - RARP: SEND_RARP after migration, written on the tap.
 *  - MTU: NET_SET_MTU sets the tap's MTU.
 *  - RESET_DEVICE: a guest reset stops every ring and starts the session over.
 * Not offered: BACKEND_REQ, IOTLB/ACCESS_PLATFORM (no vIOMMU path), CONFIG, INFLIGHT_SHMFD, STATUS,
 * HOST_NOTIFIER, INBAND_NOTIFICATIONS (the kernel signals the call eventfd itself), PAGEFAULT
 * (postcopy: the kernel's vhost cannot wait for a missing page) and DEVICE_STATE (the bridge keeps
 * no device state of its own to migrate): docs/migration.md.
 */
export const BRIDGE_PROTOCOL_FEATURES = maskOf(
  PROTOCOL_F.REPLY_ACK,
  PROTOCOL_F.MQ,
  PROTOCOL_F.CONFIGURE_MEM_SLOTS,
  PROTOCOL_F.LOG_SHMFD,
  PROTOCOL_F.RARP,
  PROTOCOL_F.MTU,
  PROTOCOL_F.RESET_DEVICE,
);

export interface SessionConfig {
  /** The port's name, in the status (one-port mode: the tap's name). */
  port: string;
  datapath: Datapath;
  /** Lines name the port: give a portLog (log.ts). */
  log?: Logger;
  onEvent?: DeviceListener;
  /** What the front-end may make this port map (the daemon's `maxMemory`, `maxRegions`); default: no own limit. */
  memoryLimit?: MemoryLimit;
}

/**
 * Where `idx` is in the available and in the used ring: each area starts with le16 flags, then le16
 * idx (virtio 1.2 2.7.6 "The Virtqueue Available Ring", 2.7.8 "The Virtqueue Used Ring").
 */
const RING_IDX_OFFSET = 2n;

const names = (mask: bigint, table: Readonly<Record<number, string>>): string[] =>
  bitsOf(mask).map((n) => table[n] ?? `bit ${n}`);

export class VhostUserSession implements VhostUserBackend {
  readonly port: string;
  private readonly datapath: Datapath;
  private readonly log: Logger;
  private readonly limit: MemoryLimit;
  private rings: Ring[];
  private memory = MemTable.empty();
  /** The dirty log (SET_LOG_BASE): the mapping, and the address the datapath gets (base + offset). */
  private logMap: { base: bigint; length: bigint; addr: bigint } | null = null;
  private negotiated: bigint | null = null;
  private protocol: bigint | null = null;

  // Status: what listeners were last told of each ring, and the session's moments.
  private shownRunning: boolean[];
  private readonly pending: DeviceEvent[] = [];
  private readonly listeners: DeviceListener[] = [];
  private frontEnd = false;
  private sessions = 0;
  private refusedPeers = 0;
  private times: DeviceStatus['times'] = {
    connected: null,
    featuresSet: null,
    allRingsRunning: null,
    lastRingStopped: null,
    disconnected: null,
  };

  constructor(cfg: SessionConfig) {
    this.port = cfg.port;
    this.datapath = cfg.datapath;
    this.log = cfg.log ?? defaultLog;
    this.limit = cfg.memoryLimit ?? { bytes: null, regions: null };
    if (cfg.onEvent) this.listeners.push(cfg.onEvent);
    this.rings = this.freshRings();
    this.shownRunning = this.rings.map(() => false);
  }

  // ---- Status ---------------------------------------------------------------------------------

  /** Add a listener of lifecycle events; returns its removal. */
  onEvent(listener: DeviceListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /** A typed snapshot of the port (status.ts). */
  status(): DeviceStatus {
    const offered = this.datapath.offered;
    return {
      port: this.port,
      frontEnd: this.frontEnd,
      sessions: this.sessions,
      refusedPeers: this.refusedPeers,
      features: {
        offered: hex(offered),
        offeredNames: names(offered, FEATURE_NAMES),
        negotiated: this.negotiated === null ? null : hex(this.negotiated),
        negotiatedNames: this.negotiated === null ? [] : names(this.negotiated, FEATURE_NAMES),
        protocol: this.protocol === null ? null : hex(this.protocol),
        protocolNames: this.protocol === null ? [] : names(this.protocol, PROTOCOL_FEATURE_NAMES),
      },
      rings: this.rings.map((r) => ({
        index: r.index,
        size: r.num ?? null,
        started: r.started,
        enabled: r.enabled,
        attached: this.datapath.running(r.index),
        kick: r.kickFd !== null,
        call: r.callFd !== null,
        err: r.errFd !== null,
        ...this.ringIndexes(r),
      })),
      datapath: this.datapath.describe(),
      memory: {
        regions: this.memory.regions.map((m) => ({ guestAddr: hex(m.gpa), size: hex(m.size), userAddr: hex(m.qva) })),
        dirtyLog: this.logMap !== null,
      },
      times: { ...this.times },
    };
  }

  /**
   * A ring's avail->idx and used->idx, read from guest memory for status only. This is not the
   * datapath: the kernel moves the packets, and the bridge never reads or writes guest memory to do
   * so (CONTRIBUTING.md, "Rules"); two u16 loads when someone asks for status. The front-end's
   * ring addresses go through the current memory table (src/memtable) at each read, so an area that
   * is not mapped reads as null instead of touching memory that is gone. The table cannot be unmapped
   * during the read: status runs on the event loop, and only a request or a disconnect retires a
   * table. Little endian: VERSION_1 rings are, and the hosts src/sys supports are too (legacy rings
   * are in the guest's order, the same on those hosts).
   */
  private ringIndexes(r: Ring): { availIdx: number | null; usedIdx: number | null } {
    const addr = r.addr;
    if (!addr) return { availIdx: null, usedIdx: null };
    const read = (qva: bigint): number | null => {
      try {
        return memoryView(this.memory.qvaToLocal(qva + RING_IDX_OFFSET, 2n), 2).readUInt16LE(0);
      } catch (e) {
        if (e instanceof MemTableError) return null;
        throw e;
      }
    };
    return { availIdx: read(addr.avail), usedIdx: read(addr.used) };
  }

  /** The port serves: its socket listens, or it is connecting to the front-end. */
  ready(): void {
    this.emit({ kind: 'ready' });
  }

  /** A front-end connection begins (the transport accepted or made it). */
  connected(): void {
    this.sessions++;
    this.frontEnd = true;
    const { disconnected } = this.times;
    this.times = {
      connected: Date.now(),
      featuresSet: null,
      allRingsRunning: null,
      lastRingStopped: null,
      disconnected,
    };
    this.emit({ kind: 'connected' });
  }

  /** The transport turned a peer away (its allow-list): counted and told, never a session. */
  peerRefused(peer: { pid: number; uid: number; gid: number } | null, rule: string): void {
    this.refusedPeers++;
    this.emit({ kind: 'peer-refused', peer, rule });
  }

  // ---- Negotiation ----------------------------------------------------------------------------

  ringCount(): number {
    return this.rings.length;
  }

  getFeatures(): bigint {
    return this.datapath.offered;
  }

  /**
   * SET_FEATURES (the dispatcher has refused bits that were not offered). Without PROTOCOL_FEATURES
   * every ring is enabled (vhost-user.rst "Ring states"). QEMU sends this once per queue pair, and
   * again to toggle LOG_ALL during migration: it is idempotent and never disables a ring. While a
   * ring runs, LOG_ALL is the only bit that may change (vhost-user.rst "Migration": "the back-end
   * ... must start logging" on LOG_ALL; DPDK refuses other changes then too): the kernel would
   * take a new word under a running ring, but the tap's header size and offloads cannot change
   * under traffic.
   */
  setFeatures(features: bigint): void {
    const changed = this.negotiated === null ? 0n : (features ^ this.negotiated) & ~bit(VHOST_F.LOG_ALL);
    const running = this.rings.filter((r) => this.datapath.running(r.index));
    if (changed !== 0n && running.length) {
      throw new Refused(
        `changes ${describeBits(changed, FEATURE_NAMES)} while ${running.join(', ')} ` +
          `run${running.length > 1 ? '' : 's'} (only LOG_ALL may change then)`,
      );
    }
    this.negotiated = features;
    if (this.datapath.opened) this.datapath.setFeatures(features);
    if (!has(features, VHOST_USER_F_PROTOCOL_FEATURES)) for (const r of this.rings) r.enabled = true;
    this.times.featuresSet ??= Date.now();
    this.pending.push({ kind: 'negotiated' });
    this.log.info(`SET_FEATURES: negotiated ${describeBits(features, FEATURE_NAMES)}`);
    if (has(features, VHOST_F.LOG_ALL) && !this.logMap) {
      this.log.info('SET_FEATURES: LOG_ALL before SET_LOG_BASE: rings to be logged wait for the log');
    }
  }

  getProtocolFeatures(): bigint {
    return BRIDGE_PROTOCOL_FEATURES;
  }

  /** SET_PROTOCOL_FEATURES: the dispatcher keeps the acked set and gates requests on it; here it is status. */
  setProtocolFeatures(features: bigint): void {
    this.protocol = features;
    this.log.debug(`SET_PROTOCOL_FEATURES: ${hex(features)}`);
  }

  /**
   * GET_QUEUE_NUM: the virtqueues (two per queue pair), as vhost-user.rst "Multiple queue support"
   * counts them. cloud-hypervisor compares its virtqueue count with it; QEMU and DPDK read pairs,
   * for which it is a loose bound, and a pair beyond the port is refused by ring index
   * (docs/frontends.md).
   */
  getQueueNum(): bigint {
    return BigInt(2 * this.datapath.queuePairs);
  }

  // ---- Session --------------------------------------------------------------------------------

  /**
   * SET_OWNER: the datapath takes its per-session resources and gets what arrived before, the log
   * before the features (a LOG_ALL needs the log base in the kernel first: docs/migration.md).
   */
  setOwner(): void {
    if (this.datapath.opened) throw new Refused('this session already has an owner');
    this.datapath.open();
    if (this.logMap) this.datapath.setLogBase(this.logMap.addr);
    if (this.negotiated !== null) this.datapath.setFeatures(this.negotiated);
    if (this.memory.regions.length) this.datapath.setMemTable(this.memory, []);
    for (const r of this.rings) this.pushRing(r);
  }

  /** RESET_OWNER (deprecated): everything stops and is forgotten, the owner too. */
  resetOwner(): void {
    this.teardown('RESET_OWNER');
    this.pending.push({ kind: 'reset', why: 'RESET_OWNER' });
  }

  /** RESET_DEVICE: "reset the device to the state it was in right after SET_OWNER". */
  resetDevice(): void {
    const owned = this.datapath.opened;
    this.teardown('RESET_DEVICE');
    this.pending.push({ kind: 'reset', why: 'RESET_DEVICE' });
    if (owned) this.setOwner();
  }

  disconnected(): void {
    this.teardown('disconnect');
    this.protocol = null;
    this.frontEnd = false;
    this.times.disconnected = Date.now();
    this.pending.push({ kind: 'disconnected' });
    this.flush();
  }

  /**
   * The datapath stops every ring and gives back its per-session resources, THEN guest memory and
   * the log are unmapped (the kernel may touch them until then), and the eventfds closed. The
   * port (the tap) stays: the host side does not flap between sessions.
   */
  private teardown(why: string): void {
    this.datapath.release(why);
    try {
      this.memory.retire();
    } catch (e) {
      this.log.warn(`${why}: unmap guest memory: ${(e as Error).message}`);
    }
    this.memory = MemTable.empty();
    try {
      this.unmapLog();
    } catch (e) {
      this.log.warn(`${why}: unmap dirty log: ${(e as Error).message}`);
    }
    for (const r of this.rings) for (const fd of [r.kickFd, r.callFd, r.errFd]) if (fd !== null) closeQuiet(fd);
    this.rings = this.freshRings();
    this.negotiated = null;
    this.report();
    this.log.debug(`${why}: every ring stopped, ${this.datapath.name} released, memory unmapped`);
  }

  // ---- Memory ---------------------------------------------------------------------------------

  /** SET_MEM_TABLE: an identical table changes nothing; otherwise map, check rings, swap. */
  setMemTable(regions: MemoryRegion[], fds: number[]): void {
    if (this.memory.regions.length && this.memory.sameAs(regions, fds)) {
      for (const fd of fds) closeQuiet(fd);
      this.log.debug('SET_MEM_TABLE: same table as before, nothing to do');
      return;
    }
    const maxRegions = this.limit.regions === null ? undefined : Math.min(this.limit.regions, LIMITS.MAX_MEM_REGIONS);
    const opts = { previous: this.memory, maxRegions, maxBytes: this.limit.bytes };
    this.swapMemory(fds, (own) => MemTable.map(regions, own, opts), 'SET_MEM_TABLE');
  }

  /** The slots the kernel takes, or fewer if the port is limited (GET_MAX_MEM_SLOTS tells the front-end so). */
  private memSlots(): number {
    return Math.min(this.datapath.maxMemSlots, this.limit.regions ?? Number.MAX_SAFE_INTEGER);
  }

  getMaxMemSlots(): bigint {
    return BigInt(this.memSlots());
  }

  /** ADD_MEM_REG. QEMU 7.2 sends it once per queue pair: a region already in the table is a repeat, not an overlap. */
  addMemReg(region: MemoryRegion, fd: number): void {
    if (this.memory.contains(region, fd)) {
      closeQuiet(fd);
      this.log.debug('ADD_MEM_REG: region already in the table (sent again for another queue pair)');
      return;
    }
    const opts = { maxRegions: this.memSlots(), maxBytes: this.limit.bytes };
    this.swapMemory([fd], ([own]) => this.memory.withRegion(region, own, opts), 'ADD_MEM_REG');
  }

  /**
   * REM_MEM_REG. Like ADD_MEM_REG it comes once per queue pair from QEMU 7.2: removing a region that is gone
   * is a repeat.
   */
  remMemReg(region: MemoryRegion): void {
    if (!this.memory.has(region)) {
      this.log.debug('REM_MEM_REG: no such region (already removed for another queue pair)');
      return;
    }
    this.swapMemory([], () => this.memory.withoutRegion(region), 'REM_MEM_REG');
  }

  /**
   * Build the next table, give it to the datapath and retire the old one. Every configured ring
   * must still be inside guest memory (else the new table is dropped and the request refused, the
   * datapath untouched); rings whose local address moves are re-addressed with the new table.
   *
   * fds: MemTable consumes the fds it maps on success, but the ring check comes after the mapping
   * and may still refuse, and on a refusal the dispatcher closes the message's fds. So the table is
   * built from duplicates; the originals are closed here only once nothing can refuse any more.
   */
  private swapMemory(fds: number[], build: (own: number[]) => MemTable, request: string): void {
    const own = fds.map((fd) => dup(fd));
    let next: MemTable;
    try {
      next = build(own);
    } catch (e) {
      closeAll(own);
      if (e instanceof MemTableError && e.reason === 'too-large')
        throw new Refused(`${e.message} (this port's maxMemory)`);
      if (e instanceof MemTableError && e.reason === 'too-many' && this.limit.regions !== null)
        throw new Refused(`${e.message} (this port's maxRegions is ${this.limit.regions})`);
      if (e instanceof MemTableError) throw new Refused(e.message);
      throw e;
    }
    const moved: { ring: Ring; local: LocalRing }[] = [];
    try {
      for (const r of this.rings) {
        if (!r.addr || r.num === undefined) continue;
        const local = next.translateRing(r.addr, r.num, this.eventIdx());
        if (!r.local || local.desc !== r.local.desc || local.avail !== r.local.avail || local.used !== r.local.used) {
          moved.push({ ring: r, local });
        }
      }
    } catch (e) {
      next.retire();
      if (e instanceof MemTableError) throw new Refused(`${e.message} (after ${request})`);
      throw e;
    }
    closeAll(fds);
    if (this.datapath.opened) {
      this.datapath.setMemTable(
        next,
        moved.map((m) => ({ ring: m.ring.index, addr: m.ring.datapathAddr(m.local)! })),
      );
    }
    const old = this.memory;
    this.memory = next;
    old.retire(next);
    for (const m of moved) m.ring.local = m.local;
    this.pending.push({ kind: 'memory' });
    this.log.info(`${request}: ${next}`);
  }

  /**
   * SET_LOG_BASE: map the shared dirty-log area and give its address to the datapath. A second one
   * (QEMU resizes the log when guest memory changes) replaces the first without a gap: the new
   * mapping reaches the kernel before the old one is unmapped. The fd is closed once the log is in
   * place (the mapping keeps the memory); on a refusal it stays with the dispatcher, which closes it.
   */
  setLogBase(area: LogArea, fd: number): void {
    const length = area.size + area.offset;
    if (area.size === 0n) throw new Refused('log area of size 0');
    let base: bigint;
    try {
      base = mmapShared(fd, length, 0n);
    } catch (e) {
      if (e instanceof SysError) throw new Refused(`log fd cannot be mapped (${e.message})`);
      throw e;
    }
    const addr = base + area.offset;
    try {
      if (this.datapath.opened) this.datapath.setLogBase(addr);
    } catch (e) {
      munmap(base, length);
      throw e;
    }
    closeQuiet(fd);
    const old = this.logMap;
    this.logMap = { base, length, addr };
    // Nothing may throw from here on: the fd is closed, and a refusal would have the dispatcher close it again.
    if (old) {
      try {
        munmap(old.base, old.length);
      } catch (e) {
        this.log.warn(`SET_LOG_BASE: unmap the previous log: ${(e as Error).message}`);
      }
    }
    this.pending.push({ kind: 'memory' });
    this.log.info(`SET_LOG_BASE: dirty log of ${hex(area.size)} bytes mapped`);
  }

  private unmapLog(): void {
    if (this.logMap) munmap(this.logMap.base, this.logMap.length);
    this.logMap = null;
  }

  // ---- Rings ----------------------------------------------------------------------------------

  setVringNum(index: number, num: number): void {
    const r = this.rings[index];
    if (num < 1 || num > MAX_RING_SIZE || (num & (num - 1)) !== 0) {
      throw new Refused(`${r}: size ${num} is not a power of two up to ${MAX_RING_SIZE}`);
    }
    if (this.datapath.opened) this.datapath.setRingNum(index, num);
    r.num = num;
  }

  setVringBase(index: number, base: number): void {
    if (this.datapath.opened) this.datapath.setRingBase(index, base);
    this.rings[index].base = base;
  }

  /** SET_VRING_ADDR: translate through the memory table; refuse a ring not wholly inside guest memory. */
  setVringAddr(addr: VringAddr): void {
    const r = this.rings[addr.index];
    if (r.num === undefined)
      throw new Refused(`${r}: SET_VRING_ADDR before SET_VRING_NUM (the ring's extent is unknown)`);
    let local: LocalRing;
    try {
      local = this.memory.translateRing(addr, r.num, this.eventIdx());
    } catch (e) {
      if (e instanceof MemTableError) throw new Refused(e.message);
      throw e;
    }
    r.addr = addr;
    r.local = local;
    if (this.datapath.opened) this.datapath.setRingAddr(r.index, r.datapathAddr()!);
  }

  /** GET_VRING_BASE: the datapath stops the ring and reads its index; the ring stays stopped until a new kick. */
  getVringBase(index: number): number {
    const r = this.rings[index];
    if (this.datapath.opened) r.base = this.datapath.getRingBase(index);
    r.started = false;
    return r.base;
  }

  /**
   * SET_VRING_KICK starts the ring (vhost-user.rst "Ring states"); the datapath gets the front-end's eventfd
   * itself.
   */
  setVringKick(index: number, fd: number | null): void {
    const r = this.rings[index];
    if (fd === null) throw new Refused(`${r}: a kick without fd (polling) cannot drive the kernel datapath`);
    if (this.datapath.opened) this.datapath.setRingKick(index, fd);
    if (r.kickFd !== null) closeQuiet(r.kickFd);
    r.kickFd = fd;
    r.started = true;
  }

  /**
   * SET_VRING_CALL: the datapath signals this eventfd itself. When it replaces the call fd of a
   * started ring, the bridge also writes 1 to it once, as libvhost-user does "in case of I/O hang
   * after reconnecting": QEMU sends the guest's real irqfd only after the ring is attached, so
   * buffers the kernel used meanwhile (packets queued on the tap while no back end was there, seen
   * in the lab after a bridge restart) were signalled on the previous, masked fd. With EVENT_IDX the
   * kernel then signals again only once the used index passes the guest's stale used_event, which
   * never moves because the guest never heard of them: the ring hangs. One spurious interrupt makes
   * the guest look at the used ring and move used_event; it is configuration, not datapath.
   */
  setVringCall(index: number, fd: number | null): void {
    const r = this.rings[index];
    if (this.datapath.opened) this.datapath.setRingCall(index, fd);
    if (r.callFd !== null) closeQuiet(r.callFd);
    r.callFd = fd;
    if (fd !== null && r.started) eventfdWrite(fd, 1n);
  }

  setVringErr(index: number, fd: number | null): void {
    const r = this.rings[index];
    if (this.datapath.opened) this.datapath.setRingErr(index, fd);
    if (r.errFd !== null) closeQuiet(r.errFd);
    r.errFd = fd;
  }

  /** SET_VRING_ENABLE: remembered even before the ring exists (QEMU sends it at realize). */
  setVringEnable(index: number, enable: boolean): void {
    this.rings[index].enabled = enable;
    this.datapath.setRingEnabled(index, enable);
  }

  // ---- Net ------------------------------------------------------------------------------------

  /** SEND_RARP: announce `mac` after migration (as QEMU's self-announce). */
  sendRarp(mac: Buffer): void {
    if (mac.length !== 6) throw new Refused(`SEND_RARP: MAC of ${mac.length} bytes`);
    this.datapath.announce(mac);
    this.log.info(`SEND_RARP: announced ${formatMac(mac)} on ${this.datapath.name}`);
  }

  netSetMtu(mtu: number): void {
    this.datapath.setMtu(mtu);
    this.log.info(`NET_SET_MTU: ${this.datapath.name} mtu ${mtu}`);
  }

  // ---- After each request ---------------------------------------------------------------------

  /** The one place ring readiness is decided (file comment); then the request's events go out. */
  afterRequest(done: RequestDone): void {
    if (done.result !== 'ok') this.pending.push({ kind: 'refused', request: done.request, reason: done.reason ?? '' });
    try {
      this.settle();
    } finally {
      this.report();
      this.flush();
    }
  }

  /**
   * Start the rings that should run and stop the ones that should not. A ring that is to be logged
   * (LOG_ALL negotiated, or VHOST_VRING_F_LOG on it) waits for the log: what the kernel wrote
   * before it had the log would be missing from it. QEMU starts a device during migration (after a
   * reconnect) with SET_LOG_BASE last (hw/virtio/vhost.c vhost_dev_start).
   */
  private settle(): void {
    if (!this.datapath.opened) return;
    for (const r of this.rings) {
      const should = r.ready && (this.logMap !== null || !this.logged(r));
      const running = this.datapath.running(r.index);
      if (should && !running) this.datapath.start(r.index);
      else if (!should && running) this.datapath.stop(r.index, 'not ready');
    }
  }

  /**
   * The front-end wants the kernel's writes to this ring logged, and can send the log (LOG_SHMFD
   * negotiated: without it no SET_LOG_BASE can come, and waiting for one would stop the ring for good).
   */
  private logged(r: Ring): boolean {
    if (this.protocol === null || !has(this.protocol & BRIDGE_PROTOCOL_FEATURES, PROTOCOL_F.LOG_SHMFD)) return false;
    const all = this.negotiated !== null && has(this.negotiated, VHOST_F.LOG_ALL);
    return all || (r.addr !== undefined && (r.addr.flags & (1 << VRING_ADDR_F.LOG)) !== 0);
  }

  /** Ring events for what changed since listeners were last told, and the session's moments. */
  private report(): void {
    let started = false;
    for (const r of this.rings) {
      const now = this.datapath.running(r.index);
      if (now === this.shownRunning[r.index]) continue;
      this.shownRunning[r.index] = now;
      this.pending.push(now ? { kind: 'ring-running', ring: r.index } : { kind: 'ring-stopped', ring: r.index });
      if (now) started = true;
      else this.times.lastRingStopped = Date.now();
    }
    const enabled = this.rings.filter((r) => r.enabled);
    const all = enabled.length > 0 && enabled.every((r) => this.datapath.running(r.index));
    if (started && all) this.times.allRingsRunning = Date.now();
  }

  private emit(event: DeviceEvent): void {
    this.pending.push(event);
    this.flush();
  }

  /** Deliver pending events, each with the status now. A listener that throws is logged, never fatal. */
  private flush(): void {
    if (!this.pending.length) return;
    const events = this.pending.splice(0);
    if (!this.listeners.length) return;
    for (const e of events) {
      const status = this.status();
      for (const l of this.listeners) {
        try {
          l(e, status);
        } catch (err) {
          this.log.warn(`event listener failed on ${e.kind}: ${(err as Error).message}`);
        }
      }
    }
  }

  // ---- Internals ------------------------------------------------------------------------------

  private freshRings(): Ring[] {
    return Array.from({ length: 2 * this.datapath.queuePairs }, (_, i) => new Ring(i));
  }

  private eventIdx(): boolean {
    // Before SET_FEATURES the ring's extent is checked as if EVENT_IDX were on (2 bytes more per area).
    return this.negotiated === null || has(this.negotiated, VIRTIO_F.RING_EVENT_IDX);
  }

  /** After SET_OWNER: everything the ring received before there was a datapath to give it to. */
  private pushRing(r: Ring): void {
    const d = this.datapath;
    if (r.callFd !== null) d.setRingCall(r.index, r.callFd);
    if (r.errFd !== null) d.setRingErr(r.index, r.errFd);
    if (r.num !== undefined) d.setRingNum(r.index, r.num);
    d.setRingBase(r.index, r.base);
    const addr = r.datapathAddr();
    if (addr) d.setRingAddr(r.index, addr);
    if (r.kickFd !== null) d.setRingKick(r.index, r.kickFd);
  }
}
