/**
 * Feature bits in ONE place: what the bridge offers the front-end, what it gives the kernel, and
 * what the tap is told. Every bit the bridge may offer has a row in {@link OFFER_RULES} saying
 * when and why; every bit it deliberately does not offer has a row in {@link NOT_OFFERED}.
 * (The strip/re-add shape is DPDK's drivers/net/virtio/virtio_user/vhost_kernel.c; the offload
 * rules follow QEMU's virtio_net_get_features + net/tap-linux.c; the kernel facts are
 * drivers/vhost/net.c VHOST_NET_FEATURES and docs/kernel-ordering.md.)
 *
 * Three parties:
 * - vhost-net runs the RINGS: it knows only ring/transport bits (VHOST_GET_FEATURES, 0x33d008000 on
 *   Linux 6.1) and refuses any other bit in VHOST_SET_FEATURES with EOPNOTSUPP.
 * - the TAP owns the virtio-net HEADER (IFF_VNET_HDR): the net offload bits are about what the tap
 *   accepts from the guest (always everything: the stack segments in software if it must) and what
 *   it may hand to the guest (TUNSETOFFLOAD). vhost-net never sees them.
 * - the BRIDGE implements the vhost-user side (PROTOCOL_FEATURES, SET_LOG_BASE, NET_SET_MTU).
 * - the FRONT-END's device owns the control queue (CTRL_VQ) and what is driven over it
 *   (GUEST_ANNOUNCE, the MQ pair count): offered so that a front-end which shows the guest the
 *   back-end's word (cloud-hypervisor) keeps its own control queue; docs/frontends.md.
 * Every word offered obeys the virtio spec's feature dependencies ({@link SPEC_REQUIRES}, virtio 1.2
 * 5.1.3.1): offeredToFrontEnd refuses to build one that does not.
 */
import { has, maskOf } from '../bits.js';
import { FEATURE_NAMES, VHOST_F, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F, VIRTIO_NET_F } from '../virtio.js';
import { TUN_F } from './ioctls.js';

/** What decides the offer. */
export interface OfferInputs {
  /** VHOST_GET_FEATURES of /dev/vhost-net. */
  kernel: bigint;
  /** TUN_F_* offloads the tap or macvtap accepts (Tap.probeOffloads()); 0 for a packet socket. */
  tapOffloads: number;
  /**
   * The back-end socket carries the virtio-net header (a tap or macvtap, IFF_VNET_HDR). false for a
   * packet socket (backend.ts): vhost-net adds and strips the header, and no offload can be offered.
   */
  vnetHdr: boolean;
  /** Queue pairs the bridge serves (one vhost-net fd and one tap queue each). */
  queuePairs: number;
  /**
   * Bits the bridge itself implements on the vhost-user side ({@link BRIDGE_BITS}):
   * PROTOCOL_FEATURES (30), LOG_ALL (26, the bridge handles SET_LOG_BASE; the kernel writes the
   * log), MTU (3, the bridge applies NET_SET_MTU to the tap).
   */
  bridgeBits: readonly number[];
}

/** Who a bit is offered on behalf of. */
type Party = 'kernel' | 'tap' | 'bridge' | 'front-end';

/** One offered bit: when it is offered, and why. */
interface OfferRule {
  readonly bit: number;
  readonly party: Party;
  readonly when: (i: OfferInputs) => boolean;
  readonly why: string;
}

const kernelHas =
  (n: number) =>
  (i: OfferInputs): boolean =>
    has(i.kernel, n);
const tapHas =
  (mask: number) =>
  (i: OfferInputs): boolean =>
    (i.tapOffloads & mask) === mask;
const bridgeHas =
  (n: number) =>
  (i: OfferInputs): boolean =>
    i.bridgeBits.includes(n);
const always = (): boolean => true;
const socketHdr = (i: OfferInputs): boolean => i.vnetHdr;

