/**
 * SET_MEM_TABLE validation on real memfds: every refusal names the region and leaves nothing
 * mapped and the caller's fds open; success closes the fds.
 */
import { expect } from 'chai';
import { openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { U64_MAX } from '../../src/bits.js';
import * as sys from '../../src/sys/index.js';
import type { MemoryRegion } from '../../src/vhost-user/messages.js';
import { MemTable, mappedRegionCount, type MemTableReason } from '../../src/memtable/index.js';
import { openFdCount, tempDir } from '../fdcount.js';
import { Guest, memfd, memfdMaps, refusal, region } from './helpers.js';

const A = region(0x0n, 0x10000n, 0x7f0000000000n, 0n);
const B = region(0x100000n, 0x4000n, 0x7f0000100000n, 0x1000n);

describe('memtable: SET_MEM_TABLE', () => {
  it('maps every region and closes the fds it was given', () => {
    const guest = new Guest([A, B]);
    const fds = guest.pass();
    const before = { fds: openFdCount(), maps: memfdMaps().length, count: mappedRegionCount() };
    const t = MemTable.map(guest.regions, fds);
    try {
      expect(openFdCount()).to.equal(before.fds - 2);
      for (const fd of fds) expect(sys.isOpen(fd)).to.equal(false);
      expect(memfdMaps().length).to.equal(before.maps + 2);
      expect(mappedRegionCount()).to.equal(before.count + 2);
      expect(t.regions.map((r) => [r.gpa, r.size, r.qva, r.mmapOffset])).to.deep.equal([
        [A.gpa, A.size, A.qva, A.mmapOffset],
        [B.gpa, B.size, B.qva, B.mmapOffset],
      ]);
      const st = sys.fstat(guest.keep[1]);
      expect([t.regions[1].dev, t.regions[1].ino]).to.deep.equal([st.dev, st.ino]);
    } finally {
      t.retire();
      guest.close();
    }
    expect(memfdMaps().length).to.equal(before.maps);
    expect(mappedRegionCount()).to.equal(before.count);
  });

  it('accepts an empty table and the largest u64 ranges that do not wrap', () => {
    MemTable.map([], []).retire();
    const top = region(U64_MAX - 0x1000n, 0x1000n, U64_MAX - 0x1000n, 0n); // ends at 2^64 - 1
    const g = new Guest([top]);
    try {
      const t = MemTable.map(g.regions, g.pass());
      expect(t.gpaToLocal(U64_MAX - 1n, 1n)).to.equal(t.regions[0].local + 0xfffn);
      t.retire();
    } finally {
      g.close();
    }
  });

  /**
   * Each case: regions, and fds (default: one fitting memfd per region). The refusal must name the
   * region and show its values in hex, nothing may stay mapped, every fd must still be open.
   */
  interface Case {
    name: string;
    regions: MemoryRegion[];
    reason: MemTableReason;
    says: string[];
    fds?: () => number[];
    max?: number;
  }
  const cases: Case[] = [
    {
      name: 'zero size',
      regions: [A, region(0x200000n, 0n, 0x7f0000200000n)],
      reason: 'region',
      says: ['region 1 (gpa 0x200000 size 0x0', 'zero-size region'],
    },
    {
      name: 'gpa + size overflows u64',
      regions: [A, region(U64_MAX - 0xfffn, 0x2000n, 0x7f0000200000n)],
      reason: 'region',
      says: [
        'region 1 (gpa 0xfffffffffffff000 size 0x2000',
        'guest address 0xfffffffffffff000 + size 0x2000 overflows u64',
      ],
    },
    {
      name: 'gpa + size is exactly 2^64',
      regions: [region(U64_MAX - 0xfffn, 0x1000n, 0x7f0000200000n)],
      reason: 'region',
      says: ['region 0', 'guest address 0xfffffffffffff000 + size 0x1000 overflows u64'],
    },
    {
      name: 'qva + size overflows u64',
      regions: [A, region(0x200000n, 0x2000n, U64_MAX - 0xfffn)],
      reason: 'region',
      says: ['region 1', 'qva 0xfffffffffffff000', 'user address 0xfffffffffffff000 + size 0x2000 overflows u64'],
    },
    {
      name: 'mmapOffset + size overflows u64',
      regions: [region(0x200000n, 0x2000n, 0x7f0000200000n, U64_MAX - 0xfffn), A],
      reason: 'region',
      says: ['region 0', 'offset 0xfffffffffffff000', 'mmap offset 0xfffffffffffff000 + size 0x2000 overflows u64'],
    },
    {
      name: 'a field that is not a u64',
      regions: [A, region(-1n, 0x1000n, 0x7f0000200000n)],
      reason: 'region',
      says: ['region 1: gpa -1 is not a u64'],
    },
    {
      name: 'overlap in guest-physical space',
      regions: [A, B, region(0x103000n, 0x2000n, 0x7f0000200000n)],
      reason: 'overlap',
      says: [
        'region 2 (gpa 0x103000 size 0x2000) overlaps region 1 (gpa 0x100000 size 0x4000) in guest-physical space',
      ],
    },
    {
      name: 'overlap in front-end virtual space',
      regions: [A, region(0x200000n, 0x2000n, 0x7f000000f000n)],
      reason: 'overlap',
      says: [
        'region 1 (qva 0x7f000000f000 size 0x2000) overlaps region 0 (qva 0x7f0000000000 size 0x10000) in ' +
          'front-end virtual space',
      ],
    },
    { name: 'the same region twice', regions: [A, A], reason: 'overlap', says: ['region 1', 'overlaps region 0'] },
    {
      name: 'more than 8 regions',
      reason: 'too-many',
      says: ['9 regions, at most 8 allowed'],
      regions: Array.from({ length: 9 }, (_, i) =>
        region(BigInt(i) * 0x10000n, 0x1000n, 0x7f0000000000n + BigInt(i) * 0x10000n),
      ),
    },
    {
      name: 'more regions than maxRegions',
      regions: [A, B],
      max: 1,
      reason: 'too-many',
      says: ['2 regions, at most 1 allowed'],
    },
    {
      name: 'fd smaller than mmapOffset + size',
      regions: [A, B],
      reason: 'fd',
      fds: () => [memfd(0x10000n), memfd(0x4fffn)],
      says: [
        'region 1 (gpa 0x100000 size 0x4000 qva 0x7f0000100000 offset 0x1000)',
        'is too small: 0x4fff bytes',
        'mmapOffset + size = 0x5000',
      ],
    },
    {
      name: 'fd not a regular file (a pipe)',
      regions: [A, B],
      reason: 'fd',
      says: ['region 1', 'is a fifo, not a regular file'],
      fds: () => [memfd(0x10000n), ...pipeReadEnd()],
    },
    { name: 'fd not open', regions: [A], reason: 'fd', says: ['region 0', 'fstat: EBADF'], fds: () => [987654] },
    {
      name: 'fewer fds than regions',
      regions: [A, B],
      reason: 'fd',
      says: ['2 regions but 1 fds'],
      fds: () => [memfd(0x10000n)],
    },
  ];

  /** The read end of a pipe (the write end is closed at once). */
  function pipeReadEnd(): number[] {
    const [r, w] = sys.pipe();
    sys.close(w);
    return [r];
  }

  for (const c of cases) {
    it(`refuses ${c.name}, names the region, maps nothing and leaves the fds open`, () => {
      // a fitting memfd per region (a small one where mmapOffset + size is absurd: validation refuses first)
      const fds = c.fds
        ? c.fds()
        : c.regions.map((r) => memfd(r.mmapOffset + r.size > 0x1000000n ? 0x1000n : r.mmapOffset + r.size));
      const before = { maps: memfdMaps().length, count: mappedRegionCount() };
      try {
        const e = refusal(
          () => MemTable.map(c.regions, fds, c.max === undefined ? {} : { maxRegions: c.max }),
          c.reason,
        );
        for (const s of c.says) expect(e.message).to.contain(s);
        expect(memfdMaps().length).to.equal(before.maps);
        expect(mappedRegionCount()).to.equal(before.count);
        for (const fd of fds) if (fd !== 987654) expect(sys.isOpen(fd), `fd ${fd}`).to.equal(true);
      } finally {
        sys.closeAll(fds);
      }
    });
  }

  it('refuses an fd that cannot be mapped read-write, unmapping the regions already mapped', () => {
    const dir = tempDir();
    const path = join(dir, 'ram');
    writeFileSync(path, Buffer.alloc(0x5000));
    const good = memfd(0x10000n);
    const readOnly = openSync(path, 'r'); // MAP_SHARED + PROT_WRITE on an O_RDONLY fd: EACCES
    const before = { maps: memfdMaps().length, count: mappedRegionCount(), fds: openFdCount() };
    try {
      const e = refusal(() => MemTable.map([A, B], [good, readOnly]), 'fd');
      expect(e.message)
        .to.contain('region 1 (gpa 0x100000 size 0x4000')
        .and.contain(`fd ${readOnly} cannot be mapped: mmap: EACCES`);
      expect(memfdMaps().length).to.equal(before.maps); // region 0 was mapped, then unmapped
      expect(mappedRegionCount()).to.equal(before.count);
      expect(openFdCount()).to.equal(before.fds);
      expect(sys.isOpen(good) && sys.isOpen(readOnly)).to.equal(true);
    } finally {
      sys.closeAll([good, readOnly]);
      rmSync(dir, { recursive: true });
    }
  });

  it('maps a regular file from offset 0 even when mmapOffset is not page aligned', () => {
    const r = region(0x0n, 0x1000n, 0x7f0000000000n, 0x10n);
    const fd = memfd(0x1010n);
    const keep = sys.dup(fd);
    try {
      const t = MemTable.map([r], [fd]);
      const m = t.regions[0];
      expect(m.base % 4096n).to.equal(0n);
      expect(m.local).to.equal(m.base + 0x10n);
      t.retire();
    } finally {
      sys.close(keep);
    }
  });
});
