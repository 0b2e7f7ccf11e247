/**
 * Sizes as people write them, for both modes (the one-port --max-memory, the daemon's `maxMemory`):
 * digits with an optional binary suffix.
 */

/** Binary size suffixes ("512M", "4G"). */
const SIZE_UNITS: Record<string, bigint> = { '': 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n };

/** A size above 0 in bytes: digits with an optional binary suffix ("512M", "4G", "1T"), or null if it is not one. */
export function parseSize(v: string | number): bigint | null {
  if (typeof v === 'number' && !Number.isSafeInteger(v)) return null;
  const m = /^(\d+)([KMGT]?)$/i.exec(String(v).trim());
  const bytes = m ? BigInt(m[1]) * SIZE_UNITS[m[2].toUpperCase()] : 0n;
  return bytes > 0n ? bytes : null;
}