/** Every bit the bridge may offer the front-end. */
export const OFFER_RULES: readonly OfferRule[] = [
  // Ring and transport bits: vhost-net runs the rings, so it decides (pass-through of GET_FEATURES).
  {
    bit: VIRTIO_F.VERSION_1,
    party: 'kernel',
    when: kernelHas(VIRTIO_F.VERSION_1),
    why: 'vhost-net handles virtio 1.0 rings (little-endian, 12-byte header)',
  },
  {
    bit: VIRTIO_F.RING_INDIRECT_DESC,
    party: 'kernel',
    when: kernelHas(VIRTIO_F.RING_INDIRECT_DESC),
    why: 'vhost-net follows indirect descriptor tables (vhost.c get_indirect)',
  },
  {
    bit: VIRTIO_F.RING_EVENT_IDX,
    party: 'kernel',
    when: kernelHas(VIRTIO_F.RING_EVENT_IDX),
    why: 'vhost-net reads used_event / writes avail_event to suppress kicks and interrupts',
  },
  {
    bit: VIRTIO_F.NOTIFY_ON_EMPTY,
    party: 'kernel',
    when: kernelHas(VIRTIO_F.NOTIFY_ON_EMPTY),
    why: 'vhost-net interrupts when the avail ring runs empty, even if interrupts are suppressed',
  },
  {
    bit: VIRTIO_NET_F.MRG_RXBUF,
    party: 'kernel',
    when: kernelHas(VIRTIO_NET_F.MRG_RXBUF),
    why: 'vhost-net spreads a received packet over several buffers and writes num_buffers (net.c handle_rx)',
  },
  {
    bit: VHOST_F.LOG_ALL,
    party: 'kernel',
    when: (i) => has(i.kernel, VHOST_F.LOG_ALL) && i.bridgeBits.includes(VHOST_F.LOG_ALL),
    why:
      'dirty logging for migration: the kernel writes the bitmap, the bridge maps SET_LOG_BASE for it; both ' +
      'must agree',
  },

  // Guest -> host: the tap accepts whatever the virtio-net header describes from any writer
  // (tun_get_user -> virtio_net_hdr_to_skb), segmenting and checksumming in software if needed.
  // A packet socket has no header to carry it (vnetHdr false): see WITHHELD_FROM_PACKET_SOCKET.
  {
    bit: VIRTIO_NET_F.CSUM,
    party: 'tap',
    when: socketHdr,
    why: 'the guest may send partial checksums: the tap (IFF_VNET_HDR) takes csum_start/csum_offset from the header',
  },
  {
    bit: VIRTIO_NET_F.HOST_TSO4,
    party: 'tap',
    when: socketHdr,
    why: 'the guest may send TCPv4 super-packets: the tap takes GSO_TCPV4 from the header',
  },
  {
    bit: VIRTIO_NET_F.HOST_TSO6,
    party: 'tap',
    when: socketHdr,
    why: 'the guest may send TCPv6 super-packets: the tap takes GSO_TCPV6 from the header',
  },
  {
    bit: VIRTIO_NET_F.HOST_ECN,
    party: 'tap',
    when: socketHdr,
    why: 'the guest may set GSO_ECN on TSO packets: the tap maps it to SKB_GSO_TCP_ECN',
  },
  {
    bit: VIRTIO_NET_F.HOST_UFO,
    party: 'tap',
    when: (i) => i.vnetHdr && tapHas(TUN_F.UFO)(i),
    why: 'UFO packets from the guest: only if the tap also accepts TUN_F_UFO, as QEMU decides (peer_has_ufo)',
  },
  {
    bit: VIRTIO_NET_F.HOST_USO,
    party: 'tap',
    when: (i) => i.vnetHdr && tapHas(TUN_F.USO4 | TUN_F.USO6)(i),
    why:
      'UDP segmentation from the guest: only if the tap accepts TUN_F_USO4|USO6 (Linux 6.2+), as QEMU decides ' +
      '(peer_has_uso)',
  },

  // Host -> guest: the tap hands vhost-net only what TUNSETOFFLOAD allowed, and the bridge sets
  // TUNSETOFFLOAD from these bits once negotiated (tapOffloadFlags), so offer what the tap accepts.
  {
    bit: VIRTIO_NET_F.GUEST_CSUM,
    party: 'tap',
    when: tapHas(TUN_F.CSUM),
    why: 'the guest accepts partial checksums: TUN_F_CSUM lets the tap deliver them',
  },
  {
    bit: VIRTIO_NET_F.GUEST_TSO4,
    party: 'tap',
    when: tapHas(TUN_F.CSUM | TUN_F.TSO4),
    why: 'the guest accepts TCPv4 super-packets: TUN_F_TSO4',
  },
  {
    bit: VIRTIO_NET_F.GUEST_TSO6,
    party: 'tap',
    when: tapHas(TUN_F.CSUM | TUN_F.TSO6),
    why: 'the guest accepts TCPv6 super-packets: TUN_F_TSO6',
  },
  {
    bit: VIRTIO_NET_F.GUEST_ECN,
    party: 'tap',
    when: (i) => tapHas(TUN_F.CSUM | TUN_F.TSO_ECN)(i) && (tapHas(TUN_F.TSO4)(i) || tapHas(TUN_F.TSO6)(i)),
    why: 'the guest accepts TSO packets with ECN: TUN_F_TSO_ECN (with TSO4 or TSO6, as tun.c and the spec require)',
  },
  {
    bit: VIRTIO_NET_F.GUEST_UFO,
    party: 'tap',
    when: tapHas(TUN_F.CSUM | TUN_F.UFO),
    why: 'the guest accepts UFO packets: TUN_F_UFO',
  },
  {
    bit: VIRTIO_NET_F.GUEST_USO4,
    party: 'tap',
    when: tapHas(TUN_F.CSUM | TUN_F.USO4),
    why: 'the guest accepts UDPv4 segmentation: TUN_F_USO4 (Linux 6.2+)',
  },
  {
    bit: VIRTIO_NET_F.GUEST_USO6,
    party: 'tap',
    when: tapHas(TUN_F.CSUM | TUN_F.USO6),
    why: 'the guest accepts UDPv6 segmentation: TUN_F_USO6 (Linux 6.2+)',
  },

  // Device-level bits the front-end's device implements. Two kinds of front-end read them
  // (docs/frontends.md): QEMU masks the offer with its user_feature_bits list (GUEST_ANNOUNCE and MQ
  // are in it, CTRL_VQ is not: QEMU's own control queue is always there); cloud-hypervisor shows the
  // guest the offer (masked with its own list, which has CTRL_VQ) and runs a control queue only when
  // the offer has CTRL_VQ. DPDK virtio-user adds CTRL_VQ itself when it has a control queue and drops
  // the dependent bits when not. So the offer carries CTRL_VQ whenever it carries a bit that needs it.
  {
    bit: VIRTIO_NET_F.CTRL_VQ,
    party: 'front-end',
    when: always,
    why:
      "the control queue is the front-end's: QEMU and cloud-hypervisor run it in the VMM, vhost-net never sees " +
      'it (a queue beyond the data rings; the bit never reaches VHOST_SET_FEATURES). Offered because GUEST_ANNOUNCE ' +
      'and MQ require it (virtio 1.2 5.1.3.1): a front-end that passes the offer to the guest (cloud-hypervisor) ' +
      'would otherwise show an invalid device, which Linux refuses ("advertises feature GUEST_ANNOUNCE but not ' +
      'CTRL_VQ"); QEMU ignores the bit (not in user_feature_bits)',
  },
  {
    bit: VIRTIO_NET_F.MQ,
    party: 'tap',
    when: (i) => i.queuePairs > 1,
    why:
      'several queue pairs: one vhost-net fd and one IFF_MULTI_QUEUE tap queue each; the guest picks how many ' +
      "with VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET on the front-end's control queue (DPDK adds MQ the same way)",
  },
  {
    bit: VIRTIO_NET_F.GUEST_ANNOUNCE,
    party: 'front-end',
    when: always,
    why:
      'after migration the guest announces itself (the front-end drives it over its own control queue); without ' +
      'it QEMU sends SEND_RARP and the bridge would have to forge the frame',
  },

  // vhost-user bits the bridge implements.
  {
    bit: VHOST_USER_F_PROTOCOL_FEATURES,
    party: 'bridge',
    when: bridgeHas(VHOST_USER_F_PROTOCOL_FEATURES),
    why: 'vhost-user protocol features (REPLY_ACK, MQ, ...); vhost-user only, never given to the kernel',
  },
  {
    bit: VIRTIO_NET_F.MTU,
    party: 'bridge',
    when: bridgeHas(VIRTIO_NET_F.MTU),
    why: 'the bridge applies NET_SET_MTU to the tap (SIOCSIFMTU), so QEMU may advertise host_mtu',
  },
];

