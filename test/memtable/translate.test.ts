/**
 * Address translation on a real three-region table: edges, gaps, adjacent regions, mmap offsets
 * (page-aligned and not), ring placement with and without EVENT_IDX, and that the translated
 * address really is the memfd's byte.
 */
import { expect } from 'chai';
import { readSync, writeSync } from 'node:fs';
import * as sys from '../../src/sys/index.js';
import type { VringAddr } from '../../src/vhost-user/messages.js';
import { MemTable, ringAreaSizes, type MappedRegion } from '../../src/memtable/index.js';
import { Guest, refusal, region } from './helpers.js';

// Three regions, with a gap in both spaces between R0 and R1, and R1/R2 adjacent in both spaces.
// Front-end virtual order differs from guest-physical order, so the two lookups cannot be confused.
const R0 = region(0x10000n, 0x10000n, 0x7f0000200000n, 0n);
const R1 = region(0x40000n, 0x8000n, 0x7f0000100000n, 0x3000n); // page-aligned offset
const R2 = region(0x48000n, 0x4000n, 0x7f0000108000n, 0x123n); // unaligned offset (why mmap starts at 0)
// Ends at 2 mod 4: the only place where a used ring with EVENT_IDX (6 + 8n bytes, 4-aligned) can end exactly.
const R3 = region(0x60000n, 0x1ffen, 0x7f0000300000n, 0n);

