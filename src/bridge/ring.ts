/**
 * Per-ring state (vhost-user.rst "Ring states"). Two independent facts decide whether the kernel
 * serves a ring:
 *  - started: a kick fd was received (SET_VRING_KICK); cleared by GET_VRING_BASE ("stop ring upon
 *    receiving VHOST_USER_GET_VRING_BASE") until the next kick fd.
 *  - enabled: SET_VRING_ENABLE 1, or every ring at SET_FEATURES when PROTOCOL_FEATURES was not
 *    negotiated ("the ring starts directly in the enabled state").
 * The ring is attached to its tap queue (VHOST_NET_SET_BACKEND) only when both hold and the kernel
 * has everything it reads when the backend is set (memory table, NUM, BASE, ADDR, kick): earlier,
 * the kernel fails the attach with EFAULT (docs/kernel-ordering.md).
 */
import type { VringAddr } from '../vhost-user/messages.js';

/** The kernel-side addresses of a ring's three areas, translated by src/memtable. */
export interface LocalRing { desc: bigint; avail: bigint; used: bigint }

export class Ring {
  /** SET_VRING_NUM; undefined until received. */
  num: number | undefined;
  /** SET_VRING_BASE, or what GET_VRING_BASE last read from the kernel. */
  base = 0;
  /** SET_VRING_ADDR as the front-end sent it (front-end virtual addresses, guest-physical log address). */
  addr: VringAddr | undefined;
  /** `addr` translated into the bridge's address space; what the kernel was given. */
  local: LocalRing | undefined;
  kickFd: number | null = null;
  callFd: number | null = null;
  errFd: number | null = null;
  started = false;
  enabled = false;
  /** VHOST_NET_SET_BACKEND(tap) is in effect. */
  attached = false;

  constructor(readonly index: number) {}

  /** Queue pair of this ring (one vhost-net fd and one tap queue per pair). */
  get pair(): number {
    return this.index >> 1;
  }

  /** This ring's index on its vhost-net fd: 0 = RX (guest receives), 1 = TX. */
  get kernelIndex(): number {
    return this.index & 1;
  }

  /** Everything the kernel reads when the backend is set has been given to it. */
  get configured(): boolean {
    return this.num !== undefined && this.local !== undefined && this.kickFd !== null;
  }

  /** Should be attached: started, enabled and fully configured. */
  get wanted(): boolean {
    return this.started && this.enabled && this.configured;
  }

  /** `ring 3 (pair 1 TX)`: how logs name a ring. */
  toString(): string {
    return `ring ${this.index} (pair ${this.pair} ${this.kernelIndex === 0 ? 'RX' : 'TX'})`;
  }
}
