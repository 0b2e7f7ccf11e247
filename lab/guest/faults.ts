/**
 * The guest faults of the nested lab (docs/lab.md, "Guest faults"): kernel panics, self-resets (a
 * triple fault), stalls (a vCPU spinning while the kernel answers no ping). Seen under QEMU's own
 * vhost=on as under the bridge; counted, never charged to the back-end (lab/retry.ts retries once).
 */

/** How a guest faulted: a kernel panic (double fault...), a self-reset (triple fault), a stall. */
export type GuestFaultKind = 'panic' | 'reset' | 'stall';

/** A console line of a READY guest that is its kernel dying (the guest reboots by itself: panic=-1). */
export function isPanicLine(line: string): boolean {
  return /\] (traps: PANIC|Kernel panic - not syncing|BUG: |double fault)/.test(line);
}

/** The fault text of a console line: without the kernel's timestamp prefix. */
export function faultText(line: string): string {
  return line.replace(/^.*?\] /, '');
}

export const RESET_BY_INIT = 'the guest reset itself (init ran again without a reboot: a triple fault)';

/** Every fault of one guest, in order. */
export class FaultLog {
  count = 0;
  last = '';
  readonly entries: { kind: GuestFaultKind; at: number; text: string }[] = [];

  add(kind: GuestFaultKind, text: string): void {
    this.count++;
    this.last = text;
    this.entries.push({ kind, at: Date.now(), text });
  }
}
