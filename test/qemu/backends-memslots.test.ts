/**
 * Memory slots follow the vhost module's max_mem_regions (docs/backends.md): GET_MAX_MEM_SLOTS
 * announces it, a front-end that adds one region more gets a NACK whose reason names the parameter,
 * and with the module reloaded as `vhost max_mem_regions=509` a synthetic front-end (lab/frontend)
 * uses 509 slots (what virtio-mem users need) and the kernel takes the table. The module is
 * reloaded with its default afterwards. Runs inside L2 only.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { BridgeProcess } from '../../lab/bridge-process.js';
import { ID, msg } from '../../lab/frontend/builder.js';
import { memfd, TestFrontEnd } from '../../lab/frontend/frontend.js';
import { hostTap, reloadVhostModules, removeTap } from '../../lab/host.js';
import { MAX_MEM_REGIONS_PATH } from '../../src/memtable/index.js';
import { maskOf } from '../../src/bits.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F, VIRTIO_NET_F } from '../../src/virtio.js';
import { inLab, requireLab } from './lab.js';

const TAP = 'vbslot0';
const SOCK = '/tmp/vb-slots.sock';
const SLOT = 64n * 1024n;
const QVA = 0x7f00_0000_0000n;
/** vhost-user.rst protocol features: REPLY_ACK 3, CONFIGURE_MEM_SLOTS 15. */
const PROTOCOL = maskOf(3, 15);

function u64(r: Buffer | 'eof', request: number): bigint {
  if (r === 'eof') throw new Error(`the back-end hung up instead of answering request ${request}`);
  expect(r.readUInt32LE(0)).to.equal(request);
  return r.readBigUInt64LE(12);
}

/** Up to SET_FEATURES as QEMU 7.2 sends it, then GET_MAX_MEM_SLOTS; returns the slot count announced. */
async function setUp(fe: TestFrontEnd): Promise<number> {
  const offered = u64(await fe.ask(msg.getFeatures()), ID.GET_FEATURES);
  const protocol = u64(await fe.ask(msg.getProtocolFeatures()), ID.GET_PROTOCOL_FEATURES) & PROTOCOL;
  expect(protocol).to.equal(PROTOCOL);
  fe.send(msg.setProtocolFeatures(protocol));
  expect(u64(await fe.ask(msg.setOwner().needReply()), ID.SET_OWNER)).to.equal(0n);
  const features = offered & maskOf(VIRTIO_F.VERSION_1, VIRTIO_NET_F.MRG_RXBUF, VHOST_USER_F_PROTOCOL_FEATURES);
  expect(u64(await fe.ask(msg.setFeatures(features).needReply()), ID.SET_FEATURES)).to.equal(0n);
  return Number(u64(await fe.ask(msg.getMaxMemSlots()), ID.GET_MAX_MEM_SLOTS));
}

/** ADD_MEM_REG of slot i (64 KiB from its own memfd); the REPLY_ACK value (0 = taken). */
async function addSlot(fe: TestFrontEnd, i: number): Promise<bigint> {
  const r = { gpa: BigInt(i) * SLOT, size: SLOT, qva: QVA + BigInt(i) * SLOT };
  return u64(await fe.ask(msg.addMemReg(r).needReply(), [memfd(SLOT, 'vb-slot')]), ID.ADD_MEM_REG);
}

const param = (): number => Number(readFileSync(MAX_MEM_REGIONS_PATH, 'utf8').trim());

describe('memory slots: max_mem_regions, 509 slots after a module reload (lab)', function () {
  this.timeout(240_000);
  let reloaded = false;

  before(function () {
    requireLab(this);
    hostTap(TAP, { ip: '10.0.7.1/24' });
  });

  after(async function () {
    this.timeout(60_000);
    if (reloaded) await reloadVhostModules();
    if (inLab()) removeTap(TAP);
  });

  /** A bridge, a front-end that fills `n` slots and asks for one more; what it saw. */
  async function fill(name: string, n: number): Promise<{ announced: number; refusal: string }> {
    const bridge = await BridgeProcess.start({ name, args: ['--socket-path', SOCK, '--tap', TAP] });
    const fe = TestFrontEnd.connect(SOCK);
    try {
      const announced = await setUp(fe);
      const t = Date.now();
      for (let i = 0; i < n; i++) expect(await addSlot(fe, i), `ADD_MEM_REG ${i}`).to.equal(0n);
      console.log(`      ${n} ADD_MEM_REG in ${((Date.now() - t) / 1000).toFixed(1)} s`);
      const regions = await bridge.waitForStatus((s) => s.memory.regions.length === n, 10_000, `${n} regions`);
      expect(regions.memory.regions).to.have.length(n);
      const from = bridge.mark();
      expect(await addSlot(fe, n), 'one slot more').to.not.equal(0n);
      const refused = await bridge.waitForEvent('refused', 10_000, from);
      const reason = refused.event.kind === 'refused' ? refused.event.reason : '';
      expect(bridge.status().memory.regions, 'the table is kept').to.have.length(n);
      return { announced, refusal: reason };
    } finally {
      fe.close();
      await bridge.stop();
    }
  }

  it('GET_MAX_MEM_SLOTS is the parameter; one region more is refused naming it', async () => {
    const max = param();
    const r = await fill('slots-default', max);
    console.log(`      max_mem_regions ${max}; refusal: ${r.refusal}`);
    expect(r.announced).to.equal(max);
    expect(r.refusal).to.include('max_mem_regions').and.include(MAX_MEM_REGIONS_PATH);
  });

  it('with vhost reloaded as max_mem_regions=509, a front-end uses 509 slots and the kernel takes them', async () => {
    reloaded = true;
    await reloadVhostModules({ maxMemRegions: 509 });
    expect(param()).to.equal(509);
    const r = await fill('slots-509', 509);
    expect(r.announced).to.equal(509);
    expect(r.refusal).to.include('509 of 509');
  });
});
