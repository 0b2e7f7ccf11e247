/**
 * Framing: messages arriving back to back, with fds, come out whole and with their own fds,
 * however the byte stream is cut. Deterministic (a scripted stream cut at every byte boundary),
 * then over a real socketpair.
 */
import { expect } from 'chai';
import * as sys from '../../src/sys/index.js';
import { Oversized } from '../../src/vhost-user/errors.js';
import { Framer, type Message, truncated } from '../../src/vhost-user/framer.js';
import { Connection } from '../../src/vhost-user/connection.js';
import { captureLog } from '../log-capture.js';
import { openFdCount } from '../fdcount.js';
import { msg, reply, ID, type Built } from '../../lab/frontend/builder.js';
import { readable, TestFrontEnd } from '../../lab/frontend/frontend.js';
import { RecordingBackend } from './recording-backend.js';
import { bridgeLike } from './fixtures.js';

/** A burst as QEMU sends one at ring setup: fds on some messages, empty payloads, a multi-fd table. */
const burst: Built[] = [
  msg.getFeatures(),
  msg.setVringCall(0),
  msg
    .setMemTable([
      { gpa: 0n, size: 0x10000n, qva: 0x7f0000000000n },
      { gpa: 0x100000n, size: 0x10000n, qva: 0x7f0000100000n },
    ])
    .needReply(),
  msg.setVringEnable(1, 1),
  msg.setOwner(),
  msg.setVringKick(1),
  msg.setVringErr(2, { noFd: true }),
  msg.getVringBase(3),
  msg.setLogBase(0x1000n, 0n),
];

/** Fake fd numbers: message i carries 100*i+1, 100*i+2, ... */
const fdsOf = (i: number, b: Built): number[] => Array.from({ length: b.fds }, (_, j) => 100 * i + j + 1);

const expected = burst.map((b, i) => ({
  header: { request: b.request, flags: b.flags, size: b.payload.length },
  payload: b.payload,
  fds: fdsOf(i, b),
}));

/**
 * A byte stream as recvmsg(2) sees it: the concatenated messages, each sendmsg's fds delivered with
 * the read that takes its first byte, and `cuts` where the stream arrived in pieces (no read
 * returns bytes from both sides of a cut, as a read returns only what has arrived).
 */
class ScriptedStream {
  private readonly bytes: Buffer;
  private readonly starts: Map<number, number[]>;
  private pos = 0;

  constructor(
    segments: Built[],
    private readonly cuts: Set<number>,
  ) {
    this.bytes = Buffer.concat(segments.map((s) => s.bytes));
    this.starts = new Map();
    let at = 0;
    segments.forEach((s, i) => {
      this.starts.set(at, fdsOf(i, s));
      at += s.bytes.length;
    });
  }

  get length(): number {
    return this.bytes.length;
  }

  recv(max: number): { bytes: Buffer; fds: number[] } | null {
    if (this.pos >= this.bytes.length) return null;
    let end = Math.min(this.pos + max, this.bytes.length);
    for (let c = this.pos + 1; c < end; c++)
      if (this.cuts.has(c)) {
        end = c;
        break;
      }
    const fds: number[] = [];
    for (let p = this.pos; p < end; p++) fds.push(...(this.starts.get(p) ?? []));
    const bytes = this.bytes.subarray(this.pos, end);
    this.pos = end;
    return { bytes, fds };
  }
}

function run(stream: ScriptedStream): Message[] {
  const f = new Framer();
  const out: Message[] = [];
  for (let r = stream.recv(f.wanted()); r; r = stream.recv(f.wanted())) {
    const m = f.push(r.bytes, r.fds);
    if (m) out.push(m);
  }
  expect(f.state()).to.deep.equal({ at: 'idle' });
  return out;
}

