/**
 * Tables over time: ADD_MEM_REG / REM_MEM_REG, a resent or changed SET_MEM_TABLE, retiring (what
 * gets unmapped, checked in /proc/self/maps), use after retire, and a leak loop.
 */
import { expect } from 'chai';
import * as sys from '../../src/sys/index.js';
import { MemTable, mappedRegionCount } from '../../src/memtable/index.js';
import { openFdCount } from '../fdcount.js';
import { Guest, isMappedAt, memfd, memfdMaps, refusal, region } from './helpers.js';

const R0 = region(0x0n, 0x20000n, 0x7f0000000000n, 0n);
const R1 = region(0x100000n, 0x10000n, 0x7f0000100000n, 0x2000n);
const R2 = region(0x200000n, 0x8000n, 0x7f0000200000n, 0x10n);
const R3 = region(0x300000n, 0x1000n, 0x7f0000300000n, 0n);

describe('memtable: ADD_MEM_REG / REM_MEM_REG', () => {
  let guest: Guest;
  beforeEach(() => {
    guest = new Guest([R0, R1, R2, R3]);
  });
  afterEach(() => guest.close());

  it('builds up regions one by one, sharing existing mappings, and closes each fd', () => {
    const maps0 = memfdMaps().length;
    const fds = guest.pass();
    const fdCount = openFdCount();
    const t0 = MemTable.empty();
    const t1 = t0.withRegion(R0, fds[0]);
    t0.retire(t1);
    const t2 = t1.withRegion(R1, fds[1]);
    t1.retire(t2);
    const t3 = t2.withRegion(R2, fds[2]);
    expect(t2.regions[0]).to.equal(t3.regions[0]); // the same mapping object, not a remap
    t2.retire(t3);

    expect(openFdCount()).to.equal(fdCount - 3);
    expect(t3.regions.map((r) => r.gpa)).to.deep.equal([R0.gpa, R1.gpa, R2.gpa]);
    expect(memfdMaps().length).to.equal(maps0 + 3);
    for (const r of t3.regions) expect(isMappedAt(r.base)).to.equal(true);
    for (const [i, r] of [R0, R1, R2].entries()) expect(t3.gpaToLocal(r.gpa, r.size)).to.equal(t3.regions[i].local);
    t3.retire();
    sys.close(fds[3]);
    expect(memfdMaps().length).to.equal(maps0);
  });

  it('removes a region: translation follows, retire unmaps only the removed mapping', () => {
    const fds = guest.pass();
    const t3 = MemTable.map([R0, R1, R2], fds.slice(0, 3));
    const [m0, m1, m2] = t3.regions;
    const qvaLocal = t3.qvaToLocal(R2.qva + 0x100n, 0x10n);

    // REM_MEM_REG ignores the mmap offset (vhost-user.rst)
    const t4 = t3.withoutRegion({ ...R1, mmapOffset: 0xdead000n });
    expect(isMappedAt(m1.base)).to.equal(true); // not unmapped before the kernel has t4
    t3.retire(t4);
    expect(isMappedAt(m1.base)).to.equal(false);
    expect(m1.mapped).to.equal(false);
    expect(isMappedAt(m0.base) && isMappedAt(m2.base)).to.equal(true);
    expect(t4.regions).to.deep.equal([m0, m2]);
    expect(refusal(() => t4.gpaToLocal(R1.gpa, 1n), 'range').message).to.contain('not in guest memory');
    expect(t4.qvaToLocal(R2.qva + 0x100n, 0x10n)).to.equal(qvaLocal); // unchanged: same mapping

    // and add one again, after the removal
    const t5 = t4.withRegion(R3, fds[3]);
    t4.retire(t5);
    expect(t5.regions.map((r) => r.gpa)).to.deep.equal([R0.gpa, R2.gpa, R3.gpa]);
    expect(t5.regions[0].base).to.equal(m0.base);
    t5.retire();
    expect(isMappedAt(m0.base) || isMappedAt(m2.base)).to.equal(false);
  });

  it('refuses to remove a region it does not have (gpa, size and qva must all match)', () => {
    const t = MemTable.map([R0], [sys.dup(guest.keep[0])]);
    try {
      for (const r of [R1, { ...R0, size: 0x10000n }, { ...R0, qva: R0.qva + 0x1000n }, { ...R0, gpa: 0x1000n }]) {
        expect(refusal(() => t.withoutRegion(r), 'not-found').message).to.contain('to remove');
      }
    } finally {
      t.retire();
    }
  });

  it('refuses an added region that overlaps, or beyond maxRegions, leaving the fd open and nothing mapped', () => {
    const fds = guest.pass();
    const t = MemTable.map([R0, R1], fds.slice(0, 2));
    const before = { maps: memfdMaps().length, count: mappedRegionCount() };
    try {
      const overlap = region(R1.gpa + R1.size - 0x1000n, 0x1000n, 0x7f0000800000n);
      const e = refusal(() => t.withRegion(overlap, fds[2]), 'overlap');
      expect(e.message).to.contain('region 2 (gpa 0x10f000 size 0x1000) overlaps region 1 (gpa 0x100000 size 0x10000)');
      const q = refusal(() => t.withRegion(region(0x900000n, 0x1000n, R0.qva + 0x1000n), fds[2]), 'overlap');
      expect(q.message).to.contain('overlaps region 0').and.contain('front-end virtual space');
      const full = refusal(() => t.withRegion(R2, fds[2], { maxRegions: 2 }), 'too-many');
      expect(full.message).to.contain('no free memory slot, the table has 2 of 2');
      refusal(() => t.withRegion({ ...R2, size: 0n }, fds[2]), 'region');
      refusal(() => t.withRegion({ ...R2, size: R2.size + 1n }, fds[2]), 'fd'); // the file is mmapOffset + size exactly
      expect(sys.isOpen(fds[2])).to.equal(true);
      expect(memfdMaps().length).to.equal(before.maps);
      expect(mappedRegionCount()).to.equal(before.count);
      const ok = t.withRegion(R2, fds[2], { maxRegions: 3 });
      expect(sys.isOpen(fds[2])).to.equal(false);
      t.retire(ok);
      ok.retire();
    } finally {
      sys.closeAll(fds.slice(2));
    }
  });
});

