/**
 * The kernel side of bridge unit tests: vhost-net fds are test/vhost-kernel's RecordingVhostNet
 * (it refuses what the real kernel refused in the lab, with the same errnos), all reporting into
 * one journal together with a recording tap, so a test can check the order of calls across queue
 * pairs and the tap. The real VhostNetDatapath and PortBackEnd run on top. This is not the
 * proof that the bridge works: the lab tests are.
 */
import { PortBackEnd } from '../../src/bridge/session.js';
import type { PortListener } from '../../src/bridge/status.js';
import { VhostNetDatapath, type VhostNetProvider } from '../../src/bridge/vhost-net-datapath.js';
import type { Logger } from '../../src/log.js';
import type { BackendSocket, VhostNetDevice, VnetHdrSocket } from '../../src/vhost-kernel/index.js';
import { RecordingVhostNet, type Call as VhostNetRecord } from '../vhost-kernel/fake-vhost-net.js';

/** The lab kernel's VHOST_GET_FEATURES. */
export const LAB_KERNEL_FEATURES = 0x33d008000n;

/** What the recording tap saw. */
export type TapCall =
  | { op: 'setVnetHdrSize'; size: number }
  | { op: 'setOffload'; flags: number }
  | { op: 'setMtu'; mtu: number }
  | { op: 'setQueueEnabled'; pair: number; enabled: boolean }
  | { op: 'writeFrame'; pair: number; length: number };

/** A vhost-net call as the journal keeps it: a memory table as its region count. */
type PairCall = Exclude<VhostNetRecord, { op: 'setMemTable' }> | { op: 'setMemTable'; regions: number; error?: string };

/**
 * One journal entry: who received the call (`vhost0` = the vhost-net fd of queue pair 0, `tap`,
 * `provider`) and the call as a typed record. A memory table is recorded as its region count.
 */
export type Call =
  | ({ who: `vhost${number}` } & PairCall)
  | ({ who: 'tap' } & TapCall)
  | { who: 'provider'; op: 'open' | 'release'; pair: number };

/** The calls `who` received, without `who`: a list to compare with the calls a test expects. */
export function callsTo(journal: readonly Call[], who: Call['who']): Record<string, unknown>[] {
  return journal.filter((c) => c.who === who).map(({ who: _, ...rest }) => rest);
}

/** Fields a call must have: `{ who: 'vhost0', op: 'netSetBackend', ring: 0 }`. */
export type CallPattern = Partial<Record<string, unknown>> & { op: string };

const big = (_: string, v: unknown): unknown => (typeof v === 'bigint' ? `${v}n` : v);
const same = (a: unknown, b: unknown): boolean => JSON.stringify(a, big) === JSON.stringify(b, big);

/** True if `call` has every field of `pattern` (deep equality per field). */
function matches(call: Call, pattern: CallPattern): boolean {
  return Object.entries(pattern).every(([k, v]) => same((call as Record<string, unknown>)[k], v));
}

/** The position of the first call with every field of `pattern` (-1 if none): for "this before that". */
export function indexOfCall(journal: readonly Call[], pattern: CallPattern): number {
  return journal.findIndex((c) => matches(c, pattern));
}

/** Every call with every field of `pattern`. */
export function callsLike(journal: readonly Call[], pattern: CallPattern): Call[] {
  return journal.filter((c) => matches(c, pattern));
}

function entry(pair: number, c: VhostNetRecord): Call {
  const who = `vhost${pair}` as const;
  if (c.op === 'setMemTable') {
    return { who, op: c.op, regions: c.table.readUInt32LE(0), ...(c.error ? { error: c.error } : {}) };
  }
  return { who, ...c };
}

/** Hands out RecordingVhostNets and records their release; `onRelease` lets a test observe state at that moment. */
export class FakeVhostNetProvider implements VhostNetProvider {
  readonly devices: RecordingVhostNet[] = [];
  onRelease: ((pair: number) => void) | null = null;
  constructor(private readonly journal: Call[]) {}
  open(pair: number): RecordingVhostNet {
    this.journal.push({ who: 'provider', op: 'open', pair });
    const d = new RecordingVhostNet(pair, LAB_KERNEL_FEATURES, (p, c) => this.journal.push(entry(p, c)));
    this.devices.push(d);
    return d;
  }
  release(pair: number, dev: VhostNetDevice): void {
    this.journal.push({ who: 'provider', op: 'release', pair });
    this.onRelease?.(pair);
    dev.close();
  }
  /** The live (not closed) device of a pair. */
  live(pair: number): RecordingVhostNet {
    const d = this.devices.filter((x) => x.pair === pair && !x.closed).at(-1);
    if (!d) throw new Error(`no live vhost-net for pair ${pair}`);
    return d;
  }
}

