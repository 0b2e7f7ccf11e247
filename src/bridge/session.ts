/**
 * The vhost-user back-end of one port (handler.ts VhostUserBackend), on a Datapath (datapath.ts).
 * It serves one front-end connection at a time. Two lifetimes, kept apart:
 *  - the port's (PortBackEnd): the datapath, the counters of sessions served and peers refused,
 *    the times, the event listeners, the status;
 *  - one front-end's vhost-user session (Session): what the front-end said (features, owner,
 *    memory table, dirty log, per-ring state), made at connected() and dropped at disconnected()
 *    (and made anew by RESET_OWNER / RESET_DEVICE).
 *
 * The session owns the vhost-user state and the guest memory (src/memtable: mapping, translation
 * of ring addresses); handlers record what the front-end said. What the kernel should hold
 * follows from that in ONE place, settle() (after every request, afterRequest(), as DPDK's
 * vhost_user_msg_handler does; and inside the handlers whose outcome depends on the kernel taking
 * it): a DatapathTarget, in which a ring runs when started, enabled and configured, and the
 * session has an owner (SET_OWNER). The datapath applies it as a difference from what it gave
 * last, so what arrived before SET_OWNER reaches the kernel at SET_OWNER with no replay of its own.
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
import type { Negotiated, RequestDone, VhostUserBackend } from '../vhost-user/handler.js';
import type { LogArea, MemoryRegion, VringAddr } from '../vhost-user/messages.js';
import { FEATURE_NAMES, MAX_RING_SIZE, VHOST_F, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F } from '../virtio.js';
import type { Datapath, DatapathTarget } from './datapath.js';
import { type LocalRing, Ring } from './ring.js';
import type { PortEvent, PortListener, PortStatus } from './status.js';

/**
 * Protocol features the bridge implements (vhost-user.rst "Protocol features"), each for a reason:
 *  - REPLY_ACK: the front-end learns when a memory table or ring address was refused.
 *  - MQ: GET_QUEUE_NUM announces the virtqueues, two per queue pair (one vhost-net fd and tap queue each;
 *    docs/frontends.md says why virtqueues serve every front-end).
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
  onEvent?: PortListener;
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

/**
 * One front-end's vhost-user session: what it said (vhost-user.rst: features, owner, memory table,
 * log, rings), and the resources that came with it (guest memory mappings, the log mapping, the
 * eventfds). Made when a front-end connects (and anew by RESET_OWNER / RESET_DEVICE), dropped with
 * close() when it goes.
 */
class Session {
  readonly rings: Ring[];
  /** The guest memory table, and whether the front-end sent one (an empty table is then given too). */
  memory = MemTable.empty();
  memorySet = false;
  /** The dirty log (SET_LOG_BASE): the mapping, and the address the datapath gets (base + offset). */
  logMap: { base: bigint; length: bigint; addr: bigint } | null = null;
  /** SET_FEATURES; null before it. */
  negotiated: bigint | null = null;
  /** SET_OWNER was carried out: the datapath holds this session's per-session resources. */
  owned = false;

  constructor(queuePairs: number) {
    this.rings = Array.from({ length: 2 * queuePairs }, (_, i) => new Ring(i));
  }

  /** Before SET_FEATURES a ring's extent is checked as if EVENT_IDX were on (2 bytes more per area). */
  eventIdx(): boolean {
    return this.negotiated === null || has(this.negotiated, VIRTIO_F.RING_EVENT_IDX);
  }

  /**
   * The front-end wants the kernel's writes to this ring logged, and can send the log (LOG_SHMFD
   * in `protocol`: without it no SET_LOG_BASE can come, and waiting for one would stop the ring for good).
   */
  logged(r: Ring, protocol: bigint | null): boolean {
    if (protocol === null || !has(protocol & BRIDGE_PROTOCOL_FEATURES, PROTOCOL_F.LOG_SHMFD)) return false;
    const all = this.negotiated !== null && has(this.negotiated, VHOST_F.LOG_ALL);
    return all || (r.addr !== undefined && (r.addr.flags & (1 << VRING_ADDR_F.LOG)) !== 0);
  }

