/**
 * A VhostUserBackend for tests: records every call with its arguments, offers a configurable
 * feature word, protocol features and queue count, and keeps guest memory in a real MemTable
 * (src/memtable: mmap of the passed fds, overlap / size-vs-fd checks, ring translation), so the
 * memory cases of the bad-input suite and the QEMU replay go through the code the bridge uses.
 *
 * fd ownership follows handler.ts: memory fds go to the MemTable (which closes them once mapped);
 * kick/call/err and log fds are kept (the previous one of a ring closed when replaced) and all of
 * them are closed on disconnected(), which also retires (unmaps) the memory table.
 */
import { has } from '../../src/bits.js';
import { MemTable, MemTableError } from '../../src/memtable/index.js';
import { closeAll, closeQuiet, fstat } from '../../src/sys/index.js';
import { Refused } from '../../src/vhost-user/errors.js';
import type { Negotiated, RequestDone, VhostUserBackend } from '../../src/vhost-user/handler.js';
import type { LogArea, MemoryRegion, VringAddr } from '../../src/vhost-user/messages.js';
import { VIRTIO_F } from '../../src/virtio.js';

export interface RecordingConfig {
  /** GET_FEATURES. */
  features: bigint;
  /** GET_PROTOCOL_FEATURES. */
  protocolFeatures: bigint;
  /** GET_QUEUE_NUM; ringCount() is twice this. */
  queuePairs: number;
  /** GET_MAX_MEM_SLOTS (default 8), also the ADD_MEM_REG limit. */
  maxMemSlots?: number;
}

/** One recorded call: the method and its arguments, fds shown as the string 'fd' (their numbers vary). */
export interface Call {
  method: string;
  args: unknown[];
}

type Method = Exclude<keyof VhostUserBackend, 'ringCount' | 'attach'>;

export class RecordingBackend implements VhostUserBackend {
  readonly calls: Call[] = [];
  /** Methods that throw Refused(reason) instead of doing anything. */
  readonly refuse = new Map<Method, string>();
  /** Guest memory; `MemTable.empty()` between sessions. */
  memory: MemTable = MemTable.empty();
  /** Each ring's state as the front-end set it. */
  readonly rings = new Map<
    number,
    {
      num?: number;
      base: number;
      addr?: VringAddr;
      local?: Record<'desc' | 'avail' | 'used', bigint>;
      enabled: boolean;
    }
  >();
  private acked = 0n;
  private readonly held = new Map<string, number>();
  disconnects = 0;

  /** What the connected front-end negotiated, as its dispatcher keeps it. */
  negotiated: Negotiated | null = null;

  constructor(readonly config: RecordingConfig) {}

  /** Not recorded: it is the connection beginning, not a request. */
  attach(negotiated: Negotiated): void {
    this.negotiated = negotiated;
  }

  ringCount(): number {
    return 2 * this.config.queuePairs;
  }

  /** Not recorded: the dispatcher also asks for it to check gates, not only for GET_FEATURES. */
  getFeatures(): bigint {
    return this.config.features;
  }
  setFeatures(features: bigint): void {
    this.record('setFeatures', features);
    this.acked = features;
  }
  /** Not recorded, for the same reason. */
  getProtocolFeatures(): bigint {
    return this.config.protocolFeatures;
  }
  setProtocolFeatures(features: bigint): void {
    this.record('setProtocolFeatures', features);
  }
  getQueueNum(): bigint {
    this.record('getQueueNum');
    return BigInt(this.config.queuePairs);
  }
  setOwner(): void {
    this.record('setOwner');
  }
  resetOwner(): void {
    this.record('resetOwner');
  }
  resetDevice(): void {
    this.record('resetDevice');
  }

  setMemTable(regions: MemoryRegion[], fds: number[]): void {
    this.record(
      'setMemTable',
      regions,
      fds.map(() => 'fd'),
    );
    this.replaceMemory(() => MemTable.map(regions, fds, { maxRegions: 8, previous: this.memory }));
  }
  getMaxMemSlots(): bigint {
    this.record('getMaxMemSlots');
    return BigInt(this.config.maxMemSlots ?? 8);
  }
  /**
   * An ADD_MEM_REG that repeats a region already mapped (same values, same file) is a no-op: QEMU
   * up to at least 7.2 sends ADD_MEM_REG once per vhost_dev, i.e. once per queue pair of a
   * multiqueue virtio-net (its one-time-request list lacks ADD/REM_MEM_REG; fixed upstream by
   * "vhost-user: ... ADD/REM_MEM_REG ... should be sent only once"), so the second queue pair
   * re-adds the region the first one added. Refusing it fails QEMU's vhost start for that pair.
   */
  addMemReg(region: MemoryRegion, fd: number): void {
    this.record('addMemReg', region, 'fd');
    let st: { dev: bigint; ino: bigint } | null = null;
    try {
      st = fstat(fd);
    } catch {
      // withRegion below names the bad fd.
    }
    if (st && this.memory.regions.some((m) => m.describes(region, st))) {
      closeQuiet(fd);
      return;
    }
    this.replaceMemory(() => this.memory.withRegion(region, fd, { maxRegions: this.config.maxMemSlots ?? 8 }));
  }
  remMemReg(region: MemoryRegion): void {
    this.record('remMemReg', region);
    this.replaceMemory(() => this.memory.withoutRegion(region));
  }
  setLogBase(log: LogArea, fd: number): void {
    this.record('setLogBase', log, 'fd');
    this.hold('log', fd);
  }

