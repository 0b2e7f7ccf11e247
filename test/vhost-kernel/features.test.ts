/**
 * features.ts with the lab's real values (Linux 6.1 VHOST_GET_FEATURES 0x33d008000, tap
 * offloads 0x1f, QEMU 7.2 acking 0x170008000), and table-driven checks that every bit the bridge
 * offers, or gives the kernel, is explained by a rule.
 */
import { expect } from 'chai';
import { bitsOf, has, maskOf } from '../../src/bits.js';
import { FEATURE_NAMES, VHOST_F, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F, VIRTIO_NET_F } from '../../src/virtio.js';
import {
  BRIDGE_BITS,
  explainOffer,
  explainWithheld,
  KERNEL_BITS,
  NEVER_TO_KERNEL,
  NOT_OFFERED,
  OFFER_RULES,
  offeredToFrontEnd,
  offerRule,
  type OfferInputs,
  tapOffloadFlags,
  toKernel,
  vnetHdrSize,
} from '../../src/vhost-kernel/features.js';
import { TUN_F } from '../../src/vhost-kernel/ioctls.js';

/**
 * Linux 6.1 (lab): MRG_RXBUF, NOTIFY_ON_EMPTY, LOG_ALL, bit 27, INDIRECT_DESC, EVENT_IDX, VERSION_1,
 * ACCESS_PLATFORM.
 */
const KERNEL_61 = 0x33d008000n;
/** TUNSETOFFLOAD probe on Linux 6.1: CSUM, TSO4, TSO6, TSO_ECN, UFO. */
const TAP_61 = 0x1f;
const BRIDGE = [VHOST_USER_F_PROTOCOL_FEATURES, VHOST_F.LOG_ALL];
const lab: OfferInputs = { kernel: KERNEL_61, tapOffloads: TAP_61, vnetHdr: true, queuePairs: 1, bridgeBits: BRIDGE };

const N = VIRTIO_NET_F;

