/**
 * The socket a port's rings are attached to, opened once per port (it outlives front-ends, so the
 * host side does not flap): one of the three kinds vhost-net takes (vhost-kernel/backend.ts,
 * docs/backends.md), chosen by the port's options, never by branches in the session.
 */
import { PacketSocket, Tap } from '../vhost-kernel/index.js';

/**
 * Which socket: a tap by name (created if missing, unless `create: false`), open tap or macvtap fds
 * from a manager (one per queue pair), a macvtap by name (its /dev/tapN), or a raw packet socket
 * bound to an interface.
 */
export type TapSpec = { name: string; create?: boolean } | { fds: number[] } | { macvtap: string } | { packet: string };

/** A socket of either family, with what the port does to it at start and at the end. */
export type HostSocket = Tap | PacketSocket;

/** What the offer depends on (features.ts OfferInputs): the offloads the socket accepts, 0 without a header. */
export function socketOffloads(s: HostSocket): number {
  return s instanceof Tap ? s.probeOffloads() : 0;
}

/**
 * Open the socket and set it up as the port needs it: a tap or macvtap gets sndbuf INT_MAX, the MTU
 * and its link up, and every queue pair but the first detached until the guest enables it; a
 * packet socket (one queue pair) gets its interface up and the MTU checked.
 */
export function openSocket(spec: TapSpec, pairs: number, mtu?: number): HostSocket {
  let s: HostSocket;
  if ('packet' in spec) s = PacketSocket.open(spec.packet, { queuePairs: pairs });
  else if ('macvtap' in spec) s = Tap.openMacvtap(spec.macvtap, { queuePairs: pairs });
  else if ('fds' in spec) {
    if (spec.fds.length !== pairs)
      throw new Error(`--tap-fd: ${spec.fds.length} fds for ${pairs} queue pair(s); give one per queue pair`);
    s = Tap.adopt(spec.fds);
  } else s = Tap.open(spec.name, { queuePairs: pairs, create: spec.create });
  try {
    if (s instanceof Tap) s.setSndbuf();
    if (mtu !== undefined) s.setMtu(mtu);
    s.setUp();
    for (let p = 1; p < pairs; p++) s.setQueueEnabled(p, false); // attached when the guest enables the pair
    return s;
  } catch (e) {
    s.close();
    throw e;
  }
}
