/**
 * The dispatcher in process (no socket): negotiation as QEMU 7.2 does it, REPLY_ACK in its one
 * place, gates, fd ownership, and the debug line of every message. Bad input over real sockets is
 * in bad-input.test.ts.
 */
import { expect } from 'chai';
import { bit, maskOf } from '../../src/bits.js';
import { captureLog, type LogCapture } from '../log-capture.js';
import * as sys from '../../src/sys/index.js';
import { PROTOCOL_F } from '../../src/vhost-user/constants.js';
import { Dispatcher } from '../../src/vhost-user/dispatcher.js';
import type { Message } from '../../src/vhost-user/framer.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F } from '../../src/virtio.js';
import { openFdCount } from '../fdcount.js';
import { ID, msg, reply, type Built } from '../../lab/frontend/builder.js';
import { BRIDGE_PROTOCOL_FEATURES, bridgeLike, NET_FEATURES } from './fixtures.js';
import { eventfds, memfd } from '../../lab/frontend/frontend.js';
import { RecordingBackend, type RecordingConfig } from './recording-backend.js';

/** The message as the framer would hand it over, with `fds` (default: fresh eventfds as the builder says). */
function message(b: Built, fds?: number[]): Message {
  return {
    header: { request: b.request, flags: b.flags, size: b.payload.length },
    payload: b.payload,
    fds: fds ?? eventfds(b.fds),
  };
}

