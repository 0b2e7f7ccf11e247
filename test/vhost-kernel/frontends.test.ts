/**
 * The bridge's answers (the feature word of GET_FEATURES, GET_QUEUE_NUM) against what each front-end
 * does with them, for every offer the bridge can make: 1 and 2 queue pairs, a tap, a macvtap and a
 * packet socket, the lab's kernels (Linux 6.1 and 6.12). Each front-end's rule is written here from
 * its source (docs/frontends.md has the reasoning and the commits read):
 * - QEMU (7.2 and 10): hw/net/vhost_net.c `user_feature_bits` masks the offer; the bits outside
 *   the list are QEMU's own device's (CTRL_VQ among them); `queues=` (pairs) <= GET_QUEUE_NUM.
 * - cloud-hypervisor v54: virtio-devices/src/vhost_user/net.rs masks the offer with its own list
 *   (which has CTRL_VQ), shows the guest the rest, adds STATUS and GUEST_ANNOUNCE when CTRL_VQ
 *   came through; `num_queues` (virtqueues) <= GET_QUEUE_NUM.
 * - DPDK virtio-user (drivers/net/virtio/virtio_user/virtio_user_dev.c): masks with
 *   VIRTIO_USER_SUPPORTED_FEATURES, adds CTRL_VQ itself with a control queue (cq=1, or more than one
 *   pair) and drops the bits that need it without one; it never sends GET_QUEUE_NUM.
 * Each guest word must keep virtio 1.2 5.1.3.1 (specViolations), and what each front-end sends in
 * SET_FEATURES must reach the kernel as ring bits only.
 */
import { expect } from 'chai';
import { bitsOf, has, maskOf } from '../../src/bits.js';
import {
  KERNEL_BITS,
  type OfferInputs,
  offeredToFrontEnd,
  specViolations,
  toKernel,
} from '../../src/vhost-kernel/features.js';
import { FEATURE_NAMES, VHOST_F, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F, VIRTIO_NET_F } from '../../src/virtio.js';
import { callsTo, fakePort, LAB_KERNEL_FEATURES } from '../bridge/fake-kernel.js';

const N = VIRTIO_NET_F;
const F = VIRTIO_F;
const PF = VHOST_USER_F_PROTOCOL_FEATURES;
const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };

/** VHOST_GET_FEATURES of the lab's kernels: Linux 6.1 (test/bridge/fake-kernel.ts), 6.12 adds RING_RESET. */
const KERNELS = { '6.1': LAB_KERNEL_FEATURES, '6.12': LAB_KERNEL_FEATURES | maskOf(F.RING_RESET) };
/** Tap and macvtap offloads the probe reports: 6.1 CSUM|TSO4|TSO6|TSO_ECN|UFO; 6.12 also USO4|USO6. */
const TAP_OFFLOADS = { '6.1': 0x1f, '6.12': 0x7f };
const BRIDGE_BITS = [PF, VHOST_F.LOG_ALL, N.MTU];

interface Offer {
  what: string;
  inputs: OfferInputs;
}

/** Every offer: pairs x backend kind x kernel. A packet socket serves one pair (packet.ts refuses more). */
const OFFERS: Offer[] = [];
for (const [k, kernel] of Object.entries(KERNELS))
  for (const queuePairs of [1, 2])
    for (const backend of ['tap', 'macvtap', 'packet'] as const) {
      if (backend === 'packet' && queuePairs > 1) continue;
      const vnetHdr = backend !== 'packet';
      const tapOffloads = vnetHdr ? TAP_OFFLOADS[k as keyof typeof TAP_OFFLOADS] : 0;
      OFFERS.push({
        what: `${backend}, ${queuePairs} pair(s), Linux ${k}`,
        inputs: { kernel, tapOffloads, vnetHdr, queuePairs, bridgeBits: BRIDGE_BITS },
      });
    }

