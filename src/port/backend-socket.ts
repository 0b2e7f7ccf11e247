/**
 * The port's backend socket: the fd its rings are attached to (VHOST_NET_SET_BACKEND), opened once
 * per port (it outlives front-ends, so the host side does not flap): one of the three kinds
 * vhost-net takes (vhost-kernel/backend.ts, docs/backends.md), chosen by the port's spec, never by
 * branches in the session.
 */
import { type BackendSocket, PacketSocket, Tap } from '../vhost-kernel/index.js';
import type { BackendSocketSpec } from './spec.js';

/** A backend socket as its port holds it: what the datapath uses, and its end with the port. */
export interface HeldBackendSocket extends BackendSocket {
  close(): void;
}

/** An opened backend socket and what the offer depends on (features.ts OfferInputs). */
export interface OpenedBackendSocket {
  socket: HeldBackendSocket;
  /** The TUN_F_* offloads the socket accepts (Tap.probeOffloads), 0 on a socket without the virtio-net header. */
  offloads: number;
}

/**
 * Open the socket and set it up as the port needs it: a tap or macvtap gets sndbuf INT_MAX, the MTU
 * and its link up, and every queue pair but the first detached until the guest enables it; a
 * packet socket (one queue pair) gets its interface up and the MTU checked. Its offloads are probed
 * last (the probe leaves a tap with none; the datapath applies the negotiated ones).
 */
export function openBackendSocket(spec: BackendSocketSpec, pairs: number, mtu?: number): OpenedBackendSocket {
  let s: Tap | PacketSocket;
  if ('packet' in spec) s = PacketSocket.open(spec.packet, { queuePairs: pairs });
  else if ('macvtap' in spec) s = Tap.openMacvtap(spec.macvtap, { queuePairs: pairs });
  else if ('fds' in spec) {
    if (spec.fds.length !== pairs)
      throw new Error(`--tap-fd: ${spec.fds.length} fds for ${pairs} queue pair(s); give one per queue pair`);
    s = Tap.adopt(spec.fds);
  } else s = Tap.open(spec.tap, { queuePairs: pairs, create: spec.create });
  try {
    if (s instanceof Tap) s.setSndbuf();
    if (mtu !== undefined) s.setMtu(mtu);
    s.setUp();
    for (let p = 1; p < pairs; p++) s.setQueueEnabled(p, false); // attached when the guest enables the pair
    return { socket: s, offloads: s instanceof Tap ? s.probeOffloads() : 0 };
  } catch (e) {
    s.close();
    throw e;
  }
}