describe("vhost-kernel: features with the lab's values", () => {
  const labOffer =
    "offers the kernel's ring bits without 27 and ACCESS_PLATFORM, the tap's offloads, CTRL_VQ, GUEST_ANNOUNCE " +
    "and the bridge's bits: 0x17522ff83";
  it(labOffer, () => {
    const offer = offeredToFrontEnd(lab);
    // The lab probe (test/qemu/kernel-probe.test.ts) printed 0x17520ff83 before CTRL_VQ (bit 17) was offered.
    expect(offer).to.equal(0x17522ff83n);
    expect(bitsOf(offer)).to.deep.equal([
      N.CSUM,
      N.GUEST_CSUM,
      N.GUEST_TSO4,
      N.GUEST_TSO6,
      N.GUEST_ECN,
      N.GUEST_UFO,
      N.HOST_TSO4,
      N.HOST_TSO6,
      N.HOST_ECN,
      N.HOST_UFO,
      N.MRG_RXBUF,
      N.CTRL_VQ,
      N.GUEST_ANNOUNCE,
      VIRTIO_F.NOTIFY_ON_EMPTY,
      VHOST_F.LOG_ALL,
      VIRTIO_F.RING_INDIRECT_DESC,
      VIRTIO_F.RING_EVENT_IDX,
      VHOST_USER_F_PROTOCOL_FEATURES,
      VIRTIO_F.VERSION_1,
    ]);
  });

  it("the ring part of the offer is the reference run's 0x175008000 (offloads and control-queue bits on top)", () => {
    const ringPart =
      offeredToFrontEnd({ ...lab, tapOffloads: 0 }) &
      ~maskOf(N.CSUM, N.HOST_TSO4, N.HOST_TSO6, N.HOST_ECN, N.CTRL_VQ, N.GUEST_ANNOUNCE);
    expect(ringPart).to.equal(0x175008000n);
  });

  it('QEMU 7.2 acked 0x170008000: the kernel gets 0x130008000 (PROTOCOL_FEATURES removed)', () => {
    expect(toKernel(0x170008000n, KERNEL_61)).to.equal(0x130008000n);
  });

  const kernelGetsOffered =
    'whatever the front-end acks of the offer, the kernel gets only bits it offered, never 27 or ACCESS_PLATFORM';
  it(kernelGetsOffered, () => {
    const all = offeredToFrontEnd(lab);
    const k = toKernel(all, KERNEL_61);
    expect(k & ~KERNEL_61).to.equal(0n);
    expect(k).to.equal(
      maskOf(
        N.MRG_RXBUF,
        VIRTIO_F.NOTIFY_ON_EMPTY,
        VHOST_F.LOG_ALL,
        VIRTIO_F.RING_INDIRECT_DESC,
        VIRTIO_F.RING_EVENT_IDX,
        VIRTIO_F.VERSION_1,
      ),
    );
    // Even if 27 and 33 were somehow negotiated, they do not reach the kernel.
    expect(
      toKernel(maskOf(VHOST_F.NET_VIRTIO_NET_HDR, VIRTIO_F.ACCESS_PLATFORM, VIRTIO_F.VERSION_1), KERNEL_61),
    ).to.equal(maskOf(VIRTIO_F.VERSION_1));
  });

  const conditionalBits =
    'MQ only with several queue pairs; LOG_ALL only if both kernel and bridge do it; MTU only if the bridge does';
  it(conditionalBits, () => {
    expect(has(offeredToFrontEnd(lab), N.MQ)).to.equal(false);
    expect(has(offeredToFrontEnd({ ...lab, queuePairs: 2 }), N.MQ)).to.equal(true);
    expect(has(offeredToFrontEnd({ ...lab, bridgeBits: [VHOST_USER_F_PROTOCOL_FEATURES] }), VHOST_F.LOG_ALL)).to.equal(
      false,
    );
    expect(has(offeredToFrontEnd({ ...lab, kernel: KERNEL_61 & ~maskOf(VHOST_F.LOG_ALL) }), VHOST_F.LOG_ALL)).to.equal(
      false,
    );
    expect(has(offeredToFrontEnd(lab), N.MTU)).to.equal(false);
    expect(has(offeredToFrontEnd({ ...lab, bridgeBits: [...BRIDGE, N.MTU] }), N.MTU)).to.equal(true);
  });

  const offloadsFollowTap =
    'guest offloads follow the tap: none accepted, none offered; HOST_UFO needs TUN_F_UFO; USO needs USO4+USO6';
  it(offloadsFollowTap, () => {
    const none = offeredToFrontEnd({ ...lab, tapOffloads: 0 });
    for (const b of [N.GUEST_CSUM, N.GUEST_TSO4, N.GUEST_TSO6, N.GUEST_ECN, N.GUEST_UFO, N.HOST_UFO])
      expect(has(none, b), FEATURE_NAMES[b]).to.equal(false);
    for (const b of [N.CSUM, N.HOST_TSO4, N.HOST_TSO6, N.HOST_ECN])
      expect(has(none, b), FEATURE_NAMES[b]).to.equal(true);
    expect(has(offeredToFrontEnd(lab), N.HOST_USO)).to.equal(false);
    const uso = offeredToFrontEnd({ ...lab, tapOffloads: 0x7f });
    for (const b of [N.GUEST_USO4, N.GUEST_USO6, N.HOST_USO]) expect(has(uso, b), FEATURE_NAMES[b]).to.equal(true);
    // TSO without CSUM is not something the tap accepts (tun.c set_offload), so not offered either.
    expect(has(offeredToFrontEnd({ ...lab, tapOffloads: TUN_F.TSO4 }), N.GUEST_TSO4)).to.equal(false);
  });

  it('refuses bridge bits no rule explains', () => {
    expect(() => offeredToFrontEnd({ ...lab, bridgeBits: [N.CTRL_VQ] })).to.throw(
      RangeError,
      /bridge bit 17 is not one the bridge can implement/,
    );
    expect(() => offeredToFrontEnd({ ...lab, bridgeBits: [VIRTIO_F.VERSION_1] })).to.throw(RangeError, /bridge bit 32/);
  });

  it('explainOffer lists each offered bit once, in order, with its party and reason', () => {
    const ex = explainOffer(lab);
    expect(ex.map((r) => r.bit)).to.deep.equal(bitsOf(offeredToFrontEnd(lab)));
    expect(ex.find((r) => r.bit === VIRTIO_F.VERSION_1)?.party).to.equal('kernel');
  });
});

