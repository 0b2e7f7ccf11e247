/**
 * The bridge device: the vhost-user back end (handler.ts) implemented on the kernel's vhost-net.
 * One device per front-end connection. It never touches a packet: it gives the kernel the memory
 * table (guest-physical -> the bridge's own mapping), the translated ring addresses and the
 * front-end's kick, call and err eventfds as they are, then attaches each ring to its tap queue.
 *
 * Ordering rules it follows (docs/kernel-ordering.md, verified in the lab):
 *  - SET_OWNER opens one vhost-net fd per queue pair and makes this process its owner.
 *  - A ring is attached (VHOST_NET_SET_BACKEND tap) only when started, enabled and configured
 *    (ring.ts); the kernel returns EFAULT otherwise.
 *  - While attached the kernel refuses SET_VRING_NUM/BASE/ADDR with EBUSY: the ring is detached
 *    around such a change and re-attached after.
 *  - GET_VRING_BASE detaches first, then reads the index; the ring stays stopped until a new kick fd
 *    arrives (a SET_VRING_ENABLE 1 after the stop must not re-attach it).
 *  - A new memory table reaches every vhost-net fd before the old mappings are unmapped.
 *  - At the end of a session the vhost-net fds are closed first, then guest memory is unmapped.
 */
import { has, maskOf, describeBits } from '../bits.js';
import { mac as formatMac } from '../format.js';
import { closeAll, closeQuiet, dup, eventfdWrite, mmapShared, munmap, SysError } from '../sys/index.js';
import { FEATURE_NAMES, MAX_RING_SIZE, VIRTIO_F, VHOST_USER_F_PROTOCOL_FEATURES } from '../virtio.js';
import { MemTable, MemTableError, maxMemSlots } from '../memtable/index.js';
import { Refused } from '../vhost-user/errors.js';
import { PROTOCOL_F } from '../vhost-user/constants.js';
import type { VhostUserBackend } from '../vhost-user/handler.js';
import type { LogArea, MemoryRegion, VringAddr } from '../vhost-user/messages.js';
import { log as defaultLog, type Logger } from '../log.js';
import type { TapPort, VhostNetPort, VhostNetSource } from './ports.js';
import { Ring } from './ring.js';

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
 * HOST_NOTIFIER, INBAND_NOTIFICATIONS (the kernel signals the call eventfd itself), postcopy.
 */
export const BRIDGE_PROTOCOL_FEATURES = maskOf(
  PROTOCOL_F.REPLY_ACK, PROTOCOL_F.MQ, PROTOCOL_F.CONFIGURE_MEM_SLOTS, PROTOCOL_F.LOG_SHMFD,
  PROTOCOL_F.RARP, PROTOCOL_F.MTU, PROTOCOL_F.RESET_DEVICE);

/** How a device is set up by the daemon: shared by every session. */
export interface DeviceConfig {
  queuePairs: number;
  /** The feature word offered to the front-end (vhost-kernel/features.ts, with PROTOCOL_FEATURES). */
  offeredFeatures: bigint;
  /** What VHOST_SET_FEATURES gets for a negotiated word (vhost-kernel/features.ts: unknown bits removed). */
  kernelFeatures: (negotiated: bigint) => bigint;
  tap: TapPort;
  vhostNet: VhostNetSource;
  /** GET_MAX_MEM_SLOTS; default: the kernel's max_mem_regions. */
  maxMemSlots?: number;
  log?: Logger;
}

export class BridgeDevice implements VhostUserBackend {
  private readonly rings: Ring[];
  private readonly log: Logger;
  /** One per queue pair, from SET_OWNER to the end of the session. */
  private vhost: VhostNetPort[] | null = null;
  private memory = MemTable.empty();
  private logMap: { base: bigint; length: bigint } | null = null;
  private negotiated: bigint | null = null;

