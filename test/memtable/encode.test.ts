/** struct vhost_memory bytes and layout, and GET_MAX_MEM_SLOTS from the vhost module parameter. */
import { expect } from 'chai';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as sys from '../../src/sys/index.js';
import {
  MAX_MEM_REGIONS_PATH,
  maxMemSlots,
  MemTable,
  VHOST_DEFAULT_MAX_MEM_REGIONS,
  VHOST_MEMORY_LAYOUT,
} from '../../src/memtable/index.js';
import { tempDir } from '../fdcount.js';
import { Guest, memfd, region } from './helpers.js';

/** A little-endian byte builder, independent of the encoder under test. */
class Bytes {
  readonly parts: Buffer[] = [];
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.parts.push(b);
    return this;
  }
  u64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    this.parts.push(b);
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

describe('memtable: struct vhost_memory', () => {
  it('has the C layout of <linux/vhost_types.h> (checked with koffi)', () => {
    const r = sys.cLayout({
      guest_phys_addr: 'uint64_t',
      memory_size: 'uint64_t',
      userspace_addr: 'uint64_t',
      flags_padding: 'uint64_t',
    });
    expect(r.size).to.equal(32);
    expect(r.offsets).to.deep.equal({ guest_phys_addr: 0, memory_size: 8, userspace_addr: 16, flags_padding: 24 });
    const { size: _, ...offsets } = VHOST_MEMORY_LAYOUT.region;
    expect({ size: VHOST_MEMORY_LAYOUT.region.size, offsets }).to.deep.equal(r);
    // regions[] follows the two u32s at the 8-byte alignment of its u64 members
    const h = sys.cLayout({ nregions: 'uint32_t', padding: 'uint32_t', regions: 'uint64_t' });
    expect(h.offsets).to.deep.equal({
      nregions: VHOST_MEMORY_LAYOUT.nregions,
      padding: VHOST_MEMORY_LAYOUT.padding,
      regions: VHOST_MEMORY_LAYOUT.header,
    });
  });

  it('encodes nregions, zero padding, then gpa / size / local address / zero flags per region', () => {
    const regions = [
      region(0x0n, 0x20000n, 0x7f0000000000n, 0n),
      region(0x100000000n, 0x10000n, 0x7f0000100000n, 0x3000n),
      region(0xfee00000n, 0x1000n, 0x7f0000200000n, 0x123n),
    ];
    const g = new Guest(regions);
    try {
      const t = MemTable.map(regions, g.pass());
      const b = t.toVhostMemory();
      expect(b.length).to.equal(8 + 32 * 3);
      const want = new Bytes().u32(3).u32(0);
      for (const m of t.regions) want.u64(m.gpa).u64(m.size).u64(m.local).u64(0n);
      expect(b).to.deep.equal(want.done());
      // spot checks against literal bytes: header, and region 1's guest_phys_addr 0x100000000
      expect(b.subarray(0, 8).toString('hex')).to.equal('0300000000000000');
      expect(b.subarray(40, 48).toString('hex')).to.equal('0000000001000000');
      // userspace_addr is the bridge's mapping (base + mmapOffset), never the front-end's qva
      expect(b.readBigUInt64LE(8 + 32 * 2 + 16)).to.equal(t.regions[2].base + 0x123n);
      t.retire();
    } finally {
      g.close();
    }
  });

  it('is 8 + 32n bytes for n = 0..8', () => {
    for (let n = 0; n <= 8; n++) {
      const regions = Array.from({ length: n }, (_, i) =>
        region(BigInt(i) * 0x100000n, 0x1000n, 0x7f0000000000n + BigInt(i) * 0x100000n),
      );
      const g = new Guest(regions);
      try {
        const t = MemTable.map(regions, g.pass());
        const b = t.toVhostMemory();
        expect(b.length).to.equal(8 + 32 * n);
        expect(b.readUInt32LE(0)).to.equal(n);
        t.retire();
      } finally {
        g.close();
      }
    }
  });
});

describe('memtable: maxMemSlots (GET_MAX_MEM_SLOTS)', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
  });
  after(() => rmSync(dir, { recursive: true }));

  it('reads the value of the parameter file', () => {
    const p = join(dir, 'max_mem_regions');
    writeFileSync(p, '509\n');
    expect(maxMemSlots(p)).to.equal(509);
    writeFileSync(p, '8\n');
    expect(maxMemSlots(p)).to.equal(8);
  });

  it('is 64 when the vhost module is not loaded (no parameter file)', () => {
    expect(maxMemSlots(join(dir, 'absent'))).to.equal(64);
    expect(VHOST_DEFAULT_MAX_MEM_REGIONS).to.equal(64);
  });

  it('refuses a file that does not hold a number', () => {
    const p = join(dir, 'garbage');
    writeFileSync(p, 'lots\n');
    expect(() => maxMemSlots(p)).to.throw(Error, 'expected a number');
  });

  it('by default reads /sys/module/vhost/parameters/max_mem_regions', () => {
    const want = existsSync(MAX_MEM_REGIONS_PATH) ? Number(readFileSync(MAX_MEM_REGIONS_PATH, 'utf8')) : 64;
    expect(maxMemSlots()).to.equal(want);
  });

  it('bounds ADD_MEM_REG by default: the region after maxMemSlots() is refused', () => {
    const max = maxMemSlots();
    // one memfd, one page per region, so the fd count stays small whatever the host allows
    const regions = Array.from({ length: max + 1 }, (_, i) =>
      region(BigInt(i) * 0x100000n, 0x1000n, 0x7f0000000000n + BigInt(i) * 0x100000n, BigInt(i) * 0x1000n),
    );
    const file = memfd(BigInt(max + 1) * 0x1000n);
    let t = MemTable.empty();
    try {
      for (let i = 0; i < max; i++) {
        const next = t.withRegion(regions[i], sys.dup(file));
        t.retire(next);
        t = next;
      }
      expect(t.regions.length).to.equal(max);
      const last = sys.dup(file);
      try {
        expect(() => t.withRegion(regions[max], last)).to.throw(`no free memory slot, the table has ${max} of ${max}`);
        expect(sys.isOpen(last)).to.equal(true);
      } finally {
        sys.close(last);
      }
    } finally {
      t.retire();
      sys.close(file);
    }
  });
});