describe('vhost-kernel: features on a packet socket (no virtio-net header)', () => {
  const raw: OfferInputs = { ...lab, tapOffloads: 0, vnetHdr: false };
  const OFFLOADS = [N.CSUM, N.HOST_TSO4, N.HOST_TSO6, N.HOST_ECN, N.HOST_UFO, N.HOST_USO, N.GUEST_CSUM, N.GUEST_TSO4];

  it('offers the ring bits, CTRL_VQ, GUEST_ANNOUNCE and the bridge bits, and no offload: 0x175008000 and those', () => {
    const offer = offeredToFrontEnd(raw);
    expect(offer).to.equal(0x1_7500_8000n | maskOf(N.CTRL_VQ, N.GUEST_ANNOUNCE));
    for (const b of OFFLOADS) expect(has(offer, b), FEATURE_NAMES[b]).to.equal(false);
    expect(has(offer, N.MRG_RXBUF), 'vhost-net writes num_buffers after its own header').to.equal(true);
  });

  it('gives the kernel bit 27 (vhost-net adds and strips the header), only on such a socket', () => {
    expect(toKernel(0x170008000n, KERNEL_61, false)).to.equal(0x138008000n);
    expect(toKernel(0x170008000n, KERNEL_61, true)).to.equal(0x130008000n);
    expect(toKernel(0x170008000n, KERNEL_61 & ~maskOf(VHOST_F.NET_VIRTIO_NET_HDR), false), 'not offered').to.equal(
      0x130008000n,
    );
  });

  it('explains every offload a tap would have carried as withheld, with the reason; nothing on a tap', () => {
    const w = explainWithheld(raw);
    const tapOnly: number[] = [N.CSUM, N.GUEST_CSUM, N.GUEST_TSO4, N.GUEST_TSO6, N.GUEST_ECN, N.GUEST_UFO];
    tapOnly.push(N.HOST_TSO4, N.HOST_TSO6, N.HOST_ECN, N.HOST_UFO, N.GUEST_USO4, N.GUEST_USO6, N.HOST_USO);
    expect(w.map((r) => r.bit)).to.deep.equal(tapOnly.sort((a, b) => a - b));
    for (const r of w) expect(r.why).to.match(/packet socket carries bare frames, no virtio-net header/);
    expect(explainWithheld(lab)).to.deep.equal([]);
  });
});

describe('vhost-kernel: tap offloads and header size from the negotiated set', () => {
  const cases: [string, number[], number][] = [
    ['nothing', [], 0],
    ['TSO without GUEST_CSUM: nothing (TSO needs CSUM)', [N.GUEST_TSO4, N.GUEST_TSO6], 0],
    ['GUEST_CSUM', [N.GUEST_CSUM], TUN_F.CSUM],
    ['CSUM + TSO4', [N.GUEST_CSUM, N.GUEST_TSO4], TUN_F.CSUM | TUN_F.TSO4],
    ['ECN without TSO: no TSO_ECN', [N.GUEST_CSUM, N.GUEST_ECN], TUN_F.CSUM],
    ['CSUM + TSO6 + ECN', [N.GUEST_CSUM, N.GUEST_TSO6, N.GUEST_ECN], TUN_F.CSUM | TUN_F.TSO6 | TUN_F.TSO_ECN],
    ['all of Linux 6.1', [N.GUEST_CSUM, N.GUEST_TSO4, N.GUEST_TSO6, N.GUEST_ECN, N.GUEST_UFO], 0x1f],
    ['USO', [N.GUEST_CSUM, N.GUEST_USO4, N.GUEST_USO6], TUN_F.CSUM | TUN_F.USO4 | TUN_F.USO6],
    ['HOST_ bits do not matter (they are about what the tap accepts)', [N.CSUM, N.HOST_TSO4, N.HOST_UFO], 0],
  ];
  for (const [what, bits, flags] of cases) {
    it(`tapOffloadFlags: ${what} -> 0x${flags.toString(16)}`, () =>
      expect(tapOffloadFlags(maskOf(...bits))).to.equal(flags));
  }

  it('vnetHdrSize: 12 with MRG_RXBUF or VERSION_1, else 10', () => {
    expect(vnetHdrSize(0n)).to.equal(10);
    expect(vnetHdrSize(maskOf(N.CSUM))).to.equal(10);
    expect(vnetHdrSize(maskOf(N.MRG_RXBUF))).to.equal(12);
    expect(vnetHdrSize(maskOf(VIRTIO_F.VERSION_1))).to.equal(12);
    expect(vnetHdrSize(0x170008000n)).to.equal(12);
  });
});