  constructor(private readonly cfg: DeviceConfig) {
    this.log = cfg.log ?? defaultLog;
    this.rings = Array.from({ length: 2 * cfg.queuePairs }, (_, i) => new Ring(i));
  }

  // ---- Negotiation ----------------------------------------------------------------------------

  ringCount(): number {
    return this.rings.length;
  }

  getFeatures(): bigint {
    return this.cfg.offeredFeatures;
  }

  /**
   * SET_FEATURES (the dispatcher has refused bits that were not offered): give the kernel its share (kernelFeatures),
   * the tap the offloads and vnet header size. Without PROTOCOL_FEATURES every ring is enabled
   * (vhost-user.rst "Ring states"). QEMU sends this once per queue pair, and again to toggle
   * LOG_ALL during migration: it is idempotent and never disables a ring.
   */
  setFeatures(features: bigint): void {
    this.negotiated = features;
    if (this.vhost) for (const v of this.vhost) v.setFeatures(this.cfg.kernelFeatures(features));
    this.cfg.tap.configure(features);
    if (!has(features, VHOST_USER_F_PROTOCOL_FEATURES)) {
      for (const r of this.rings) r.enabled = true;
      this.syncAll();
    }
    this.log.info(`SET_FEATURES: negotiated ${describeBits(features, FEATURE_NAMES)}`);
  }

  getProtocolFeatures(): bigint {
    return BRIDGE_PROTOCOL_FEATURES;
  }

  /** SET_PROTOCOL_FEATURES: the dispatcher keeps the acked set and gates requests on it; nothing here depends on it. */
  setProtocolFeatures(features: bigint): void {
    this.log.debug(`SET_PROTOCOL_FEATURES: 0x${features.toString(16)}`);
  }

  getQueueNum(): bigint {
    return BigInt(this.cfg.queuePairs);
  }

  // ---- Session --------------------------------------------------------------------------------

  /** SET_OWNER: one vhost-net fd per queue pair, owned by this process; state received earlier is pushed. */
  setOwner(): void {
    if (this.vhost) throw new Refused('this session already has an owner');
    const opened: VhostNetPort[] = [];
    try {
      for (let p = 0; p < this.cfg.queuePairs; p++) {
        const v = this.cfg.vhostNet.open(p);
        opened.push(v);
        v.setOwner();
      }
    } catch (e) {
      opened.forEach((v, p) => this.cfg.vhostNet.release(p, v));
      throw e;
    }
    this.vhost = opened;
    if (this.negotiated !== null) for (const v of opened) v.setFeatures(this.cfg.kernelFeatures(this.negotiated));
    if (this.memory.regions.length) for (const v of opened) v.setMemTable(this.memory.toVhostMemory());
    for (const r of this.rings) this.pushRing(r);
    this.syncAll();
  }

  /** RESET_OWNER (deprecated): everything stops and is forgotten, the owner too. */
  resetOwner(): void {
    this.teardown('RESET_OWNER');
    this.negotiated = null;
  }

  /** RESET_DEVICE: "reset the device to the state it was in right after SET_OWNER". */
  resetDevice(): void {
    const owned = this.vhost !== null;
    this.teardown('RESET_DEVICE');
    this.negotiated = null;
    if (owned) this.setOwner();
  }

  disconnected(): void {
    this.teardown('disconnect');
  }

