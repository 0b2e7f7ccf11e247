/**
 * Status is data: the session's typed snapshot and its lifecycle events, as the lab and a manager
 * read them (src/bridge/status.ts), over a real QEMU 7.2 session and hand-made edge cases; and
 * `--events-fd` lines, written by the same listener the CLI installs.
 */
import { expect } from 'chai';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventsToFd } from '../../src/bridge/events.js';
import type { EventLine, PortEvent, PortStatus } from '../../src/bridge/status.js';
import { log, portLog } from '../../src/log.js';
import { captureLog } from '../log-capture.js';
import { fakePort } from './fake-kernel.js';
import { QEMU_SESSIONS, replayQemuSession } from './qemu-session.js';

const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };
const kinds = (events: PortEvent[]) => events.map((e) => e.kind);

describe('bridge status: after a real QEMU 7.2 session', () => {
  const events: { event: PortEvent; status: PortStatus }[] = [];
  let running: PortStatus;
  let after: PortStatus;

  before(() => {
    const r = replayQemuSession(QEMU_SESSIONS[0], (event, status) => events.push({ event, status }));
    expect(r.warnings).to.deep.equal([]);
    running = r.beforeStop!.status;
    after = r.port.session.status();
  });

  it('while the guest ran: front-end, negotiated features, four attached rings, guest memory', () => {
    expect(running.port).to.equal('vbtap0');
    expect(running.frontEnd).to.equal(true);
    expect(running.sessions).to.equal(1);
    expect(running.features.negotiated).to.match(/^0x[0-9a-f]+$/);
    expect(running.features.negotiatedNames).to.include.members(['MRG_RXBUF', 'VERSION_1', 'PROTOCOL_FEATURES', 'MQ']);
    expect(running.features.offeredNames).to.include.members(running.features.negotiatedNames);
    expect(running.features.protocolNames).to.include.members(['MQ', 'REPLY_ACK']);
    expect(running.rings).to.have.length(4);
    for (const r of running.rings) {
      const on = { started: true, enabled: true, attached: true, kick: true, call: true };
      expect(r, `ring ${r.index}`).to.deep.include(on);
      expect(r.size, `ring ${r.index}`).to.be.a('number').and.to.be.greaterThan(0);
    }
    expect(running.memory.regions).to.not.be.empty;
    expect(running.memory.regions[0].size).to.match(/^0x[0-9a-f]+$/);
    const t = running.times;
    expect(t.connected).to.be.a('number');
    expect(t.featuresSet).to.be.at.least(t.connected!);
    expect(t.allRingsRunning).to.be.at.least(t.featuresSet!);
    expect(t.lastRingStopped).to.equal(null);
  });

  it('after the disconnect: no front-end, no ring, no memory; the end is timed', () => {
    expect(after.frontEnd).to.equal(false);
    expect(after.sessions).to.equal(1);
    expect(after.features.negotiated).to.equal(null);
    expect(after.features.protocol).to.equal(null);
    expect(after.rings.some((r) => r.attached || r.started || r.kick || r.call)).to.equal(false);
    expect(after.memory).to.deep.equal({ regions: [], dirtyLog: false });
    expect(after.times.disconnected).to.be.at.least(after.times.lastRingStopped!);
    expect(after.times.lastRingStopped).to.be.at.least(after.times.allRingsRunning!);
  });

  it('events come in lifecycle order, each with the status after it', () => {
    const k = kinds(events.map((e) => e.event));
    expect(k[0]).to.equal('connected');
    expect(k.at(-1)).to.equal('disconnected');
    expect(k).to.not.include('refused');
    expect(k.indexOf('negotiated')).to.be.lessThan(k.indexOf('ring-running'));
    expect(k.indexOf('memory')).to.be.lessThan(k.indexOf('ring-running'));
    for (let ring = 0; ring < 4; ring++) {
      const on = events.findIndex((e) => e.event.kind === 'ring-running' && e.event.ring === ring);
      const off = events.findIndex((e) => e.event.kind === 'ring-stopped' && e.event.ring === ring);
      expect(on, `ring ${ring} ran`).to.be.at.least(0);
      expect(off, `ring ${ring} stopped after it ran`).to.be.greaterThan(on);
      expect(events[on].status.rings[ring].attached).to.equal(true);
      expect(events[off].status.rings[ring].attached).to.equal(false);
    }
    expect(events.at(-1)!.status.frontEnd).to.equal(false);
  });
});