  /**
   * What the kernel should hold for this session: THE decision of which rings run. A ring runs
   * when it is ready (started, enabled, configured: ring.ts), the session has an owner, and, if
   * it is to be logged (LOG_ALL negotiated, or VHOST_VRING_F_LOG on it), once the log is there:
   * what the kernel wrote before it had the log would be missing from it. QEMU starts a device
   * during migration (after a reconnect) with SET_LOG_BASE last (hw/virtio/vhost.c vhost_dev_start).
   */
  target(protocol: bigint | null): DatapathTarget {
    return {
      features: this.negotiated,
      memory: this.memorySet ? this.memory : null,
      log: this.logMap?.addr ?? null,
      rings: this.rings.map((r) => ({
        num: r.num,
        base: r.base,
        addr: r.datapathAddr(),
        kick: r.kickFd,
        call: r.callFd,
        err: r.errFd,
        enabled: r.enabled,
        attached: this.owned && r.ready && (this.logMap !== null || !this.logged(r, protocol)),
      })),
    };
  }

  /**
   * Give back what the session holds, once the datapath has released it (the kernel may touch
   * guest memory and the log until then): unmap guest memory and the log, close the eventfds.
   */
  close(why: string, log: Logger): void {
    try {
      this.memory.retire();
    } catch (e) {
      log.warn(`${why}: unmap guest memory: ${(e as Error).message}`);
    }
    try {
      if (this.logMap) munmap(this.logMap.base, this.logMap.length);
    } catch (e) {
      log.warn(`${why}: unmap dirty log: ${(e as Error).message}`);
    }
    this.logMap = null;
    for (const r of this.rings) for (const fd of [r.kickFd, r.callFd, r.errFd]) if (fd !== null) closeQuiet(fd);
  }
}

/**
 * The port's vhost-user back-end: the port-lifetime facts (counters, times, listeners, status) and
 * the current front-end's Session, to which every request goes.
 */
export class PortBackEnd implements VhostUserBackend {
  readonly port: string;
  private readonly datapath: Datapath;
  private readonly log: Logger;
  private readonly limit: MemoryLimit;
  /** The connected front-end's session; null between connections. */
  private session: Session | null = null;
  /** What the connected front-end negotiated, kept by its dispatcher (attach): its protocol features are read there. */
  private frontEndState: Negotiated | null = null;
  private get protocol(): bigint | null {
    return this.frontEndState?.protocolFeatures ?? null;
  }

  // Status: what listeners were last told of each ring, and the port's moments.
  private shownRunning: boolean[];
  private readonly pending: PortEvent[] = [];
  private readonly listeners: PortListener[] = [];
  private sessions = 0;
  private refusedPeers = 0;
  private times: PortStatus['times'] = {
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
    this.shownRunning = Array.from({ length: 2 * this.datapath.queuePairs }, () => false);
  }

  // ---- Status ---------------------------------------------------------------------------------

