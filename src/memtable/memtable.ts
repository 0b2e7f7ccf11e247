/**
 * The guest memory table: the regions the front-end shared, mapped into the bridge, and the one
 * place where addresses are translated.
 *
 * Two address spaces come in (vhost-user.rst, "Memory access"): guest-physical addresses (the
 * kernel's memory table, the dirty log) and front-end virtual addresses (SET_VRING_ADDR's desc,
 * avail and used). The kernel (linux/vhost.h VHOST_SET_MEM_TABLE, VHOST_SET_VRING_ADDR) wants
 * guest-physical -> the bridge's own virtual address, and ring addresses in the bridge's space.
 * This module produces both, and refuses anything that is not wholly inside a mapped region, so
 * the kernel never sees an address outside guest memory.
 *
 * Tables are immutable. SET_MEM_TABLE, ADD_MEM_REG and REM_MEM_REG each build a NEW table that
 * shares the unchanged mappings; the caller gives it to the kernel and only then retires the old
 * one, which unmaps what the new table no longer uses (the kernel swaps tables under its own
 * locks while rings keep running, so the old mappings must stay valid until the swap is done).
 */
import { readFileSync } from 'node:fs';
import { LIMITS } from '../vhost-user/constants.js';
import type { MemoryRegion, VringAddr } from '../vhost-user/messages.js';
import { closeQuiet, fstat, type Stat } from '../sys/index.js';
import { U64_MAX } from '../bits.js';
import { MAX_RING_SIZE, RING_ALIGN } from '../virtio.js';
import { hex } from '../format.js';
import { MemTableError } from './errors.js';
import { checkFd, checkOverlap, describeRegion, MappedRegion, validateRegion } from './region.js';

/** The vhost module parameter that bounds nregions in VHOST_SET_MEM_TABLE (drivers/vhost/vhost.c: E2BIG beyond it). */
export const MAX_MEM_REGIONS_PATH = '/sys/module/vhost/parameters/max_mem_regions';

/** The default of max_mem_regions (drivers/vhost/vhost.c), also what a not yet loaded module will have. */
export const VHOST_DEFAULT_MAX_MEM_REGIONS = 64;

/**
 * GET_MAX_MEM_SLOTS (vhost-user.rst): the most regions the bridge can hold, which is what the
 * kernel accepts in VHOST_SET_MEM_TABLE and never more (QEMU's tap,vhost=on reads the same file,
 * hw/virtio/vhost-backend.c vhost_kernel_memslots_limit). 64 when the vhost module is not loaded
 * yet: opening /dev/vhost-net loads it with its default.
 * @param path the parameter file (tests point it elsewhere)
 */
export function maxMemSlots(path: string = MAX_MEM_REGIONS_PATH): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return VHOST_DEFAULT_MAX_MEM_REGIONS;
    throw e;
  }
  const m = /^\s*(\d+)\s*$/.exec(text);
  if (!m) throw new Error(`${path}: expected a number of memory regions, read ${JSON.stringify(text.slice(0, 40))}`);
  return Number(m[1]);
}

/**
 * struct vhost_memory / struct vhost_memory_region (include/uapi/linux/vhost_types.h): a u32
 * nregions, a u32 padding (must be 0: the kernel answers EOPNOTSUPP otherwise), then per region
 * u64 guest_phys_addr, u64 memory_size, u64 userspace_addr, u64 flags_padding (no flags defined).
 * Offsets in bytes; test/memtable checks them against the C layout rules.
 */
export const VHOST_MEMORY_LAYOUT = {
  nregions: 0,
  padding: 4,
  header: 8,
  region: { size: 32, guest_phys_addr: 0, memory_size: 8, userspace_addr: 16, flags_padding: 24 },
} as const;

/** The three areas of a split ring, in the order SET_VRING_ADDR names them to the kernel. */
type RingArea = 'desc' | 'avail' | 'used';