describe('memtable: replacing the table (SET_MEM_TABLE again)', () => {
  let guest: Guest;
  let t: MemTable;
  beforeEach(() => {
    guest = new Guest([R0, R1]);
    t = MemTable.map(guest.regions, guest.pass());
  });
  afterEach(() => {
    if (!t.retired) t.retire();
    guest.close();
  });

  /** Run `fn` with fresh fds, then close them (sameAs never closes what it is given). */
  function withFds<T>(fds: number[], fn: (fds: number[]) => T): T {
    try {
      return fn(fds);
    } finally {
      sys.closeAll(fds);
    }
  }

  it('sameAs: the same regions on the same memfds under new fd numbers (in any order)', () => {
    expect(withFds(guest.pass(), (fds) => t.sameAs([R0, R1], fds))).to.equal(true);
    expect(withFds(guest.pass().reverse(), (fds) => t.sameAs([R1, R0], fds))).to.equal(true);
  });

  it('sameAs is false for another memfd with the same layout, a changed offset or size, or a different count', () => {
    const other = new Guest([R0, R1]);
    try {
      expect(withFds(other.pass(), (fds) => t.sameAs([R0, R1], fds))).to.equal(false);
      expect(withFds([sys.dup(guest.keep[0]), sys.dup(other.keep[1])], (fds) => t.sameAs([R0, R1], fds))).to.equal(
        false,
      );
    } finally {
      other.close();
    }
    expect(withFds(guest.pass(), (fds) => t.sameAs([R0, { ...R1, mmapOffset: 0x1000n }], fds))).to.equal(false);
    expect(withFds(guest.pass(), (fds) => t.sameAs([R0, { ...R1, size: 0x8000n }], fds))).to.equal(false);
    expect(withFds(guest.pass(), (fds) => t.sameAs([R0, { ...R1, qva: R1.qva + 0x1000n }], fds))).to.equal(false);
    // one table region cannot stand for two incoming ones
    expect(withFds([sys.dup(guest.keep[0]), sys.dup(guest.keep[0])], (fds) => t.sameAs([R0, R0], fds))).to.equal(false);
    expect(withFds(guest.pass().slice(0, 1), (fds) => t.sameAs([R0], fds))).to.equal(false);
    expect(t.sameAs([R0, R1], [987654, 987655])).to.equal(false);
    expect(withFds(guest.pass(), (fds) => t.sameAs([R0], fds))).to.equal(false);
  });

  it('with `previous`, unchanged regions keep their mapping; retire unmaps only the changed one', () => {
    const [m0, m1] = t.regions;
    const R1b = { ...R1, mmapOffset: 0n }; // same file, another offset: a different mapping
    const fds = guest.pass();
    const fdCount = openFdCount();
    const next = MemTable.map([R0, R1b], fds, { previous: t });
    expect(openFdCount()).to.equal(fdCount - 2); // both fds closed, the reused one too
    expect(next.regions[0]).to.equal(m0);
    expect(next.regions[1]).to.not.equal(m1);
    expect(next.regions[1].local).to.equal(next.regions[1].base);
    t.retire(next);
    expect(isMappedAt(m0.base)).to.equal(true);
    expect(isMappedAt(m1.base)).to.equal(false);
    next.retire();
    expect(isMappedAt(m0.base)).to.equal(false);
  });

  it('without `previous`, every region is mapped anew (new local addresses)', () => {
    const next = MemTable.map([R0, R1], guest.pass());
    expect(next.regions[0].base).to.not.equal(t.regions[0].base);
    t.retire(next);
    next.retire();
  });

  it('a refused replacement leaves the old table and its mappings alone', () => {
    const fds = guest.pass();
    try {
      refusal(() => MemTable.map([R0, { ...R1, gpa: 0x10000n }], fds, { previous: t }), 'overlap');
      const bad = [fds[0], sys.dup(fds[1])];
      sys.ftruncate(bad[1], 0x1000n); // shrinks the shared memfd: region 1 no longer fits
      try {
        refusal(() => MemTable.map([R0, R1], bad, { previous: t }), 'fd');
      } finally {
        sys.ftruncate(bad[1], R1.mmapOffset + R1.size);
        sys.close(bad[1]);
      }
      expect(t.regions.every((r) => r.mapped && isMappedAt(r.base))).to.equal(true);
    } finally {
      sys.closeAll(fds);
    }
  });
});

