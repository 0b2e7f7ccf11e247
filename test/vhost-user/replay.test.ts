/**
 * Replays sessions of a real QEMU 7.2 (recorded by test/tools/record-qemu-session: TCG guest, Debian
 * 6.1 virtio_net, 2 queue pairs, mq=on, host_mtu=1500; the guest brings eth0 up and powers off)
 * against the dispatcher, with the recording back end configured as it was during the recording.
 * Every reply must match the recorded bytes exactly, and the back end must see QEMU's call
 * sequence: SET_OWNER ... memory ... for every ring NUM/BASE/ADDR/KICK/CALL ... GET_VRING_BASE.
 *
 * The recorded fds are gone, so fresh ones stand in: a memfd per guest RAM block (the same file
 * each time QEMU sends that block again, as QEMU does), sized to the region, and eventfds for
 * kick/call/err. Ring addresses are then translated by the real MemTable into those mappings.
 *
 * Fixtures (recorded with `test/tools/record-qemu-session --out FILE [--protocol-features HEX]`):
 * - qemu72-session.msgpack: protocol features 0x201f (the bridge's set without
 *   CONFIGURE_MEM_SLOTS), so QEMU sends SET_MEM_TABLE;
 * - qemu72-session-mem-slots.msgpack: 0xa01f, exactly the bridge's set, so QEMU sends
 *   GET_MAX_MEM_SLOTS and ADD_MEM_REG instead, once per queue pair (see recording-backend.ts).
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { captureLog } from '../log-capture.js';
import { mappedRegionCount } from '../../src/memtable/index.js';
import { requestName } from '../../src/vhost-user/constants.js';
import { Dispatcher } from '../../src/vhost-user/dispatcher.js';
import { readTrace } from '../../src/vhost-user/trace.js';
import { openFdCount } from '../fdcount.js';
import { FdFactory } from './replay-fds.js';
import { RecordingBackend } from './recording-backend.js';

const fixtures = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures');

function replay(file: string) {
  const { header, events } = readTrace(join(fixtures, file));
  const meta = header.meta as { features: string; protocolFeatures: string; queuePairs: number; maxMemSlots: number };
  const backend = new RecordingBackend({
    features: BigInt(meta.features),
    protocolFeatures: BigInt(meta.protocolFeatures),
    queuePairs: meta.queuePairs,
    maxMemSlots: meta.maxMemSlots,
  });
  const factory = new FdFactory();
  const replies: { name: string; got: Buffer | null; want: Buffer | null }[] = [];
  let ringsAtEnd: RecordingBackend['rings'] | null = null;
  let dispatcher: Dispatcher | null = null;
  for (const e of events) {
    if (e.e === 'connect') dispatcher = new Dispatcher(backend);
    else if (e.e === 'msg') {
      const out = dispatcher!.handle({
        header: { request: e.request, flags: e.flags, size: e.size },
        payload: e.payload,
        fds: factory.forMessage(e),
      });
      expect(out.result, `${requestName(e.request)} as recorded`).to.equal(e.result);
      replies.push({ name: requestName(e.request), got: out.reply, want: e.reply });
    } else {
      ringsAtEnd = new Map([...backend.rings].map(([k, v]) => [k, { ...v }]));
      dispatcher!.disconnected();
    }
  }
  factory.close();
  return { meta, backend, replies, ringsAtEnd: ringsAtEnd!, events };
}

for (const [file, memory] of [
  ['qemu72-session.msgpack', 'setMemTable'],
  ['qemu72-session-mem-slots.msgpack', 'addMemReg'],
] as const) {
  describe(`vhost-user replay of a real QEMU 7.2 session (${file})`, () => {
    let fdsBefore: number;
    let result: ReturnType<typeof replay>;
    let warnings: string[];

    before(() => {
      fdsBefore = openFdCount();
      const cap = captureLog('warn');
      try {
        result = replay(file);
      } finally {
        cap.stop();
      }
      warnings = cap.texts();
    });

    it('was recorded from QEMU with 2 queue pairs, and replays without a warning', () => {
      expect(result.meta.queuePairs).to.equal(2);
      expect(String(result.meta['vmm' as keyof typeof result.meta])).to.match(
        /^qemu-system-x86_64 .*-netdev vhost-user,.*queues=2 .*mq=on/,
      );
      expect(result.events.filter((e) => e.e === 'connect')).to.have.length(1);
      expect(warnings).to.deep.equal([]);
    });

    it('answers every message with the recorded bytes', () => {
      expect(result.replies.length).to.be.greaterThan(60);
      for (const [i, r] of result.replies.entries()) expect(r.got, `#${i + 1} ${r.name}`).to.deep.equal(r.want);
      const answered = result.replies.filter((r) => r.want !== null).map((r) => r.name);
      expect(answered).to.include.members([
        'GET_FEATURES',
        'GET_PROTOCOL_FEATURES',
        'GET_QUEUE_NUM',
        'NET_SET_MTU',
        'GET_VRING_BASE',
      ]);
      if (memory === 'addMemReg') expect(answered).to.include.members(['GET_MAX_MEM_SLOTS', 'ADD_MEM_REG']);
      else expect(answered).to.include('SET_MEM_TABLE');
    });

    const setupOrder =
      `sees SET_OWNER, then ${memory === 'setMemTable' ? 'SET_MEM_TABLE' : 'ADD_MEM_REG'}, then ` +
      `NUM/BASE/ADDR/KICK/CALL for all 4 rings, then GET_VRING_BASE for each`;
    it(setupOrder, () => {
      const calls = result.backend.calls;
      const at = (method: string, pred: (args: unknown[]) => boolean = () => true, from = 0) =>
        calls.findIndex((c, i) => i >= from && c.method === method && pred(c.args));
      const owner = at('setOwner');
      const mem = at(memory);
      expect(owner, 'SET_OWNER').to.be.at.least(0);
      expect(mem, 'memory after SET_OWNER').to.be.greaterThan(owner);
      expect(at('setFeatures'), 'SET_FEATURES before the memory').to.be.within(owner, mem);
      let lastKick = 0;
      for (let ring = 0; ring < 4; ring++) {
        const isRing = (a: unknown[]) => a[0] === ring;
        const num = at('setVringNum', isRing, mem);
        const base = at('setVringBase', isRing, num);
        const addr = at('setVringAddr', (a) => (a[0] as { index: number }).index === ring, base);
        const kick = at('setVringKick', (a) => a[0] === ring && a[1] === 'fd', addr);
        const call = at('setVringCall', (a) => a[0] === ring && a[1] === 'fd', kick);
        expect(
          [num, base, addr, kick, call].every((i) => i > mem),
          `ring ${ring}: NUM ${num} BASE ${base} ADDR ${addr} KICK ${kick} CALL ${call}`,
        ).to.equal(true);
        lastKick = Math.max(lastKick, kick);
      }
      for (let ring = 0; ring < 4; ring++)
        expect(
          at('getVringBase', (a) => a[0] === ring, lastKick),
          `GET_VRING_BASE ${ring}`,
        ).to.be.greaterThan(lastKick);
      expect(calls.at(-1)?.method).to.equal('disconnected');
      if (memory === 'addMemReg') {
        // QEMU 7.2 adds the same RAM block once per queue pair; the second is a no-op.
        expect(calls.filter((c) => c.method === 'addMemReg')).to.have.length(2);
      }
    });

    it('negotiated what QEMU 7.2 takes of the offer, and every ring was translated into the mapped guest RAM', () => {
      const proto = result.backend.calls.filter((c) => c.method === 'setProtocolFeatures').map((c) => c.args[0]);
      expect(proto).to.deep.equal([BigInt(result.meta.protocolFeatures), BigInt(result.meta.protocolFeatures)]);
      for (let ring = 0; ring < 4; ring++) {
        const r = result.ringsAtEnd.get(ring)!;
        expect(r.num, `ring ${ring} size`).to.equal(256);
        expect(r.local?.desc, `ring ${ring} translated`).to.be.a('bigint');
        // poweroff: QEMU re-sends enable 1 for pair 0 only
        expect(r.enabled, `ring ${ring} enabled`).to.equal(ring < 2);
      }
    });

    it('released every fd and mapping after the disconnect', () => {
      expect(result.backend.heldFds).to.equal(0);
      expect(mappedRegionCount()).to.equal(0);
      expect(openFdCount()).to.equal(fdsBefore);
    });
  });
}