  setVringNum(index: number, num: number): void {
    this.record('setVringNum', index, num);
    this.ring(index).num = num;
  }
  /** Ring addresses must lie in guest memory: translated now, as the bridge must before VHOST_SET_VRING_ADDR. */
  setVringAddr(addr: VringAddr): void {
    this.record('setVringAddr', addr);
    const ring = this.ring(addr.index);
    if (ring.num === undefined) throw new Refused(`ring ${addr.index}: addresses before SET_VRING_NUM`);
    ring.local = refusing(() => this.memory.translateRing(addr, ring.num!, has(this.acked, VIRTIO_F.RING_EVENT_IDX)));
    ring.addr = addr;
  }
  setVringBase(index: number, base: number): void {
    this.record('setVringBase', index, base);
    this.ring(index).base = base;
  }
  /** The base last set (a stopped ring returns where it was told to start). */
  getVringBase(index: number): number {
    this.record('getVringBase', index);
    return this.ring(index).base;
  }
  setVringKick(index: number, fd: number | null): void {
    this.record('setVringKick', index, fd === null ? null : 'fd');
    this.hold(`kick ${index}`, fd);
  }
  setVringCall(index: number, fd: number | null): void {
    this.record('setVringCall', index, fd === null ? null : 'fd');
    this.hold(`call ${index}`, fd);
  }
  setVringErr(index: number, fd: number | null): void {
    this.record('setVringErr', index, fd === null ? null : 'fd');
    this.hold(`err ${index}`, fd);
  }
  setVringEnable(index: number, enable: boolean): void {
    this.record('setVringEnable', index, enable);
    this.ring(index).enabled = enable;
  }
  sendRarp(mac: Buffer): void {
    this.record('sendRarp', [...mac]);
  }
  netSetMtu(mtu: number): void {
    this.record('netSetMtu', mtu);
  }

  /** What the dispatcher reported after each message (kept apart from `calls`: those are the requests). */
  readonly done: RequestDone[] = [];
  afterRequest(done: RequestDone): void {
    this.done.push(done);
  }

  /** Called first thing in disconnected(): a test looks at the world as the back-end's teardown sees it. */
  onDisconnected?: () => void;
  disconnected(): void {
    this.onDisconnected?.();
    this.calls.push({ method: 'disconnected', args: [] });
    this.disconnects++;
    this.negotiated = null;
    closeAll(this.held.values());
    this.held.clear();
    this.memory.retire();
    this.memory = MemTable.empty();
    this.rings.clear();
    this.acked = 0n;
  }

  /** fds this back end holds right now (kick/call/err/log). */
  get heldFds(): number {
    return this.held.size;
  }

  /** The recorded method names, in order. */
  get methods(): string[] {
    return this.calls.map((c) => c.method);
  }

  private record(method: Method, ...args: unknown[]): void {
    this.calls.push({ method, args });
    const why = this.refuse.get(method);
    if (why) throw new Refused(why);
  }

  private hold(key: string, fd: number | null): void {
    const old = this.held.get(key);
    if (old !== undefined) closeQuiet(old);
    if (fd === null) this.held.delete(key);
    else this.held.set(key, fd);
  }

  /** A memory table the front-end's request describes; what the MemTable refuses is refused (as the bridge does). */
  private replaceMemory(build: () => MemTable): void {
    const next = refusing(build);
    const old = this.memory;
    this.memory = next;
    old.retire(next);
  }

  private ring(index: number) {
    let r = this.rings.get(index);
    if (!r) {
      r = { base: 0, enabled: false };
      this.rings.set(index, r);
    }
    return r;
  }
}

/**
 * The MemTable refuses the front-end's input (overlap, fd too small, ring outside memory): a Refused, as in
 * the bridge.
 */
function refusing<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof MemTableError) throw new Refused(e.message);
    throw e;
  }
}
