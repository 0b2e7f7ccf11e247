/**
 * Per-ring vhost-user state (vhost-user.rst "Ring states"), as the session keeps it. Two
 * independent facts decide whether a ring should run:
 *  - started: a kick fd was received (SET_VRING_KICK); cleared by GET_VRING_BASE ("stop ring upon
 *    receiving VHOST_USER_GET_VRING_BASE") until the next kick fd.
 *  - enabled: SET_VRING_ENABLE 1, or every ring at SET_FEATURES when PROTOCOL_FEATURES was not
 *    negotiated ("the ring starts directly in the enabled state").
 * and a third, what a datapath reads when it starts a ring: size, addresses and kick fd (the
 * kernel's vhost-net fails with EFAULT without them, docs/kernel-ordering.md). The session turns
 * these into the ring's part of a DatapathTarget (session.ts); whether the datapath serves the
 * ring now is the datapath's to say (Datapath.running).
 */
import type { VringAddr } from '../vhost-user/messages.js';
import { ringName } from '../virtio.js';
import type { DatapathRingAddr } from './datapath.js';

/** The local addresses of a ring's three areas, translated by src/memtable. */
export interface LocalRing {
  desc: bigint;
  avail: bigint;
  used: bigint;
}

export class Ring {
  /** SET_VRING_NUM; undefined until received. */
  num: number | undefined;
  /** SET_VRING_BASE, or what GET_VRING_BASE last read from the datapath. */
  base = 0;
  /** SET_VRING_ADDR as the front-end sent it (front-end virtual addresses, guest-physical log address). */
  addr: VringAddr | undefined;
  /** `addr` translated into the bridge's address space (with the current memory table); what the datapath gets. */
  local: LocalRing | undefined;
  kickFd: number | null = null;
  callFd: number | null = null;
  errFd: number | null = null;
  started = false;
  enabled = false;

  constructor(readonly index: number) {}

  /** Everything a datapath reads when it starts the ring has been received. */
  get configured(): boolean {
    return this.num !== undefined && this.local !== undefined && this.kickFd !== null;
  }

  /** Should run: started, enabled and fully configured. */
  get ready(): boolean {
    return this.started && this.enabled && this.configured;
  }

  /** The addresses a datapath gets: local areas, the front-end's log address and flags. */
  datapathAddr(): DatapathRingAddr | null {
    const local = this.local;
    if (!this.addr || !local) return null;
    return { flags: this.addr.flags, desc: local.desc, avail: local.avail, used: local.used, log: this.addr.log };
  }

  /** `ring 3 (pair 1 TX)`: how logs name a ring. */
  toString(): string {
    return ringName(this.index);
  }
}