describe('vhost-kernel: every bit explained', () => {
  const allRules = [...OFFER_RULES.map((r) => r.bit), ...NOT_OFFERED.map((r) => r.bit)];

  it('each bit has at most one rule, offered or not, and every rule says why', () => {
    expect(new Set(allRules).size).to.equal(allRules.length);
    for (const r of [...OFFER_RULES, ...NOT_OFFERED]) expect(r.why.length, `bit ${r.bit}`).to.be.greaterThan(20);
  });

  it('every bit src/virtio.ts names is either offered under a rule or listed as not offered', () => {
    for (const n of Object.keys(FEATURE_NAMES).map(Number)) {
      expect(allRules, `bit ${n} (${FEATURE_NAMES[n]}) has no rule`).to.include(n);
    }
  });

  it('BRIDGE_BITS and KERNEL_BITS each have offer rules; the kernel list is the ring bits plus LOG_ALL', () => {
    for (const n of BRIDGE_BITS) expect(offerRule(n), `bridge bit ${n}`).to.not.equal(undefined);
    expect([...KERNEL_BITS].sort((a, b) => a - b)).to.deep.equal([
      N.MRG_RXBUF,
      VIRTIO_F.NOTIFY_ON_EMPTY,
      VHOST_F.LOG_ALL,
      VIRTIO_F.RING_INDIRECT_DESC,
      VIRTIO_F.RING_EVENT_IDX,
      VIRTIO_F.VERSION_1,
    ]);
    // A future kernel offering everything still gets only those.
    expect(toKernel((1n << 64n) - 1n, (1n << 64n) - 1n)).to.equal(maskOf(...KERNEL_BITS));
  });

  it('the kernel is never given a bit it must not get, and those are never offered', () => {
    for (const n of NEVER_TO_KERNEL) {
      expect(offerRule(n), `bit ${n}`).to.equal(undefined);
      expect(NOT_OFFERED.map((r) => r.bit)).to.include(n);
    }
  });

  // A table of inputs, including a future kernel that offers every bit and a tap that accepts
  // every offload: the outputs may only ever contain explained bits.
  const kernels = [KERNEL_61, 0n, (1n << 64n) - 1n, 0x130008000n];
  const taps = [0, TAP_61, 0x7f, TUN_F.CSUM];
  const pairs = [1, 2, 8];
  const bridges = [[], [VHOST_USER_F_PROTOCOL_FEATURES], [VHOST_USER_F_PROTOCOL_FEATURES, VHOST_F.LOG_ALL, N.MTU]];
  const everyBitExplained =
    `every bit of offeredToFrontEnd and toKernel is explained, over ` +
    `${kernels.length * taps.length * pairs.length * bridges.length} input combinations`;
  it(everyBitExplained, () => {
    for (const kernel of kernels)
      for (const tapOffloads of taps)
        for (const queuePairs of pairs)
          for (const bridgeBits of bridges) {
            const i: OfferInputs = { kernel, tapOffloads, vnetHdr: true, queuePairs, bridgeBits };
            const offer = offeredToFrontEnd(i);
            for (const n of bitsOf(offer)) {
              const rule = offerRule(n);
              expect(
                rule,
                `offered bit ${n} for ${JSON.stringify({ ...i, kernel: kernel.toString(16) })}`,
              ).to.not.equal(undefined);
              expect(rule!.when(i)).to.equal(true);
              if (rule!.party === 'kernel')
                expect(has(kernel, n), `kernel bit ${n} offered though the kernel lacks it`).to.equal(true);
            }
            const k = toKernel(offer, kernel);
            expect(k & ~kernel, 'toKernel gives only what the kernel offered').to.equal(0n);
            for (const n of bitsOf(k)) {
              expect(offerRule(n)!.party, `bit ${n} reached the kernel`).to.equal('kernel');
              expect(NEVER_TO_KERNEL).to.not.include(n);
            }
          }
  });
});
