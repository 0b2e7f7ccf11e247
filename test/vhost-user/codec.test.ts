/**
 * Golden bytes, both directions: every request the table supports, built by lab/frontend/builder.ts
 * from the spec's layouts, decodes to the expected values; every reply form encodes to the
 * builder's bytes. Plus the syntax checks of each payload type.
 */
import { expect } from 'chai';
import { U64_MAX } from '../../src/bits.js';
import * as codec from '../../src/vhost-user/codec.js';
import { FrontendReq, HEADER_FLAGS, LIMITS, PROTOCOL_F, requestName } from '../../src/vhost-user/constants.js';
import { REQUESTS } from '../../src/vhost-user/requests.js';
import { type Built, ID, msg, NEED_REPLY, reply, V1 } from '../../lab/frontend/builder.js';

const GiB = 1n << 30n;
const QVA = 0x7fe71bfff000n;

/** Every supported request, as QEMU 7.2 sends it (addresses and sizes as in a real session), and what it decodes to. */
const cases: { built: Built; decoded: unknown; fds: number }[] = [
  { built: msg.getFeatures(), decoded: null, fds: 0 },
  { built: msg.setFeatures(0x17040dd83n), decoded: 0x17040dd83n, fds: 0 },
  { built: msg.setOwner(), decoded: null, fds: 0 },
  { built: msg.resetOwner(), decoded: null, fds: 0 },
  {
    built: msg
      .setMemTable([
        { gpa: 0n, size: 256n << 20n, qva: QVA },
        { gpa: 4n * GiB, size: GiB, qva: QVA + GiB, offset: 256n << 20n },
      ])
      .needReply(),
    decoded: {
      nregions: 2,
      padding: 0,
      regions: [
        { gpa: 0n, size: 256n << 20n, qva: QVA, mmapOffset: 0n },
        { gpa: 4n * GiB, size: GiB, qva: QVA + GiB, mmapOffset: 256n << 20n },
      ],
    },
    fds: 2,
  },
  { built: msg.setLogBase(0x2000n, 0x40n), decoded: { size: 0x2000n, offset: 0x40n }, fds: 1 },
  { built: msg.setVringNum(1, 256), decoded: { index: 1, num: 256 }, fds: 0 },
  {
    built: msg.setVringAddr({
      index: 3,
      flags: 1,
      desc: 0x7fe71df3b000n,
      used: 0x7fe71df3c240n,
      avail: 0x7fe71df3c000n,
      log: 0x1f3d240n,
    }),
    decoded: {
      index: 3,
      flags: 1,
      desc: 0x7fe71df3b000n,
      used: 0x7fe71df3c240n,
      avail: 0x7fe71df3c000n,
      log: 0x1f3d240n,
    },
    fds: 0,
  },
  { built: msg.setVringBase(1, 14), decoded: { index: 1, num: 14 }, fds: 0 },
  { built: msg.getVringBase(2), decoded: { index: 2, num: 0 }, fds: 0 },
  { built: msg.setVringKick(2), decoded: { raw: 2n, index: 2, noFd: false }, fds: 1 },
  { built: msg.setVringCall(0, { noFd: true }), decoded: { raw: 0x100n, index: 0, noFd: true }, fds: 0 },
  { built: msg.setVringErr(3), decoded: { raw: 3n, index: 3, noFd: false }, fds: 1 },
  { built: msg.getProtocolFeatures(), decoded: null, fds: 0 },
  { built: msg.setProtocolFeatures(0xa01fn), decoded: 0xa01fn, fds: 0 },
  { built: msg.getQueueNum(), decoded: null, fds: 0 },
  { built: msg.setVringEnable(3, 1), decoded: { index: 3, num: 1 }, fds: 0 },
  {
    built: msg.sendRarp([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
    decoded: Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
    fds: 0,
  },
  { built: msg.netSetMtu(1500n).needReply(), decoded: 1500n, fds: 0 },
  { built: msg.resetDevice(), decoded: null, fds: 0 },
  { built: msg.getMaxMemSlots(), decoded: null, fds: 0 },
  {
    built: msg.addMemReg({ gpa: 0n, size: 256n << 20n, qva: 0x7feaeffff000n }).needReply(),
    decoded: { padding: 0n, region: { gpa: 0n, size: 256n << 20n, qva: 0x7feaeffff000n, mmapOffset: 0n } },
    fds: 1,
  },
  {
    built: msg.remMemReg({ gpa: 0n, size: 256n << 20n, qva: 0x7feaeffff000n }),
    decoded: { padding: 0n, region: { gpa: 0n, size: 256n << 20n, qva: 0x7feaeffff000n, mmapOffset: 0n } },
    fds: 0,
  },
];

describe('vhost-user codec: golden bytes', () => {
  it('the spec ids are the ones in constants.ts', () => {
    expect(FrontendReq).to.deep.equal(ID);
    expect(requestName(5)).to.equal('SET_MEM_TABLE');
    expect(requestName(99)).to.equal('request 99 (unknown)');
    expect(HEADER_FLAGS).to.include({ VERSION_MASK: 0x3, VERSION: V1, NEED_REPLY, REPLY: 0x4 });
    expect(PROTOCOL_F).to.include({
      MQ: 0,
      LOG_SHMFD: 1,
      RARP: 2,
      REPLY_ACK: 3,
      MTU: 4,
      RESET_DEVICE: 13,
      CONFIGURE_MEM_SLOTS: 15,
      DEVICE_STATE: 19,
    });
  });

  it('covers every request of the table', () => {
    expect(cases.map((c) => c.built.request).sort((a, b) => a - b)).to.deep.equal(
      [...REQUESTS.keys()].sort((a, b) => a - b),
    );
  });

  for (const c of cases) {
    const name = requestName(c.built.request);
    it(`decodes ${name}`, () => {
      const bytes = c.built.bytes;
      const header = codec.decodeHeader(bytes);
      expect(header).to.deep.equal({
        request: c.built.request,
        flags: c.built.flags,
        size: bytes.length - LIMITS.HEADER_SIZE,
      });
      expect(codec.encodeHeader(header)).to.deep.equal(bytes.subarray(0, 12));
      const spec = REQUESTS.get(header.request)!;
      const payload = bytes.subarray(LIMITS.HEADER_SIZE);
      const p = spec.decode(payload);
      expect(p).to.deep.equal(c.decoded);
      expect(spec.validate(p), 'valid').to.equal(null);
      const { min, max } = spec.fds.expected(p);
      expect(c.fds, 'fd count the builder attaches').to.equal(c.built.fds);
      expect(c.fds >= min && c.fds <= max, `${c.fds} fds within ${min}..${max}`).to.equal(true);
      expect(spec.describe(p)).to.be.a('string');
    });
  }

  it('decodes the u64 of SET_VRING_KICK/CALL/ERR: index in bits 0-7, no-fd in bit 8', () => {
    expect(codec.decodeVringFile(0x1ffn)).to.deep.equal({ index: 0xff, noFd: true });
    expect(codec.decodeVringFile(0x0n)).to.deep.equal({ index: 0, noFd: false });
  });

  it('decodes a memory table header shorter than its regions as the regions present', () => {
    const b = msg.setMemTable([{ gpa: 0n, size: 4096n, qva: 0n }], { nregions: 3 }).bytes.subarray(12);
    expect(codec.memoryTableRegionCount(b)).to.equal(3);
    expect(codec.decodeMemoryTable(b).regions).to.have.length(1);
    expect(codec.memoryTableSize(3)).to.equal(8 + 3 * 32);
    expect(codec.memoryTableRegionCount(Buffer.alloc(4))).to.equal(null);
  });
});

describe('vhost-user codec: replies', () => {
  it('u64 replies (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS)', () => {
    expect(codec.encodeReplyU64(ID.GET_FEATURES, 0x17842dde3n)).to.deep.equal(reply.u64(ID.GET_FEATURES, 0x17842dde3n));
    expect(codec.encodeReplyU64(ID.GET_PROTOCOL_FEATURES, 0xa01fn)).to.deep.equal(
      reply.u64(ID.GET_PROTOCOL_FEATURES, 0xa01fn),
    );
    expect(codec.encodeReplyU64(ID.GET_QUEUE_NUM, 2n)).to.deep.equal(reply.u64(ID.GET_QUEUE_NUM, 2n));
    expect(codec.encodeReplyU64(ID.GET_MAX_MEM_SLOTS, 509n)).to.deep.equal(reply.u64(ID.GET_MAX_MEM_SLOTS, 509n));
    expect(codec.encodeReplyU64(ID.GET_FEATURES, (1n << 64n) - 1n)).to.deep.equal(
      reply.u64(ID.GET_FEATURES, (1n << 64n) - 1n),
    );
  });

  it('vring state reply (GET_VRING_BASE)', () => {
    expect(codec.encodeReplyVringState(ID.GET_VRING_BASE, { index: 1, num: 14 })).to.deep.equal(
      reply.vringState(ID.GET_VRING_BASE, 1, 14),
    );
  });

  it('ack and nack (REPLY_ACK)', () => {
    expect(codec.encodeReplyAck(ID.SET_MEM_TABLE, true)).to.deep.equal(reply.ack(ID.SET_MEM_TABLE));
    expect(codec.encodeReplyAck(ID.ADD_MEM_REG, false)).to.deep.equal(reply.nack(ID.ADD_MEM_REG));
  });

  it('every reply carries flags version 1 | REPLY, which QEMU requires exactly', () => {
    expect(codec.REPLY_FLAGS).to.equal(0x5);
    expect(codec.encodeReplyAck(1, true).readUInt32LE(4)).to.equal(0x5);
  });

  it('refuses a u64 out of range', () => {
    expect(() => codec.encodeU64(-1n)).to.throw(RangeError);
    expect(() => codec.encodeU64(1n << 64n)).to.throw(RangeError);
  });
});

describe('vhost-user codec: syntax checks', () => {
  const region = { gpa: 0n, size: 0x1000n, qva: 0x7f0000000000n, mmapOffset: 0n };

  it('memory table: nregions 1..8, padding zero', () => {
    const t = (nregions: number, padding = 0) => ({
      nregions,
      padding,
      regions: Array.from({ length: Math.min(nregions, 8) }, () => region),
    });
    expect(codec.validateMemoryTable(t(1))).to.equal(null);
    expect(codec.validateMemoryTable(t(8))).to.equal(null);
    expect(codec.validateMemoryTable(t(0))).to.equal('nregions is 0');
    expect(codec.validateMemoryTable(t(9))).to.equal('nregions 9 is more than 8');
    expect(codec.validateMemoryTable(t(1, 7))).to.equal('padding is 0x7, not 0');
  });

  it('regions: zero size and u64 overflow of gpa, qva and offset + size', () => {
    expect(codec.validateRegion(region)).to.equal(null);
    expect(codec.validateRegion({ ...region, size: 0n })).to.equal('zero-size region');
    // gpa + size must itself be a u64 (rust-vmm checked_add; the memtable applies the same rule).
    expect(codec.validateRegion({ ...region, gpa: U64_MAX - 0x1000n })).to.equal(null);
    expect(codec.validateRegion({ ...region, gpa: U64_MAX - 0xfffn })).to.match(/^guest address .* overflows u64$/);
    expect(codec.validateRegion({ ...region, qva: U64_MAX })).to.match(/^user address .* overflows u64$/);
    expect(codec.validateRegion({ ...region, mmapOffset: U64_MAX })).to.match(/^mmap offset .* overflows u64$/);
    expect(codec.validateRegion({ ...region, mmapOffset: U64_MAX }, { checkOffset: false })).to.equal(null);
    expect(codec.validateMemoryTable({ nregions: 2, padding: 0, regions: [region, { ...region, size: 0n }] })).to.equal(
      'region 1: zero-size region',
    );
  });

  it('single region: padding zero', () => {
    expect(codec.validateSingleMemoryRegion({ padding: 0n, region })).to.equal(null);
    expect(codec.validateSingleMemoryRegion({ padding: 1n, region })).to.equal('padding is 0x1, not 0');
  });

  it('vring address: known flags only; desc 16-, avail 2-, used 4-aligned', () => {
    const a = { index: 0, flags: 0, desc: 0x1000n, used: 0x2240n, avail: 0x2000n, log: 0n };
    expect(codec.validateVringAddr(a)).to.equal(null);
    expect(codec.validateVringAddr({ ...a, flags: 1 })).to.equal(null);
    expect(codec.validateVringAddr({ ...a, flags: 2 })).to.match(/^unknown flag bits 0x2/);
    expect(codec.validateVringAddr({ ...a, flags: 0x80000000 })).to.match(/^unknown flag bits 0x80000000/);
    expect(codec.validateVringAddr({ ...a, desc: 0x1008n })).to.equal('descriptor table 0x1008 is not 16-byte aligned');
    expect(codec.validateVringAddr({ ...a, avail: 0x2001n })).to.equal('available ring 0x2001 is not 2-byte aligned');
    expect(codec.validateVringAddr({ ...a, used: 0x2242n })).to.equal('used ring 0x2242 is not 4-byte aligned');
  });

  it('vring file: only bits 0-8', () => {
    expect(codec.validateVringFile(0x1ffn)).to.equal(null);
    expect(codec.validateVringFile(0x200n)).to.match(/^undefined bits 0x200 set/);
    expect(codec.validateVringFile(1n << 63n)).to.match(/^undefined bits 0x8000000000000000 set/);
  });

  it('vring enable: 0 or 1', () => {
    expect(codec.validateVringEnable({ index: 0, num: 1 })).to.equal(null);
    expect(codec.validateVringEnable({ index: 0, num: 2 })).to.equal('enable is 2, not 0 or 1');
  });

  it('log: offset + size within u64', () => {
    expect(codec.validateLog({ size: 0x1000n, offset: 0n })).to.equal(null);
    expect(codec.validateLog({ size: 0x1000n, offset: U64_MAX })).to.match(/overflows u64/);
  });
});
