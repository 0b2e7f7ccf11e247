/**
 * Real QEMU 7.2 sessions (test/fixtures, recorded by test/tools/record-qemu-session: 2 queue pairs,
 * mq=on, host_mtu; the guest brings eth0 up and powers off) replayed through the dispatcher into
 * the bridge device, on the recording fake kernel (which enforces the kernel's ordering rules).
 * What must hold: no warning, every ring attached to the tap once QEMU started it, detached at
 * GET_VRING_BASE, the kernel given each RAM block once (QEMU 7.2 sends ADD_MEM_REG per queue pair),
 * and everything released at the disconnect.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { captureLog } from '../../src/log.js';
import { mappedRegionCount } from '../../src/memtable/index.js';
import { Dispatcher } from '../../src/vhost-user/dispatcher.js';
import { readTrace } from '../../src/vhost-user/trace.js';
import { openFdCount } from '../fdcount.js';
import { FdFactory } from '../vhost-user/replay-fds.js';
import { callsLike, fakePort, indexOfCall, type Call, type FakeVhostNetProvider } from './fake-kernel.js';

const fixtures = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures');

for (const file of ['qemu72-session.msgpack', 'qemu72-session-mem-slots.msgpack']) {
  describe(`bridge device: replay of a real QEMU 7.2 session (${file})`, () => {
    let journal: Call[] = [];
    let source: FakeVhostNetProvider;
    let warnings: string[] = [];
    let fdsBefore = 0;
    const attachedBeforeStop: boolean[] = [];

    before(() => {
      fdsBefore = openFdCount();
      const { header, events } = readTrace(join(fixtures, file));
      const meta = header.meta as { features: string; queuePairs: number };
      const port = fakePort({ queuePairs: meta.queuePairs, offered: BigInt(meta.features) });
      source = port.vhostNet;
      const device = port.session;
      journal = port.journal;
      const factory = new FdFactory();
      const cap = captureLog('warn');
      try {
        let d: Dispatcher | null = null;
        let stopping = false;
        for (const e of events) {
          if (e.e === 'connect') {
            d = new Dispatcher(device);
            device.connected();
          }
          else if (e.e === 'msg') {
            if (e.request === 11 && !stopping) {
              stopping = true; // first GET_VRING_BASE: the guest is powering off
              for (let p = 0; p < meta.queuePairs; p++) attachedBeforeStop.push(source.live(p).attached(2 * p), source.live(p).attached(2 * p + 1));
            }
            d!.handle({ header: { request: e.request, flags: e.flags, size: e.size }, payload: e.payload, fds: factory.forMessage(e) });
          } else d!.disconnected();
        }
      } finally {
        cap.stop();
        factory.close();
      }
      warnings = cap.texts();
    });

    it('replays without a warning or a refusal', () => {
      expect(warnings).to.deep.equal([]);
    });

    it('had all four rings attached to the tap while the guest ran', () => {
      expect(attachedBeforeStop).to.deep.equal([true, true, true, true]);
      const attaches = callsLike(journal, { op: 'netSetBackend' }).filter((c) => 'fd' in c && c.fd >= 0);
      expect(attaches.map((c) => ({ who: c.who, ring: 'ring' in c ? c.ring : null }))).to.have.deep.members([
        { who: 'vhost0', ring: 0 }, { who: 'vhost0', ring: 1 }, { who: 'vhost1', ring: 2 }, { who: 'vhost1', ring: 3 },
      ]);
    });

    it('gave each vhost-net fd the guest RAM once', () => {
      for (const who of ['vhost0', 'vhost1']) {
        expect(callsLike(journal, { who, op: 'setMemTable' }), who).to.have.length(1);
      }
    });

    it('detached every ring before reading its base at the stop', () => {
      for (const who of ['vhost0', 'vhost1']) {
        for (const ring of who === 'vhost0' ? [0, 1] : [2, 3]) {
          const idx = ring;
          const get = indexOfCall(journal, { who, op: 'getVringBase', ring });
          const detach = indexOfCall(journal, { who, op: 'netSetBackend', ring, fd: -1 });
          expect(detach, `${who} ring ${idx} detached`).to.be.at.least(0);
          expect(detach, `${who} ring ${idx}: detach before GET_VRING_BASE`).to.be.lessThan(get);
        }
      }
    });

    it('released every vhost-net fd, mapping and eventfd at the disconnect', () => {
      expect(source.devices.every((d) => d.closed)).to.equal(true);
      expect(mappedRegionCount()).to.equal(0);
      expect(openFdCount()).to.equal(fdsBefore);
    });
  });
}