describe('vhost-user dispatcher', () => {
  let cap: LogCapture;
  let backend: RecordingBackend;
  let d: Dispatcher;
  let fdsBefore: number;
  const setup = (cfg: Partial<RecordingConfig> = {}) => {
    backend = new RecordingBackend(bridgeLike(cfg));
    d = new Dispatcher(backend);
  };
  const handle = (b: Built, fds?: number[]) => d.handle(message(b, fds));
  const negotiate = (proto = BRIDGE_PROTOCOL_FEATURES) =>
    expect(handle(msg.setProtocolFeatures(proto)).result).to.equal('ok');

  beforeEach(() => {
    fdsBefore = openFdCount();
    cap = captureLog('debug');
    setup();
  });
  afterEach(() => {
    cap.stop();
    d.disconnected();
    expect(openFdCount(), 'fds back to where they were').to.equal(fdsBefore);
  });

  it("answers QEMU 7.2's opening exchange, in its order", () => {
    // QEMU 7.2 opens with (test/fixtures sessions): GET_FEATURES, GET_PROTOCOL_FEATURES,
    // SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_OWNER.
    expect(handle(msg.getFeatures())).to.deep.equal({
      reply: reply.u64(ID.GET_FEATURES, NET_FEATURES),
      close: false,
      result: 'ok',
    });
    expect(handle(msg.getProtocolFeatures()).reply).to.deep.equal(
      reply.u64(ID.GET_PROTOCOL_FEATURES, BRIDGE_PROTOCOL_FEATURES),
    );
    expect(handle(msg.setProtocolFeatures(BRIDGE_PROTOCOL_FEATURES)).reply).to.equal(null);
    expect(handle(msg.getQueueNum()).reply).to.deep.equal(reply.u64(ID.GET_QUEUE_NUM, 2n));
    expect(handle(msg.getMaxMemSlots()).reply).to.deep.equal(reply.u64(ID.GET_MAX_MEM_SLOTS, 8n));
    expect(handle(msg.setOwner()).reply).to.equal(null);
    expect(backend.methods).to.deep.equal(['setProtocolFeatures', 'getQueueNum', 'getMaxMemSlots', 'setOwner']);
    expect(d.state.protocolFeatures).to.equal(BRIDGE_PROTOCOL_FEATURES);
  });

  it('owns the negotiated protocol features: the back end reads them from it, null before and after', () => {
    expect(backend.negotiated, 'attached when the connection began').to.equal(d.state);
    expect(backend.negotiated?.protocolFeatures).to.equal(null);
    negotiate(maskOf(PROTOCOL_F.MQ));
    expect(backend.negotiated?.protocolFeatures).to.equal(maskOf(PROTOCOL_F.MQ));
    d.disconnected();
    expect(backend.negotiated, 'dropped with the connection').to.equal(null);
  });

  const enableBeforeFeatures =
    'accepts SET_VRING_ENABLE before SET_FEATURES once protocol features were negotiated (QEMU sends it first)';
  it(enableBeforeFeatures, () => {
    negotiate();
    expect(handle(msg.setVringEnable(0, 1)).result).to.equal('ok');
    expect(backend.calls.at(-1)).to.deep.equal({ method: 'setVringEnable', args: [0, true] });
  });

  const enableWithoutProtocol =
    'refuses SET_VRING_ENABLE when the front-end never took up PROTOCOL_FEATURES, or declined it in SET_FEATURES';
  it(enableWithoutProtocol, () => {
    expect(handle(msg.setVringEnable(0, 1)).result).to.equal('drop');
    expect(cap.texts('warn').at(-1)).to.match(
      /^WARN SET_VRING_ENABLE: VHOST_USER_F_PROTOCOL_FEATURES \(bit 30\) was not negotiated/,
    );
    setup();
    negotiate();
    expect(handle(msg.setFeatures(NET_FEATURES & ~bit(VHOST_USER_F_PROTOCOL_FEATURES))).result).to.equal('ok');
    expect(handle(msg.setVringEnable(0, 1)).result).to.equal('drop');
    expect(handle(msg.setFeatures(NET_FEATURES)).result).to.equal('ok');
    expect(handle(msg.setVringEnable(0, 0)).result).to.equal('ok');
  });

  it('GET/SET_PROTOCOL_FEATURES need VHOST_USER_F_PROTOCOL_FEATURES in the feature word', () => {
    setup({ features: NET_FEATURES & ~bit(VHOST_USER_F_PROTOCOL_FEATURES) });
    const out = handle(msg.getProtocolFeatures());
    expect(out).to.include({ reply: null, close: true, result: 'drop' });
    expect(cap.texts('warn')).to.deep.equal([
      'WARN GET_PROTOCOL_FEATURES: GET_FEATURES does not offer VHOST_USER_F_PROTOCOL_FEATURES (bit 30) (refused, ' +
        'and the front-end expects a value; dropping the connection)',
    ]);
  });

  describe('REPLY_ACK', () => {
    it('acks a NEED_REPLY request iff REPLY_ACK was negotiated', () => {
      expect(handle(msg.setOwner().needReply()).reply, 'before negotiation').to.equal(null);
      negotiate(maskOf(PROTOCOL_F.MQ));
      expect(handle(msg.setOwner().needReply()).reply, 'negotiated without REPLY_ACK').to.equal(null);
      negotiate();
      expect(handle(msg.setOwner().needReply()).reply).to.deep.equal(reply.ack(ID.SET_OWNER));
      expect(handle(msg.setOwner()).reply, 'no NEED_REPLY').to.equal(null);
    });

    const fromSetAlone =
      'is in force from SET_PROTOCOL_FEATURES alone, even if GET_PROTOCOL_FEATURES was never sent (rust-vmm #290)';
    it(fromSetAlone, () => {
      expect(handle(msg.setProtocolFeatures(bit(PROTOCOL_F.REPLY_ACK)).needReply()).reply).to.deep.equal(
        reply.ack(ID.SET_PROTOCOL_FEATURES),
      );
      expect(d.state.replyAck).to.equal(true);
    });

    it('value replies are sent once, NEED_REPLY or not', () => {
      negotiate();
      expect(handle(msg.getFeatures().needReply()).reply).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      expect(handle(msg.getVringBase(1).needReply()).reply).to.deep.equal(reply.vringState(ID.GET_VRING_BASE, 1, 0));
    });

    it('SET_LOG_BASE (LOG_SHMFD) always replies u64 0, as QEMU waits for a reply', () => {
      negotiate();
      expect(handle(msg.setLogBase(0x1000n, 0n), [memfd(0x1000)]).reply).to.deep.equal(reply.u64(ID.SET_LOG_BASE, 0n));
      expect(handle(msg.setLogBase(0x1000n, 0n).needReply(), [memfd(0x1000)]).reply).to.deep.equal(
        reply.u64(ID.SET_LOG_BASE, 0n),
      );
    });

    it('NACKs a refusal when asked, and drops the connection when not', () => {
      negotiate();
      backend.refuse.set('setVringNum', 'ring size 3 is not a power of two');
      expect(handle(msg.setVringNum(0, 3).needReply())).to.deep.equal({
        reply: reply.nack(ID.SET_VRING_NUM),
        close: false,
        result: 'nack',
        reason: 'ring size 3 is not a power of two',
      });
      expect(handle(msg.setVringNum(0, 3))).to.include({ reply: null, close: true, result: 'drop' });
      expect(cap.texts('warn')).to.deep.equal([
        'WARN SET_VRING_NUM: ring size 3 is not a power of two (refused; NACK sent)',
        'WARN SET_VRING_NUM: ring size 3 is not a power of two (refused, and the front-end asked for no reply; ' +
          'dropping the connection)',
      ]);
    });

    const afterEachRequest =
      'tells the back end after every message what became of it (afterRequest), and fails the request if that throws';
    it(afterEachRequest, () => {
      negotiate();
      backend.refuse.set('setVringNum', 'ring size 3 is not a power of two');
      handle(msg.setVringNum(0, 3).needReply());
      backend.refuse.delete('setVringNum');
      handle(msg.setVringNum(0, 256));
      expect(backend.done.slice(-2)).to.deep.equal([
        { request: 'SET_VRING_NUM', result: 'nack', reason: 'ring size 3 is not a power of two' },
        { request: 'SET_VRING_NUM', result: 'ok', reason: undefined },
      ]);
      backend.afterRequest = () => {
        throw new Error('cannot attach');
      };
      expect(handle(msg.setVringNum(0, 256).needReply()).reply).to.deep.equal(reply.nack(ID.SET_VRING_NUM));
      expect(cap.texts('warn').at(-1)).to.equal('ERROR SET_VRING_NUM: cannot attach (failed; NACK sent)');
    });

    it('treats any other error of a handler like a refusal', () => {
      negotiate();
      backend.setOwner = () => {
        throw new TypeError('boom');
      };
      expect(handle(msg.setOwner().needReply()).reply).to.deep.equal(reply.nack(ID.SET_OWNER));
      expect(cap.texts('warn').at(-1)).to.equal('ERROR SET_OWNER: boom (failed; NACK sent)');
    });
  });

  it('masks SET_PROTOCOL_FEATURES to the offer, with one warning', () => {
    // QEMU acks what it knows of the offer; a front-end that acks more is told nothing, but only the offer counts.
    const acked = BRIDGE_PROTOCOL_FEATURES | bit(PROTOCOL_F.BACKEND_REQ) | bit(PROTOCOL_F.STATUS);
    handle(msg.setProtocolFeatures(acked));
    expect(backend.calls).to.deep.equal([{ method: 'setProtocolFeatures', args: [BRIDGE_PROTOCOL_FEATURES] }]);
    expect(d.state.protocolFeatures).to.equal(BRIDGE_PROTOCOL_FEATURES);
    expect(cap.texts('warn')).to.deep.equal([
      'WARN SET_PROTOCOL_FEATURES: ignoring protocol features that were not offered: 0x10020 (BACKEND_REQ|STATUS)',
    ]);
  });

  it('refuses SET_FEATURES acking a bit that was not offered', () => {
    negotiate();
    const out = handle(msg.setFeatures(NET_FEATURES | bit(VIRTIO_F.RING_PACKED)).needReply());
    expect(out.reply).to.deep.equal(reply.nack(ID.SET_FEATURES));
    expect(cap.texts('warn')).to.deep.equal([
      'WARN SET_FEATURES: acks features that were not offered: 0x400000000 (RING_PACKED) (refused; NACK sent)',
    ]);
    expect(backend.methods).to.not.include('setFeatures');
  });

  it('refuses an MTU outside 68..65535 (NET_SET_MTU under MTU)', () => {
    negotiate();
    expect(handle(msg.netSetMtu(67n).needReply()).reply).to.deep.equal(reply.nack(ID.NET_SET_MTU));
    expect(handle(msg.netSetMtu(65536n).needReply()).reply).to.deep.equal(reply.nack(ID.NET_SET_MTU));
    expect(handle(msg.netSetMtu(1500n).needReply()).reply).to.deep.equal(reply.ack(ID.NET_SET_MTU));
    expect(backend.calls.at(-1)).to.deep.equal({ method: 'netSetMtu', args: [1500] });
  });

  it('gates protocol-feature requests on what SET_PROTOCOL_FEATURES acked', () => {
    negotiate(maskOf(PROTOCOL_F.REPLY_ACK));
    for (const b of [
      msg.resetDevice(),
      msg.sendRarp([1, 2, 3, 4, 5, 6]),
      msg.netSetMtu(1500n),
      msg.remMemReg({ gpa: 0n, size: 4096n, qva: 0n }),
    ]) {
      expect(handle(b.needReply()).reply).to.deep.equal(reply.nack(b.request));
    }
    expect(handle(msg.getQueueNum()).result, 'a value request cannot be NACKed').to.equal('drop');
    expect(cap.texts('warn').map((l) => l.replace(/ \(refused.*$/, ''))).to.deep.equal([
      'WARN RESET_DEVICE: protocol feature RESET_DEVICE was not negotiated',
      'WARN SEND_RARP: protocol feature RARP was not negotiated',
      'WARN NET_SET_MTU: protocol feature MTU was not negotiated',
      'WARN REM_MEM_REG: protocol feature CONFIGURE_MEM_SLOTS was not negotiated',
      'WARN GET_QUEUE_NUM: protocol feature MQ was not negotiated',
    ]);
  });

  describe('fds', () => {
    it('a handler that returns owns its fds; one that throws has them closed', () => {
      negotiate();
      const [kick] = eventfds(1);
      handle(msg.setVringKick(0), [kick]);
      expect(sys.isOpen(kick), 'kept by the back end').to.equal(true);
      backend.refuse.set('setVringCall', 'no');
      const [call] = eventfds(1);
      handle(msg.setVringCall(0).needReply(), [call]);
      expect(sys.isOpen(call), 'closed after the refusal').to.equal(false);
    });

    it('REM_MEM_REG: an fd (QEMU 7.2 sends one) is closed unused and the handler gets none', () => {
      negotiate();
      const fd = memfd(0x10000);
      handle(msg.addMemReg({ gpa: 0n, size: 0x10000n, qva: 0x7f0000000000n }).needReply(), [fd]);
      const [extra] = eventfds(1);
      expect(
        handle(msg.remMemReg({ gpa: 0n, size: 0x10000n, qva: 0x7f0000000000n }).needReply(), [extra]).reply,
      ).to.deep.equal(reply.ack(ID.REM_MEM_REG));
      expect(sys.isOpen(extra)).to.equal(false);
      expect(backend.calls.at(-1)).to.deep.equal({
        method: 'remMemReg',
        args: [{ gpa: 0n, size: 0x10000n, qva: 0x7f0000000000n, mmapOffset: 0n }],
      });
      expect(backend.memory.regions).to.have.length(0);
    });
  });

  it('logs every message in one debug line: name, flags, size, fds, decoded payload', () => {
    handle(msg.getFeatures());
    handle(msg.setProtocolFeatures(BRIDGE_PROTOCOL_FEATURES));
    handle(msg.setFeatures(NET_FEATURES));
    handle(
      msg.setVringAddr({
        index: 1,
        desc: 0x7fe71ddb3000n,
        used: 0x7fe71ddb4240n,
        avail: 0x7fe71ddb4000n,
        log: 0x1db5240n,
      }),
    );
    handle(msg.setVringCall(3, { noFd: true }));
    const fd = memfd(0x100000);
    handle(msg.setMemTable([{ gpa: 0n, size: 0x100000n, qva: 0x7fe71bfff000n }]).needReply(), [fd]);
    handle(msg.getVringBase(1));
    const netNames =
      '(CSUM|GUEST_CSUM|MTU|MAC|GSO|GUEST_TSO4|GUEST_TSO6|GUEST_UFO|HOST_TSO4|HOST_TSO6|HOST_UFO|' +
      'MRG_RXBUF|CTRL_VQ|MQ|LOG_ALL|ANY_LAYOUT|RING_INDIRECT_DESC|RING_EVENT_IDX|PROTOCOL_FEATURES|VERSION_1)';
    expect(cap.lines.filter((l) => l.level === 'debug').map((l) => `DEBUG ${l.text}`)).to.deep.equal([
      'DEBUG GET_FEATURES flags 0x1 size 0 fds 0',
      `DEBUG GET_FEATURES: reply 0x${NET_FEATURES.toString(16)} ${netNames}`,
      'DEBUG SET_PROTOCOL_FEATURES flags 0x1 size 8 fds 0 0xa01f ' +
        '(MQ|LOG_SHMFD|RARP|REPLY_ACK|MTU|RESET_DEVICE|CONFIGURE_MEM_SLOTS)',
      `DEBUG SET_FEATURES flags 0x1 size 8 fds 0 0x${NET_FEATURES.toString(16)} ${netNames}`,
      'DEBUG SET_VRING_ADDR flags 0x1 size 40 fds 0 ring 1 flags 0x0 desc 0x7fe71ddb3000 used 0x7fe71ddb4240 avail ' +
        '0x7fe71ddb4000 log 0x1db5240',
      'DEBUG SET_VRING_CALL flags 0x1 size 8 fds 0 ring 3 no fd (bit 8)',
      'DEBUG SET_MEM_TABLE flags 0x9 (NEED_REPLY) size 40 fds 1 nregions 1: [gpa 0x0 size 0x100000 qva ' +
        '0x7fe71bfff000 offset 0x0]',
      'DEBUG GET_VRING_BASE flags 0x1 size 8 fds 0 ring 1',
      'DEBUG GET_VRING_BASE: reply ring 1 base 0',
    ]);
    // SET_VRING_ADDR came before SET_VRING_NUM: the back end refused it (the line above is the message, the
    // refusal follows).
    expect(cap.texts('warn')).to.deep.equal([
      'WARN SET_VRING_ADDR: ring 1: addresses before SET_VRING_NUM (refused, and the front-end asked for no reply; ' +
        'dropping the connection)',
    ]);
  });

  it('tells the back end of the disconnect once', () => {
    d.disconnected();
    d.disconnected();
    expect(backend.disconnects).to.equal(1);
  });
});