describe('vhost-user framer', () => {
  it('reads exactly the header, then exactly the payload', () => {
    const f = new Framer();
    expect(f.wanted()).to.equal(12);
    const b = msg.setVringNum(0, 256).bytes;
    expect(f.push(b.subarray(0, 12))).to.equal(null);
    expect(f.wanted()).to.equal(8);
    expect(() => f.push(Buffer.alloc(9))).to.throw(RangeError, 'only 8 belong to this message');
    const m = f.push(b.subarray(12), []);
    expect(m).to.deep.equal({
      header: { request: ID.SET_VRING_NUM, flags: 1, size: 8 },
      payload: b.subarray(12),
      fds: [],
    });
    expect(f.wanted()).to.equal(12);
  });

  it('a burst cut at every single byte boundary: every message and its fds come out right', () => {
    const whole = new ScriptedStream(burst, new Set());
    expect(run(whole)).to.deep.equal(expected);
    for (let k = 1; k < whole.length; k++) {
      expect(run(new ScriptedStream(burst, new Set([k]))), `cut at byte ${k}`).to.deep.equal(expected);
    }
  });

  it('a burst cut at every pair of boundaries, and fed one byte at a time', () => {
    const n = new ScriptedStream(burst, new Set()).length;
    for (let a = 1; a < n; a++) {
      for (let b = a + 1; b < n; b++) {
        const got = run(new ScriptedStream(burst, new Set([a, b])));
        if (JSON.stringify(got.map((m) => m.fds)) !== JSON.stringify(expected.map((m) => m.fds)))
          expect.fail(`cuts ${a},${b}: fds misattributed`);
        expect(got.length, `cuts ${a},${b}`).to.equal(burst.length);
      }
    }
    const everyByte = new Set(Array.from({ length: n }, (_, i) => i));
    expect(run(new ScriptedStream(burst, everyByte))).to.deep.equal(expected);
  });

  it('refuses a payload above the maximum before reading it, naming the request; keeps its fds for the caller', () => {
    const f = new Framer(4096);
    const h = msg.setMemTable([]).withHeaderSize(4097).bytes.subarray(0, 12);
    expect(() => f.push(h, [7, 8]))
      .to.throw(Oversized, 'payload size 4097 is more than the maximum 4096')
      .with.property('request', ID.SET_MEM_TABLE);
    expect(f.discard()).to.deep.equal([7, 8]);
    expect(f.state()).to.deep.equal({ at: 'idle' });
  });

  it('says where a message was cut off when the peer hangs up', () => {
    const f = new Framer();
    const cut = () => {
      const t = truncated(f.state());
      return t && { request: t.request, message: t.message };
    };
    expect(cut()).to.equal(null);
    const b = msg.setMemTable([{ gpa: 0n, size: 0x1000n, qva: 0n }]).bytes;
    f.push(b.subarray(0, 3), [5]);
    expect(cut()).to.deep.equal({
      request: null,
      message: 'the front-end closed the connection mid-header (3 of 12 bytes)',
    });
    expect(f.peekRequest(b.subarray(3, 6))).to.equal(ID.SET_MEM_TABLE);
    f.push(b.subarray(3, 5));
    expect(cut()).to.deep.equal({
      request: ID.SET_MEM_TABLE,
      message: 'the front-end closed the connection mid-header (5 of 12 bytes)',
    });
    f.push(b.subarray(5, 12));
    f.push(b.subarray(12, 22));
    expect(cut()).to.deep.equal({
      request: ID.SET_MEM_TABLE,
      message: 'the front-end closed the connection mid-payload (10 of 40 bytes)',
    });
    expect(f.discard()).to.deep.equal([5]);
  });
});

