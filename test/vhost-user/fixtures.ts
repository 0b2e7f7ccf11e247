/** Feature words and back-end configurations shared by the vhost-user tests. */
import { maskOf } from '../../src/bits.js';
import { BRIDGE_PROTOCOL_FEATURES } from '../../src/bridge/session.js';
import { VHOST_F, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F, VIRTIO_NET_F } from '../../src/virtio.js';
import type { RecordingConfig } from './recording-backend.js';

/** The protocol features the bridge offers, so these tests drive the dispatcher as the bridge's front-end would. */
export { BRIDGE_PROTOCOL_FEATURES };

/**
 * A virtio-net feature word of the kind a net back end offers QEMU 7.2 (offloads, MRG_RXBUF,
 * CTRL_VQ, MQ, ring bits), plus MTU and LOG_ALL.
 */
export const NET_FEATURES = maskOf(
  VIRTIO_NET_F.CSUM,
  VIRTIO_NET_F.GUEST_CSUM,
  VIRTIO_NET_F.MTU,
  VIRTIO_NET_F.MAC,
  VIRTIO_NET_F.GSO,
  VIRTIO_NET_F.GUEST_TSO4,
  VIRTIO_NET_F.GUEST_TSO6,
  VIRTIO_NET_F.GUEST_UFO,
  VIRTIO_NET_F.HOST_TSO4,
  VIRTIO_NET_F.HOST_TSO6,
  VIRTIO_NET_F.HOST_UFO,
  VIRTIO_NET_F.MRG_RXBUF,
  VIRTIO_NET_F.CTRL_VQ,
  VIRTIO_NET_F.MQ,
  VIRTIO_F.ANY_LAYOUT,
  VIRTIO_F.RING_INDIRECT_DESC,
  VIRTIO_F.RING_EVENT_IDX,
  VHOST_F.LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F.VERSION_1,
);

/** The bridge-like configuration: 2 queue pairs, the bridge's protocol features. */
export const bridgeLike = (over: Partial<RecordingConfig> = {}): RecordingConfig => ({
  features: NET_FEATURES,
  protocolFeatures: BRIDGE_PROTOCOL_FEATURES,
  queuePairs: 2,
  maxMemSlots: 8,
  ...over,
});