describe('memtable: translation', () => {
  let guest: Guest;
  let table: MemTable;
  let mapped: readonly MappedRegion[];

  before(() => {
    guest = new Guest([R0, R1, R2, R3]);
    table = MemTable.map(guest.regions, guest.pass());
    mapped = table.regions;
  });
  after(() => {
    table.retire();
    guest.close();
  });

  it('keeps base + mmapOffset as local, with the mapping starting at file offset 0', () => {
    for (const m of mapped) {
      expect(m.local).to.equal(m.base + m.mmapOffset);
      expect(m.mapLength).to.equal(m.size + m.mmapOffset);
      expect(m.base % 4096n).to.equal(0n);
    }
    expect(mapped[2].local % 16n).to.equal(3n); // base is page aligned, offset 0x123
  });

  for (const space of ['gpa', 'qva'] as const) {
    const toLocal = (a: bigint, len: bigint) => (space === 'gpa' ? table.gpaToLocal(a, len) : table.qvaToLocal(a, len));

    it(`${space}: first byte, last byte and a range ending exactly at the end of every region`, () => {
      for (const m of mapped) {
        const start = m[space];
        expect(toLocal(start, 1n)).to.equal(m.local);
        expect(toLocal(start + m.size - 1n, 1n)).to.equal(m.local + m.size - 1n);
        expect(toLocal(start + 0x10n, m.size - 0x10n)).to.equal(m.local + 0x10n);
        expect(toLocal(start, m.size)).to.equal(m.local);
      }
    });

    it(`${space}: refuses a range one byte past the end of each region`, () => {
      for (const [i, m] of mapped.entries()) {
        const start = m[space];
        const e = refusal(() => toLocal(start + m.size - 4n, 5n), 'range');
        expect(e.message)
          .to.contain(`past the end of region ${i}`)
          .and.contain(`size 0x${m.size.toString(16)}`);
        refusal(() => toLocal(start, m.size + 1n), 'range');
      }
    });

    it(`${space}: refuses a range straddling two adjacent regions, though every byte is guest memory`, () => {
      const boundary = mapped[1][space] + mapped[1].size;
      expect(boundary).to.equal(mapped[2][space]);
      expect(toLocal(boundary - 8n, 8n)).to.equal(mapped[1].local + mapped[1].size - 8n);
      expect(toLocal(boundary, 8n)).to.equal(mapped[2].local);
      const e = refusal(() => toLocal(boundary - 8n, 16n), 'range');
      expect(e.message).to.contain('region 1');
    });

    it(`${space}: refuses addresses below the first region, in a gap and above the last`, () => {
      const lowest = mapped.reduce((a, m) => (m[space] < a[space] ? m : a));
      const highest = mapped.reduce((a, m) => (m[space] > a[space] ? m : a));
      const e = refusal(() => toLocal(lowest[space] - 1n, 1n), 'range');
      expect(e.message).to.contain('not in guest memory');
      refusal(() => toLocal(lowest[space] - 1n, 2n), 'range'); // starts below, ends inside
      refusal(() => toLocal(highest[space] + highest.size, 1n), 'range');
      const gapStart = space === 'gpa' ? R0.gpa + R0.size : R2.qva + R2.size;
      refusal(() => toLocal(gapStart, 1n), 'range');
    });

    it(`${space}: refuses empty, negative and wrapping ranges`, () => {
      refusal(() => toLocal(mapped[0][space], 0n), 'range');
      refusal(() => toLocal(-1n, 1n), 'range');
      refusal(() => toLocal((1n << 64n) - 1n, 2n), 'range');
    });
  }

  it('the mapping is the memfd: bytes written through the mapping are read() from the file, and back', () => {
    mapped.forEach((m, i) => {
      const fd = guest.keep[i];
      const at = m.size - 7n; // near the end: offset arithmetic errors would show here
      const gpa = m.gpa + at;
      const pos = Number(m.mmapOffset + (gpa - m.gpa));
      const out = Buffer.from(`region${i}`);
      out.copy(sys.memoryView(table.gpaToLocal(gpa, 7n), 7));
      const back = Buffer.alloc(7);
      expect(readSync(fd, back, 0, 7, pos)).to.equal(7);
      expect(back.toString()).to.equal(`region${i}`.slice(0, 7));

      const inFile = Buffer.from([0xa0 + i, 0xb0 + i, 0xc0 + i]);
      const qva = m.qva + 0x40n;
      writeSync(fd, inFile, 0, 3, Number(m.mmapOffset + 0x40n));
      expect(Buffer.from(sys.memoryView(table.qvaToLocal(qva, 3n), 3))).to.deep.equal(inFile);
      // gpa and qva of the same byte translate to the same local address
      expect(table.qvaToLocal(qva, 3n)).to.equal(table.gpaToLocal(m.gpa + 0x40n, 3n));
    });
  });

  describe('translateRing', () => {
    const num = 256;
    const ring = (desc: bigint, avail: bigint, used: bigint): VringAddr => ({
      index: 3,
      flags: 0,
      desc,
      avail,
      used,
      log: 0n,
    });

    it('sizes the areas as the kernel checks them: 16n, 4+2n, 4+8n, avail and used + 2 with EVENT_IDX', () => {
      expect(ringAreaSizes(256, false)).to.deep.equal({ desc: 4096n, avail: 516n, used: 2052n });
      expect(ringAreaSizes(256, true)).to.deep.equal({ desc: 4096n, avail: 518n, used: 2054n });
    });

    it('translates a ring fully inside one region', () => {
      const q = R0.qva;
      const local = mapped[0].local;
      for (const ev of [false, true]) {
        expect(table.translateRing(ring(q + 0x1000n, q + 0x2000n, q + 0x3000n), num, ev)).to.deep.equal({
          desc: local + 0x1000n,
          avail: local + 0x2000n,
          used: local + 0x3000n,
        });
      }
    });

    it('translates areas that lie in different regions', () => {
      expect(table.translateRing(ring(R0.qva, R1.qva, R1.qva + 0x1000n), num, true)).to.deep.equal({
        desc: mapped[0].local,
        avail: mapped[1].local,
        used: mapped[1].local + 0x1000n,
      });
    });

    /** The region (index) where `area` of that size can end exactly at the region end with an aligned start. */
    const home = (area: 'desc' | 'avail' | 'used', ev: boolean): number => (area === 'used' && ev ? 3 : 0);
    const inR0 = () => ring(R0.qva, R0.qva + 0x1000n, R0.qva + 0x2000n);

    for (const area of ['desc', 'avail', 'used'] as const) {
      for (const ev of [false, true]) {
        const atRegionEnd =
          `${area}${ev ? ' (EVENT_IDX)' : ''}: accepted ending exactly at the region end, ` +
          `refused one byte further`;
        it(atRegionEnd, () => {
          const size = ringAreaSizes(num, ev)[area];
          const m = mapped[home(area, ev)];
          const end = m.qva + m.size;
          const place = (at: bigint) => {
            const a = inR0();
            a[area] = at;
            return a;
          };
          const ok = table.translateRing(place(end - size), num, ev);
          expect(ok[area]).to.equal(m.local + m.size - size);
          const e = refusal(() => table.translateRing(place(end - size + 1n), num, ev), 'ring');
          expect(e.area).to.equal(area);
          expect(e.message).to.match(new RegExp(`^ring 3: ${area} area .*not inside guest memory`));
          const below = refusal(() => table.translateRing(place(R0.qva - 1n), num, ev), 'ring');
          expect(below.area).to.equal(area);
        });
      }
    }

    for (const area of ['avail', 'used'] as const) {
      it(`EVENT_IDX adds 2 bytes to ${area}: what ends exactly at a region end without it does not fit with it`, () => {
        const a = inR0();
        a[area] = R0.qva + R0.size - ringAreaSizes(num, false)[area];
        table.translateRing(a, num, false);
        const e = refusal(() => table.translateRing(a, num, true), 'ring');
        expect(e.area).to.equal(area);
        expect(e.message).to.contain('runs 0x2 bytes past the end of region 0');
        const m = mapped[home(area, true)];
        a[area] = m.qva + m.size - ringAreaSizes(num, true)[area];
        table.translateRing(a, num, true);
      });
    }

    it('refuses an area straddling two adjacent regions', () => {
      const a = ring(R1.qva + R1.size - 0x800n, R0.qva, R0.qva + 0x1000n); // desc 0x1000 bytes, half in R1, half in R2
      expect(refusal(() => table.translateRing(a, num, false), 'ring').area).to.equal('desc');
    });

    it('refuses a translated address the kernel would find misaligned (region offset 0x123)', () => {
      const a = ring(R2.qva, R0.qva, R0.qva + 0x1000n); // aligned front-end address, local ends in ...3
      const e = refusal(() => table.translateRing(a, num, false), 'ring');
      expect(e.area).to.equal('desc');
      expect(e.message).to.contain('not 16-byte aligned');
    });

    it('refuses ring sizes outside 1..32768', () => {
      const a = ring(R0.qva, R0.qva + 0x1000n, R0.qva + 0x2000n);
      for (const n of [0, -1, 1.5, 32769]) refusal(() => table.translateRing(a, n, false), 'ring');
    });
  });
});
