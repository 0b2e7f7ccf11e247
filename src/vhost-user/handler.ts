/**
 * The back-end interface: one typed method per front-end request the request table supports
 * (rust-vmm's VhostUserBackendReqHandler shape). The dispatcher has already enforced the table
 * (payload size and validity, fd count, ring index below ringCount(), required protocol feature)
 * before calling, so methods never re-check those.
 *
 * Errors: a method throws `Refused` (errors.ts) for a well-formed request it will not carry out
 * (the dispatcher NACKs it if the front-end asked for a reply, else drops the connection), or any
 * other Error for a failure of its own (logged, and handled like Refused).
 *
 * fd ownership: fds passed to a method belong to it once it RETURNS (it keeps or closes them). If it
 * THROWS, the dispatcher closes every fd of the message, so a method must not keep an fd it was
 * given when it throws.
 */
import type { LogArea, MemoryRegion, VringAddr } from './messages.js';

/** What became of one request: carried out (ok), refused and told (nack), or the connection dropped. */
export interface RequestDone {
  /** The request's name (`SET_VRING_NUM`). */
  request: string;
  result: 'ok' | 'nack' | 'drop';
  /** Why a nack or drop. */
  reason?: string;
}

export interface VhostUserBackend {
  /** Rings this back end serves (2 per queue pair); a ring index >= this is refused by the dispatcher. */
  ringCount(): number;

  /** GET_FEATURES: the virtio feature word offered, including VHOST_USER_F_PROTOCOL_FEATURES (bit 30). */
  getFeatures(): bigint;
  /**
   * SET_FEATURES: what the front-end acked. Without PROTOCOL_FEATURES this also enables every ring (spec
   * "Ring states").
   */
  setFeatures(features: bigint): void;
  /** GET_PROTOCOL_FEATURES: protocol features this back end implements. */
  getProtocolFeatures(): bigint;
  /** SET_PROTOCOL_FEATURES: what the front-end acked (already masked by the dispatcher to what was offered). */
  setProtocolFeatures(features: bigint): void;
  /** GET_QUEUE_NUM (MQ): the number of virtqueues offered (vhost-user.rst "Multiple queue support"). */
  getQueueNum(): bigint;

  /** SET_OWNER: the session starts. */
  setOwner(): void;
  /** RESET_OWNER: deprecated reset; stop every ring and forget the session's state. */
  resetOwner(): void;
  /** RESET_DEVICE (RESET_DEVICE protocol feature): reset to the state right after SET_OWNER. */
  resetDevice(): void;

  /** SET_MEM_TABLE: replace all memory regions; `fds[i]` backs `regions[i]`. */
  setMemTable(regions: MemoryRegion[], fds: number[]): void;
  /** GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS): how many regions ADD_MEM_REG may build up. */
  getMaxMemSlots(): bigint;
  /** ADD_MEM_REG (CONFIGURE_MEM_SLOTS): add one region backed by `fd`. */
  addMemReg(region: MemoryRegion, fd: number): void;
  /** REM_MEM_REG (CONFIGURE_MEM_SLOTS): remove the region matching gpa, size and qva. */
  remMemReg(region: MemoryRegion): void;

  /** SET_LOG_BASE (LOG_SHMFD): the dirty-log bitmap lives in `fd` at `log.offset`, `log.size` bytes. */
  setLogBase(log: LogArea, fd: number): void;

  /** SET_VRING_NUM: ring size. */
  setVringNum(index: number, num: number): void;
  /** SET_VRING_ADDR: ring addresses in front-end virtual address space. */
  setVringAddr(addr: VringAddr): void;
  /** SET_VRING_BASE: next available-ring index to process. */
  setVringBase(index: number, base: number): void;
  /** GET_VRING_BASE: stop the ring and return the next available-ring index. */
  getVringBase(index: number): number;
  /** SET_VRING_KICK: the front-end's kick eventfd (null with the no-fd bit: polling). Receiving it starts the ring. */
  setVringKick(index: number, fd: number | null): void;
  /** SET_VRING_CALL: the eventfd the back end signals for used buffers (null with the no-fd bit). */
  setVringCall(index: number, fd: number | null): void;
  /** SET_VRING_ERR: the eventfd the back end signals on ring errors (null with the no-fd bit). */
  setVringErr(index: number, fd: number | null): void;
  /** SET_VRING_ENABLE (needs PROTOCOL_FEATURES negotiated): enable or disable a ring. */
  setVringEnable(index: number, enable: boolean): void;

  /** SEND_RARP (RARP): broadcast a RARP announcing `mac` (6 bytes) after migration. */
  sendRarp(mac: Buffer): void;
  /** NET_SET_MTU (MTU): the MTU the guest was given. */
  netSetMtu(mtu: number): void;

  /**
   * After every message the dispatcher handled, carried out or not: the ONE place where the back end
   * settles what follows from it (which rings run, as DPDK's vhost_user_msg_handler decides after
   * each message), so handlers only record what the front-end said. A throw fails the request
   * (NACK or drop) if it had succeeded.
   */
  afterRequest(done: RequestDone): void;

  /** The front-end disconnected (or was dropped): stop everything and release every resource. */
  disconnected(): void;
}
