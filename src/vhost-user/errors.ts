/**
 * The two ways a vhost-user exchange fails, and what the dispatcher does about each
 * (rust-vmm's Error + should_reconnect(), DPDK's RTE_VHOST_MSG_RESULT_ERR, reduced to what a
 * back end can do: answer, or hang up).
 *
 * vhost-user.rst "Communication": "If back-end detects some error such as incompatible features,
 * it may also close the connection." The front-end (QEMU) can reconnect; the process lives on.
 */

/**
 * The message breaks the protocol: bad version or flags, a size or fd count the request table does
 * not allow, a payload that fails its syntax check, an unknown request. The byte stream can no
 * longer be trusted, so the connection is dropped (every fd of the message closed).
 */
export class Malformed extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Malformed';
  }
}

/**
 * A well-formed request the back end will not carry out: a protocol feature that was not
 * negotiated, a ring index beyond ringCount(), a value the back end cannot accept. Back ends
 * (handler.ts) throw it too. The dispatcher answers u64 1 when the front-end asked for a reply and
 * REPLY_ACK was negotiated (vhost-user.rst "VHOST_USER_PROTOCOL_F_REPLY_ACK"); otherwise the
 * front-end cannot be told, and the connection is dropped.
 */
export class Refused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Refused';
  }
}