/** Bits the bridge never offers, and why (the other half of "every bit explained"). */
export const NOT_OFFERED: readonly { readonly bit: number; readonly why: string }[] = [
  {
    bit: VHOST_F.NET_VIRTIO_NET_HDR,
    why:
      'bit 27 is ANY_LAYOUT to the guest but VHOST_NET_F_VIRTIO_NET_HDR to vhost-net: the tap owns the header ' +
      '(IFF_VNET_HDR), and vhost-net adding one too would corrupt every packet. VERSION_1 implies any layout ' +
      'anyway. On a packet socket (no header) the kernel gets it, the guest still never (toKernel)',
  },
  {
    bit: VIRTIO_F.ACCESS_PLATFORM,
    why:
      'no IOTLB path in the bridge; QEMU 7.2 refuses a back-end offering it without REPLY_ACK + BACKEND_REQ and ' +
      'reconnects forever (docs/qemu-quirks.md)',
  },
  { bit: VIRTIO_F.RING_PACKED, why: 'vhost-net (Linux 6.1) runs split rings only' },
  { bit: VIRTIO_F.IN_ORDER, why: 'vhost-net does not promise in-order completion' },
  { bit: VIRTIO_F.NOTIFICATION_DATA, why: 'vhost-net reads kicks from an eventfd, which carries no data' },
  {
    bit: VIRTIO_F.ORDER_PLATFORM,
    why: 'platform memory ordering is for hardware devices; vhost-net is software on the same CPUs',
  },
  { bit: VIRTIO_F.SR_IOV, why: "PCI SR-IOV is a device/transport matter, not the back-end's" },
  { bit: VIRTIO_F.RING_RESET, why: 'per-ring reset is not implemented on the vhost-user side' },
  {
    bit: VIRTIO_NET_F.GSO,
    why: 'legacy "any GSO" bit, superseded by the HOST_/GUEST_ bits; neither QEMU with vhost nor DPDK offers it',
  },
  {
    bit: VIRTIO_NET_F.MAC,
    why: 'the front-end device owns the config space (MAC); QEMU 7.2 does not ask the back-end',
  },
  { bit: VIRTIO_NET_F.STATUS, why: 'the front-end device owns the link status; QEMU 7.2 does not ask the back-end' },
  {
    bit: VIRTIO_NET_F.CTRL_RX,
    why:
      "receive filtering (promiscuous, all-multicast) over the front-end's control queue: no vhost-user message " +
      'carries it to the bridge, so a front-end passing the offer through could only pretend; QEMU offers it on its ' +
      'own (not in user_feature_bits)',
  },
  {
    bit: VIRTIO_NET_F.CTRL_VLAN,
    why: "VLAN filtering over the front-end's control queue: the tap cannot be told (as CTRL_RX); QEMU's own",
  },
  {
    bit: VIRTIO_NET_F.CTRL_RX_EXTRA,
    why: "extra receive modes over the front-end's control queue: the tap cannot be told (as CTRL_RX); QEMU's own",
  },
  {
    bit: VIRTIO_NET_F.CTRL_MAC_ADDR,
    why: "setting the MAC over the front-end's control queue: the front-end owns the config space; QEMU's own",
  },
  {
    bit: VIRTIO_NET_F.CTRL_GUEST_OFFLOADS,
    why:
      'changing offloads at run time would need the front-end to tell the bridge, and vhost-user has no message ' +
      'for it',
  },
  { bit: VIRTIO_NET_F.HASH_REPORT, why: 'neither the tap nor vhost-net computes RSS hashes into the header' },
  { bit: VIRTIO_NET_F.RSS, why: 'the tap steers flows itself (automq/eBPF); no RSS configuration path' },
  { bit: VIRTIO_NET_F.RSC_EXT, why: 'receive segment coalescing info: not produced by the tap' },
  { bit: VIRTIO_NET_F.GUEST_HDRLEN, why: 'hdr_len exactness: not promised by the tap' },
  { bit: VIRTIO_NET_F.STANDBY, why: 'failover is a front-end/management matter' },
  { bit: VIRTIO_NET_F.SPEED_DUPLEX, why: "config space: the front-end's" },
];