describe('vhost-user framer over a real socketpair', () => {
  const burstWithFds =
    'a burst of messages with real fds, read as the connection reads: each fd arrives with its own message';
  it(burstWithFds, async () => {
    const before = openFdCount();
    const [a, b] = sys.socketPair();
    // Each fd is an eventfd whose counter names the message and position it was sent with.
    const sentFds = burst.map((m, i) => Array.from({ length: m.fds }, (_, j) => sys.eventfd(100 * i + j + 1)));
    const tx = new sys.MsgIo(4096, 8);
    for (const [i, m] of burst.entries()) tx.send(a, m.bytes, sentFds[i]);
    sys.closeAll(sentFds.flat());

    const rx = new sys.MsgIo(4096, 8);
    const f = new Framer();
    const got: Message[] = [];
    while (got.length < burst.length) {
      const r = rx.recv(b, f.wanted());
      if (r === null) {
        await readable(b);
        continue;
      }
      const m = f.push(rx.data.subarray(0, r.n), r.fds);
      if (m) got.push(m);
    }
    expect(got.map((m) => m.header)).to.deep.equal(expected.map((m) => m.header));
    expect(got.map((m) => m.payload)).to.deep.equal(expected.map((m) => m.payload));
    expect(got.map((m) => m.fds.map((fd) => Number(sys.eventfdRead(fd))))).to.deep.equal(expected.map((m) => m.fds));
    sys.closeAll(got.flatMap((m) => m.fds));
    sys.closeAll([a, b]);
    expect(openFdCount()).to.equal(before);
  });

  const longBurst =
    'a connection works through a burst longer than one wakeup reads (level-triggered poll brings it back)';
  it(longBurst, async () => {
    const [a, b] = sys.socketPair();
    const backend = new RecordingBackend(bridgeLike());
    const fe = TestFrontEnd.over(a);
    fe.send(msg.setProtocolFeatures(backend.config.protocolFeatures));
    // 200 messages are 400 reads (header, payload): more than one wakeup's 256, less than the socket buffer holds.
    for (let i = 0; i < 200; i++) fe.send(msg.setVringEnable(i % 4, i % 2));
    fe.send(msg.getFeatures());
    const conn = new Connection(b, backend).start();
    try {
      expect(await fe.reply()).to.deep.equal(reply.u64(ID.GET_FEATURES, backend.config.features));
      expect(backend.methods.filter((m) => m === 'setVringEnable')).to.have.length(200);
    } finally {
      conn.close();
      fe.close();
    }
  });

  it('a connection handles a whole burst sent before it reads, in order, with replies in order', async () => {
    const cap = captureLog('warn');
    const before = openFdCount();
    const [a, b] = sys.socketPair();
    const backend = new RecordingBackend(bridgeLike());
    const fe = TestFrontEnd.over(a);
    // Protocol features first (REPLY_ACK for the table's NEED_REPLY), then the burst minus the
    // memory table (its fds here are eventfds, which the memtable rightly refuses).
    const sent = [
      msg.setProtocolFeatures(backend.config.protocolFeatures),
      ...burst.filter((m) => m.request !== ID.SET_MEM_TABLE),
    ];
    for (const m of sent) fe.send(m);
    let closedReason = '';
    const conn = new Connection(b, backend, { onClosed: (r) => (closedReason = r) }).start();
    expect(await fe.reply()).to.deep.equal(reply.u64(ID.GET_FEATURES, backend.config.features));
    expect(await fe.reply()).to.deep.equal(reply.vringState(ID.GET_VRING_BASE, 3, 0));
    expect(await fe.reply()).to.deep.equal(reply.u64(ID.SET_LOG_BASE, 0n));
    expect(backend.methods).to.deep.equal([
      'setProtocolFeatures',
      'setVringCall',
      'setVringEnable',
      'setOwner',
      'setVringKick',
      'setVringErr',
      'getVringBase',
      'setLogBase',
    ]);
    expect(backend.heldFds).to.equal(3); // call 0, kick 1, log (err 2 came without an fd)
    fe.close();
    await new Promise<void>((r) => setImmediate(r));
    while (!conn.closed) await new Promise<void>((r) => setTimeout(r, 5));
    expect(closedReason).to.equal('EOF');
    expect(backend.heldFds).to.equal(0);
    expect(sys.watchedCount()).to.equal(0);
    expect(openFdCount()).to.equal(before);
    cap.stop();
    expect(cap.texts()).to.deep.equal([]);
  });
});