const names = (w: bigint) => bitsOf(w).map((b) => FEATURE_NAMES[b] ?? `bit ${b}`);

// ---- QEMU ---------------------------------------------------------------------------------------

/**
 * QEMU 10 hw/net/vhost_net.c `user_feature_bits` (pbo-linaro/qemu-ci 51651ef7, QEMU 10.x): the bits
 * QEMU takes from the back-end's word; all others are its own device's.
 */
const QEMU_10_USER_FEATURE_BITS = [
  F.NOTIFY_ON_EMPTY,
  F.NOTIFICATION_DATA,
  F.RING_INDIRECT_DESC,
  F.RING_EVENT_IDX,
  F.ANY_LAYOUT,
  F.VERSION_1,
  N.CSUM,
  N.GUEST_CSUM,
  N.GSO,
  N.GUEST_TSO4,
  N.GUEST_TSO6,
  N.GUEST_ECN,
  N.GUEST_UFO,
  N.HOST_TSO4,
  N.HOST_TSO6,
  N.HOST_ECN,
  N.HOST_UFO,
  N.MRG_RXBUF,
  N.MTU,
  F.ACCESS_PLATFORM,
  F.RING_PACKED,
  F.RING_RESET,
  F.IN_ORDER,
  N.RSS,
  N.RSC_EXT,
  N.HASH_REPORT,
  N.GUEST_USO4,
  N.GUEST_USO6,
  N.HOST_USO,
  N.GUEST_ANNOUNCE,
  N.MQ,
];
/**
 * QEMU 7.2's list: the same without NOTIFICATION_DATA, IN_ORDER, RSC_EXT and the USO bits (later
 * additions). The lab's transcript shows it: a back-end offering CTRL_VQ and MAC got a SET_FEATURES
 * without them (../shared/research/qemu72-vhost-user-transcript.txt, run A).
 */
const QEMU_72_USER_FEATURE_BITS = QEMU_10_USER_FEATURE_BITS.filter(
  (b) =>
    !([F.NOTIFICATION_DATA, F.IN_ORDER, N.RSC_EXT, N.GUEST_USO4, N.GUEST_USO6, N.HOST_USO] as number[]).includes(b),
);

/** QEMU's virtio-net-pci with its defaults (hw/net/virtio-net.c properties), mq=on when several pairs. */
function qemuDevice(pairs: number, uso: boolean): bigint {
  const own: number[] = [N.CSUM, N.GUEST_CSUM, N.GSO, N.GUEST_TSO4, N.GUEST_TSO6, N.GUEST_ECN, N.GUEST_UFO];
  own.push(N.HOST_TSO4, N.HOST_TSO6, N.HOST_ECN, N.HOST_UFO, N.MRG_RXBUF, N.STATUS, N.MAC);
  own.push(N.CTRL_VQ, N.CTRL_RX, N.CTRL_VLAN, N.CTRL_RX_EXTRA, N.CTRL_MAC_ADDR, N.CTRL_GUEST_OFFLOADS);
  own.push(N.GUEST_ANNOUNCE, F.VERSION_1, F.RING_INDIRECT_DESC, F.RING_EVENT_IDX, F.NOTIFY_ON_EMPTY, F.ANY_LAYOUT);
  if (uso) own.push(N.GUEST_USO4, N.GUEST_USO6, N.HOST_USO);
  if (pairs > 1) own.push(N.MQ);
  return maskOf(...own);
}

/** vhost_get_features: a listed bit stays only if the back-end offers it. */
const qemuGuestWord = (device: bigint, list: number[], offer: bigint) => device & (~maskOf(...list) | offer);
/** vhost_ack_features: only listed bits go to SET_FEATURES, with PROTOCOL_FEATURES (QEMU's backend_features). */
const qemuSetFeatures = (acked: bigint, list: number[], offer: bigint) =>
  (acked & maskOf(...list)) | (offer & maskOf(PF));