/**
 * The virtio-net feature dependencies (virtio 1.2 5.1.3.1 "Feature bit requirements"; GUEST_USO4/6
 * and VQ_NOTF_COAL came with 1.3 in the same list): `bit` may only be offered with at least one of
 * `needs`. Written once: offeredToFrontEnd checks every word against it, and the unit tests check
 * what each front-end makes of the word (test/vhost-kernel/frontends.test.ts). The spec's bits that
 * src/virtio.ts does not name (NOTF_COAL 53, VQ_NOTF_COAL 52, HASH_TUNNEL 51, RSS_CONTEXT 64) are
 * never offered, so they need no row.
 */
export const SPEC_REQUIRES: readonly { readonly bit: number; readonly needs: readonly number[] }[] = [
  { bit: VIRTIO_NET_F.GUEST_TSO4, needs: [VIRTIO_NET_F.GUEST_CSUM] },
  { bit: VIRTIO_NET_F.GUEST_TSO6, needs: [VIRTIO_NET_F.GUEST_CSUM] },
  { bit: VIRTIO_NET_F.GUEST_ECN, needs: [VIRTIO_NET_F.GUEST_TSO4, VIRTIO_NET_F.GUEST_TSO6] },
  { bit: VIRTIO_NET_F.GUEST_UFO, needs: [VIRTIO_NET_F.GUEST_CSUM] },
  { bit: VIRTIO_NET_F.GUEST_USO4, needs: [VIRTIO_NET_F.GUEST_CSUM] },
  { bit: VIRTIO_NET_F.GUEST_USO6, needs: [VIRTIO_NET_F.GUEST_CSUM] },
  { bit: VIRTIO_NET_F.HOST_TSO4, needs: [VIRTIO_NET_F.CSUM] },
  { bit: VIRTIO_NET_F.HOST_TSO6, needs: [VIRTIO_NET_F.CSUM] },
  { bit: VIRTIO_NET_F.HOST_ECN, needs: [VIRTIO_NET_F.HOST_TSO4, VIRTIO_NET_F.HOST_TSO6] },
  { bit: VIRTIO_NET_F.HOST_UFO, needs: [VIRTIO_NET_F.CSUM] },
  { bit: VIRTIO_NET_F.HOST_USO, needs: [VIRTIO_NET_F.CSUM] },
  { bit: VIRTIO_NET_F.CTRL_RX, needs: [VIRTIO_NET_F.CTRL_VQ] },
  { bit: VIRTIO_NET_F.CTRL_VLAN, needs: [VIRTIO_NET_F.CTRL_VQ] },
  { bit: VIRTIO_NET_F.GUEST_ANNOUNCE, needs: [VIRTIO_NET_F.CTRL_VQ] },
  { bit: VIRTIO_NET_F.MQ, needs: [VIRTIO_NET_F.CTRL_VQ] },
  { bit: VIRTIO_NET_F.CTRL_MAC_ADDR, needs: [VIRTIO_NET_F.CTRL_VQ] },
  { bit: VIRTIO_NET_F.RSC_EXT, needs: [VIRTIO_NET_F.HOST_TSO4, VIRTIO_NET_F.HOST_TSO6] },
  { bit: VIRTIO_NET_F.RSS, needs: [VIRTIO_NET_F.CTRL_VQ] },
  // "SHOULD NOT offer ... if it does not offer VIRTIO_NET_F_CTRL_VQ" (5.1.4.1, device configuration layout).
  { bit: VIRTIO_NET_F.HASH_REPORT, needs: [VIRTIO_NET_F.CTRL_VQ] },
  { bit: VIRTIO_NET_F.CTRL_RX_EXTRA, needs: [VIRTIO_NET_F.CTRL_VQ] },
];