/**
 * Bytes the kernel reads or writes in each area of a ring of `num` entries: exactly what
 * drivers/vhost/vhost.c checks in vq_access_ok (vhost_get_desc_size: 16 * num; vhost_get_avail_size:
 * 4 + 2 * num; vhost_get_used_size: 4 + 8 * num; the avail and used sizes + 2 with EVENT_IDX, for
 * used_event / avail_event). With EVENT_IDX these are the virtio 1.x sizes of "2.7 Split
 * Virtqueues" (6 + 2 * num, 6 + 8 * num), whose table counts the event fields.
 */
export function ringAreaSizes(num: number, eventIdx: boolean): Record<RingArea, bigint> {
  const n = BigInt(num);
  const ev = eventIdx ? 2n : 0n;
  return { desc: 16n * n, avail: 4n + 2n * n + ev, used: 4n + 8n * n + ev };
}

/**
 * What one front-end may make the bridge map (a port's `maxMemory` / `maxRegions`): without it a
 * front-end decides how much of the bridge's address space its regions take. Checked before
 * anything is mapped, so a refused table costs no mapping.
 */
export interface MemoryLimit {
  /** Bytes of guest memory in the whole table, or null: no limit of its own. */
  bytes: bigint | null;
  /** Regions in the table, or null: what the kernel and the request allow. */
  regions: number | null;
}

const MiB = 1n << 20n;
const size = (n: bigint): string => `${hex(n)} (${n % MiB === 0n ? `${n / MiB} MiB` : `${n} bytes`})`;

/** Refuse a table of `regions` over `maxBytes` (MemTableError 'too-large'). */
function checkTotal(regions: readonly MemoryRegion[], maxBytes: bigint | null | undefined): void {
  if (maxBytes === null || maxBytes === undefined) return;
  const total = regions.reduce((t, r) => t + r.size, 0n);
  if (total > maxBytes) {
    throw new MemTableError(
      'too-large',
      `${regions.length} region(s) of ${size(total)} in total, more than the limit of ${size(maxBytes)}`,
    );
  }
}

/** Options of {@link MemTable.map}. */
interface MapOptions {
  /** At most this many regions; default: the lesser of LIMITS.MAX_MEM_REGIONS and {@link maxMemSlots}(). */
  maxRegions?: number;
  /** At most this many bytes of guest memory in the table (null or absent: no limit). */
  maxBytes?: bigint | null;
  /**
   * The table this one replaces. Its mappings of regions that did not change (same values, same
   * file) are shared instead of mapped again, so rings in them keep their local address.
   */
  previous?: MemTable;
}

/** An immutable set of mapped regions. See the module comment for the lifecycle. */
export class MemTable {
  readonly #regions: readonly MappedRegion[];
  #retired = false;

  private constructor(regions: MappedRegion[]) {
    for (const r of regions) r.hold();
    this.#regions = Object.freeze(regions);
  }

  /** A table with no regions (before the first SET_MEM_TABLE / ADD_MEM_REG, and after a reset). */
  static empty(): MemTable {
    return new MemTable([]);
  }

  /**
   * SET_MEM_TABLE (vhost-user.rst): "the size and ordering of the fds matches the number and
   * ordering of memory regions". Validates every region (zero size, u64 overflow, overlap in either
   * address space, count), fstats every fd (a regular file of at least mmapOffset + size bytes),
   * maps them, and on success closes the fds (the mappings keep the files alive).
   *
   * On any error: whatever this call mapped is unmapped, the fds are NOT closed (the caller owns
   * them on error), and a MemTableError says which region and why.
   */
  static map(regions: readonly MemoryRegion[], fds: readonly number[], opts: MapOptions = {}): MemTable {
    const previous = opts.previous;
    if (previous) previous.#live('map (previous table)');
    const max = opts.maxRegions ?? Math.min(LIMITS.MAX_MEM_REGIONS, maxMemSlots());
    if (regions.length > max) {
      throw new MemTableError('too-many', `${regions.length} regions, at most ${max} allowed`);
    }
    if (fds.length !== regions.length) {
      throw new MemTableError('fd', `${regions.length} regions but ${fds.length} fds`);
    }
    regions.forEach((r, i) => {
      validateRegion(i, r);
      checkOverlap(
        i,
        r,
        regions.slice(0, i).map((o, j): [number, MemoryRegion] => [j, o]),
      );
    });
    checkTotal(regions, opts.maxBytes);
    const stats = regions.map((r, i) => checkFd(i, r, fds[i]));

    const kept = previous ? previous.#regions : [];
    const fresh: MappedRegion[] = [];
    let table: MemTable;
    try {
      const mapped = regions.map((r, i) => {
        const same = kept.find((m) => m.describes(r, stats[i]));
        if (same) return same;
        const m = MappedRegion.map(i, r, fds[i], stats[i]);
        fresh.push(m);
        return m;
      });
      table = new MemTable(mapped);
    } catch (e) {
      for (const m of fresh) m.discard();
      throw e;
    }
    for (const fd of new Set(fds)) closeQuiet(fd);
    return table;
  }

