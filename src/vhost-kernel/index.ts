/**
 * The kernel back end: /dev/vhost-net (one fd per queue pair, one method per ioctl), the tap that
 * carries the frames, and the feature bits the two impose. Nothing here reads guest memory.
 */
export { KernelError } from './errors.js';
export { VHOST, VHOST_VRING_F, VHOST_BACKEND_F, TUN, IFF, TUN_F, SIOC, NETDEV_IFF, IFNAMSIZ } from './ioctls.js';
export { type KernelVringAddr, VRING_STATE, VRING_FILE, VRING_ADDR, IFREQ } from './structs.js';
export { VhostNet, type VhostNetOps, VHOST_NET_PATH, ringToPair, pairRing } from './vhost-net.js';
export { Tap, type TapOpenOptions, TUN_PATH, TAP_FLAGS, MAX_TAP_QUEUES } from './tap.js';
export {
  type OfferInputs, type OfferRule, type Party, OFFER_RULES, NOT_OFFERED, NEVER_TO_KERNEL, BRIDGE_BITS, KERNEL_BITS,
  offerRule, offeredToFrontEnd, explainOffer, toKernel, tapOffloadFlags, vnetHdrSize,
} from './features.js';