describe('memtable: retire', () => {
  it('makes every use of a retired table throw instead of touching unmapped memory', () => {
    const g = new Guest([R0]);
    try {
      const t = MemTable.map(g.regions, g.pass());
      const base = t.regions[0].base;
      t.retire();
      expect(isMappedAt(base)).to.equal(false);
      expect(t.retired).to.equal(true);
      const fd = g.pass()[0];
      try {
        for (const use of [
          () => t.gpaToLocal(R0.gpa, 1n),
          () => t.qvaToLocal(R0.qva, 1n),
          () => t.regions,
          () => t.toVhostMemory(),
          () =>
            t.translateRing(
              { index: 0, flags: 0, desc: R0.qva, avail: R0.qva + 0x1000n, used: R0.qva + 0x2000n, log: 0n },
              256,
              false,
            ),
          () => t.withRegion(R1, fd),
          () => t.withoutRegion(R0),
          () => t.sameAs([R0], [fd]),
          () => t.retire(),
          () => MemTable.map([R0], [fd], { previous: t }),
          () => MemTable.empty().retire(t),
        ]) {
          expect(refusal(use, 'retired').message).to.contain('retired');
        }
        expect(sys.isOpen(fd)).to.equal(true);
      } finally {
        sys.close(fd);
      }
      expect(t.toString()).to.equal('retired memory table');
    } finally {
      g.close();
    }
  });

  it('retire(next) refuses itself as next', () => {
    const t = MemTable.empty();
    refusal(() => t.retire(t), 'retired');
    expect(t.retired).to.equal(false);
    t.retire();
  });

  it('keeps a mapping while any live table holds it, whichever is retired first', () => {
    const g = new Guest([R0, R1]);
    try {
      const fds = g.pass();
      const a = MemTable.map([R0], [fds[0]]);
      const b = a.withRegion(R1, fds[1]); // shares R0
      const c = b.withoutRegion(R1); // shares R0
      const m0 = a.regions[0];
      a.retire(); // no next given: still only what nobody else holds
      expect(isMappedAt(m0.base)).to.equal(true);
      const m1 = b.regions[1];
      b.retire(c);
      expect(isMappedAt(m1.base)).to.equal(false);
      expect(isMappedAt(m0.base)).to.equal(true);
      expect(c.gpaToLocal(R0.gpa, 4n)).to.equal(m0.local);
      c.retire();
      expect(isMappedAt(m0.base)).to.equal(false);
    } finally {
      g.close();
    }
  });

  it('1000 map / add / remove / retire rounds leave /proc/self/maps and the fd count unchanged', () => {
    const g = new Guest([R0, R1, R2]);
    try {
      const before = { maps: memfdMaps().length, fds: openFdCount(), count: mappedRegionCount() };
      for (let i = 0; i < 1000; i++) {
        const fds = g.pass();
        const t1 = MemTable.map([R0, R1], fds.slice(0, 2));
        const t2 = t1.withRegion(R2, fds[2]);
        t1.retire(t2);
        const t3 = t2.withoutRegion(R0);
        t2.retire(t3);
        t3.translateRing(
          { index: 0, flags: 0, desc: R1.qva, avail: R1.qva + 0x1000n, used: R1.qva + 0x2000n, log: 0n },
          256,
          true,
        );
        t3.retire();
      }
      expect(memfdMaps().length).to.equal(before.maps);
      expect(openFdCount()).to.equal(before.fds);
      expect(mappedRegionCount()).to.equal(before.count);
    } finally {
      g.close();
    }
  });
});

