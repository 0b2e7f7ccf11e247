/**
 * What one front-end connection negotiated, kept in ONE place: the protocol features
 * SET_PROTOCOL_FEATURES acked (masked to the offer) and where VHOST_USER_F_PROTOCOL_FEATURES
 * stands. The dispatcher makes one per connection; the request table's rows read and update it,
 * the dispatcher's gates read it, and the back end reads it through {@link Negotiated}
 * (handler.ts) instead of keeping its own copy. It is dropped with the connection.
 */
import { describeBits, has } from '../bits.js';
import type { Logger } from '../log.js';
import { VHOST_USER_F_PROTOCOL_FEATURES } from '../virtio.js';
import { PROTOCOL_F, PROTOCOL_FEATURE_NAMES } from './constants.js';
import type { Negotiated, VhostUserBackend } from './handler.js';

/** Where VHOST_USER_F_PROTOCOL_FEATURES stands on this connection (see requests.ts Gate). */
type ProtocolFeaturesBit = 'unknown' | 'taken' | 'declined';

/** True if `features` offers VHOST_USER_F_PROTOCOL_FEATURES. */
export const offersProtocolFeatures = (features: bigint): boolean => has(features, VHOST_USER_F_PROTOCOL_FEATURES);

export class ConnectionState implements Negotiated {
  #protocol: bigint | null = null;
  #bit: ProtocolFeaturesBit = 'unknown';

  constructor(
    readonly backend: VhostUserBackend,
    private readonly log: Logger,
  ) {}

  /** What SET_PROTOCOL_FEATURES acked, masked to the offer; null before it came. */
  get protocolFeatures(): bigint | null {
    return this.#protocol;
  }

  /** REPLY_ACK negotiated: `ack` rows answer when NEED_REPLY is set. */
  get replyAck(): boolean {
    return this.#protocol !== null && has(this.#protocol, PROTOCOL_F.REPLY_ACK);
  }

  /** The front-end took VHOST_USER_F_PROTOCOL_FEATURES up and has not declined it since. */
  get protocolFeaturesTaken(): boolean {
    return this.#bit === 'taken';
  }

  /** SET_PROTOCOL_FEATURES: mask the ack to the offer (warning about the rest) and return it. */
  maskProtocolFeatures(acked: bigint): bigint {
    const offered = this.backend.getProtocolFeatures();
    const extra = acked & ~offered;
    if (extra !== 0n) {
      this.log.warn(
        `SET_PROTOCOL_FEATURES: ignoring protocol features that were not offered: ` +
          `${describeBits(extra, PROTOCOL_FEATURE_NAMES)}`,
      );
    }
    return acked & offered;
  }

  /** SET_PROTOCOL_FEATURES succeeded with this (masked) set. */
  protocolFeaturesAcked(masked: bigint): void {
    this.#protocol = masked;
    this.#bit = 'taken';
  }

  /** SET_FEATURES succeeded with this feature word. */
  featuresAcked(features: bigint): void {
    this.#bit = offersProtocolFeatures(features) ? 'taken' : 'declined';
  }
}
