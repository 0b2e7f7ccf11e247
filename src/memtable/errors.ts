/**
 * Errors of the guest memory table. A separate module so that region.ts and memtable.ts can both
 * throw them without importing each other.
 */

/**
 * What was wrong, as a stable code for callers that branch on it (the message is for humans):
 * - `region`: a region description is invalid (zero size, u64 overflow, not a u64).
 * - `overlap`: two regions overlap in guest-physical or in front-end virtual space.
 * - `too-many`: more regions than the request, the kernel or the port's limit allows.
 * - `too-large`: more guest memory in the table than the port's limit ({@link MemoryLimit} in memtable.ts).
 * - `fd`: a backing fd is missing, too small, not a regular file, or cannot be mapped.
 * - `range`: an address range is not wholly inside one region (translation refused).
 * - `ring`: a ring area is not inside guest memory, or its translated address is misaligned.
 * - `not-found`: REM_MEM_REG named a region the table does not have.
 * - `retired`: the table was used after {@link MemTable.retire} (its mappings may be gone).
 */
export type MemTableReason =
  | 'region'
  | 'overlap'
  | 'too-many'
  | 'too-large'
  | 'fd'
  | 'range'
  | 'ring'
  | 'not-found'
  | 'retired';

/** A refused memory table operation. Nothing was mapped or unmapped by the call that threw it. */
export class MemTableError extends Error {
  /**
   * @param reason what kind of refusal ({@link MemTableReason})
   * @param message what is wrong, naming the region index or ring area and the values in hex
   * @param area for `ring`: which area of the ring was refused
   */
  constructor(
    readonly reason: MemTableReason,
    message: string,
    readonly area?: 'desc' | 'avail' | 'used',
  ) {
    super(message);
    this.name = 'MemTableError';
  }
}
