/**
 * The daemon with many ports, each the real vhost-user transport and bridge device on the recording
 * fake kernel, driven by synthetic front-ends over real unix sockets; its control socket asked with
 * the real client (ctl.ts) and with hand-made frames.
 */
import { expect } from 'chai';
import { rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { diffPorts, PortManager } from '../../src/daemon/manager.js';
import { Port } from '../../src/port/port.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { parsePort, type PortConfig } from '../../src/daemon/config.js';
import { request, CtlError, formatStatus } from '../../src/daemon/ctl.js';
import { encodeFrame, decodeBody, FrameReader, MAX_REQUEST } from '../../src/daemon/protocol.js';
import type { PortReport, PortStats } from '../../src/daemon/report.js';
import { log, type Logger } from '../../src/log.js';
import { captureLog, type LogCapture } from '../log-capture.js';
import { mappedRegionCount } from '../../src/memtable/index.js';
import * as sys from '../../src/sys/index.js';
import { openFdCount, tempDir } from '../fdcount.js';
import { readable, TestFrontEnd } from '../../lab/frontend/frontend.js';
import { attachedRings, fakeKernel, type FakeKernel } from './fake-port.js';
import { handshake } from '../../lab/frontend/handshake.js';

const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };

interface Rig {
  dir: string;
  config: string;
  control: string;
  kernel: FakeKernel;
  daemon: Daemon;
  sock(port: string): string;
  writeConfig(ports: Record<string, unknown>): void;
  ask(method: string, params?: Record<string, unknown>): Promise<unknown>;
}

function portsOf(dir: string, names: string[], over: Record<string, Record<string, unknown>> = {}) {
  return Object.fromEntries(
    names.map((n, i) => [n, { tap: `vbt${i}-${n}`.slice(0, 15), socket: join(dir, `${n}.sock`), ...over[n] }]),
  );
}

function rig(names: string[], opts: { failing?: string[]; log?: Logger } = {}): Rig {
  const dir = tempDir('vb-daemon-');
  const config = join(dir, 'config.json');
  const control = join(dir, 'control.sock');
  const writeConfig = (ports: Record<string, unknown>) =>
    writeFileSync(config, JSON.stringify({ control: { path: control }, ports }));
  writeConfig(portsOf(dir, names));
  const kernel = fakeKernel();
  for (const f of opts.failing ?? []) kernel.failing.add(f);
  const daemon = Daemon.start({ configFile: config, log: opts.log ?? quiet, partsFor: kernel.partsFor, env: {} });
  return {
    dir,
    config,
    control,
    kernel,
    daemon,
    writeConfig,
    sock: (p) => join(dir, `${p}.sock`),
    ask: async (method, params) => (await request(control, [{ method, params }]))[0],
  };
}

function done(r: Rig): void {
  r.daemon.close();
  rmSync(r.dir, { recursive: true, force: true });
}

/** Read frames from a raw control connection. */
async function frames(fd: number, n: number): Promise<unknown[]> {
  const reader = new FrameReader(1 << 24);
  const out: unknown[] = [];
  const buf = Buffer.alloc(65536);
  while (out.length < n) {
    const got = sys.recv(fd, buf);
    if (got === null) {
      await readable(fd, 2000);
      continue;
    }
    if (got === 0) throw new Error('EOF');
    for (const b of reader.push(buf.subarray(0, got))) out.push(decodeBody(b));
  }
  return out;
}

