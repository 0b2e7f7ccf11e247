/**
 * The socket a vhost-net ring is attached to (VHOST_NET_SET_BACKEND). drivers/vhost/net.c get_socket
 * takes three kinds, and each is one implementation of {@link BackendSocket} (docs/backends.md):
 *  - a tap (/dev/net/tun, tun_get_socket): tap.ts {@link Tap.open};
 *  - a macvtap (/dev/tapN of a macvtap interface, tap_get_socket): tap.ts {@link Tap.openMacvtap}; it answers
 *    the same TUN* ioctls for the header, offloads and queues as a tap;
 *  - a raw packet socket (AF_PACKET SOCK_RAW bound to an interface, get_raw_socket): packet.ts.
 *
 * A tap and a macvtap carry the virtio-net header (IFF_VNET_HDR): the header's checksum and
 * segmentation fields cross between the guest and the host stack, so offloads can be offered. A
 * packet socket carries bare Ethernet frames: vhost-net adds and strips a zeroed header itself
 * (VHOST_NET_F_VIRTIO_NET_HDR, features.ts toKernel) and no offload can be offered.
 */

/** Which of get_socket's three kinds. */
export type BackendKind = 'tap' | 'macvtap' | 'packet';

/** The header half of a socket that carries the virtio-net header (tap, macvtap). */
export interface VnetHdrSocket {
  /** TUNSETVNETHDRSZ. */
  setVnetHdrSize(size: number): void;
  /** TUNSETOFFLOAD; returns the flags applied. */
  setOffload(flags: number): number;
}

/**
 * What a vhost-net datapath uses of its socket: one fd per queue pair and the settings that follow
 * what the front-end negotiated. Bridge unit tests implement it with a recording fake.
 */
export interface BackendSocket {
  readonly kind: BackendKind;
  /** The interface name (the tap, the macvtap, or the interface a packet socket is bound to). */
  readonly name: string;
  /** The header and offload ioctls, or null: the socket carries no virtio-net header (a packet socket). */
  readonly vnetHdr: VnetHdrSocket | null;
  /** The fd of queue pair `pair` (for VHOST_NET_SET_BACKEND). */
  fd(pair: number): number;
  /** SIOCSIFMTU (a packet socket only checks that the interface carries frames that big). */
  setMtu(mtu: number): void;
  /** Steer host traffic to queue `pair` or away from it (TUNSETQUEUE attach or detach). */
  setQueueEnabled(pair: number, enabled: boolean): void;
  /** Write one Ethernet frame on queue `pair` (with a zeroed virtio-net header if the socket carries one). */
  writeFrame(frame: Buffer, pair?: number): void;
}