export class FakeTap implements BackendSocket, VnetHdrSocket {
  readonly kind = 'tap';
  readonly name = 'vbtap0';
  readonly vnetHdr: VnetHdrSocket = this;
  readonly frames: Buffer[] = [];
  mtu = 1500;
  vnetHdrSize = 10;
  offloads = 0;
  readonly queueEnabled = new Map<number, boolean>();
  constructor(private readonly journal: Call[]) {}
  /** Queue fd of pair p: 100 + p (never used as an fd: the fake kernel only records it). */
  fd(pair: number): number {
    return 100 + pair;
  }
  setVnetHdrSize(size: number): void {
    this.journal.push({ who: 'tap', op: 'setVnetHdrSize', size });
    this.vnetHdrSize = size;
  }
  setOffload(flags: number): number {
    this.journal.push({ who: 'tap', op: 'setOffload', flags });
    this.offloads = flags;
    return flags;
  }
  setMtu(mtu: number): void {
    this.journal.push({ who: 'tap', op: 'setMtu', mtu });
    this.mtu = mtu;
  }
  setQueueEnabled(pair: number, enabled: boolean): void {
    this.journal.push({ who: 'tap', op: 'setQueueEnabled', pair, enabled });
    this.queueEnabled.set(pair, enabled);
  }
  writeFrame(frame: Buffer, pair = 0): void {
    this.journal.push({ who: 'tap', op: 'writeFrame', pair, length: frame.length });
    this.frames.push(frame);
  }
}

/**
 * A packet socket as the datapath sees it (vhost-kernel/packet.ts): no header ioctls, one queue pair,
 * bare frames; its calls go to the journal as `tap` calls.
 */
export class FakePacketSocket implements BackendSocket {
  readonly kind = 'packet';
  readonly name = 'vbraw0';
  readonly vnetHdr = null;
  readonly frames: Buffer[] = [];
  mtu = 1500;
  constructor(private readonly journal: Call[]) {}
  fd(pair: number): number {
    return 100 + pair;
  }
  setMtu(mtu: number): void {
    this.journal.push({ who: 'tap', op: 'setMtu', mtu });
    this.mtu = mtu;
  }
  setQueueEnabled(pair: number, enabled: boolean): void {
    this.journal.push({ who: 'tap', op: 'setQueueEnabled', pair, enabled });
  }
  writeFrame(frame: Buffer, pair = 0): void {
    this.journal.push({ who: 'tap', op: 'writeFrame', pair, length: frame.length });
    this.frames.push(frame);
  }
}

export interface FakePortOptions {
  queuePairs: number;
  offered: bigint;
  log?: Logger;
  onEvent?: PortListener;
  /** A packet socket instead of the tap. */
  packet?: boolean;
  /** VHOST_SET_VRING_BUSYLOOP_TIMEOUT for every ring. */
  busyPollUs?: number;
}

/** A port's back-end on a VhostNetDatapath on the recording kernel, all calls in one journal. */
export function fakePort(o: FakePortOptions) {
  const journal: Call[] = [];
  const vhostNet = new FakeVhostNetProvider(journal);
  const tap = o.packet ? new FakePacketSocket(journal) : new FakeTap(journal);
  const datapath = new VhostNetDatapath({
    queuePairs: o.queuePairs,
    offered: o.offered,
    vhostNetFeatures: LAB_KERNEL_FEATURES,
    vhostNet,
    socket: tap,
    maxMemSlots: 64,
    busyPollUs: o.busyPollUs,
    log: o.log,
  });
  const session = new PortBackEnd({ port: tap.name, datapath, log: o.log, onEvent: o.onEvent });
  return { journal, vhostNet, tap, datapath, session };
}