describe('daemon: many ports in one process', () => {
  let cap: LogCapture | null = null;
  afterEach(() => {
    cap?.stop();
    cap = null;
    expect(mappedRegionCount(), 'guest memory left mapped').to.equal(0);
  });

  it("runs each configured port as the real Port on its parts: the file's settings as its spec, closed at stop", () => {
    const r = rig(['a', 'b'], {});
    try {
      r.writeConfig({
        ...portsOf(r.dir, ['a']),
        b: { tap: 'vbt-b', socket: r.sock('b'), queues: 2, mtu: 9000, busyPollUs: 50, maxRegions: 4 },
      });
      r.daemon.reload();
      const a = r.daemon.manager.get('a').port!;
      const b = r.daemon.manager.get('b').port!;
      expect(a).to.be.instanceOf(Port);
      expect(b.spec).to.deep.equal({
        name: 'b',
        transport: { mode: 'server', path: r.sock('b'), socketMode: 0o600, uid: null, gid: null, peers: null },
        backendSocket: { tap: 'vbt-b', create: true },
        queuePairs: 2,
        mtu: 9000,
        busyPollUs: 50,
        memoryLimit: { bytes: null, regions: 4 },
        workerCgroup: undefined,
      });
      const fake = r.kernel.live('b');
      expect([b.interfaceName, b.status().port, b.status().rings.length]).to.deep.equal(['vbt-b', 'b', 4]);
      expect(fake.journal, 'the backend socket was set up as the spec says').to.deep.include.members([
        { who: 'tap', op: 'setMtu', mtu: 9000 },
        { who: 'tap', op: 'setQueueEnabled', pair: 1, enabled: false },
      ]);
      r.daemon.manager.remove('b');
      expect(fake.closed, 'the port closed its backend socket').to.equal(true);
      expect(r.kernel.live('a').closed).to.equal(false);
    } finally {
      done(r);
    }
  });

  const twentyPorts =
    'serves 20 ports at once: each front-end completes its set-up and both its rings are attached to its own tap';
  it(twentyPorts, async function () {
    this.timeout(20_000);
    const names = Array.from({ length: 20 }, (_, i) => `vm${i}`);
    const r = rig(names);
    try {
      const fes = await Promise.all(names.map((n) => handshake(r.sock(n))));
      for (const n of names) {
        const p = r.kernel.live(n);
        expect(attachedRings(p), n).to.deep.equal([0, 1]);
        expect(
          p.journal.filter((c) => c.op === 'netSetBackend'),
          n,
        ).to.deep.equal([
          { who: 'vhost0', op: 'netSetBackend', ring: 0, fd: 100 },
          { who: 'vhost0', op: 'netSetBackend', ring: 1, fd: 100 },
        ]);
      }
      const ports = (await r.ask('ports')) as { name: string; state: string; frontEnd: boolean }[];
      expect(ports.map((p) => [p.name, p.state, p.frontEnd])).to.deep.equal(names.map((n) => [n, 'running', true]));
      const st = (await r.ask('status', { port: 'vm7' })) as PortReport;
      expect(st.peer, 'SO_PEERCRED of the front-end (this process)').to.deep.equal({
        pid: process.pid,
        uid: process.getuid!(),
        gid: process.getgid!(),
      });
      expect(st.device?.port).to.equal('vm7');
      expect(st.device?.frontEnd).to.equal(true);
      expect(
        st.device?.rings.map((g) => [g.index, g.size, g.started, g.enabled, g.attached, g.kick, g.call]),
      ).to.deep.equal([
        [0, 256, true, true, true, true, true],
        [1, 256, true, true, true, true, true],
      ]);
      expect(st.device?.features.negotiatedNames).to.include.members(['VERSION_1', 'MRG_RXBUF', 'RING_EVENT_IDX']);
      expect(st.device?.features.protocolNames).to.include('REPLY_ACK');
      expect(st.device?.memory.regions).to.deep.equal([
        { guestAddr: '0x0', size: '0x100000', userAddr: st.device?.memory.regions[0].userAddr },
      ]);
      expect(st.tap?.name).to.equal(r.kernel.live('vm7').config.tap);
      expect(st.uptimeMs).to.be.a('number');
      for (const f of fes) f.close();
    } finally {
      done(r);
    }
  });

  const ringIndexes =
    "status reads each ring's avail and used indexes from guest memory (a real memfd the front-end writes), null " +
    'before the ring has an address and after the front-end leaves; ctl status prints them';
  it(ringIndexes, async () => {
    const r = rig(['a']);
    const indexes = async () =>
      ((await r.ask('status', { port: 'a' })) as PortReport).device?.rings.map((g) => [g.availIdx, g.usedIdx]);
    try {
      expect(await indexes(), 'no front-end yet').to.deep.equal([
        [null, null],
        [null, null],
      ]);
      const fe = await handshake(r.sock('a'), { guest: true });
      expect(await indexes(), 'a fresh guest memory: both indexes 0').to.deep.equal([
        [0, 0],
        [0, 0],
      ]);
      fe.guest?.setIndexes(0, 17, 5);
      fe.guest?.setIndexes(1, 0xffff, 0xfffa);
      expect(await indexes(), 'what the guest memory holds now, read at each status').to.deep.equal([
        [17, 5],
        [0xffff, 0xfffa],
      ]);
      const text = formatStatus((await r.ask('status', { port: 'a' })) as PortReport).split('\n');
      const header = text.findIndex((l) => l.startsWith('  rings'));
      expect(text[header]).to.match(/ring\s+size\s+started\s+enabled\s+attached\s+kick\s+call\s+err\s+avail\s+used$/);
      const row = (i: number) => text[header + 1 + i].trim().split(/\s+/);
      expect(row(0)).to.deep.equal(['0', '256', 'yes', 'yes', 'yes', 'yes', 'yes', '-', '17', '5']);
      expect(row(1)).to.deep.equal(['1', '256', 'yes', 'yes', 'yes', 'yes', 'yes', '-', '65535', '65530']);
      const dp = text.find((l) => l.startsWith('  datapath'));
      expect(dp, 'the datapath line: socket, busy poll asked and read back per ring, zero-copy tx').to.match(
        /^ {2}datapath {3}vhost-net on tap \S+, busy poll off \(kernel: 0 0\), zero-copy tx (on|off|unknown .*)$/,
      );
      const session = r.daemon.manager.get('a').port!;
      const left = new Promise<void>((res) => {
        const off = session.onEvent((e) => {
          if (e.kind !== 'disconnected') return;
          off();
          res();
        });
      });
      fe.close();
      await left;
      expect(await indexes(), 'the front-end left: its rings are forgotten').to.deep.equal([
        [null, null],
        [null, null],
      ]);
    } finally {
      done(r);
    }
  });

  const failedPort =
    'a port that cannot start is logged with its name and kept as failed; the others serve; reset starts it again';
  it(failedPort, async () => {
    cap = captureLog('info');
    const r = rig(['a', 'b', 'c'], { failing: ['b'], log });
    try {
      expect(cap.texts('error')).to.deep.equal([`ERROR b: cannot start: tap vbt1-b: ENODEV: no such tap (test)`]);
      const fe = await handshake(r.sock('c'));
      const ports = (await r.ask('ports')) as { name: string; state: string; error: string | null }[];
      expect(ports.map((p) => [p.name, p.state])).to.deep.equal([
        ['a', 'running'],
        ['b', 'failed'],
        ['c', 'running'],
      ]);
      r.kernel.failing.delete('b');
      const after = (await r.ask('reset', { port: 'b' })) as PortReport;
      expect(after.state).to.equal('running');
      (await handshake(r.sock('b'))).close();
      fe.close();
    } finally {
      done(r);
    }
  });

  it('remove and reset while front-ends are connected touch only that port', async () => {
    const r = rig(['a', 'b', 'c']);
    try {
      const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => handshake(r.sock(n))));
      const portB = r.kernel.live('b');
      await r.ask('reset', { port: 'b' });
      expect(await b.fe.reply(), 'b is dropped by the reset').to.equal('eof');
      expect(attachedRings(portB), "b's rings detached, its vhost-net fds released").to.deep.equal([]);
      expect(r.kernel.live('b')).to.equal(portB, 'the same port serves again');
      const b2 = await handshake(r.sock('b'));
      const stB = (await r.ask('status', { port: 'b' })) as PortReport;
      expect([stB.reconnects, stB.resets, stB.device?.sessions]).to.deep.equal([1, 1, 2]);
      b2.close();
      await r.ask('remove', { port: 'a' });
      expect(await a.fe.reply()).to.equal('eof');
      expect(() => statSync(r.sock('a')), "the removed port's socket file is gone").to.throw(/ENOENT/);
      expect(attachedRings(r.kernel.live('c')), 'c is untouched').to.deep.equal([0, 1]);
      expect(await c.fe.silent(20)).to.equal(true);
      const ports = (await r.ask('ports')) as { name: string }[];
      expect(ports.map((p) => p.name)).to.deep.equal(['b', 'c']);
      c.close();
    } finally {
      done(r);
    }
  });

  it("an exception inside one port's handling drops only that front-end, logged with the port's name", async () => {
    cap = captureLog('warn');
    const r = rig(['a', 'b'], { log });
    try {
      const a = await handshake(r.sock('a'));
      // The fake kernel of port b fails in a way no handler expects (not a SysError): a bug.
      r.kernel.live('b').source.open = () => {
        throw new TypeError('simulated bug in the kernel layer');
      };
      const fe = TestFrontEnd.connect(r.sock('b'));
      fe.send((await import('../../lab/frontend/builder.js')).msg.setOwner());
      expect(await fe.reply()).to.equal('eof');
      fe.close();
      const lines = cap.texts('error');
      expect(
        lines.some((l) => l.startsWith('ERROR b: ') && l.includes('simulated bug')),
        lines.join('\n'),
      ).to.equal(true);
      expect(attachedRings(r.kernel.live('a'))).to.deep.equal([0, 1]);
      expect(await a.fe.silent(20)).to.equal(true);
      const ports = (await r.ask('ports')) as { name: string; state: string }[];
      expect(ports.map((p) => p.state)).to.deep.equal(['running', 'running']);
      a.close();
    } finally {
      done(r);
    }
  });

  const sighupReload =
    'SIGHUP reload: added ports start, removed ones stop, changed ones restart, unchanged ones keep their port ' +
    'object and front-end';
  it(sighupReload, async () => {
    const r = rig(['keep', 'drop', 'change']);
    try {
      const keep = await handshake(r.sock('keep'));
      const keepPort = r.kernel.live('keep');
      const before = r.daemon.manager.get('keep').port;
      r.writeConfig({
        ...portsOf(r.dir, ['keep', 'change']),
        change: { tap: 'other', socket: r.sock('change'), queues: 2 },
        fresh: { tap: 'tfresh', socket: r.sock('fresh') },
      });
      const res = r.daemon.reload();
      expect(res).to.deep.include({
        added: ['fresh'],
        removed: ['drop'],
        changed: ['change'],
        unchanged: ['keep'],
        failed: [],
      });
      expect(r.daemon.manager.get('keep').port).to.equal(before);
      expect(r.kernel.live('keep')).to.equal(keepPort);
      expect(attachedRings(keepPort)).to.deep.equal([0, 1]);
      expect(await keep.fe.silent(20)).to.equal(true);
      expect(r.kernel.live('change').config.queues).to.equal(2);
      expect(r.kernel.opened.map((p) => p.config.name)).to.deep.equal(['keep', 'drop', 'change', 'change', 'fresh']);
      (await handshake(r.sock('fresh'))).close();
      // An invalid file changes nothing.
      writeFileSync(r.config, '{"ports": {"keep": {"tap": "t", "queues": 0}}}');
      expect(() => r.daemon.reload()).to.throw(/ports\.keep\.queues: expected a number from 1 to 128/);
      expect(r.daemon.manager.list().map((p) => p.name)).to.deep.equal(['keep', 'change', 'fresh']);
      keep.close();
    } finally {
      done(r);
    }
  });

  it('reload leaves ports added over the control socket alone, and refuses a file that clashes with them', async () => {
    const r = rig(['a']);
    try {
      await r.ask('add', { name: 'extra', config: { tap: 'textra', socket: r.sock('extra') } });
      r.writeConfig(portsOf(r.dir, ['a', 'b']));
      expect(r.daemon.reload()).to.deep.include({ added: ['b'], removed: [], unchanged: ['a'] });
      expect(r.daemon.manager.list().map((p) => [p.name, p.origin])).to.deep.equal([
        ['a', 'config'],
        ['extra', 'control'],
        ['b', 'config'],
      ]);
      r.writeConfig({ ...portsOf(r.dir, ['a']), c: { tap: 'textra', socket: r.sock('c') } });
      expect(() => r.daemon.reload()).to.throw(
        /ports\.c\.tap: textra is already the tap of port extra|ports\.extra\.tap: textra is already the tap of port c/,
      );
      expect(r.daemon.manager.list().map((p) => p.name)).to.deep.equal(['a', 'extra', 'b']);
    } finally {
      done(r);
    }
  });

  it('leaks no fd: 10 ports, set up, reset, removed, added back, the daemon closed', async () => {
    const names = Array.from({ length: 10 }, (_, i) => `p${i}`);
    // Warm up the runtime's lazy allocations once.
    const warm = rig(['w']);
    (await handshake(warm.sock('w'))).close();
    await warm.ask('version');
    done(warm);
    const before = openFdCount();
    const r = rig(names);
    try {
      const fes = await Promise.all(names.map((n) => handshake(r.sock(n))));
      await r.ask('reset', { port: 'p3' });
      await r.ask('remove', { port: 'p4' });
      await r.ask('add', { name: 'p4', config: { tap: 'tp4', socket: r.sock('p4') } });
      (await handshake(r.sock('p4'))).close();
      await r.ask('stats');
      for (const f of fes) f.close();
    } finally {
      done(r);
    }
    await new Promise((res) => setImmediate(res));
    expect(sys.watchedCount(), 'poll handles').to.equal(0);
    expect(openFdCount(), 'open fds').to.equal(before);
  });
});

