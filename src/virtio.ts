/**
 * Virtio feature BIT NUMBERS shared by the vhost-user side and the kernel side
 * (virtio spec 1.2 sections 5.1.3 and 6; linux include/uapi/linux/virtio_net.h, virtio_config.h,
 * virtio_ring.h, vhost.h). Masks come only from src/bits.ts.
 */

/** Device-independent and ring bits (virtio spec 6 "Reserved Feature Bits"). */
export const VIRTIO_F = {
  NOTIFY_ON_EMPTY: 24,
  /** Legacy name of bit 27; vhost-net reuses it as VHOST_NET_F_VIRTIO_NET_HDR. */
  ANY_LAYOUT: 27,
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  NOTIFICATION_DATA: 38,
  RING_RESET: 40,
} as const;

/** virtio-net device bits (virtio spec 5.1.3). */
export const VIRTIO_NET_F = {
  CSUM: 0,
  GUEST_CSUM: 1,
  CTRL_GUEST_OFFLOADS: 2,
  MTU: 3,
  MAC: 5,
  GSO: 6,
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  GUEST_ECN: 9,
  GUEST_UFO: 10,
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  HOST_ECN: 13,
  HOST_UFO: 14,
  MRG_RXBUF: 15,
  STATUS: 16,
  CTRL_VQ: 17,
  CTRL_RX: 18,
  CTRL_VLAN: 19,
  CTRL_RX_EXTRA: 20,
  GUEST_ANNOUNCE: 21,
  MQ: 22,
  CTRL_MAC_ADDR: 23,
  GUEST_USO4: 54,
  GUEST_USO6: 55,
  HOST_USO: 56,
  HASH_REPORT: 57,
  GUEST_HDRLEN: 59,
  RSS: 60,
  RSC_EXT: 61,
  STANDBY: 62,
  SPEED_DUPLEX: 63,
} as const;

/** vhost bits that share the feature word (linux include/uapi/linux/vhost.h). */
export const VHOST_F = {
  /** The kernel logs writes to guest memory (dirty log for migration). */
  LOG_ALL: 26,
  /** vhost-net adds/strips the virtio-net header itself; unused here because the tap owns it. */
  NET_VIRTIO_NET_HDR: 27,
} as const;

/** vhost-user's own bit in the feature word (vhost-user.rst "Feature bits"). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

/**
 * The largest split-ring size (virtio 1.2 2.7 "Split Virtqueues": "Queue Size value is always a
 * power of 2. The maximum Queue Size value is 32768"). vhost-net's VHOST_SET_VRING_NUM takes the
 * same sizes (drivers/vhost/vhost.c: a power of two below 0x10000).
 */
export const MAX_RING_SIZE = 32768;

/**
 * The alignment each area of a split ring needs (virtio 1.2 2.7 "Split Virtqueues"): descriptor
 * table 16, available ring 2, used ring 4 bytes.
 */
export const RING_ALIGN = { desc: 16n, avail: 2n, used: 4n } as const;

/** Names for describeBits(); where two names share a bit, the first listed wins. */
export const FEATURE_NAMES: Record<number, string> = (() => {
  const out: Record<number, string> = {};
  for (const t of [VIRTIO_NET_F, VIRTIO_F, VHOST_F] as Record<string, number>[])
    for (const [k, v] of Object.entries(t)) out[v] ??= k;
  out[VHOST_USER_F_PROTOCOL_FEATURES] = 'PROTOCOL_FEATURES';
  return out;
})();

/**
 * virtio-net queue numbering (virtio spec 1.2 5.1.2 "Virtqueues": receiveq1 = 0, transmitq1 = 1,
 * receiveq2 = 2, ...): device ring `ring` is the receive (0) or transmit (1) ring of queue pair
 * ring >> 1. Every layer that speaks of queue pairs (the vhost-net fd of a pair, the tap queue of a
 * pair, log lines) takes the mapping from here.
 */
export function ringToPair(ring: number): { pair: number; index: 0 | 1 } {
  if (!Number.isInteger(ring) || ring < 0) throw new RangeError(`ring ${ring} is not a ring number`);
  return { pair: ring >> 1, index: (ring & 1) as 0 | 1 };
}

/** The device ring number of ring `index` (0 receive, 1 transmit) of queue pair `pair`. */
export const pairRing = (pair: number, index: 0 | 1): number => 2 * pair + index;

/** `ring 3 (pair 1 TX)`: how log lines name a ring (RX: the guest receives, TX: it transmits). */
export function ringName(ring: number): string {
  const { pair, index } = ringToPair(ring);
  return `ring ${ring} (pair ${pair} ${index === 0 ? 'RX' : 'TX'})`;
}