/** The dependencies `word` breaks, one line each (`GUEST_ANNOUNCE without CTRL_VQ`); empty if none. */
export function specViolations(word: bigint): string[] {
  const name = (n: number): string => FEATURE_NAMES[n] ?? `bit ${n}`;
  return SPEC_REQUIRES.filter((r) => has(word, r.bit) && !r.needs.some((n) => has(word, n))).map(
    (r) => `${name(r.bit)} without ${r.needs.map(name).join(' or ')}`,
  );
}

/** Bits the kernel is never given, even if negotiated and even though VHOST_GET_FEATURES lists them. */
export const NEVER_TO_KERNEL: readonly number[] = [VHOST_F.NET_VIRTIO_NET_HDR, VIRTIO_F.ACCESS_PLATFORM];

/** Why the header bits are not offered on a packet socket (the offer explanation's line for each). */
const WITHHELD_FROM_PACKET_SOCKET =
  'not offered: a packet socket carries bare frames, no virtio-net header, so checksum and segmentation ' +
  'metadata cannot cross it (vhost-net adds and strips a zeroed header: VHOST_NET_F_VIRTIO_NET_HDR)';

/**
 * The bits a tap would have carried that this socket cannot, with the reason: what explainOffer
 * leaves out for a packet socket, for the start-up explanation.
 */
