/**
 * A synthetic front-end's full vhost-user set-up of one queue pair, in the order QEMU 7.2 sends it
 * (vhost-user.rst "Front-end message types"; the recorded sessions in test/fixtures): features,
 * protocol features with REPLY_ACK, SET_OWNER, a memory table from a memfd, and two rings
 * (NUM, BASE, ADDR, KICK and CALL eventfds, ENABLE). The last request asks for an ack, so when
 * handshake() resolves the back-end has handled everything and both rings are attached.
 * Used by the daemon's unit tests (fake kernel) and by `npm run bench:ports` (the real one).
 */
import { bit, has, maskOf } from '../../src/bits.js';
import { VIRTIO_F, VIRTIO_NET_F, VHOST_USER_F_PROTOCOL_FEATURES } from '../../src/virtio.js';
import * as sys from '../../src/sys/index.js';
import { ID, msg } from './builder.js';
import { memfd, TestFrontEnd } from './frontend.js';

const MiB = 1n << 20n;
/** Where the synthetic guest's memory is in the front-end's address space (as QEMU reports it). */
const QVA = 0x7f00_0000_0000n;
const RING_SIZE = 256;
/** vhost-user.rst protocol feature bits, written out again: MQ 0, REPLY_ACK 3, CONFIGURE_MEM_SLOTS 15. */
const WANT_PROTOCOL = maskOf(0, 3, 15);
/** What the synthetic guest driver accepts of the offer: what a Linux guest with offloads off takes. */
const WANT = maskOf(
  VIRTIO_F.VERSION_1,
  VIRTIO_NET_F.MRG_RXBUF,
  VIRTIO_F.RING_EVENT_IDX,
  VHOST_USER_F_PROTOCOL_FEATURES,
);

/** Ring q of a 1 MiB guest at guest-physical 0: 16 KiB apart from 0x10000. */
function ringAt(q: number) {
  const desc = QVA + 0x10000n + BigInt(q) * 0x4000n;
  return {
    index: q,
    flags: 0,
    desc,
    avail: desc + 0x1000n,
    used: desc + 0x2000n,
    log: 0x10000n + BigInt(q) * 0x4000n + 0x2000n,
  };
}

function u64Reply(r: Buffer | 'eof', request: number): bigint {
  if (r === 'eof') throw new Error(`the back-end hung up instead of answering request ${request}`);
  if (r.readUInt32LE(0) !== request) throw new Error(`a reply to request ${r.readUInt32LE(0)} instead of ${request}`);
  return r.readBigUInt64LE(12);
}

async function acked(fe: TestFrontEnd, b: ReturnType<typeof msg.setOwner>, fds?: number[]): Promise<void> {
  const v = u64Reply(await fe.ask(b.needReply(), fds), b.request);
  if (v !== 0n) throw new Error(`request ${b.request} was refused (REPLY_ACK ${v})`);
}

/** The front-end's side after the set-up: close() hangs up and closes its fds (and unmaps `guest`). */
export interface Handshaken {
  fe: TestFrontEnd;
  negotiated: bigint;
  /**
   * With `{ guest: true }`: the guest's memory as the front-end maps it, and a way to play the guest
   * driver (avail->idx) and the device (used->idx) on ring q (virtio 1.2 2.7.6, 2.7.8: le16 idx at
   * byte 2 of each area).
   */
  guest: { memory: Buffer; setIndexes(q: number, avail: number, used: number): void } | null;
  close(): void;
}

/**
 * Connect to `path`, or use `fe`, and set up queue pair 0 (rings 0 and 1). Rejects if the back-end
 * refuses anything or hangs up. `guest: true` keeps a mapping of the guest memory (Handshaken.guest).
 */
export async function handshake(target: string | TestFrontEnd, o: { guest?: boolean } = {}): Promise<Handshaken> {
  const fe = typeof target === 'string' ? TestFrontEnd.connect(target) : target;
  const mem = memfd(MiB, 'vb-synthetic-guest');
  let memOwned = true;
  let mapped: bigint | null = null;
  const unmap = () => {
    if (mapped !== null) sys.munmap(mapped, MiB);
    mapped = null;
  };
  try {
    if (o.guest) mapped = sys.mmapShared(mem, MiB);
    const offered = u64Reply(await fe.ask(msg.getFeatures()), ID.GET_FEATURES);
    if (!has(offered, VHOST_USER_F_PROTOCOL_FEATURES)) throw new Error('the back-end offers no PROTOCOL_FEATURES');
    const protocol = u64Reply(await fe.ask(msg.getProtocolFeatures()), ID.GET_PROTOCOL_FEATURES) & WANT_PROTOCOL;
    if (!(protocol & bit(3))) throw new Error('the back-end offers no REPLY_ACK');
    fe.send(msg.setProtocolFeatures(protocol));
    await acked(fe, msg.setOwner());
    const negotiated = offered & WANT;
    await acked(fe, msg.setFeatures(negotiated));
    // send() closes this process's copy of the memfd once it is sent (or failed to be).
    memOwned = false;
    await acked(fe, msg.setMemTable([{ gpa: 0n, size: MiB, qva: QVA }]), [mem]);
    for (const q of [0, 1]) {
      await acked(fe, msg.setVringNum(q, RING_SIZE));
      await acked(fe, msg.setVringBase(q, 0));
      await acked(fe, msg.setVringAddr(ringAt(q)));
      fe.send(msg.setVringKick(q));
      fe.send(msg.setVringCall(q));
    }
    for (const q of [0, 1]) await acked(fe, msg.setVringEnable(q, 1));
    const memory = mapped === null ? null : sys.memoryView(mapped, Number(MiB));
    const guest = memory && {
      memory,
      setIndexes(q: number, avail: number, used: number) {
        const r = ringAt(q);
        memory.writeUInt16LE(avail, Number(r.avail - QVA) + 2);
        memory.writeUInt16LE(used, Number(r.used - QVA) + 2);
      },
    };
    return {
      fe,
      negotiated,
      guest,
      close: () => {
        fe.close();
        unmap();
      },
    };
  } catch (e) {
    fe.close();
    unmap();
    if (memOwned) sys.closeQuiet(mem);
    throw e;
  }
}