  /**
   * Stop every ring, give back the vhost-net fds (closed, or reset when adopted), THEN unmap guest
   * memory and the log (the kernel may touch them until its fd is gone), and close the eventfds.
   * The tap stays: the host side does not flap between sessions.
   */
  private teardown(why: string): void {
    // Each step runs even if an earlier one failed: a teardown that stops halfway leaks.
    const step = (what: string, f: () => void): void => {
      try {
        f();
      } catch (e) {
        this.log.warn(`${why}: ${what}: ${(e as Error).message}`);
      }
    };
    for (const r of this.rings) step(`detach ${r}`, () => this.detach(r, why));
    if (this.vhost) this.vhost.forEach((v, p) => step(`release vhost-net fd of pair ${p}`, () => this.cfg.vhostNet.release(p, v)));
    this.vhost = null;
    step('unmap guest memory', () => this.memory.retire());
    this.memory = MemTable.empty();
    step('unmap dirty log', () => this.unmapLog());
    for (const r of this.rings) {
      for (const fd of [r.kickFd, r.callFd, r.errFd]) if (fd !== null) closeQuiet(fd);
      this.rings[r.index] = new Ring(r.index);
    }
    for (let p = 1; p < this.cfg.queuePairs; p++) step(`detach tap queue ${p}`, () => this.cfg.tap.setQueueEnabled(p, false));
    this.log.debug(`${why}: every ring stopped, vhost-net released, memory unmapped`);
  }

  // ---- Memory ---------------------------------------------------------------------------------

  /** SET_MEM_TABLE: an identical table changes nothing; otherwise map, check rings, swap. */
  setMemTable(regions: MemoryRegion[], fds: number[]): void {
    if (this.memory.regions.length && this.memory.sameAs(regions, fds)) {
      for (const fd of fds) closeQuiet(fd);
      this.log.debug('SET_MEM_TABLE: same table as before, nothing to do');
      return;
    }
    this.swapMemory(fds, (own) => MemTable.map(regions, own, { previous: this.memory }), 'SET_MEM_TABLE');
  }

  getMaxMemSlots(): bigint {
    return BigInt(this.cfg.maxMemSlots ?? maxMemSlots());
  }

  /** ADD_MEM_REG. QEMU 7.2 sends it once per queue pair: a region already in the table is a repeat, not an overlap. */
  addMemReg(region: MemoryRegion, fd: number): void {
    if (this.memory.contains(region, fd)) {
      closeQuiet(fd);
      this.log.debug('ADD_MEM_REG: region already in the table (sent again for another queue pair)');
      return;
    }
    this.swapMemory([fd], ([own]) => this.memory.withRegion(region, own, { maxRegions: Number(this.getMaxMemSlots()) }), 'ADD_MEM_REG');
  }

  /** REM_MEM_REG. Like ADD_MEM_REG it comes once per queue pair from QEMU 7.2: removing a region that is gone is a repeat. */
  remMemReg(region: MemoryRegion): void {
    if (!this.memory.has(region)) {
      this.log.debug('REM_MEM_REG: no such region (already removed for another queue pair)');
      return;
    }
    this.swapMemory([], () => this.memory.withoutRegion(region), 'REM_MEM_REG');
  }

