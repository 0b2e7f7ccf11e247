/**
 * The kernel side of bridge unit tests: vhost-net fds are test/vhost-kernel's RecordingVhostNet
 * (it refuses what the real kernel refused in the lab, with the same errnos), all reporting into
 * one journal together with a recording tap, so a test can check the order of calls across queue
 * pairs and the tap. This is not the proof that the bridge works: the lab tests are.
 */
import type { TapPort, VhostNetSource } from '../../src/bridge/ports.js';
import type { VhostNetOps } from '../../src/vhost-kernel/index.js';
import { RecordingVhostNet, type Call as KernelCall } from '../vhost-kernel/fake-vhost-net.js';

/** One journal entry: who (`vhost0`, `vhost1`, `tap`, `source`), the operation, its main arguments. */
export type Call = [who: string, op: string, ...args: unknown[]];

/** The lab kernel's VHOST_GET_FEATURES. */
export const LAB_KERNEL_FEATURES = 0x33d008000n;

/** A kernel call as a journal entry: ring ops as [op, ring, value], the memory table as [op, nregions]. */
function entry(pair: number, c: KernelCall): Call {
  const who = `vhost${pair}`;
  if (c.op === 'setMemTable') return [who, c.op, (c.table as Buffer).readUInt32LE(0)];
  if (c.op === 'setVringAddr') {
    const a = c.addr as { desc: bigint; used: bigint; avail: bigint; log: bigint };
    return [who, c.op, c.ring, a.desc, a.used, a.avail, a.log];
  }
  const rest = Object.entries(c).filter(([k]) => k !== 'op' && k !== 'ring' && k !== 'error').map(([, v]) => v);
  return [who, c.op, ...(c.ring !== undefined ? [c.ring] : []), ...rest];
}

/** Hands out RecordingVhostNets and records their release; `onRelease` lets a test observe state at that moment. */
export class FakeSource implements VhostNetSource {
  readonly devices: RecordingVhostNet[] = [];
  onRelease: ((pair: number) => void) | null = null;
  constructor(private readonly journal: Call[]) {}
  open(pair: number): RecordingVhostNet {
    this.journal.push(['source', 'open', pair]);
    const d = new RecordingVhostNet(pair, LAB_KERNEL_FEATURES, (p, c) => this.journal.push(entry(p, c)));
    this.devices.push(d);
    return d;
  }
  release(pair: number, dev: VhostNetOps): void {
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

export class FakeTap implements TapPort {
  readonly name = 'vbtap0';
  readonly frames: Buffer[] = [];
  mtu = 1500;
  configured: bigint | null = null;
  readonly queueEnabled = new Map<number, boolean>();
  constructor(private readonly journal: Call[]) {}
  queueFd(pair: number): number {
    return 100 + pair;
  }
  configure(negotiated: bigint): void {
    this.journal.push(['tap', 'configure', negotiated]);
    this.configured = negotiated;
  }
  setMtu(mtu: number): void {
    this.journal.push(['tap', 'setMtu', mtu]);
    this.mtu = mtu;
  }
  setQueueEnabled(pair: number, enabled: boolean): void {
    this.journal.push(['tap', 'setQueueEnabled', pair, enabled]);
    this.queueEnabled.set(pair, enabled);
  }
  writeFrame(frame: Buffer, pair = 0): void {
    this.journal.push(['tap', 'writeFrame', pair, frame.length]);
    this.frames.push(frame);
  }
}