describe('daemon: the control socket', () => {
  it('answers every method over a real unix socket (mode 0660), pipelined requests in order', async () => {
    const r = rig(['a', 'b']);
    try {
      expect(statSync(r.control).mode & 0o777).to.equal(0o660);
      const [v, ports, stats] = await request(r.control, [
        { method: 'version' },
        { method: 'ports' },
        { method: 'stats' },
      ]);
      expect(v).to.include({ pid: process.pid, ports: 2 }).and.have.property('version');
      const noWorkers = 'the vhost workers of this process (none without a vhost-net owner)';
      expect(v, noWorkers).to.have.deep.property('vhostWorkers', []);
      expect((ports as { name: string }[]).map((p) => p.name)).to.deep.equal(['a', 'b']);
      expect((stats as PortStats[]).map((s) => [s.name, s.state, s.frontEnd, s.reconnects])).to.deep.equal([
        ['a', 'running', false, 0],
        ['b', 'running', false, 0],
      ]);
      const added = (await r.ask('add', {
        name: 'c',
        config: { tap: 'tc', socket: r.sock('c'), queues: 2 },
      })) as PortReport;
      expect(added).to.include({ name: 'c', state: 'running', origin: 'control', queues: 2 });
      expect(await r.ask('remove', { port: 'c' })).to.deep.equal({ removed: 'c' });
      const st = (await r.ask('status', { port: 'a' })) as PortReport;
      expect(st).to.include({
        name: 'a',
        state: 'running',
        role: 'server',
        socket: r.sock('a'),
        peer: null,
        reconnects: 0,
      });
      expect(st.device?.frontEnd).to.equal(false);
    } finally {
      done(r);
    }
  });

  it('bad requests get an error naming the field, and the daemon keeps serving', async () => {
    const r = rig(['a']);
    try {
      const bad = async (method: string, params?: Record<string, unknown>) => {
        try {
          await r.ask(method, params);
        } catch (e) {
          expect(e).to.be.instanceOf(CtlError);
          return { message: (e as CtlError).message, field: (e as CtlError).field };
        }
        throw new Error(`${method} was accepted`);
      };
      expect(await bad('frobnicate')).to.deep.equal({
        message:
          "unknown method 'frobnicate' (one of version, ports, status, stats, add, remove, reset, health, reload)",
        field: 'method',
      });
      expect(await bad('status')).to.deep.equal({ message: 'params.port: expected a port name', field: 'port' });
      expect(await bad('status', { port: 7 })).to.deep.equal({
        message: 'params.port: expected a port name',
        field: 'port',
      });
      expect(await bad('status', { port: 'zz' })).to.deep.equal({ message: "no port named 'zz'", field: 'port' });
      expect(await bad('remove', { port: 'a', force: true })).to.deep.equal({
        message: 'params.force: unknown parameter of remove',
        field: 'force',
      });
      expect(await bad('add', { name: 'n', config: { tap: 'tn', queues: 500 } })).to.deep.equal({
        message: 'ports.n.queues: expected a number from 1 to 128',
        field: 'config.queues',
      });
      expect(await bad('add', { name: 'a', config: { tap: 'tx', socket: r.sock('x') } })).to.deep.equal({
        message: 'ports.a: a port with this name exists; remove it first',
        field: 'name',
      });
      expect(await bad('add', { name: 'n', config: { tap: 'vbt0-a' } })).to.deep.include({ field: 'config.tap' });

      // Frames that are not requests, on one raw connection: each gets an error reply, the connection stays.
      const fd = sys.unixConnect(r.control);
      try {
        const notMsgpack = Buffer.from([0, 0, 0, 2, 0x92, 0x01]); // an array of 2 with 1 element
        sys.send(
          fd,
          Buffer.concat([
            notMsgpack,
            encodeFrame([1, 2]),
            encodeFrame({ id: 5, method: 3 }),
            encodeFrame({ id: 'x', method: 'version' }),
          ]),
        );
        const replies = (await frames(fd, 4)) as {
          id: unknown;
          error?: { message: string; field?: string };
          result?: unknown;
        }[];
        expect(replies[0].id).to.equal(null);
        expect(replies[0].error?.message).to.match(/not one MessagePack value/);
        expect(replies[1]).to.deep.equal({ id: null, error: { message: 'expected a map {id, method, params}' } });
        expect(replies[2]).to.deep.equal({ id: 5, error: { message: 'expected a method name', field: 'method' } });
        expect(replies[3].id).to.equal('x');
        expect(replies[3].result).to.include({ pid: process.pid });
        // An oversize frame drops this connection only.
        const head = Buffer.alloc(4);
        head.writeUInt32BE(MAX_REQUEST + 1);
        sys.send(fd, head);
        await readable(fd);
        expect(sys.recv(fd, Buffer.alloc(16))).to.equal(0);
      } finally {
        sys.close(fd);
      }
      expect((await r.ask('ports')) as unknown[]).to.have.length(1);
    } finally {
      done(r);
    }
  });

  it('the control socket is refused to a second daemon while the first runs', () => {
    const r = rig(['a']);
    try {
      expect(() =>
        Daemon.start({ configFile: r.config, log: quiet, partsFor: fakeKernel().partsFor, env: {} }),
      ).to.throw(/control socket .*control\.sock: another process is listening/);
    } finally {
      done(r);
    }
  });
});

