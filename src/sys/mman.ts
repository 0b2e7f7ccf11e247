/** mmap/munmap with BigInt addresses. */
import { C, errno, raw, viewOf } from './libc.js';
import { SysError } from './errors.js';

const MAP_FAILED = 0xffffffffffffffffn;

/**
 * mmap(2). Returns the address of the mapping as a BigInt.
 * @param len bytes to map
 * @param prot PROT_* bits
 * @param flags MAP_* bits
 * @param fd the file to map, or -1 with MAP_ANONYMOUS
 * @param offset page-aligned file offset
 */
export function mmap(
  len: bigint | number,
  prot: number,
  flags: number,
  fd: number,
  offset: bigint | number = 0n,
): bigint {
  const p = raw.mmap(null, BigInt(len), prot, flags, fd, BigInt(offset));
  if (p === null || p === MAP_FAILED) throw new SysError('mmap', errno());
  return p;
}

/** munmap(2). */
export function munmap(addr: bigint, len: bigint | number): void {
  if (raw.munmap(addr, BigInt(len)) === -1) throw new SysError('munmap', errno());
}

/** A shared read-write mapping of a whole fd (the usual way to map guest memory). */
export function mmapShared(fd: number, len: bigint | number, offset: bigint | number = 0n): bigint {
  return mmap(len, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, fd, offset);
}

/**
 * A zero-copy Buffer over mapped memory, for tests and diagnostics only: the bridge never touches
 * guest memory on the datapath. Using it after munmap crashes the process (SIGSEGV). At most 4 GiB.
 */
export function memoryView(addr: bigint, len: number): Buffer {
  if (len > 2 ** 32) throw new RangeError(`memoryView: ${len} bytes is over the 4 GiB limit of a view`);
  return Buffer.from(viewOf(addr, len));
}