  /** Add a listener of lifecycle events; returns its removal. */
  onEvent(listener: PortListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /** A typed snapshot of the port (status.ts). */
  status(): PortStatus {
    const offered = this.datapath.offered;
    const s = this.session ?? new Session(this.datapath.queuePairs);
    return {
      port: this.port,
      frontEnd: this.session !== null,
      sessions: this.sessions,
      refusedPeers: this.refusedPeers,
      features: {
        offered: hex(offered),
        offeredNames: names(offered, FEATURE_NAMES),
        negotiated: s.negotiated === null ? null : hex(s.negotiated),
        negotiatedNames: s.negotiated === null ? [] : names(s.negotiated, FEATURE_NAMES),
        protocol: this.protocol === null ? null : hex(this.protocol),
        protocolNames: this.protocol === null ? [] : names(this.protocol, PROTOCOL_FEATURE_NAMES),
      },
      rings: s.rings.map((r) => ({
        index: r.index,
        size: r.num ?? null,
        started: r.started,
        enabled: r.enabled,
        attached: this.datapath.running(r.index),
        kick: r.kickFd !== null,
        call: r.callFd !== null,
        err: r.errFd !== null,
        ...this.ringIndexes(s, r),
      })),
      datapath: this.datapath.describe(),
      memory: {
        regions: s.memory.regions.map((m) => ({ guestAddr: hex(m.gpa), size: hex(m.size), userAddr: hex(m.qva) })),
        dirtyLog: s.logMap !== null,
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
  private ringIndexes(s: Session, r: Ring): { availIdx: number | null; usedIdx: number | null } {
    const addr = r.addr;
    if (!addr) return { availIdx: null, usedIdx: null };
    const read = (qva: bigint): number | null => {
      try {
        return memoryView(s.memory.qvaToLocal(qva + RING_IDX_OFFSET, 2n), 2).readUInt16LE(0);
      } catch (e) {
        if (e instanceof MemTableError) return null;
        throw e;
      }
    };
    return { availIdx: read(addr.avail), usedIdx: read(addr.used) };
  }

  /**
   * A ring starts from the used index when the front-end's base counts buffers the guest made
   * available that no device ever used (0 < base - used <= num, in 16-bit arithmetic). vhost-net
   * uses buffers in order, so those are the ones a back end that died had fetched or not yet seen:
   * starting past them would leave them with the guest forever (a receive ring the guest filled
   * once would stay dry). QEMU sends the used index itself after a back end died (virtio.c
   * virtio_queue_restore_last_avail_idx); cloud-hypervisor sends the available index; libvhost-user
   * resumes from the used index on reconnect. docs/frontends.md, "Where a ring resumes".
   */
  private resumeFromUsed(s: Session, r: Ring): void {
    if (r.num === undefined) return;
    const used = this.ringIndexes(s, r).usedIdx;
    if (used === null) return;
    const ahead = (r.base - used) & 0xffff;
    if (ahead === 0 || ahead > r.num) return;
    this.log.info(
      `SET_VRING_KICK: ${r}: base ${r.base} is ${ahead} past the used index ${used} in guest memory: ` +
        `resuming from ${used} (buffers made available that no device used)`,
    );
    r.base = used;
  }

  /** The port serves: its socket listens, or it is connecting to the front-end. */
  ready(): void {
    this.emit({ kind: 'ready' });
  }

  /** A front-end connection begins (the transport accepted or made it): its session is made. */
  connected(): void {
    if (this.session) this.end('connect');
    this.session = new Session(this.datapath.queuePairs);
    this.sessions++;
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
    return 2 * this.datapath.queuePairs;
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
    const s = this.live();
    const changed = s.negotiated === null ? 0n : (features ^ s.negotiated) & ~bit(VHOST_F.LOG_ALL);
    const running = s.rings.filter((r) => this.datapath.running(r.index));
    if (changed !== 0n && running.length) {
      throw new Refused(
        `changes ${describeBits(changed, FEATURE_NAMES)} while ${running.join(', ')} ` +
          `run${running.length > 1 ? '' : 's'} (only LOG_ALL may change then)`,
      );
    }
    const before = { negotiated: s.negotiated, enabled: s.rings.map((r) => r.enabled) };
    s.negotiated = features;
    if (!has(features, VHOST_USER_F_PROTOCOL_FEATURES)) for (const r of s.rings) r.enabled = true;
    this.settle(() => {
      s.negotiated = before.negotiated;
      for (const [i, r] of s.rings.entries()) r.enabled = before.enabled[i];
    });
    this.times.featuresSet ??= Date.now();
    this.pending.push({ kind: 'negotiated' });
    this.log.info(`SET_FEATURES: negotiated ${describeBits(features, FEATURE_NAMES)}`);
    if (has(features, VHOST_F.LOG_ALL) && !s.logMap) {
      this.log.info('SET_FEATURES: LOG_ALL before SET_LOG_BASE: rings to be logged wait for the log');
    }
  }

  getProtocolFeatures(): bigint {
    return BRIDGE_PROTOCOL_FEATURES;
  }

  /** A front-end connection begins: its negotiated protocol features are read from `negotiated`. */
  attach(negotiated: Negotiated): void {
    this.frontEndState = negotiated;
  }

  /** SET_PROTOCOL_FEATURES: the dispatcher keeps the acked set and gates requests on it. */
  setProtocolFeatures(features: bigint): void {
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
   * SET_OWNER: the datapath takes its per-session resources; what arrived before reaches the
   * kernel with the next settle (the datapath gives the log before the features: docs/migration.md).
   */
  setOwner(): void {
    const s = this.live();
    if (s.owned) throw new Refused('this session already has an owner');
    this.datapath.open();
    s.owned = true;
    this.settle();
  }

  /** RESET_OWNER (deprecated): everything stops and is forgotten, the owner too. */
  resetOwner(): void {
    this.end('RESET_OWNER');
    this.session = new Session(this.datapath.queuePairs);
    this.pending.push({ kind: 'reset', why: 'RESET_OWNER' });
  }

  /** RESET_DEVICE: "reset the device to the state it was in right after SET_OWNER". */
  resetDevice(): void {
    const owned = this.live().owned;
    this.end('RESET_DEVICE');
    this.session = new Session(this.datapath.queuePairs);
    this.pending.push({ kind: 'reset', why: 'RESET_DEVICE' });
    if (owned) this.setOwner();
  }

  /** The front-end left (or was dropped): its session ends and is dropped. */
  disconnected(): void {
    this.end('disconnect');
    this.session = null;
    this.frontEndState = null;
    this.times.disconnected = Date.now();
    this.pending.push({ kind: 'disconnected' });
    this.flush();
  }

  /**
   * End the current session: the datapath stops every ring and gives back its per-session
   * resources, THEN the session unmaps guest memory and the log (the kernel may touch them until
   * then) and closes its eventfds. The port (the tap) stays: the host side does not flap between
   * sessions.
   */
  private end(why: string): void {
    this.datapath.release(why);
    this.session?.close(why, this.log);
    this.session = null;
    this.report();
    this.log.debug(`${why}: every ring stopped, ${this.datapath.name} released, memory unmapped`);
  }

  // ---- Memory ---------------------------------------------------------------------------------

  /** SET_MEM_TABLE: an identical table changes nothing; otherwise map, check rings, swap. */
  setMemTable(regions: MemoryRegion[], fds: number[]): void {
    const s = this.live();
    if (s.memory.regions.length && s.memory.sameAs(regions, fds)) {
      for (const fd of fds) closeQuiet(fd);
      this.log.debug('SET_MEM_TABLE: same table as before, nothing to do');
      return;
    }
    const maxRegions = this.limit.regions === null ? undefined : Math.min(this.limit.regions, LIMITS.MAX_MEM_REGIONS);
    const opts = { previous: s.memory, maxRegions, maxBytes: this.limit.bytes };
    this.swapMemory(s, fds, (own) => MemTable.map(regions, own, opts), 'SET_MEM_TABLE');
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
    const s = this.live();
    if (s.memory.contains(region, fd)) {
      closeQuiet(fd);
      this.log.debug('ADD_MEM_REG: region already in the table (sent again for another queue pair)');
      return;
    }
    const opts = { maxRegions: this.memSlots(), maxBytes: this.limit.bytes };
    this.swapMemory(s, [fd], ([own]) => s.memory.withRegion(region, own, opts), 'ADD_MEM_REG');
  }

  /**
   * REM_MEM_REG. Like ADD_MEM_REG it comes once per queue pair from QEMU 7.2: removing a region that is gone
   * is a repeat.
   */
  remMemReg(region: MemoryRegion): void {
    const s = this.live();
    if (!s.memory.has(region)) {
      this.log.debug('REM_MEM_REG: no such region (already removed for another queue pair)');
      return;
    }
    this.swapMemory(s, [], () => s.memory.withoutRegion(region), 'REM_MEM_REG');
  }

  /**
   * Build the next table, give it to the kernel (settle) and retire the old one. Every configured
   * ring must still be inside guest memory (else the new table is dropped and the request refused,
   * the kernel untouched); rings whose local address moves are re-addressed with the new table.
   *
   * fds: MemTable consumes the fds it maps on success, but the ring check comes after the mapping
   * and may still refuse, and on a refusal the dispatcher closes the message's fds. So the table is
   * built from duplicates; the originals are closed here only once nothing can refuse any more.
   */
  private swapMemory(s: Session, fds: number[], build: (own: number[]) => MemTable, request: string): void {
    const own = fds.map((fd) => dup(fd));
    let next: MemTable;
    try {
      next = this.refusing(() => build(own));
    } catch (e) {
      closeAll(own);
      throw e;
    }
    const moved: { ring: Ring; local: LocalRing }[] = [];
    try {
      this.refusing(() => {
        for (const r of s.rings) {
          if (!r.addr || r.num === undefined) continue;
          const local = next.translateRing(r.addr, r.num, s.eventIdx());
          if (!r.local || local.desc !== r.local.desc || local.avail !== r.local.avail || local.used !== r.local.used) {
            moved.push({ ring: r, local });
          }
        }
      }, ` (after ${request})`);
    } catch (e) {
      next.retire();
      throw e;
    }
    const before = { memory: s.memory, memorySet: s.memorySet, local: moved.map((m) => m.ring.local) };
    s.memory = next;
    s.memorySet = true;
    for (const m of moved) m.ring.local = m.local;
    try {
      this.settle(() => {
        s.memory = before.memory;
        s.memorySet = before.memorySet;
        for (const [i, m] of moved.entries()) m.ring.local = before.local[i];
      });
    } catch (e) {
      next.retire();
      throw e;
    }
    closeAll(fds);
    before.memory.retire(next);
    this.pending.push({ kind: 'memory' });
    this.log.info(`${request}: ${next}`);
  }

  /**
   * SET_LOG_BASE: map the shared dirty-log area and give its address to the kernel. A second one
   * (QEMU resizes the log when guest memory changes) replaces the first without a gap: the new
   * mapping reaches the kernel before the old one is unmapped. The fd is closed once the log is in
   * place (the mapping keeps the memory); on a refusal it stays with the dispatcher, which closes it.
   */
  setLogBase(area: LogArea, fd: number): void {
    const s = this.live();
    const length = area.size + area.offset;
    if (area.size === 0n) throw new Refused('log area of size 0');
    const base = this.refusing(() => mmapShared(fd, length, 0n), ' (the log fd cannot be mapped)');
    const old = s.logMap;
    s.logMap = { base, length, addr: base + area.offset };
    try {
      this.settle(() => {
        s.logMap = old;
      });
    } catch (e) {
      munmap(base, length);
      throw e;
    }
    closeQuiet(fd);
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

  // ---- Rings ----------------------------------------------------------------------------------

  setVringNum(index: number, num: number): void {
    const r = this.live().rings[index];
    if (num < 1 || num > MAX_RING_SIZE || (num & (num - 1)) !== 0) {
      throw new Refused(`${r}: size ${num} is not a power of two up to ${MAX_RING_SIZE}`);
    }
    const before = r.num;
    r.num = num;
    this.settle(() => {
      r.num = before;
    });
  }

  setVringBase(index: number, base: number): void {
    const r = this.live().rings[index];
    const before = r.base;
    r.base = base;
    this.settle(() => {
      r.base = before;
    });
  }

  /** SET_VRING_ADDR: translate through the memory table; refuse a ring not wholly inside guest memory. */
  setVringAddr(addr: VringAddr): void {
    const s = this.live();
    const r = s.rings[addr.index];
    if (r.num === undefined)
      throw new Refused(`${r}: SET_VRING_ADDR before SET_VRING_NUM (the ring's extent is unknown)`);
    const local = this.refusing(() => s.memory.translateRing(addr, r.num!, s.eventIdx()));
    const before = { addr: r.addr, local: r.local };
    r.addr = addr;
    r.local = local;
    this.settle(() => {
      r.addr = before.addr;
      r.local = before.local;
    });
  }

  /** GET_VRING_BASE: the datapath stops the ring and reads its index; the ring stays stopped until a new kick. */
  getVringBase(index: number): number {
    const s = this.live();
    const r = s.rings[index];
    if (s.owned) r.base = this.datapath.getRingBase(index);
    r.started = false;
    return r.base;
  }

  /**
   * SET_VRING_KICK starts the ring (vhost-user.rst "Ring states"); the datapath gets the front-end's eventfd
   * itself.
   */
  setVringKick(index: number, fd: number | null): void {
    const r = this.live().rings[index];
    if (fd === null) throw new Refused(`${r}: a kick without fd (polling) cannot drive the kernel datapath`);
    const s = this.live();
    const before = { fd: r.kickFd, started: r.started, base: r.base };
    if (!r.started) this.resumeFromUsed(s, r);
    r.kickFd = fd;
    r.started = true;
    this.settle(() => {
      r.kickFd = before.fd;
      r.started = before.started;
      r.base = before.base;
    });
    if (before.fd !== null) closeQuiet(before.fd);
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
    const r = this.live().rings[index];
    const before = r.callFd;
    r.callFd = fd;
    this.settle(() => {
      r.callFd = before;
    });
    if (before !== null) closeQuiet(before);
    if (fd !== null && r.started) eventfdWrite(fd, 1n);
  }

  setVringErr(index: number, fd: number | null): void {
    const r = this.live().rings[index];
    const before = r.errFd;
    r.errFd = fd;
    this.settle(() => {
      r.errFd = before;
    });
    if (before !== null) closeQuiet(before);
  }

  /** SET_VRING_ENABLE: remembered even before the ring exists (QEMU sends it at realize). */
  setVringEnable(index: number, enable: boolean): void {
    const r = this.live().rings[index];
    const before = r.enabled;
    r.enabled = enable;
    this.settle(() => {
      r.enabled = before;
    });
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
   * The datapath applies what the session's state says the kernel should hold (Session.target:
   * which rings run, with everything else); it gives only what changed. A handler settles before
   * it commits what the kernel must have first (a new table or log before the old is unmapped, an
   * old eventfd closed only once replaced); if the kernel refuses, `undo` puts the session's state
   * back, the kernel is brought back to it, and the failure is the request's.
   */
  private settle(undo?: () => void): void {
    const s = this.session;
    if (!s) return;
    try {
      this.datapath.apply(s.target(this.protocol));
    } catch (e) {
      if (!undo) throw e;
      undo();
      try {
        this.datapath.apply(s.target(this.protocol));
      } catch (again) {
        this.log.warn(`after the refusal, back to the previous state: ${(again as Error).message}`);
      }
      throw e;
    }
  }

  /**
   * The one translation of a failure of guest memory (MemTableError) or of a system call on what
   * the front-end sent (SysError) into a refusal of the request, `suffix` saying where; when the
   * port's own limit refused, it is named. Anything else is the back end's own failure and passes.
   */
  private refusing<T>(f: () => T, suffix = ''): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof MemTableError && e.reason === 'too-large')
        throw new Refused(`${e.message} (this port's maxMemory)`);
      if (e instanceof MemTableError && e.reason === 'too-many' && this.limit.regions !== null)
        throw new Refused(`${e.message} (this port's maxRegions is ${this.limit.regions})`);
      if (e instanceof MemTableError || e instanceof SysError) throw new Refused(`${e.message}${suffix}`);
      throw e;
    }
  }

  /** Ring events for what changed since listeners were last told, and the port's moments. */
  private report(): void {
    let started = false;
    for (const [q, shown] of this.shownRunning.entries()) {
      const now = this.datapath.running(q);
      if (now === shown) continue;
      this.shownRunning[q] = now;
      this.pending.push(now ? { kind: 'ring-running', ring: q } : { kind: 'ring-stopped', ring: q });
      if (now) started = true;
      else this.times.lastRingStopped = Date.now();
    }
    const enabled = this.session?.rings.filter((r) => r.enabled) ?? [];
    const all = enabled.length > 0 && enabled.every((r) => this.datapath.running(r.index));
    if (started && all) this.times.allRingsRunning = Date.now();
  }

  private emit(event: PortEvent): void {
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

  /** The connected front-end's session; a request outside a connection is a bug of the caller. */
  private live(): Session {
    if (!this.session) throw new Error('no front-end connected (a request outside a connection)');
    return this.session;
  }
}