  /**
   * True if `regions` backed by `fds` describe exactly this table: the same regions (in any order)
   * with the same offsets, each backed by the same file (fstat st_dev + st_ino, since a resent table
   * arrives with new fd numbers). Then SET_MEM_TABLE changes nothing and the caller just closes the
   * fds. DPDK's vhost_memory_changed compares gpa, size and user address only; this also compares
   * the offset and the file, because the same layout on another memfd is other memory. Never
   * throws for a bad fd: that is simply not the same table.
   */
  sameAs(regions: readonly MemoryRegion[], fds: readonly number[]): boolean {
    this.#live('sameAs');
    if (regions.length !== this.#regions.length || fds.length !== regions.length) return false;
    const matched = new Set<MappedRegion>();
    for (let i = 0; i < regions.length; i++) {
      let st: Stat;
      try {
        st = fstat(fds[i]);
      } catch {
        return false;
      }
      const m = this.#regions.find((x) => !matched.has(x) && x.describes(regions[i], st));
      if (!m) return false;
      matched.add(m);
    }
    return true;
  }

  /**
   * True if this table already has `region` backed by the same file as `fd` (fstat st_dev + st_ino).
   * QEMU 7.2 sends ADD_MEM_REG (and REM_MEM_REG) once per queue pair, so the second identical
   * region is a repeat, not an overlap (QEMU later made both per-device requests). Never throws for a
   * bad fd: that is simply not the same region.
   */
  contains(region: MemoryRegion, fd: number): boolean {
    this.#live('contains');
    let st: Stat;
    try {
      st = fstat(fd);
    } catch {
      return false;
    }
    return this.#regions.some((m) => m.describes(region, st));
  }

  /** True if a region matching gpa, size and qva (REM_MEM_REG identity) is in this table. */
  has(region: MemoryRegion): boolean {
    this.#live('has');
    return this.#regions.some((m) => m.matches(region));
  }

  /**
   * ADD_MEM_REG (vhost-user.rst, CONFIGURE_MEM_SLOTS): a new table with this table's mappings
   * shared and one new mapping appended. Same validation and fd rules as {@link MemTable.map}: the
   * fd is closed on success and left open on error; refused when the table already has
   * `maxRegions` regions (default {@link maxMemSlots}(), what the bridge announced in GET_MAX_MEM_SLOTS).
   */
  withRegion(region: MemoryRegion, fd: number, opts: { maxRegions?: number; maxBytes?: bigint | null } = {}): MemTable {
    this.#live('withRegion');
    const index = this.#regions.length;
    const max = opts.maxRegions ?? maxMemSlots();
    if (index + 1 > max) {
      throw new MemTableError(
        'too-many',
        `${describeRegion(index, region)}: no free memory slot, the table has ${index} of ${max}` +
          // Name the module parameter only when it is what binds (not a smaller limit of the caller's).
          (max >= maxMemSlots()
            ? ` (the vhost module's max_mem_regions, ${MAX_MEM_REGIONS_PATH}, which GET_MAX_MEM_SLOTS announced: ` +
              'load vhost with max_mem_regions=N for more)'
            : ''),
      );
    }
    validateRegion(index, region);
    checkOverlap(
      index,
      region,
      this.#regions.map((o, j): [number, MemoryRegion] => [j, o]),
    );
    checkTotal([...this.#regions, region], opts.maxBytes);
    const st = checkFd(index, region, fd);
    const m = MappedRegion.map(index, region, fd, st);
    let table: MemTable;
    try {
      table = new MemTable([...this.#regions, m]);
    } catch (e) {
      m.discard();
      throw e;
    }
    closeQuiet(fd);
    return table;
  }

  /**
   * REM_MEM_REG (vhost-user.rst): a new table without the region "identified by its guest address,
   * user address and size. The mmap offset is ignored." Nothing is unmapped here: retiring this
   * table once the kernel has the new one unmaps the removed region.
   */
  withoutRegion(region: MemoryRegion): MemTable {
    this.#live('withoutRegion');
    const i = this.#regions.findIndex((m) => m.matches(region));
    if (i < 0) {
      throw new MemTableError(
        'not-found',
        `no region with gpa ${hex(region.gpa)} size ${hex(region.size)} qva ${hex(region.qva)} to remove`,
      );
    }
    return new MemTable(this.#regions.filter((_, j) => j !== i));
  }

  /**
   * Retire this table: every mapping it holds that no other live table holds is unmapped. With
   * `next` (the table that replaces this one), that is exactly the regions `next` does not share.
   * Call only after the kernel has been given `next` (VHOST_SET_MEM_TABLE on every vhost-net fd),
   * or after the kernel has been closed: the kernel may use the old table until then.
   *
   * Afterwards every method of this table throws MemTableError('retired') rather than hand out
   * addresses of unmapped memory; retiring twice throws too (a double release would unmap regions
   * other tables still use).
   */
  retire(next?: MemTable): void {
    this.#live('retire');
    if (next === this) throw new MemTableError('retired', 'a table cannot be retired in favour of itself');
    if (next) next.#live('retire (next table)');
    this.#retired = true;
    let first: unknown;
    for (const r of this.#regions) {
      try {
        r.release();
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw first;
  }

  /** True once {@link retire} was called. */
  get retired(): boolean {
    return this.#retired;
  }

  /** The mapped regions, in the order they were given (SET_MEM_TABLE order, then ADD_MEM_REG order). */
  get regions(): readonly MappedRegion[] {
    this.#live('regions');
    return this.#regions;
  }

  /**
   * Guest-physical -> the bridge's address. Throws MemTableError('range') unless [gpa, gpa + len)
   * is wholly inside ONE region: adjacent regions are separate mappings, so a range straddling two
   * is not contiguous in the bridge (libvhost-user's vu_gpa_to_va shortens the length instead; the
   * kernel is given whole objects, so here it is an error).
   */
  gpaToLocal(gpa: bigint, len: bigint): bigint {
    this.#live('gpaToLocal');
    return this.#translate('gpa', gpa, len);
  }

  /** Front-end virtual -> the bridge's address, with the same rule as {@link gpaToLocal}. */
  qvaToLocal(qva: bigint, len: bigint): bigint {
    this.#live('qvaToLocal');
    return this.#translate('qva', qva, len);
  }

  /**
   * SET_VRING_ADDR: the ring's desc, avail and used addresses (front-end virtual, vhost-user.rst "A
   * vring address description") translated to the bridge's, each area wholly inside one region for
   * its full size ({@link ringAreaSizes}) and aligned as the virtio spec and the kernel require ({@link RING_ALIGN}).
   * Otherwise MemTableError('ring') naming the ring and the area; `area` says which. `addr.log` is a
   * guest-physical address for the dirty log and is not translated (vhost-user.rst, "Migration").
   */
  translateRing(addr: VringAddr, num: number, eventIdx: boolean): Record<RingArea, bigint> {
    this.#live('translateRing');
    if (!Number.isInteger(num) || num < 1 || num > MAX_RING_SIZE) {
      throw new MemTableError('ring', `ring ${addr.index}: size ${num} is not in 1..${MAX_RING_SIZE}`);
    }
    const sizes = ringAreaSizes(num, eventIdx);
    const out = { desc: 0n, avail: 0n, used: 0n };
    for (const area of ['desc', 'avail', 'used'] as const) {
      const what =
        `ring ${addr.index}: ${area} area (qva ${hex(addr[area])}, ${hex(sizes[area])} bytes for ${num} ` +
        `entries${eventIdx ? ' with EVENT_IDX' : ''})`;
      let local: bigint;
      try {
        local = this.#translate('qva', addr[area], sizes[area]);
      } catch (e) {
        if (e instanceof MemTableError)
          throw new MemTableError('ring', `${what} is not inside guest memory: ${e.message}`, area);
        throw e;
      }
      // The kernel checks avail and used alignment on the addresses it is given (drivers/vhost/vhost.c
      // vhost_vring_set_addr: EINVAL), which are the translated ones: an aligned front-end address
      // translates to a misaligned one when the region's mmap offset and qva differ modulo the alignment.
      if (local % RING_ALIGN[area] !== 0n) {
        throw new MemTableError('ring', `${what} maps to ${hex(local)}, not ${RING_ALIGN[area]}-byte aligned`, area);
      }
      out[area] = local;
    }
    return out;
  }

  /**
   * The argument of VHOST_SET_MEM_TABLE (struct vhost_memory, {@link VHOST_MEMORY_LAYOUT}): the
   * real guest-physical addresses, so the kernel's dirty log stays right, and the bridge's local
   * addresses as userspace_addr. Produced here and only here. Native byte order, which is little
   * endian on the targets src/sys supports (x86-64, aarch64).
   */
  toVhostMemory(): Buffer {
    this.#live('toVhostMemory');
    const L = VHOST_MEMORY_LAYOUT;
    const b = Buffer.alloc(L.header + L.region.size * this.#regions.length);
    b.writeUInt32LE(this.#regions.length, L.nregions);
    b.writeUInt32LE(0, L.padding);
    this.#regions.forEach((r, i) => {
      const o = L.header + L.region.size * i;
      b.writeBigUInt64LE(r.gpa, o + L.region.guest_phys_addr);
      b.writeBigUInt64LE(r.size, o + L.region.memory_size);
      b.writeBigUInt64LE(r.local, o + L.region.userspace_addr);
      b.writeBigUInt64LE(0n, o + L.region.flags_padding);
    });
    return b;
  }

  /** One line for logs: `2 regions: [0] gpa 0x0 size ... -> local ...; [1] ...`. */
  toString(): string {
    if (this.#retired) return 'retired memory table';
    const n = this.#regions.length;
    return `${n} region${n === 1 ? '' : 's'}${n ? ': ' : ''}${this.#regions.map((r, i) => `[${i}] ${r}`).join('; ')}`;
  }

  #live(op: string): void {
    if (this.#retired)
      throw new MemTableError('retired', `${op}: the memory table was retired (its regions may be unmapped)`);
  }

  #translate(space: 'gpa' | 'qva', addr: bigint, len: bigint): bigint {
    if (typeof addr !== 'bigint' || typeof len !== 'bigint' || addr < 0n || len < 1n || addr + len - 1n > U64_MAX) {
      throw new MemTableError('range', `${space} ${String(addr)} length ${String(len)}: not a range of u64 addresses`);
    }
    const end = addr + len;
    for (let i = 0; i < this.#regions.length; i++) {
      const r = this.#regions[i];
      const start = r[space];
      if (addr < start || addr >= start + r.size) continue;
      if (end > start + r.size) {
        throw new MemTableError(
          'range',
          `${space} range [${hex(addr)}, ${hex(end)}) runs ${hex(end - start - r.size)} bytes past the end of ` +
            `region ${i} (${space} ${hex(start)} size ${hex(r.size)})`,
        );
      }
      return r.local + (addr - start);
    }
    throw new MemTableError(
      'range',
      `${space} range [${hex(addr)}, ${hex(end)}) is not in guest memory: no region contains ${space} ${hex(addr)}`,
    );
  }
}
