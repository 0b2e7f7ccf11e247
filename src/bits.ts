/**
 * Feature words are 64-bit masks, but the code names features by their BIT NUMBER (as the specs
 * do). Only these helpers turn numbers into masks, so a bit number is never used as a mask by
 * mistake (libvhost-user once tested `features & VHOST_USER_F_PROTOCOL_FEATURES`, bit 30, as a mask).
 */
import { hex } from './format.js';

/** 2^64 - 1: feature words, and every address, size and offset of vhost-user and of struct vhost_memory, are u64. */
export const U64_MAX = (1n << 64n) - 1n;

/** The mask of bit `n`. */
export const bit = (n: number): bigint => 1n << BigInt(n);

/** True if bit `n` is set in `mask`. */
export const has = (mask: bigint, n: number): boolean => (mask & bit(n)) !== 0n;

/** The mask of all the given bit numbers. */
export const maskOf = (...bits: number[]): bigint => bits.reduce((m, n) => m | bit(n), 0n);

/** The bit numbers set in `mask`, ascending. */
export function bitsOf(mask: bigint): number[] {
  const out: number[] = [];
  for (let n = 0; mask >> BigInt(n) !== 0n; n++) if (has(mask, n)) out.push(n);
  return out;
}

/** `0x17000dd83 (CSUM|GUEST_CSUM|...|bit 45)`: a mask in hex with the names of its bits, for logs. */
export function describeBits(mask: bigint, names: Readonly<Record<number, string>>): string {
  const parts = bitsOf(mask).map((n) => names[n] ?? `bit ${n}`);
  return `${hex(mask)}${parts.length ? ` (${parts.join('|')})` : ''}`;
}

/** Invert a `{NAME: bitNumber}` table into `{bitNumber: 'NAME'}` for describeBits. */
export function namesOf(table: Readonly<Record<string, number>>): Record<number, string> {
  const out: Record<number, string> = {};
  for (const [k, v] of Object.entries(table)) out[v] ??= k;
  return out;
}
