/**
 * One region of guest memory as the bridge maps it.
 *
 * vhost-user.rst, "Memory regions description": a region is {guest address, size, user address,
 * mmap offset}; the fd passed with it backs the region from `mmap offset` on. "Memory access":
 * guest addresses and user (front-end virtual) addresses both map to the region containing them.
 *
 * The bridge maps `size + mmapOffset` bytes from file offset 0 and keeps `base + mmapOffset`, as
 * libvhost-user and DPDK do: mmap(2) needs a page-aligned file offset (a hugepage-aligned one on
 * hugetlbfs), and the mmap offset the front-end sends need not be either.
 */
import type { MemoryRegion } from '../vhost-user/messages.js';
import { fstat, mmapShared, munmap, SysError, type Stat } from '../sys/index.js';
import { U64_MAX } from '../bits.js';
import { hex } from '../format.js';
import { validateRegion as validRegionSyntax } from '../vhost-user/codec.js';
import { MemTableError } from './errors.js';

let liveMappings = 0;

/** How many region mappings this process holds now (for leak checks in tests and diagnostics). */
export function mappedRegionCount(): number {
  return liveMappings;
}

/** `region 1 (gpa 0x0 size 0x1000 qva 0x7f0000000000 offset 0x0)`: how errors name a region. */
export function describeRegion(index: number, r: MemoryRegion): string {
  return `region ${index} (gpa ${hex(r.gpa)} size ${hex(r.size)} qva ${hex(r.qva)} offset ${hex(r.mmapOffset)})`;
}

/**
 * Refuse a region the kernel must never be given: fields that are not u64 values, and whatever the
 * wire format's own region rule refuses ({@link validRegionSyntax}: zero size, a range that wraps
 * past 2^64). The kernel turns each region into the range [gpa, gpa + size - 1]
 * (drivers/vhost/vhost.c vhost_set_memory), which a wrap would corrupt. The rule is the codec's;
 * the table applies it too because a region it accepts goes to the kernel, whoever the caller is.
 */
export function validateRegion(index: number, r: MemoryRegion): void {
  for (const k of ['gpa', 'size', 'qva', 'mmapOffset'] as const) {
    const v: unknown = r[k];
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) {
      throw new MemTableError('region', `region ${index}: ${k} ${String(v)} is not a u64`);
    }
  }
  const why = validRegionSyntax(r);
  if (why) throw new MemTableError('region', `${describeRegion(index, r)}: ${why}`);
}

/**
 * Refuse region `index` if it overlaps any of `others` (given with their indices) in guest-physical
 * or in front-end virtual space: an address in the overlap would map to two places, and
 * vhost-user.rst ("Memory access") says an address maps to THE region containing it.
 */
export function checkOverlap(index: number, r: MemoryRegion, others: Iterable<[number, MemoryRegion]>): void {
  for (const [j, o] of others) {
    if (r.gpa < o.gpa + o.size && o.gpa < r.gpa + r.size) {
      throw new MemTableError(
        'overlap',
        `region ${index} (gpa ${hex(r.gpa)} size ${hex(r.size)}) overlaps region ${j} (gpa ${hex(o.gpa)} size ` +
          `${hex(o.size)}) in guest-physical space`,
      );
    }
    if (r.qva < o.qva + o.size && o.qva < r.qva + r.size) {
      throw new MemTableError(
        'overlap',
        `region ${index} (qva ${hex(r.qva)} size ${hex(r.size)}) overlaps region ${j} (qva ${hex(o.qva)} size ` +
          `${hex(o.size)}) in front-end virtual space`,
      );
    }
  }
}

/**
 * fstat the fd of region `index` and refuse it unless it is a regular file (memfd, tmpfs,
 * hugetlbfs) holding at least `mmapOffset + size` bytes. A shorter file would map, but touching
 * the part past its end raises SIGBUS in the bridge and EFAULT in the kernel's copy_to_user.
 */
export function checkFd(index: number, r: MemoryRegion, fd: number): Stat {
  let st: Stat;
  try {
    st = fstat(fd);
  } catch (e) {
    if (e instanceof SysError) throw new MemTableError('fd', `${describeRegion(index, r)}: fd ${fd}: ${e.message}`);
    throw e;
  }
  if (st.type !== 'file') {
    throw new MemTableError('fd', `${describeRegion(index, r)}: fd ${fd} is a ${st.type}, not a regular file`);
  }
  const need = r.mmapOffset + r.size;
  if (st.size < need) {
    throw new MemTableError(
      'fd',
      `${describeRegion(index, r)}: fd ${fd} is too small: ${hex(st.size)} bytes, the region needs mmapOffset + ` +
        `size = ${hex(need)}`,
    );
  }
  return st;
}

