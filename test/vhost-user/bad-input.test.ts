/**
 * The front door under bad input. Every case runs over a REAL unix socket against a transport
 * server in this process, and asserts:
 *   - ONE warning line, naming the request and the reason;
 *   - NACK (u64 1) or drop (EOF), as the case requires;
 *   - every fd the message carried was closed (the process's fd count is back where it was, the
 *     back end holds none, no guest memory stays mapped, only the listener is polled);
 *   - the server lives on: the next front-end is served (GET_FEATURES answered).
 */
import { expect } from 'chai';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { bit, maskOf } from '../../src/bits.js';
import { captureLog, type LogCapture } from '../../src/log.js';
import { mappedRegionCount } from '../../src/memtable/index.js';
import * as sys from '../../src/sys/index.js';
import { PROTOCOL_F } from '../../src/vhost-user/constants.js';
import { VhostUserServer } from '../../src/vhost-user/transport.js';
import { openFdCount, tempDir } from '../fdcount.js';
import { type Built, Bytes, ID, msg, reply, V1, REPLY, type R } from '../../lab/frontend/builder.js';
import { BRIDGE_PROTOCOL_FEATURES, bridgeLike, NET_FEATURES } from './fixtures.js';
import { eventfds, memfd, once, TestFrontEnd } from '../../lab/frontend/frontend.js';
import { RecordingBackend } from './recording-backend.js';

const MiB = 1n << 20n;
const QVA = 0x7f0000000000n;
/** A 1 MiB region at gpa 0 and the memfd that backs it. */
const REGION: R = { gpa: 0n, size: MiB, qva: QVA };
const regionFd = (size: bigint = MiB): number => memfd(size);

/** One step before the bad input: a message, its fds, and the reply it must get (or none). */
interface Step {
  send: Built;
  fds?: () => number[];
  reply?: Buffer;
}

interface Case {
  title: string;
  /** Steps that must succeed first (negotiation, memory). */
  setup?: Step[];
  /** The bad input. */
  bad: (fe: TestFrontEnd) => void;
  /** drop: the back end hangs up; nack: it answers u64 1 and stays; hangup: the front-end hangs up (mid-message). */
  expect: 'drop' | 'nack' | 'hangup';
  /** The request the warning must name, and the reason it must give. */
  request: string;
  reason: RegExp | string;
  /** For nack: the request id of the NACK. */
  nackOf?: number;
  /** Make the back end refuse this method. */
  refuse?: [Parameters<RecordingBackend['refuse']['set']>[0], string];
}

const negotiate = (proto: bigint = BRIDGE_PROTOCOL_FEATURES): Step => ({ send: msg.setProtocolFeatures(proto) });
const memTable = (): Step => ({
  send: msg.setMemTable([REGION]).needReply(),
  fds: () => [regionFd()],
  reply: reply.ack(ID.SET_MEM_TABLE),
});
const send = (b: Built, fds?: () => number[]) => (fe: TestFrontEnd) => fe.send(b, fds?.());
/** A header with arbitrary fields followed by `payload` bytes. */
const rawHeader = (request: number, flags: number, size: number, payload = Buffer.alloc(0)) =>
  new Bytes().u32(request).u32(flags).u32(size).add(payload).join();