describe('daemon: the port manager', () => {
  const spec = (name: string, over: Record<string, unknown> = {}): PortConfig =>
    parsePort(name, { tap: `t${name}`, socket: `/x/${name}.sock`, ...over });

  const diffPortsSorts =
    'diffPorts sorts ports into added, removed, changed and unchanged (ports added over the control socket are not ' +
    "the file's)";
  it(diffPortsSorts, () => {
    const running = new Map([
      ['same', { config: spec('same'), origin: 'config' as const }],
      ['gone', { config: spec('gone'), origin: 'config' as const }],
      ['edit', { config: spec('edit'), origin: 'config' as const }],
      ['live', { config: spec('live'), origin: 'control' as const }],
    ]);
    const next = new Map([
      ['same', spec('same')],
      ['edit', spec('edit', { mtu: 9000 })],
      ['new', spec('new')],
    ]);
    expect(diffPorts(running, next)).to.deep.equal({
      added: ['new'],
      removed: ['gone'],
      changed: ['edit'],
      unchanged: ['same'],
    });
  });

  it("guards every call into a port: an exception is logged with the port's name and resets it", () => {
    const cap = captureLog('error');
    const drops: string[] = [];
    const dir = tempDir('vb-guard-');
    try {
      const m = new PortManager({ log, partsFor: fakeKernel().partsFor });
      const p = m.add(spec('a', { socket: join(dir, 'a.sock') }));
      const port = p.port!;
      port.dropFrontEnd = (why) => drops.push(`${p.name}: ${why}`);
      port.status = () => {
        throw new Error('boom');
      };
      expect(m.guard(p, 'status', () => p.port!.status())).to.equal(undefined);
      expect(cap.texts('error')[0]).to.match(/^ERROR a: status: Error: boom/);
      expect(drops).to.deep.equal(['a: internal error in status']);
      expect(p.resets).to.equal(1);
      m.close();
    } finally {
      cap.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
