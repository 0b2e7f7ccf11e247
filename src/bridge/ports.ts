/**
 * What the bridge device needs from the kernel side. src/vhost-kernel implements these with real
 * ioctls (VhostNet, Tap); bridge unit tests implement them with a recording fake that enforces the
 * kernel's ordering rules (test/bridge/fake-kernel.ts).
 */
import type { VhostNetOps } from '../vhost-kernel/index.js';

/** One /dev/vhost-net fd: one queue pair. Ring arguments are DEVICE ring numbers (src/vhost-kernel maps them). */
export type VhostNetPort = VhostNetOps;

/** The tap: one queue fd per queue pair; persists across front-end sessions. */
export interface TapPort {
  readonly name: string;
  /** The tap queue fd that pair `pair`'s rings are attached to (VHOST_NET_SET_BACKEND). */
  queueFd(pair: number): number;
  /** Apply what the front-end negotiated: vnet header size and TUNSETOFFLOAD. */
  configure(negotiated: bigint): void;
  /** NET_SET_MTU. */
  setMtu(mtu: number): void;
  /** Attach or detach a queue of a multi-queue tap (TUNSETQUEUE), so the host does not steer packets to a queue nobody serves. */
  setQueueEnabled(pair: number, enabled: boolean): void;
  /** Write one frame (without vnet header; the tap adds a zero header) on queue `pair`: SEND_RARP. */
  writeFrame(frame: Buffer, pair?: number): void;
}

/** How the device gets a vhost-net fd for a queue pair at SET_OWNER, and gives it back at the end of a session. */
export interface VhostNetSource {
  /** A vhost-net fd for `pair`, not yet owned (the device calls setOwner). */
  open(pair: number): VhostNetPort;
  /**
   * The session is over: close the fd, or, for an fd adopted from a manager (`--vhost-fd`), which
   * cannot be reopened, reset it (VHOST_RESET_OWNER) and keep it for the next session.
   */
  release(pair: number, dev: VhostNetPort): void;
}