const QEMUS = [
  { name: 'QEMU 7.2', list: QEMU_72_USER_FEATURE_BITS, uso: false },
  { name: 'QEMU 10', list: QEMU_10_USER_FEATURE_BITS, uso: true },
];

// ---- cloud-hypervisor ---------------------------------------------------------------------------

/** cloud-hypervisor v54 (ae44c297) net.rs backend_avail_features with mod.rs DEFAULT_VIRTIO_FEATURES. */
function chList(o: { csum: boolean; tso: boolean; ufo: boolean }): bigint {
  const l: number[] = [N.MRG_RXBUF, N.CTRL_VQ, N.GUEST_ANNOUNCE, N.MAC, N.MTU, N.MQ];
  l.push(F.RING_INDIRECT_DESC, F.RING_EVENT_IDX, F.VERSION_1, F.IN_ORDER, F.ORDER_PLATFORM, F.NOTIFICATION_DATA);
  l.push(PF, VHOST_F.LOG_ALL);
  if (o.csum) {
    l.push(N.CSUM, N.GUEST_CSUM);
    if (o.tso) l.push(N.HOST_ECN, N.HOST_TSO4, N.HOST_TSO6, N.GUEST_ECN, N.GUEST_TSO4, N.GUEST_TSO6);
    if (o.ufo) l.push(N.HOST_UFO, N.GUEST_UFO);
  }
  return maskOf(...l);
}

/** net.rs guest_avail_features: the acked back-end word, MAC, STATUS and GUEST_ANNOUNCE with CTRL_VQ, MTU. */
function chGuestWord(backendAcked: bigint): bigint {
  let w = backendAcked | maskOf(N.MAC, N.MTU);
  if (has(w, N.CTRL_VQ)) w |= maskOf(N.STATUS, N.GUEST_ANNOUNCE);
  return w & ~maskOf(PF, VHOST_F.LOG_ALL); // vhost-user's bits, not the guest's (bit 30 is reserved)
}

const CH_OFFLOADS = [
  { csum: true, tso: true, ufo: true },
  { csum: false, tso: false, ufo: false },
];

// ---- DPDK virtio-user ---------------------------------------------------------------------------

/** virtio_user_dev.c VIRTIO_USER_SUPPORTED_FEATURES (DPDK 38f72e50). */
const DPDK_SUPPORTED = maskOf(
  N.MAC,
  N.STATUS,
  N.MQ,
  N.CTRL_MAC_ADDR,
  N.CTRL_VQ,
  N.CTRL_RX,
  N.CTRL_VLAN,
  N.CSUM,
  N.HOST_TSO4,
  N.HOST_TSO6,
  N.MRG_RXBUF,
  F.RING_INDIRECT_DESC,
  N.GUEST_CSUM,
  N.GUEST_TSO4,
  N.GUEST_TSO6,
  F.IN_ORDER,
  F.VERSION_1,
  F.RING_PACKED,
  F.NOTIFICATION_DATA,
  F.ORDER_PLATFORM,
  N.HASH_REPORT,
  N.RSS,
);

/**
 * virtio_user_dev_init with the vhost-user back end (whose backend features are PROTOCOL_FEATURES):
 * the device word masked, the control queue claimed by the front-end or its dependents dropped,
 * STATUS added. Returns what the PMD sees and what virtio_user_dev_set_features sends.
 */
function dpdk(offer: bigint, queues: number, cq: boolean) {
  let unsupported = ~(DPDK_SUPPORTED | maskOf(PF));
  let frontend = 0n;
  const ctrl = cq || queues > 1;
  if (ctrl) frontend |= maskOf(N.CTRL_VQ);
  else unsupported |= maskOf(N.CTRL_VQ, N.CTRL_RX, N.CTRL_VLAN, N.GUEST_ANNOUNCE, N.MQ, N.CTRL_MAC_ADDR);
  frontend |= maskOf(N.STATUS);
  frontend &= ~unsupported;
  const device = offer & ~unsupported;
  const guest = device | frontend;
  const sent = guest & ~maskOf(N.MAC, N.CTRL_VQ, N.STATUS);
  return { guest, sent };
}

