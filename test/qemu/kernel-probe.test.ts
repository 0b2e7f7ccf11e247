/**
 * Lab: the kernel probe, through the project's own kernel layer: /dev/vhost-net answers,
 * its features include what a virtio-net guest needs, and a tap with a virtio-net header can be
 * made. Also prints the feature word the bridge would offer on this kernel and tap.
 */
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { describeBits, has, maskOf } from '../../src/bits.js';
import { FEATURE_NAMES, VHOST_F, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F, VIRTIO_NET_F } from '../../src/virtio.js';
import { explainOffer, offeredToFrontEnd, Tap, TAP_FLAGS, toKernel, VhostNet } from '../../src/vhost-kernel/index.js';
import { kernelAtLeast } from '../../lab/host.js';
import { requireLab } from './lab.js';
import { tapName } from './kernel-rig.js';

describe('lab: kernel probe (vhost-net and a vnet_hdr tap, through src/vhost-kernel)', function () {
  this.timeout(60000);
  const cleanup: (() => void)[] = [];

  before(function () {
    requireLab(this);
  });

  afterEach(() => {
    for (const c of cleanup.splice(0).reverse()) c();
  });

  it('opens /dev/vhost-net, SET_OWNER, VHOST_GET_FEATURES includes VERSION_1 and MRG_RXBUF', () => {
    const vn = VhostNet.open(0);
    cleanup.push(() => vn.close());
    vn.setOwner();
    const f = vn.getFeatures();
    console.log(`      VHOST_GET_FEATURES = ${describeBits(f, FEATURE_NAMES)}`);
    console.log(`      VHOST_GET_BACKEND_FEATURES = 0x${vn.getBackendFeatures().toString(16)}`);
    expect(has(f, VIRTIO_F.VERSION_1), 'VERSION_1').to.equal(true);
    expect(has(f, VIRTIO_NET_F.MRG_RXBUF), 'MRG_RXBUF').to.equal(true);
    // The negotiated set QEMU 7.2 acked in the lab, minus what the kernel must not get, is accepted.
    vn.setFeatures(toKernel(0x170008000n, f));
  });

  it("VHOST_GET_FEATURES and VHOST_GET_BACKEND_FEATURES are this kernel's (docs/kernels.md)", () => {
    const vn = VhostNet.open(0);
    cleanup.push(() => vn.close());
    vn.setOwner();
    // drivers/vhost/net.c VHOST_NET_FEATURES; bit 27 is VHOST_NET_F_VIRTIO_NET_HDR to vhost-net.
    const base = maskOf(
      VIRTIO_NET_F.MRG_RXBUF,
      VIRTIO_F.NOTIFY_ON_EMPTY,
      VHOST_F.LOG_ALL,
      VHOST_F.NET_VIRTIO_NET_HDR,
      VIRTIO_F.RING_INDIRECT_DESC,
      VIRTIO_F.RING_EVENT_IDX,
      VIRTIO_F.VERSION_1,
      VIRTIO_F.ACCESS_PLATFORM,
    );
    // RING_RESET came after 6.1 ("vhost-net: support VIRTIO_F_RING_RESET"); the bridge does not offer it.
    const expected = kernelAtLeast(6, 2) ? base | maskOf(VIRTIO_F.RING_RESET) : base;
    expect(describeBits(vn.getFeatures(), FEATURE_NAMES)).to.equal(describeBits(expected, FEATURE_NAMES));
    // VHOST_NET_BACKEND_FEATURES: 1 << VHOST_BACKEND_F_IOTLB_MSG_V2 on both.
    expect(vn.getBackendFeatures()).to.equal(0x2n);
  });

  it('creates a tap with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR that ip link lists with vnet_hdr on', () => {
    console.log(`      TUNGETFEATURES = 0x${Tap.tunFeatures().toString(16)}`);
    const tap = Tap.open(tapName('i3'));
    cleanup.push(() => tap.close());
    expect(tap.flags & TAP_FLAGS).to.equal(TAP_FLAGS);
    expect(execFileSync('ip', ['link', 'show', tap.name], { encoding: 'utf8' })).to.contain(`: ${tap.name}: `);
    const details = execFileSync('ip', ['-d', 'link', 'show', tap.name], { encoding: 'utf8' });
    console.log(
      `      ${details
        .trim()
        .split('\n')
        .map((l) => l.trim())
        .join('\n      ')}`,
    );
    expect(details).to.match(/tun type tap pi off vnet_hdr on/);
    tap.close();
    expect(spawnSync('ip', ['link', 'show', tap.name]).status, 'gone after close').to.not.equal(0);
  });

  it('the feature word the bridge would offer with this kernel and tap, every bit with its reason', () => {
    const vn = VhostNet.open(0);
    cleanup.push(() => vn.close());
    const tap = Tap.open(tapName('of'));
    cleanup.push(() => tap.close());
    const inputs = {
      kernel: vn.getFeatures(),
      tapOffloads: tap.probeOffloads(),
      vnetHdr: true,
      queuePairs: 1,
      bridgeBits: [VHOST_USER_F_PROTOCOL_FEATURES, VHOST_F.LOG_ALL],
    };
    const offer = offeredToFrontEnd(inputs);
    console.log(`      offered: ${describeBits(offer, FEATURE_NAMES)}`);
    for (const r of explainOffer(inputs))
      console.log(`        ${String(r.bit).padStart(2)} ${FEATURE_NAMES[r.bit]} [${r.party}]: ${r.why}`);
    expect(has(offer, VHOST_F.NET_VIRTIO_NET_HDR)).to.equal(false);
    expect(has(offer, VIRTIO_F.ACCESS_PLATFORM)).to.equal(false);
    const wanted = maskOf(
      VIRTIO_F.VERSION_1,
      VIRTIO_NET_F.MRG_RXBUF,
      VIRTIO_NET_F.CSUM,
      VIRTIO_NET_F.GUEST_CSUM,
      VIRTIO_NET_F.GUEST_TSO4,
      VIRTIO_NET_F.HOST_TSO4,
    );
    expect(offer & wanted).to.equal(wanted);
  });
});
