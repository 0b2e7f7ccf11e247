/** Shared helpers of the memtable tests: memfd-backed guest memory and /proc/self/maps checks. */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import * as sys from '../../src/sys/index.js';
import type { MemoryRegion } from '../../src/vhost-user/messages.js';
import { MemTableError, type MemTableReason } from '../../src/memtable/index.js';

/** Every memfd the memtable tests create has this name, so /proc/self/maps lines can be told apart. */
const MEMFD_NAME = 'vb-memtable';

/** A memfd of `size` bytes (the "guest RAM" file a front-end would send). */
export function memfd(size: bigint | number): number {
  const fd = sys.memfdCreate(MEMFD_NAME);
  sys.ftruncate(fd, BigInt(size));
  return fd;
}

/** The /proc/self/maps lines of the test memfds (other lines change as V8 allocates, these do not). */
export function memfdMaps(): string[] {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/memfd:${MEMFD_NAME}`));
}

/** True if /proc/self/maps has a test-memfd mapping starting at `base`. */
export function isMappedAt(base: bigint): boolean {
  return memfdMaps().some((l) => BigInt(`0x${l.slice(0, l.indexOf('-'))}`) === base);
}

/** A region description. */
export function region(gpa: bigint, size: bigint, qva: bigint, mmapOffset = 0n): MemoryRegion {
  return { gpa, size, qva, mmapOffset };
}

/**
 * Guest memory for a list of regions: one memfd per region, sized exactly mmapOffset + size. `keep`
 * are the memfds the test keeps (to read the file behind a mapping); `pass()` dups them into fresh
 * fd numbers to hand to MemTable, which closes what it is given on success.
 */
export class Guest {
  readonly keep: number[];
  constructor(readonly regions: MemoryRegion[]) {
    this.keep = regions.map((r) => memfd(r.mmapOffset + r.size));
  }
  pass(): number[] {
    return this.keep.map((fd) => sys.dup(fd));
  }
  close(): void {
    sys.closeAll(this.keep);
  }
}

/** The MemTableError `fn` throws (failing the test if it throws nothing or something else). */
export function refusal(fn: () => unknown, reason?: MemTableReason): MemTableError {
  try {
    fn();
  } catch (e) {
    expect(e, String(e)).to.be.instanceOf(MemTableError);
    if (reason) expect((e as MemTableError).reason, (e as Error).message).to.equal(reason);
    return e as MemTableError;
  }
  return expect.fail('expected a MemTableError');
}