// ---- the checks ---------------------------------------------------------------------------------

/** What reaches VHOST_SET_FEATURES when a front-end sends `sent`: ring bits the kernel offered only. */
function expectKernelGetsRingBitsOnly(sent: bigint, offer: bigint, kernel: bigint, what: string) {
  expect(sent & ~offer, `${what}: SET_FEATURES within the offer`).to.equal(0n);
  const k = toKernel(sent, kernel);
  expect(k & ~(kernel & maskOf(...KERNEL_BITS)), `${what}: the kernel gets its ring bits only`).to.equal(0n);
  for (const b of [N.CTRL_VQ, N.GUEST_ANNOUNCE, N.MQ, PF])
    expect(has(k, b), `${what}: ${FEATURE_NAMES[b]}`).to.equal(false);
}

describe('front-ends: the offer obeys virtio 1.2 5.1.3.1', () => {
  it(`no offer breaks a feature dependency (${OFFERS.length} offers)`, () => {
    for (const { what, inputs } of OFFERS) {
      const offer = offeredToFrontEnd(inputs);
      expect(specViolations(offer), `${what}: ${names(offer).join(' ')}`).to.deep.equal([]);
      expect(has(offer, N.CTRL_VQ), `${what}: CTRL_VQ`).to.equal(true);
      expect(has(offer, N.MQ), `${what}: MQ iff several pairs`).to.equal(inputs.queuePairs > 1);
    }
  });

  it('specViolations names each broken dependency (the word the bridge offered before CTRL_VQ)', () => {
    const old = offeredToFrontEnd(OFFERS.find((o) => o.inputs.queuePairs === 2)!.inputs) & ~maskOf(N.CTRL_VQ);
    expect(specViolations(old)).to.deep.equal(['GUEST_ANNOUNCE without CTRL_VQ', 'MQ without CTRL_VQ']);
    expect(specViolations(maskOf(N.GUEST_ECN, N.GUEST_CSUM))).to.deep.equal([
      'GUEST_ECN without GUEST_TSO4 or GUEST_TSO6',
    ]);
    expect(specViolations(maskOf(N.HOST_TSO4))).to.deep.equal(['HOST_TSO4 without CSUM']);
  });
});

describe("front-ends: each front-end's rule against every offer", () => {
  for (const q of QEMUS) {
    it(`${q.name}: its mask of the offer leaves the guest a valid word, and the kernel ring bits only`, () => {
      for (const { what, inputs } of OFFERS) {
        const offer = offeredToFrontEnd(inputs);
        const guest = qemuGuestWord(qemuDevice(inputs.queuePairs, q.uso), q.list, offer);
        expect(specViolations(guest), `${q.name}, ${what}: ${names(guest).join(' ')}`).to.deep.equal([]);
        expect(has(guest, N.CTRL_VQ), 'QEMU keeps its own control queue').to.equal(true);
        expect(has(guest, N.MQ), 'MQ with several pairs').to.equal(inputs.queuePairs > 1);
        expectKernelGetsRingBitsOnly(qemuSetFeatures(guest, q.list, offer), offer, inputs.kernel, `${q.name}, ${what}`);
      }
    });
  }

  it('cloud-hypervisor: the offer passed to the guest (with its offloads on and off) is a valid device', () => {
    for (const { what, inputs } of OFFERS)
      for (const o of CH_OFFLOADS) {
        const offer = offeredToFrontEnd(inputs);
        const acked = chList(o) & offer;
        const guest = chGuestWord(acked);
        const label = `cloud-hypervisor ${JSON.stringify(o)}, ${what}: ${names(guest).join(' ')}`;
        expect(specViolations(guest), label).to.deep.equal([]);
        expect(has(guest, N.CTRL_VQ), `${label}: its own control queue`).to.equal(true);
        // SET_FEATURES is what the guest acked, masked with the back-end's word (vu_common_ctrl.rs setup_vhost_user).
        expectKernelGetsRingBitsOnly(guest & offer, offer, inputs.kernel, label);
      }
  });

  it('cloud-hypervisor with the offer as it was (no CTRL_VQ): the guest word is the invalid one Linux refused', () => {
    const offer = offeredToFrontEnd(OFFERS[0].inputs) & ~maskOf(N.CTRL_VQ);
    expect(specViolations(chGuestWord(chList(CH_OFFLOADS[0]) & offer))).to.deep.equal([
      'GUEST_ANNOUNCE without CTRL_VQ',
    ]);
  });

  it('DPDK virtio-user, with and without a control queue: a valid word, CTRL_VQ never sent to the bridge', () => {
    for (const { what, inputs } of OFFERS)
      for (const queues of [1, inputs.queuePairs])
        for (const cq of [false, true]) {
          const offer = offeredToFrontEnd(inputs);
          const { guest, sent } = dpdk(offer, queues, cq);
          const label = `DPDK queues=${queues} cq=${cq ? 1 : 0}, ${what}: ${names(guest).join(' ')}`;
          expect(specViolations(guest), label).to.deep.equal([]);
          expect(has(guest, N.CTRL_VQ), `${label}: control queue`).to.equal(cq || queues > 1);
          expectKernelGetsRingBitsOnly(sent, offer, inputs.kernel, label);
        }
  });
});

