/**
 * How values are written in log lines and error messages, in one place so every layer writes them
 * alike: addresses, sizes and flags in hex (as QEMU's and libvhost-user's traces do), MAC
 * addresses as six colon-separated hex bytes.
 */

/** `0x1f`. */
export function hex(v: bigint | number): string {
  return `0x${v.toString(16)}`;
}

/** `52:54:00:12:34:56`. */
export function mac(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