export function explainWithheld(i: OfferInputs): { bit: number; why: string }[] {
  if (i.vnetHdr) return [];
  const asTap = { ...i, vnetHdr: true, tapOffloads: -1 };
  return OFFER_RULES.filter((r) => r.party === 'tap' && r.bit !== VIRTIO_NET_F.MQ && r.when(asTap) && !r.when(i))
    .map((r) => ({ bit: r.bit, why: WITHHELD_FROM_PACKET_SOCKET }))
    .sort((a, b) => a.bit - b.bit);
}

/** Bits the bridge may claim in OfferInputs.bridgeBits: those it implements on the vhost-user side. */
export const BRIDGE_BITS: readonly number[] = [VHOST_USER_F_PROTOCOL_FEATURES, VHOST_F.LOG_ALL, VIRTIO_NET_F.MTU];

/**
 * The bits that may go to VHOST_SET_FEATURES: the ring bits offered on the kernel's behalf (party
 * 'kernel'). An allow-list, not "whatever GET_FEATURES says": a future kernel offering a bit the
 * bridge does not understand (an offload, RING_RESET...) still gets only these.
 */
export const KERNEL_BITS: readonly number[] = OFFER_RULES.filter((r) => r.party === 'kernel').map((r) => r.bit);

/** The rule for `bit`, if the bridge may offer it. */
export const offerRule = (n: number): OfferRule | undefined => OFFER_RULES.find((r) => r.bit === n);

/**
 * The feature word of vhost-user GET_FEATURES: the kernel's ring bits (minus bit 27 and
 * ACCESS_PLATFORM), the offloads the tap can carry, MQ for several queue pairs, CTRL_VQ and
 * GUEST_ANNOUNCE, and what the bridge implements. Throws if `bridgeBits` holds a bit not in
 * BRIDGE_BITS, or if the word breaks a spec dependency ({@link SPEC_REQUIRES}).
 */