describe('memtable: memfd helper sanity', () => {
  it('memfd mappings show up in /proc/self/maps under the test name', () => {
    const fd = memfd(0x1000n);
    try {
      const n = memfdMaps().length;
      const p = sys.mmapShared(fd, 0x1000n);
      expect(memfdMaps().length).to.equal(n + 1);
      expect(isMappedAt(p)).to.equal(true);
      sys.munmap(p, 0x1000n);
      expect(isMappedAt(p)).to.equal(false);
    } finally {
      sys.close(fd);
    }
  });
});

describe("memtable: a port's limit on guest memory (maxBytes)", () => {
  let guest: Guest;
  beforeEach(() => {
    guest = new Guest([R0, R1, R2]);
  });
  afterEach(() => guest.close());

  it("refuses a table or an added region over the limit before mapping anything; the fds stay the caller's", () => {
    const maps0 = memfdMaps().length;
    const fds = guest.pass();
    const limit = R0.size + R1.size; // R0 and R1 fit exactly; R2 does not
    const e = refusal(() => MemTable.map([R0, R1, R2], fds, { maxBytes: limit }), 'too-large');
    expect(e.message).to.equal(
      '3 region(s) of 0x38000 (229376 bytes) in total, more than the limit of 0x30000 (196608 bytes)',
    );
    expect(memfdMaps().length, 'nothing mapped').to.equal(maps0);
    for (const fd of fds) expect(sys.isOpen(fd), 'fds left to the caller').to.equal(true);
    const t = MemTable.map([R0, R1], fds.slice(0, 2), { maxBytes: limit });
    expect(refusal(() => t.withRegion(R2, fds[2], { maxBytes: limit }), 'too-large').message).to.contain(
      'more than the limit of 0x30000',
    );
    expect(memfdMaps().length).to.equal(maps0 + 2);
    expect(sys.isOpen(fds[2])).to.equal(true);
    sys.close(fds[2]);
    t.retire();
    expect(mappedRegionCount()).to.equal(0);
  });
});
