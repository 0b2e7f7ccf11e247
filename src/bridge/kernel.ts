/**
 * The bridge's ports (ports.ts) on the real kernel: vhost-net fds from /dev/vhost-net (or adopted
 * from a manager), and the tap.
 */
import { log as defaultLog, type Logger } from '../log.js';
import { SysError } from '../sys/index.js';
import { type Tap, tapOffloadFlags, VhostNet, type VhostNetOps, vnetHdrSize } from '../vhost-kernel/index.js';
import type { TapPort, VhostNetSource } from './ports.js';

/**
 * One vhost-net fd per queue pair for each session. Opened at SET_OWNER and closed at the end of
 * the session, except fds adopted with --vhost-fd: those cannot be reopened, so between sessions
 * they are reset (VHOST_RESET_OWNER: rings, memory table and worker gone, owner cleared) and kept.
 */
export class VhostNetPool implements VhostNetSource {
  constructor(private readonly adopted: VhostNet[] | null, private readonly log: Logger = defaultLog) {}

  open(pair: number): VhostNetOps {
    return this.adopted ? this.adopted[pair] : VhostNet.open(pair);
  }

  release(pair: number, dev: VhostNetOps): void {
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

/** The tap as the device sees it: negotiated offloads and header size, MTU, queue attach, RARP. */
export class KernelTap implements TapPort {
  constructor(readonly tap: Tap, private readonly log: Logger = defaultLog) {}

  get name(): string {
    return this.tap.name;
  }

  queueFd(pair: number): number {
    return this.tap.fd(pair);
  }

  /**
   * What the guest negotiated decides what the tap hands to vhost-net: the virtio-net header size
   * (12 with VERSION_1 or MRG_RXBUF) and the offloaded packets the guest accepts (TUNSETOFFLOAD,
   * from GUEST_CSUM/TSO/ECN/UFO). Offloads are what make the throughput equal to tap,vhost=on.
   */
  configure(negotiated: bigint): void {
    this.tap.setVnetHdrSize(vnetHdrSize(negotiated));
    const applied = this.tap.setOffload(tapOffloadFlags(negotiated));
    this.log.debug(`${this.name}: vnet header ${vnetHdrSize(negotiated)} bytes, offloads 0x${applied.toString(16)}`);
  }

  setMtu(mtu: number): void {
    this.tap.setMtu(mtu);
  }

  setQueueEnabled(pair: number, enabled: boolean): void {
    this.tap.setQueueEnabled(pair, enabled);
  }

  writeFrame(frame: Buffer, pair = 0): void {
    this.tap.writeFrame(frame, pair);
  }
}