export function offeredToFrontEnd(i: OfferInputs): bigint {
  for (const n of i.bridgeBits) {
    if (!BRIDGE_BITS.includes(n))
      throw new RangeError(
        `bridge bit ${n} is not one the bridge can implement (features.ts BRIDGE_BITS): add it with a rule saying why`,
      );
  }
  const word = maskOf(...OFFER_RULES.filter((r) => r.when(i)).map((r) => r.bit));
  const broken = specViolations(word);
  if (broken.length)
    throw new RangeError(`the offer 0x${word.toString(16)} breaks virtio 1.2 5.1.3.1: ${broken.join('; ')}`);
  return word;
}

/** The offered bits with their reasons, for a startup log. */
export function explainOffer(i: OfferInputs): { bit: number; party: Party; why: string }[] {
  return OFFER_RULES.filter((r) => r.when(i))
    .map(({ bit: b, party, why }) => ({ bit: b, party, why }))
    .sort((a, b) => a.bit - b.bit);
}

/**
 * The word for VHOST_SET_FEATURES: the negotiated ring bits ({@link KERNEL_BITS}) that the kernel
 * offered. Everything else stays out: net offloads, MQ, CTRL_VQ, GUEST_ANNOUNCE and PROTOCOL_FEATURES (the
 * kernel refuses unknown bits with EOPNOTSUPP), and bit 27 and ACCESS_PLATFORM, which the kernel
 * offers but must not get here ({@link NEVER_TO_KERNEL}) when the socket carries the header.
 * On a socket without the header (`socketHdr` false: a packet socket) bit 27,
 * VHOST_NET_F_VIRTIO_NET_HDR, is given: vhost-net then writes a zeroed header in front of every
 * received frame and skips the guest's on transmit (net.c vhost_net_set_features: vhost_hlen = the
 * header size, sock_hlen = 0).
 * Example (lab, QEMU 7.2): negotiated 0x170008000 -> kernel 0x130008000 (0x138008000 on a packet socket).
 */
export function toKernel(negotiated: bigint, kernelOffered: bigint, socketHdr = true): bigint {
  const ring = negotiated & kernelOffered & maskOf(...KERNEL_BITS) & ~maskOf(...NEVER_TO_KERNEL);
  return socketHdr ? ring : ring | (kernelOffered & maskOf(VHOST_F.NET_VIRTIO_NET_HDR));
}

/**
 * TUNSETOFFLOAD flags from the negotiated GUEST_* bits (what the guest accepts), following QEMU's
 * tap_fd_set_offload and DPDK's vhost_kernel_tap_set_offload: nothing without GUEST_CSUM; TSO_ECN
 * only with TSO4 or TSO6.
 */
export function tapOffloadFlags(negotiated: bigint): number {
  if (!has(negotiated, VIRTIO_NET_F.GUEST_CSUM)) return 0;
  let f = TUN_F.CSUM;
  if (has(negotiated, VIRTIO_NET_F.GUEST_TSO4)) f |= TUN_F.TSO4;
  if (has(negotiated, VIRTIO_NET_F.GUEST_TSO6)) f |= TUN_F.TSO6;
  if (f & (TUN_F.TSO4 | TUN_F.TSO6) && has(negotiated, VIRTIO_NET_F.GUEST_ECN)) f |= TUN_F.TSO_ECN;
  if (has(negotiated, VIRTIO_NET_F.GUEST_UFO)) f |= TUN_F.UFO;
  if (has(negotiated, VIRTIO_NET_F.GUEST_USO4)) f |= TUN_F.USO4;
  if (has(negotiated, VIRTIO_NET_F.GUEST_USO6)) f |= TUN_F.USO6;
  return f;
}

/**
 * The virtio-net header size (TUNSETVNETHDRSZ): struct virtio_net_hdr_mrg_rxbuf (12) with
 * MRG_RXBUF or VERSION_1, else struct virtio_net_hdr (10) (virtio spec 1.2 5.1.6; the same rule as
 * drivers/vhost/net.c vhost_net_set_features). HASH_REPORT (20 bytes) is never offered.
 */
export function vnetHdrSize(negotiated: bigint): 10 | 12 {
  return has(negotiated, VIRTIO_NET_F.MRG_RXBUF) || has(negotiated, VIRTIO_F.VERSION_1) ? 12 : 10;
}
