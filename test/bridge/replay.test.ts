/**
 * Real QEMU 7.2 sessions (qemu-session.ts) replayed through the dispatcher into the session on the
 * vhost-net datapath, on the recording fake kernel (which enforces the kernel's ordering rules).
 * What must hold: no warning, every ring attached to the tap once QEMU started it, detached at
 * GET_VRING_BASE, the kernel given each RAM block once (QEMU 7.2 sends ADD_MEM_REG per queue pair),
 * and everything released at the disconnect.
 */
import { expect } from 'chai';
import { mappedRegionCount } from '../../src/memtable/index.js';
import { openFdCount } from '../fdcount.js';
import { callsLike, indexOfCall, type Call, type FakeVhostNetProvider } from './fake-kernel.js';
import { QEMU_SESSIONS, replayQemuSession } from './qemu-session.js';

for (const file of QEMU_SESSIONS) {
  describe(`bridge: replay of a real QEMU 7.2 session (${file})`, () => {
    let journal: Call[] = [];
    let source: FakeVhostNetProvider;
    let warnings: string[] = [];
    let fdsBefore = 0;
    let attachedBeforeStop: boolean[] = [];

    before(() => {
      fdsBefore = openFdCount();
      const r = replayQemuSession(file);
      ({ journal, vhostNet: source } = r.port);
      warnings = r.warnings;
      attachedBeforeStop = r.beforeStop?.attached ?? [];
    });

    it('replays without a warning or a refusal', () => {
      expect(warnings).to.deep.equal([]);
    });

    it('had all four rings attached to the tap while the guest ran', () => {
      expect(attachedBeforeStop).to.deep.equal([true, true, true, true]);
      const attaches = callsLike(journal, { op: 'netSetBackend' }).filter((c) => 'fd' in c && c.fd >= 0);
      expect(attaches.map((c) => ({ who: c.who, ring: 'ring' in c ? c.ring : null }))).to.have.deep.members([
        { who: 'vhost0', ring: 0 },
        { who: 'vhost0', ring: 1 },
        { who: 'vhost1', ring: 2 },
        { who: 'vhost1', ring: 3 },
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
          const get = indexOfCall(journal, { who, op: 'getVringBase', ring });
          const detach = indexOfCall(journal, { who, op: 'netSetBackend', ring, fd: -1 });
          expect(detach, `${who} ring ${ring} detached`).to.be.at.least(0);
          expect(detach, `${who} ring ${ring}: detach before GET_VRING_BASE`).to.be.lessThan(get);
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