describe('front-ends: GET_QUEUE_NUM read as pairs and as virtqueues', () => {
  for (const pairs of [1, 2]) {
    it(`${pairs} pair(s): QEMU's queues=${pairs} and cloud-hypervisor's num_queues=${2 * pairs} both start`, () => {
      const inputs = OFFERS.find((o) => o.inputs.queuePairs === pairs)!.inputs;
      const { session, journal } = fakePort({ queuePairs: pairs, offered: offeredToFrontEnd(inputs), log: quiet });
      try {
        const answer = Number(session.getQueueNum());
        expect(answer, 'virtqueues: two per pair').to.equal(2 * pairs);
        expect(session.ringCount(), 'one ring per virtqueue').to.equal(answer);
        // QEMU net/vhost-user.c vhost_user_start: "you are asking more queues than supported" if queues > answer.
        expect(pairs <= answer, 'QEMU queues= (pairs) passes').to.equal(true);
        // cloud-hypervisor net.rs: "requested too many queues" if num_queues > answer.
        expect(2 * pairs <= answer, 'cloud-hypervisor num_queues (virtqueues) passes').to.equal(true);
        expect(2 * pairs + 2 <= answer, 'cloud-hypervisor asking one pair more is refused by itself').to.equal(false);
        // Every ring of the configured pairs exists (QEMU and DPDK index pair p's rings 2p and 2p+1).
        for (let r = 0; r < 2 * pairs; r++) expect(r).to.be.below(session.ringCount());
        // What cloud-hypervisor sends (the guest's ack, CTRL_VQ in it) reaches the kernel as ring bits only.
        const offer = offeredToFrontEnd(inputs);
        session.connected();
        session.setOwner();
        session.setFeatures(chGuestWord(chList(CH_OFFLOADS[0]) & offer) & offer);
        const set = Array.from({ length: pairs }, (_, p) => callsTo(journal, `vhost${p}`))
          .flat()
          .filter((c) => c.op === 'setFeatures');
        expect(set, 'VHOST_SET_FEATURES per pair').to.have.length(pairs);
        for (const c of set) {
          expect((c.features as bigint) & ~LAB_KERNEL_FEATURES, 'only what the kernel offered').to.equal(0n);
          expect(has(c.features as bigint, N.CTRL_VQ), 'CTRL_VQ stays out').to.equal(false);
        }
      } finally {
        session.disconnected();
      }
    });
  }
});