describe('bridge status: edge cases', () => {
  it('a refused request is an event; RESET_DEVICE stops the rings and says so; ready is an event', () => {
    const got: PortEvent[] = [];
    const { session } = fakePort({ queuePairs: 1, offered: 0x1_7000_8000n, log: quiet, onEvent: (e) => got.push(e) });
    session.ready();
    session.connected();
    const reason = 'ring 0: size 255 is not a power of two';
    session.afterRequest({ request: 'SET_VRING_NUM', result: 'nack', reason });
    session.setOwner();
    session.resetDevice();
    session.afterRequest({ request: 'RESET_DEVICE', result: 'ok' });
    session.disconnected();
    expect(got).to.deep.equal([
      { kind: 'ready' },
      { kind: 'connected' },
      { kind: 'refused', request: 'SET_VRING_NUM', reason },
      { kind: 'reset', why: 'RESET_DEVICE' },
      { kind: 'disconnected' },
    ]);
    expect(session.status().sessions).to.equal(1);
  });

  it('a listener that throws is logged and does not stop the session', () => {
    const { session } = fakePort({ queuePairs: 1, offered: 0n, log: quiet });
    let calls = 0;
    session.onEvent(() => {
      calls++;
      throw new Error('reader gone');
    });
    session.connected();
    session.disconnected();
    expect(calls).to.equal(2);
    expect(session.status().frontEnd).to.equal(false);
  });
});

describe('bridge events: --events-fd lines', () => {
  const file = join(tmpdir(), `vb-events-${process.pid}.jsonl`);
  after(() => rmSync(file, { force: true }));

  it('one parseable JSON line per event, in order, with the port and the status after it', () => {
    const fd = openSync(file, 'w');
    const seen: PortEvent[] = [];
    try {
      const toFd = eventsToFd(fd, log);
      replayQemuSession(QEMU_SESSIONS[1], (e, s) => {
        seen.push(e);
        toFd(e, s);
      });
    } finally {
      closeSync(fd);
    }
    const text = readFileSync(file, 'utf8');
    expect(text.endsWith('\n')).to.equal(true);
    const lines = text
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as EventLine);
    expect(lines.map((l) => l.event)).to.deep.equal(seen);
    for (const l of lines) {
      expect(l.port).to.equal('vbtap0');
      expect(l.time).to.be.a('number');
      expect(l.status.port).to.equal('vbtap0');
    }
    const running = lines.filter((l) => l.event.kind === 'ring-running');
    expect(running.at(-1)!.status.times.allRingsRunning).to.be.a('number');
  });

  it('a write that fails stops the events with one warning, not the bridge', () => {
    const cap = captureLog('warn');
    try {
      const toFd = eventsToFd(987654, log);
      const { session } = fakePort({ queuePairs: 1, offered: 0n, log: quiet, onEvent: toFd });
      session.connected();
      session.disconnected();
    } finally {
      cap.stop();
    }
    expect(cap.texts()).to.have.length(1);
    expect(cap.texts()[0]).to.match(/^WARN --events-fd 987654: .*EBADF.*no more events are written$/);
  });
});

describe('log: a port logger', () => {
  it('names the port on every line', () => {
    const cap = captureLog('debug');
    try {
      const l = portLog(log, 'vbtap0');
      l.info('SET_FEATURES: negotiated 0x1');
      l.warn('something');
      expect(l.enabled('debug')).to.equal(true);
    } finally {
      cap.stop();
    }
    expect(cap.texts()).to.deep.equal(['INFO vbtap0: SET_FEATURES: negotiated 0x1', 'WARN vbtap0: something']);
  });
});