/**
 * One mmap'd region. Its values never change; what changes is whether it is still mapped: a region
 * is shared by every {@link MemTable} built from the table that mapped it (ADD_MEM_REG,
 * REM_MEM_REG, an unchanged region of a new SET_MEM_TABLE), counts the live tables holding it, and
 * is unmapped when the last one is retired.
 */
export class MappedRegion {
  /** Guest-physical address of the first byte. */
  readonly gpa: bigint;
  readonly size: bigint;
  /** Front-end (QEMU) virtual address of the first byte: ring addresses arrive in this space. */
  readonly qva: bigint;
  /** Where the region starts in its file. */
  readonly mmapOffset: bigint;
  /** What mmap returned: a mapping of `mapLength` bytes from file offset 0. */
  readonly base: bigint;
  /** `base + mmapOffset`: the bridge's address of guest-physical `gpa` (the kernel's userspace_addr). */
  readonly local: bigint;
  /** `size + mmapOffset`: the length of the mapping at `base`. */
  readonly mapLength: bigint;
  /** Identity of the backing file (st_dev, st_ino): how a resent SET_MEM_TABLE is recognised. */
  readonly dev: bigint;
  readonly ino: bigint;
  #holders = 0;
  #mapped = true;

  private constructor(r: MemoryRegion, base: bigint, st: Stat) {
    this.gpa = r.gpa;
    this.size = r.size;
    this.qva = r.qva;
    this.mmapOffset = r.mmapOffset;
    this.base = base;
    this.local = base + r.mmapOffset;
    this.mapLength = r.size + r.mmapOffset;
    this.dev = st.dev;
    this.ino = st.ino;
  }

  /**
   * Map region `index` from `fd` (already checked by {@link checkFd}, whose result is `st`):
   * shared and read-write, since the kernel writes received packets and used entries into guest
   * memory through this mapping. The fd is not closed here.
   */
  static map(index: number, r: MemoryRegion, fd: number, st: Stat): MappedRegion {
    let base: bigint;
    try {
      base = mmapShared(fd, r.size + r.mmapOffset, 0n);
    } catch (e) {
      if (e instanceof SysError)
        throw new MemTableError('fd', `${describeRegion(index, r)}: fd ${fd} cannot be mapped: ${e.message}`);
      throw e;
    }
    liveMappings++;
    return new MappedRegion(r, base, st);
  }

  /** False once the last table holding it was retired (its addresses are then unmapped memory). */
  get mapped(): boolean {
    return this.#mapped;
  }

  /**
   * REM_MEM_REG identity (vhost-user.rst: "identified by its guest address, user address and size. The mmap
   * offset is ignored.").
   */
  matches(r: MemoryRegion): boolean {
    return r.gpa === this.gpa && r.size === this.size && r.qva === this.qva;
  }

  /** True if `r` backed by the file `st` would map to exactly this region (same values, same file). */
  describes(r: MemoryRegion, st: { dev: bigint; ino: bigint }): boolean {
    return this.matches(r) && r.mmapOffset === this.mmapOffset && st.dev === this.dev && st.ino === this.ino;
  }

  /** For MemTable only: one more live table uses this mapping. */
  hold(): void {
    if (!this.#mapped) throw new MemTableError('retired', `${this}: already unmapped`);
    this.#holders++;
  }

  /** For MemTable only: a table using this mapping was retired; unmap when no live table is left. */
  release(): void {
    if (this.#holders === 0) throw new MemTableError('retired', `${this}: released more often than held`);
    if (--this.#holders === 0) this.#unmap();
  }

  /** For MemTable only: unmap a region that never joined a table (a failed SET_MEM_TABLE/ADD_MEM_REG). */
  discard(): void {
    if (this.#holders !== 0) throw new MemTableError('retired', `${this}: discarded while a table holds it`);
    if (this.#mapped) this.#unmap();
  }

  #unmap(): void {
    this.#mapped = false;
    liveMappings--;
    munmap(this.base, this.mapLength);
  }

  toString(): string {
    return (
      `gpa ${hex(this.gpa)} size ${hex(this.size)} qva ${hex(this.qva)} offset ${hex(this.mmapOffset)} -> ` +
      `local ${hex(this.local)}`
    );
  }
}