const cases: Case[] = [
  // --- header ------------------------------------------------------------------------------
  {
    title: 'unknown request id',
    bad: send(msg.raw(99)),
    expect: 'drop',
    request: 'request 99 (unknown)',
    reason: 'unknown request',
  },
  {
    title: 'request id 0',
    bad: send(msg.raw(0)),
    expect: 'drop',
    request: 'request 0 (unknown)',
    reason: 'unknown request',
  },
  {
    title: 'a spec request the table does not support (SET_LOG_FD, with its fd)',
    bad: send(msg.raw(ID.SET_LOG_FD).withFds(1)),
    expect: 'drop',
    request: 'SET_LOG_FD',
    reason: 'not supported by this back end',
  },
  {
    title: 'IOTLB_MSG (needs VIRTIO_F_IOMMU_PLATFORM, never offered)',
    bad: send(msg.raw(ID.IOTLB_MSG, Buffer.alloc(34))),
    expect: 'drop',
    request: 'IOTLB_MSG',
    reason: 'not supported by this back end',
  },
  {
    title: 'version bits 0',
    bad: send(msg.getFeatures().withFlags(0)),
    expect: 'drop',
    request: 'GET_FEATURES',
    reason: 'version bits are 0, not 1',
  },
  {
    title: 'version bits 2',
    bad: send(msg.setOwner().withFlags(2)),
    expect: 'drop',
    request: 'SET_OWNER',
    reason: 'version bits are 2, not 1',
  },
  {
    title: 'REPLY bit set by the front-end',
    bad: send(msg.getFeatures().withFlags(V1 | REPLY)),
    expect: 'drop',
    request: 'GET_FEATURES',
    reason: 'the REPLY flag is set on a request from the front-end',
  },
  {
    title: 'a reserved flag bit',
    bad: send(msg.setOwner().withFlags(V1 | 0x100)),
    expect: 'drop',
    request: 'SET_OWNER',
    reason: 'reserved flag bits 0x100 are set',
  },
  {
    title: 'payload larger than the maximum (refused before reading it)',
    bad: (fe) => fe.send(rawHeader(ID.SET_MEM_TABLE, V1, 0x10000), eventfds(1)),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'payload size 65536 is more than the maximum 4096',
  },
  {
    title: 'garbage bytes',
    bad: (fe) => fe.send(Buffer.from('GARBAGE!GARBAGE!GARBAGE!')),
    expect: 'drop',
    request: `request ${Buffer.from('GARB').readUInt32LE(0)} (unknown)`,
    reason: /payload size \d+ is more than the maximum 4096/,
  },
  {
    title: 'garbage with a plausible header',
    bad: (fe) => fe.send(rawHeader(0xdeadbeef, V1, 8, Buffer.from('\x00\x01\x02\x03\x04\x05\x06\x07'))),
    expect: 'drop',
    request: `request ${0xdeadbeef} (unknown)`,
    reason: 'unknown request',
  },
  // --- size rule ---------------------------------------------------------------------------
  {
    title: 'GET_FEATURES with a payload',
    bad: send(msg.getFeatures().withPayloadLength(8)),
    expect: 'drop',
    request: 'GET_FEATURES',
    reason: 'payload size 8, expected 0',
  },
  {
    title: 'SET_FEATURES with 4 bytes',
    bad: send(msg.setFeatures(1n).withPayloadLength(4)),
    expect: 'drop',
    request: 'SET_FEATURES',
    reason: 'payload size 4, expected 8',
  },
  {
    title: 'SET_VRING_ADDR with 32 bytes',
    bad: send(msg.setVringAddr({ index: 0, desc: 0n, used: 0n, avail: 0n }).withPayloadLength(32)),
    expect: 'drop',
    request: 'SET_VRING_ADDR',
    reason: 'payload size 32, expected 40',
  },
  {
    title: 'SET_MEM_TABLE whose size does not match nregions',
    bad: send(msg.setMemTable([REGION], { nregions: 2 }), () => [regionFd()]),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'payload size 40 does not match nregions 2 (8 + 32 x 2 = 72)',
  },
  {
    title: 'SET_MEM_TABLE shorter than its 8-byte head',
    bad: send(msg.raw(ID.SET_MEM_TABLE, Buffer.alloc(4))),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'payload size 4 is shorter than the 8-byte memory table head',
  },
  // --- fd rule -----------------------------------------------------------------------------
  {
    title: 'an fd on a request that takes none',
    bad: send(msg.setVringNum(0, 256).withFds(1)),
    expect: 'drop',
    request: 'SET_VRING_NUM',
    reason: 'carries 1 fd, expected 0 (none)',
  },
  {
    title: 'SET_VRING_KICK without fd or no-fd bit',
    bad: send(msg.setVringKick(0).withFds(0)),
    expect: 'drop',
    request: 'SET_VRING_KICK',
    reason: 'carries 0 fds, expected 1 (by no-fd bit)',
  },
  {
    title: 'SET_VRING_CALL with the no-fd bit AND an fd',
    bad: send(msg.setVringCall(0, { noFd: true }).withFds(1)),
    expect: 'drop',
    request: 'SET_VRING_CALL',
    reason: 'carries 1 fd, expected 0 (by no-fd bit)',
  },
  {
    title: 'SET_VRING_ERR with two fds',
    bad: send(msg.setVringErr(0).withFds(2)),
    expect: 'drop',
    request: 'SET_VRING_ERR',
    reason: 'carries 2 fds, expected 1 (by no-fd bit)',
  },
  {
    title: 'SET_MEM_TABLE with fewer fds than regions',
    bad: send(msg.setMemTable([REGION, { gpa: MiB, size: MiB, qva: QVA + MiB }]), () => [regionFd()]),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'carries 1 fd, expected 2 (one per region)',
  },
  {
    title: 'SET_MEM_TABLE with more fds than regions',
    bad: send(msg.setMemTable([REGION]), () => [regionFd(), regionFd(), regionFd()]),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'carries 3 fds, expected 1 (one per region)',
  },
  {
    title: 'ADD_MEM_REG without its fd',
    setup: [negotiate()],
    bad: send(msg.addMemReg(REGION).withFds(0)),
    expect: 'drop',
    request: 'ADD_MEM_REG',
    reason: 'carries 0 fds, expected 1 (one)',
  },
  {
    title: 'SET_LOG_BASE with two fds',
    setup: [negotiate()],
    bad: send(msg.setLogBase(0x1000n, 0n).withFds(2)),
    expect: 'drop',
    request: 'SET_LOG_BASE',
    reason: 'carries 2 fds, expected 1 (one)',
  },
  {
    title: 'more fds than a message may carry (MSG_CTRUNC)',
    bad: send(msg.setMemTable([REGION]).withFds(12)),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'more fds than the 8 a message may carry (MSG_CTRUNC; the fds were closed)',
  },
  // --- payload syntax ----------------------------------------------------------------------
  {
    title: 'nregions 0',
    bad: send(msg.setMemTable([])),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'nregions is 0',
  },
  {
    title: 'nregions 9 (with 8 fds)',
    bad: send(
      msg
        .setMemTable(
          Array.from({ length: 9 }, (_, i) => ({ gpa: BigInt(i) * MiB, size: MiB, qva: QVA + BigInt(i) * MiB })),
        )
        .withFds(8),
    ),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'nregions 9 is more than 8',
  },
  {
    title: 'memory table padding not zero',
    bad: send(msg.setMemTable([REGION], { padding: 1 }), () => [regionFd()]),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'padding is 0x1, not 0',
  },
  {
    title: 'zero-size region',
    bad: send(msg.setMemTable([{ ...REGION, size: 0n }]), () => [regionFd()]),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: 'region 0: zero-size region',
  },
  {
    title: 'region whose guest range wraps past 2^64',
    bad: send(msg.setMemTable([{ ...REGION, gpa: (1n << 64n) - 0x1000n }]), () => [regionFd()]),
    expect: 'drop',
    request: 'SET_MEM_TABLE',
    reason: /^region 0: guest address 0xfffffffffffff000 \+ size 0x100000 overflows u64 /,
  },
  {
    title: 'ADD_MEM_REG padding not zero',
    setup: [negotiate()],
    bad: send(msg.addMemReg(REGION, { padding: 5n }), () => [regionFd()]),
    expect: 'drop',
    request: 'ADD_MEM_REG',
    reason: 'padding is 0x5, not 0',
  },
  {
    title: 'unknown vring-addr flag bits',
    bad: send(msg.setVringAddr({ index: 0, flags: 0x6, desc: QVA, used: QVA + 0x2000n, avail: QVA + 0x1000n })),
    expect: 'drop',
    request: 'SET_VRING_ADDR',
    reason: /^unknown flag bits 0x6/,
  },
  {
    title: 'misaligned descriptor table',
    bad: send(msg.setVringAddr({ index: 0, desc: QVA + 8n, used: QVA + 0x2000n, avail: QVA + 0x1000n })),
    expect: 'drop',
    request: 'SET_VRING_ADDR',
    reason: 'descriptor table 0x7f0000000008 is not 16-byte aligned',
  },
  {
    title: 'misaligned used ring',
    bad: send(msg.setVringAddr({ index: 0, desc: QVA, used: QVA + 0x2002n, avail: QVA + 0x1000n })),
    expect: 'drop',
    request: 'SET_VRING_ADDR',
    reason: 'used ring 0x7f0000002002 is not 4-byte aligned',
  },
  {
    title: 'SET_VRING_ENABLE with enable 2',
    setup: [negotiate()],
    bad: send(msg.setVringEnable(0, 2).needReply()),
    expect: 'drop',
    request: 'SET_VRING_ENABLE',
    reason: 'enable is 2, not 0 or 1',
  },
  {
    title: 'SET_VRING_KICK u64 with undefined bits',
    bad: send(msg.raw(ID.SET_VRING_KICK, new Bytes().u64(0x10000n).join())),
    expect: 'drop',
    request: 'SET_VRING_KICK',
    reason: /^undefined bits 0x10000 set/,
  },
  // --- refused: ring index, gates, semantics -----------------------------------------------
  {
    title: 'ring index beyond ringCount(), ack asked: NACK',
    setup: [negotiate()],
    bad: send(msg.setVringNum(4, 256).needReply()),
    expect: 'nack',
    nackOf: ID.SET_VRING_NUM,
    request: 'SET_VRING_NUM',
    reason: 'ring 4: this port has 2 queue pairs (rings 0-3); the front-end asked for more (start the port with --queues 3)',
  },
  {
    title: 'ring index beyond ringCount(), no ack asked: drop',
    setup: [negotiate()],
    bad: send(msg.setVringBase(7, 0)),
    expect: 'drop',
    request: 'SET_VRING_BASE',
    reason: 'ring 7: this port has 2 queue pairs (rings 0-3); the front-end asked for more (start the port with --queues 4)',
  },
  {
    title: 'kick for a ring beyond ringCount(), with its fd: NACK, fd closed',
    setup: [negotiate()],
    bad: send(msg.setVringKick(200).needReply()),
    expect: 'nack',
    nackOf: ID.SET_VRING_KICK,
    request: 'SET_VRING_KICK',
    reason: 'ring 200: this port has 2 queue pairs (rings 0-3); the front-end asked for more (start the port with --queues 101)',
  },
  {
    title: 'GET_VRING_BASE beyond ringCount() (a value cannot be NACKed)',
    bad: send(msg.getVringBase(9)),
    expect: 'drop',
    request: 'GET_VRING_BASE',
    reason: 'ring 9: this port has 2 queue pairs (rings 0-3); the front-end asked for more (start the port with --queues 5)',
  },
  {
    title: 'GET_QUEUE_NUM without MQ negotiated',
    bad: send(msg.getQueueNum()),
    expect: 'drop',
    request: 'GET_QUEUE_NUM',
    reason: 'protocol feature MQ was not negotiated',
  },
  {
    title: 'RESET_DEVICE with NEED_REPLY before REPLY_ACK was negotiated',
    bad: send(msg.resetDevice().needReply()),
    expect: 'drop',
    request: 'RESET_DEVICE',
    reason: 'protocol feature RESET_DEVICE was not negotiated',
  },
  {
    title: 'ADD_MEM_REG without CONFIGURE_MEM_SLOTS: NACK, fd closed',
    setup: [negotiate(maskOf(PROTOCOL_F.REPLY_ACK, PROTOCOL_F.MQ))],
    bad: send(msg.addMemReg(REGION).needReply(), () => [regionFd()]),
    expect: 'nack',
    nackOf: ID.ADD_MEM_REG,
    request: 'ADD_MEM_REG',
    reason: 'protocol feature CONFIGURE_MEM_SLOTS was not negotiated',
  },
  {
    title: 'SET_LOG_BASE without LOG_SHMFD, fd closed',
    setup: [negotiate(bit(PROTOCOL_F.REPLY_ACK))],
    bad: send(msg.setLogBase(0x1000n, 0n), () => [memfd(0x1000)]),
    expect: 'drop',
    request: 'SET_LOG_BASE',
    reason: 'protocol feature LOG_SHMFD was not negotiated',
  },
  {
    title: 'SET_VRING_ENABLE without PROTOCOL_FEATURES negotiated',
    bad: send(msg.setVringEnable(0, 1)),
    expect: 'drop',
    request: 'SET_VRING_ENABLE',
    reason: 'VHOST_USER_F_PROTOCOL_FEATURES (bit 30) was not negotiated',
  },
  {
    title: 'SET_FEATURES acking a feature never offered',
    setup: [negotiate()],
    bad: send(msg.setFeatures(NET_FEATURES | (1n << 34n)).needReply()),
    expect: 'nack',
    nackOf: ID.SET_FEATURES,
    request: 'SET_FEATURES',
    reason: 'acks features that were not offered: 0x400000000 (RING_PACKED)',
  },
  // --- guest memory (through the real MemTable) --------------------------------------------
  {
    title: 'overlapping regions: NACK, both fds closed',
    setup: [negotiate()],
    bad: send(msg.setMemTable([REGION, { gpa: MiB / 2n, size: MiB, qva: QVA + 4n * MiB }]).needReply(), () => [
      regionFd(),
      regionFd(),
    ]),
    expect: 'nack',
    nackOf: ID.SET_MEM_TABLE,
    request: 'SET_MEM_TABLE',
    reason: /overlaps region 0 .* in guest-physical space/,
  },
  {
    title: 'region larger than its fd: NACK, fd closed',
    setup: [negotiate()],
    bad: send(msg.setMemTable([REGION]).needReply(), () => [regionFd(MiB / 2n)]),
    expect: 'nack',
    nackOf: ID.SET_MEM_TABLE,
    request: 'SET_MEM_TABLE',
    reason: /fd \d+ is too small: 0x80000 bytes, the region needs mmapOffset \+ size = 0x100000/,
  },
  {
    title: 'a memory fd that is not a file (an eventfd): NACK',
    setup: [negotiate()],
    bad: send(msg.addMemReg(REGION).needReply(), () => eventfds(1)),
    expect: 'nack',
    nackOf: ID.ADD_MEM_REG,
    request: 'ADD_MEM_REG',
    reason: /is a other, not a regular file/,
  },
  {
    title: 'ADD_MEM_REG overlapping a region already there: NACK',
    setup: [negotiate(), memTable()],
    bad: send(msg.addMemReg({ gpa: 2n * MiB, size: MiB, qva: QVA + MiB / 2n }).needReply(), () => [regionFd()]),
    expect: 'nack',
    nackOf: ID.ADD_MEM_REG,
    request: 'ADD_MEM_REG',
    reason: /in front-end virtual space/,
  },
  {
    title: 'REM_MEM_REG of a region that is not there: NACK',
    setup: [negotiate(), memTable()],
    bad: send(msg.remMemReg({ gpa: 8n * MiB, size: MiB, qva: QVA + 8n * MiB }).needReply()),
    expect: 'nack',
    nackOf: ID.REM_MEM_REG,
    request: 'REM_MEM_REG',
    reason: /no region with gpa 0x800000/,
  },
  {
    title: 'ring addresses outside every region, ack asked: NACK',
    setup: [negotiate(), memTable(), { send: msg.setVringNum(0, 256) }],
    bad: send(
      msg.setVringAddr({ index: 0, desc: QVA + 2n * MiB, used: QVA + 0x2000n, avail: QVA + 0x1000n }).needReply(),
    ),
    expect: 'nack',
    nackOf: ID.SET_VRING_ADDR,
    request: 'SET_VRING_ADDR',
    reason: /ring 0: desc area \(qva 0x7f0000200000.*is not inside guest memory/,
  },
  {
    title: 'ring that runs off the end of its region, no ack asked: drop',
    setup: [negotiate(), memTable(), { send: msg.setVringNum(1, 256) }],
    bad: send(msg.setVringAddr({ index: 1, desc: QVA, used: QVA + MiB - 0x100n, avail: QVA + 0x1000n })),
    expect: 'drop',
    request: 'SET_VRING_ADDR',
    reason: /ring 1: used area .* is not inside guest memory/,
  },
  {
    title: 'ring addresses with no memory at all (QEMU without share=on)',
    setup: [negotiate(), { send: msg.setVringNum(0, 256) }],
    bad: send(msg.setVringAddr({ index: 0, desc: QVA, used: QVA + 0x2000n, avail: QVA + 0x1000n })),
    expect: 'drop',
    request: 'SET_VRING_ADDR',
    reason: /is not inside guest memory/,
  },
  // --- the front-end hangs up mid-message ---------------------------------------------------
  {
    title: 'peer closes mid-header',
    bad: (fe) => {
      fe.send(msg.setMemTable([REGION]).bytes.subarray(0, 5), [regionFd()]);
      fe.close();
    },
    expect: 'hangup',
    request: 'SET_MEM_TABLE',
    reason: 'the front-end closed the connection mid-header (5 of 12 bytes)',
  },
  {
    title: 'peer closes mid-payload, with the fd already sent',
    bad: (fe) => {
      fe.send(msg.setMemTable([REGION]).bytes.subarray(0, 30), [regionFd()]);
      fe.close();
    },
    expect: 'hangup',
    request: 'SET_MEM_TABLE',
    reason: 'the front-end closed the connection mid-payload (18 of 40 bytes)',
  },
  {
    title: 'peer closes right after a header that announces a payload',
    setup: [negotiate()],
    bad: (fe) => {
      fe.send(msg.setVringKick(1).bytes.subarray(0, 12), eventfds(1));
      fe.close();
    },
    expect: 'hangup',
    request: 'SET_VRING_KICK',
    reason: 'the front-end closed the connection mid-payload (0 of 8 bytes)',
  },
  // --- the back end refuses --------------------------------------------------------------------
  {
    title: 'a back-end refusal with no way to tell the front-end',
    setup: [negotiate()],
    bad: send(msg.setOwner()),
    refuse: ['setOwner', 'this session already has an owner'],
    expect: 'drop',
    request: 'SET_OWNER',
    reason: 'this session already has an owner',
  },
];

describe('vhost-user bad input (real sockets, one server)', function () {
  let dir: string;
  let path: string;
  let server: VhostUserServer;
  let backend: RecordingBackend;
  let cap: LogCapture;

  before(() => {
    dir = tempDir();
    path = join(dir, 'vu.sock');
    backend = new RecordingBackend(bridgeLike());
    server = VhostUserServer.listen(path, backend);
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
    expect(sys.watchedCount()).to.equal(0);
  });
  beforeEach(() => {
    cap = captureLog('warn');
  });
  afterEach(() => {
    cap.stop();
    backend.refuse.clear();
  });

  it('has at least 30 cases', () => {
    expect(cases.length).to.be.at.least(30);
  });

  for (const c of cases) {
    it(`${c.title}: ${c.expect}`, async () => {
      const before = openFdCount();
      if (c.refuse) backend.refuse.set(...c.refuse);
      const fe = TestFrontEnd.connect(path);
      try {
        await once(server, 'connection');
        for (const s of c.setup ?? []) {
          fe.send(s.send, s.fds?.());
          if (s.reply) expect(await fe.reply(), `setup ${s.send.request}`).to.deep.equal(s.reply);
        }
        expect(cap.texts(), 'setup went through without a warning').to.deep.equal([]);
        const gone = once<string>(server, 'disconnect');
        c.bad(fe);
        if (c.expect === 'drop') {
          expect(await fe.reply(), 'the back end hangs up').to.equal('eof');
        } else if (c.expect === 'nack') {
          expect(await fe.reply(), 'NACK').to.deep.equal(reply.nack(c.nackOf!));
          expect(await fe.silent(), 'nothing after the NACK').to.equal(true);
          expect(server.connection, 'still connected after a NACK').to.not.equal(null);
        }
        fe.close();
        await gone;
      } finally {
        fe.close();
      }
      // One line, naming the request and the reason.
      const lines = cap.texts('warn');
      expect(lines, 'exactly one warning').to.have.length(1);
      const prefix = `WARN ${c.request}: `;
      expect(lines[0].startsWith(prefix), `'${lines[0]}' names ${c.request}`).to.equal(true);
      const rest = lines[0].slice(prefix.length);
      if (typeof c.reason === 'string') expect(rest).to.include(c.reason);
      else expect(rest).to.match(c.reason);
      if (c.expect === 'drop') expect(rest).to.match(/; dropping the connection\)$/);
      if (c.expect === 'nack') expect(rest).to.match(/\(refused; NACK sent\)$/);
      // Every fd closed, memory unmapped, only the listener polled.
      expect(backend.heldFds, 'back end holds no fd').to.equal(0);
      expect(mappedRegionCount(), 'no guest memory mapped').to.equal(0);
      expect(sys.watchedCount(), 'only the listener is polled').to.equal(1);
      expect(openFdCount(), 'fd count back to before').to.equal(before);
      // The server lives: the next front-end is served.
      const next = TestFrontEnd.connect(path);
      try {
        expect(await next.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
        const gone = once(server, 'disconnect');
        next.close();
        await gone;
      } finally {
        next.close();
      }
    });
  }
});