  /**
   * Build the next table, give it to the kernel and retire the old one. Every configured ring must
   * still be inside guest memory (else the new table is dropped and the request refused, the kernel
   * untouched); a ring whose local address moves is detached, re-addressed and re-attached.
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
      if (e instanceof MemTableError) throw new Refused(e.message);
      throw e;
    }
    const moved: { ring: Ring; local: { desc: bigint; avail: bigint; used: bigint } }[] = [];
    try {
      for (const r of this.rings) {
        if (!r.addr || r.num === undefined) continue;
        const local = next.translateRing(r.addr, r.num, this.eventIdx());
        if (!r.local || local.desc !== r.local.desc || local.avail !== r.local.avail || local.used !== r.local.used) moved.push({ ring: r, local });
      }
    } catch (e) {
      next.retire();
      if (e instanceof MemTableError) throw new Refused(`${e.message} (after ${request})`);
      throw e;
    }
    closeAll(fds);
    const reattach = moved.filter((m) => m.ring.attached);
    for (const m of reattach) this.detach(m.ring, request);
    if (this.vhost) for (const v of this.vhost) v.setMemTable(next.toVhostMemory());
    const old = this.memory;
    this.memory = next;
    old.retire(next);
    for (const m of moved) {
      m.ring.local = m.local;
      this.pushAddr(m.ring);
    }
    for (const m of reattach) this.sync(m.ring);
    this.log.info(`${request}: ${next}`);
  }

  /** SET_LOG_BASE: map the shared dirty-log area and give its address to the kernel. */
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
    closeQuiet(fd);
    if (this.vhost) for (const v of this.vhost) v.setLogBase(base + area.offset);
    this.unmapLog();
    this.logMap = { base, length };
    this.log.info(`SET_LOG_BASE: dirty log of 0x${area.size.toString(16)} bytes mapped`);
  }

  private unmapLog(): void {
    if (this.logMap) munmap(this.logMap.base, this.logMap.length);
    this.logMap = null;
  }

  // ---- Rings ----------------------------------------------------------------------------------

  setVringNum(index: number, num: number): void {
    const r = this.rings[index];
    if (num < 1 || num > MAX_RING_SIZE || (num & (num - 1)) !== 0) throw new Refused(`${r}: size ${num} is not a power of two up to ${MAX_RING_SIZE}`);
    this.whileDetached(r, 'SET_VRING_NUM', () => {
      r.num = num;
      this.vhostOf(r)?.setVringNum(r.index, num);
    });
  }

  setVringBase(index: number, base: number): void {
    const r = this.rings[index];
    this.whileDetached(r, 'SET_VRING_BASE', () => {
      r.base = base;
      this.vhostOf(r)?.setVringBase(r.index, base);
    });
  }

  /** SET_VRING_ADDR: translate through the memory table; refuse a ring not wholly inside guest memory. */
  setVringAddr(addr: VringAddr): void {
    const r = this.rings[addr.index];
    if (r.num === undefined) throw new Refused(`${r}: SET_VRING_ADDR before SET_VRING_NUM (the ring's extent is unknown)`);
    const num = r.num;
    const local = this.mapOrRefuseRing(() => this.memory.translateRing(addr, num, this.eventIdx()));
    this.whileDetached(r, 'SET_VRING_ADDR', () => {
      r.addr = addr;
      r.local = local;
      this.pushAddr(r);
    });
  }

  private mapOrRefuseRing<T>(f: () => T): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof MemTableError) throw new Refused(e.message);
      throw e;
    }
  }

  /** GET_VRING_BASE: detach, read the kernel's index, and leave the ring stopped. */
  getVringBase(index: number): number {
    const r = this.rings[index];
    this.detach(r, 'GET_VRING_BASE');
    const v = this.vhostOf(r);
    if (v) r.base = v.getVringBase(r.index);
    r.started = false;
    return r.base;
  }

  /** SET_VRING_KICK starts the ring (vhost-user.rst "Ring states"); the kernel gets the front-end's eventfd itself. */
  setVringKick(index: number, fd: number | null): void {
    const r = this.rings[index];
    if (fd === null) throw new Refused(`${r}: a kick without fd (polling) cannot drive the kernel datapath`);
    this.whileDetached(r, 'SET_VRING_KICK', () => {
      this.vhostOf(r)?.setVringKick(r.index, fd);
      if (r.kickFd !== null) closeQuiet(r.kickFd);
      r.kickFd = fd;
      r.started = true;
    });
  }

  /**
   * SET_VRING_CALL: the kernel signals this eventfd itself. When it replaces the call fd of a
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
    this.vhostOf(r)?.setVringCall(r.index, fd ?? -1);
    if (r.callFd !== null) closeQuiet(r.callFd);
    r.callFd = fd;
    if (fd !== null && r.started) eventfdWrite(fd, 1n);
  }

  setVringErr(index: number, fd: number | null): void {
    const r = this.rings[index];
    this.vhostOf(r)?.setVringErr(r.index, fd ?? -1);
    if (r.errFd !== null) closeQuiet(r.errFd);
    r.errFd = fd;
  }

  /** SET_VRING_ENABLE: remembered even before the ring exists (QEMU sends it at realize). */
  setVringEnable(index: number, enable: boolean): void {
    const r = this.rings[index];
    r.enabled = enable;
    const pairOn = this.rings[2 * r.pair].enabled || this.rings[2 * r.pair + 1].enabled;
    if (r.pair > 0) this.cfg.tap.setQueueEnabled(r.pair, pairOn);
    this.sync(r);
  }

  // ---- Net ------------------------------------------------------------------------------------

  /** SEND_RARP: announce `mac` after migration with a RARP request on the tap (as QEMU's self-announce). */
  sendRarp(mac: Buffer): void {
    this.cfg.tap.writeFrame(rarpFrame(mac), 0);
    this.log.info(`SEND_RARP: announced ${formatMac(mac)} on ${this.cfg.tap.name}`);
  }

  netSetMtu(mtu: number): void {
    this.cfg.tap.setMtu(mtu);
    this.log.info(`NET_SET_MTU: ${this.cfg.tap.name} mtu ${mtu}`);
  }

  // ---- Internals ------------------------------------------------------------------------------

  private eventIdx(): boolean {
    // Before SET_FEATURES the ring's extent is checked as if EVENT_IDX were on (2 bytes more per area).
    return this.negotiated === null || has(this.negotiated, VIRTIO_F.RING_EVENT_IDX);
  }

  private vhostOf(r: Ring): VhostNetPort | null {
    return this.vhost ? this.vhost[r.pair] : null;
  }

  private pushAddr(r: Ring): void {
    const v = this.vhostOf(r);
    if (!v || !r.addr || !r.local) return;
    v.setVringAddr(r.index, { flags: r.addr.flags, desc: r.local.desc, used: r.local.used, avail: r.local.avail, log: r.addr.log });
  }

  /** After SET_OWNER: everything the ring received before there was a kernel to give it to. */
  private pushRing(r: Ring): void {
    const v = this.vhostOf(r);
    if (!v) return;
    if (r.callFd !== null) v.setVringCall(r.index, r.callFd);
    if (r.errFd !== null) v.setVringErr(r.index, r.errFd);
    if (r.num !== undefined) v.setVringNum(r.index, r.num);
    v.setVringBase(r.index, r.base);
    this.pushAddr(r);
    if (r.kickFd !== null) v.setVringKick(r.index, r.kickFd);
  }

  /** Apply a change the kernel refuses while the ring is attached (EBUSY), then restore. */
  private whileDetached(r: Ring, request: string, change: () => void): void {
    const was = r.attached;
    if (was) this.detach(r, request);
    change();
    this.sync(r);
  }

  private syncAll(): void {
    for (const r of this.rings) this.sync(r);
  }

  /** Attach or detach so that `attached` equals `wanted`. */
  private sync(r: Ring): void {
    const v = this.vhostOf(r);
    if (!v) return;
    if (r.wanted && !r.attached) {
      v.netSetBackend(r.index, this.cfg.tap.queueFd(r.pair));
      r.attached = true;
      this.log.info(`${r}: attached to ${this.cfg.tap.name} (size ${r.num}, base ${r.base})`);
    } else if (!r.wanted && r.attached) {
      this.detach(r, 'sync');
    }
  }

  private detach(r: Ring, why: string): void {
    if (!r.attached) return;
    r.attached = false; // even if the ioctl fails: the fd is about to be released, or the ring is broken
    const v = this.vhostOf(r);
    if (v) v.netSetBackend(r.index, -1);
    this.log.debug(`${r}: detached (${why})`);
  }
}

/**
 * A RARP request announcing `mac` (RFC 903; the frame QEMU's qemu_announce_self sends): broadcast
 * destination, ethertype 0x8035, hardware type Ethernet, protocol IPv4, sender = target = mac,
 * zero IP addresses, padded to the 60-byte Ethernet minimum.
 */
export function rarpFrame(mac: Buffer): Buffer {
  if (mac.length !== 6) throw new Refused(`SEND_RARP: MAC of ${mac.length} bytes`);
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
