/**
 * The third socket vhost-net attaches rings to (drivers/vhost/net.c get_raw_socket): an AF_PACKET
 * SOCK_RAW socket bound to an interface, vhost-net's original use (QEMU's old `-net raw`). The guest
 * is then a station on that interface's wire without a tap or a bridge in between; the host's own
 * stack on that interface sees the guest's frames only as frames on the wire (docs/backends.md).
 *
 * What it cannot do, and so what is not offered (features.ts, with the reason in the offer
 * explanation):
 *  - it carries bare Ethernet frames, no virtio-net header: vhost-net adds a zeroed header on
 *    receive and strips the guest's on transmit (VHOST_NET_F_VIRTIO_NET_HDR, given to the kernel
 *    for this socket only), so no checksum or segmentation offload can cross it. The host side must
 *    not hand it offloaded packets either (a veth peer: ethtool -K PEER tx off tso off gso off);
 *  - one socket per interface sees every frame, so a second queue pair would get copies: one queue
 *    pair only;
 *  - its interface's MTU is the host's, not the guest's: NET_SET_MTU only checks it;
 *  - its send buffer stays below INT_MAX (the kernel caps SO_SNDBUF anyway): vhost-net batches
 *    transmits tun-style (a TUN_MSG_PTR control message) only on a socket whose sk_sndbuf is INT_MAX
 *    (net.c handle_tx_copy sock_can_batch), which a packet socket would not understand.
 * Frames for the guest's MAC reach the socket only if the interface accepts them: the socket puts
 * the interface in promiscuous mode for as long as it is open (PACKET_MR_PROMISC).
 */
import { close, E, packetPromisc, packetSocket, write } from '../sys/index.js';
import type { BackendSocket } from './backend.js';
import { KernelError, withHints } from './errors.js';
import { interfaceMtu, setInterfaceUp } from './netif.js';
import { checkIfName } from './structs.js';

export class PacketSocket implements BackendSocket {
  readonly kind = 'packet';
  /** No header: vhost-net adds and strips it. */
  readonly vnetHdr = null;
  #fd: number;

  private constructor(
    readonly name: string,
    fd: number,
  ) {
    this.#fd = fd;
  }

  /** A packet socket bound to `ifname` (needs CAP_NET_RAW), its interface promiscuous while it is open. */
  static open(ifname: string, opts: { queuePairs?: number } = {}): PacketSocket {
    const bad = checkIfName(ifname);
    if (bad) throw new KernelError(`packet socket ${ifname}`, E.EINVAL, bad);
    if ((opts.queuePairs ?? 1) !== 1) {
      throw new RangeError(
        `packet socket ${ifname}: ${opts.queuePairs} queue pairs; a packet socket serves one (every socket on the ` +
          'interface sees every frame)',
      );
    }
    const fd = withHints(() => packetSocket(ifname), {
      [E.EPERM]: 'a packet socket needs CAP_NET_RAW: run as root or give the bridge that capability',
      [E.ENODEV]: `no interface ${ifname}`,
      [E.ENOENT]: `no interface ${ifname}`,
    });
    try {
      packetPromisc(fd, ifname);
    } catch (e) {
      close(fd);
      throw e;
    }
    return new PacketSocket(ifname, fd);
  }

  fd(pair: number): number {
    if (pair !== 0 || this.#fd < 0) throw new RangeError(`packet socket ${this.name}: no queue pair ${pair}`);
    return this.#fd;
  }

  /**
   * The guest's MTU (NET_SET_MTU) against the interface's: the socket sends a frame only if it fits the
   * interface's MTU (af_packet.c packet_snd), and the interface is the host's, so it is not changed here.
   */
  setMtu(mtu: number): void {
    const have = interfaceMtu(this.name);
    if (have < mtu) {
      throw new KernelError(
        `NET_SET_MTU ${mtu} (packet socket on ${this.name})`,
        E.EINVAL,
        `${this.name} has MTU ${have}: raise it on the host (ip link set ${this.name} mtu ${mtu}) or lower host_mtu`,
      );
    }
  }

  /** Bring the interface up if it is not (needs CAP_NET_ADMIN then). */
  setUp(): void {
    setInterfaceUp(this.name);
  }

  /** One queue pair: nothing to steer. */
  setQueueEnabled(): void {}

  /** A bare frame: the socket carries no header. */
  writeFrame(frame: Buffer, pair = 0): void {
    if (write(this.fd(pair), frame) !== frame.length)
      throw new KernelError(`write ${this.name}`, E.EAGAIN, 'the packet socket is full');
  }

  /** Close the socket (the interface leaves promiscuous mode). Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    close(fd);
  }
}
