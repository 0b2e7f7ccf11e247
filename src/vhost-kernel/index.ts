/**
 * The kernel back end: /dev/vhost-net (one fd per queue pair, one method per ioctl), the tap that
 * carries the frames, and the feature bits the two impose. Nothing here reads guest memory.
 */
export { KernelError } from './errors.js';
export { TUN, IFF, TUN_F } from './ioctls.js';
export type { KernelVringAddr } from './structs.js';
export { VhostNet, type VhostNetDevice, zeroCopyTx } from './vhost-net.js';
export type { BackendKind, BackendSocket, VnetHdrSocket } from './backend.js';
export { PacketSocket } from './packet.js';
export { Tap, type TapOpenOptions, TUN_PATH, TAP_FLAGS, MAX_TAP_QUEUES, rarpFrame } from './tap.js';
/** The queue numbering is virtio-net's (virtio.ts); re-exported for callers of VhostNet's ring methods. */
export { ringToPair, pairRing } from '../virtio.js';
export {
  BRIDGE_BITS,
  offeredToFrontEnd,
  explainOffer,
  explainWithheld,
  toKernel,
  tapOffloadFlags,
  vnetHdrSize,
} from './features.js';
