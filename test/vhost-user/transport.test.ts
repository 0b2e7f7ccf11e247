/**
 * Transports over real AF_UNIX sockets: server (mode, stale socket, busy path, one front-end at a
 * time), inherited listening or connected fd, client (retry until the socket appears, reconnect), and clean
 * shutdown (watchers, fds, socket file).
 */
import { expect } from 'chai';
import { existsSync, fstatSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { captureLog, type LogCapture } from '../log-capture.js';
import * as sys from '../../src/sys/index.js';
import { Connection } from '../../src/vhost-user/connection.js';
import { VhostUserClient, VhostUserServer } from '../../src/vhost-user/transport.js';
import { readTrace, TraceWriter, type TraceMessage } from '../../src/vhost-user/trace.js';
import { openFdCount, tempDir } from '../fdcount.js';
import { ID, msg, reply } from '../../lab/frontend/builder.js';
import { bridgeLike, NET_FEATURES } from './fixtures.js';
import { once, readable, TestFrontEnd } from '../../lab/frontend/frontend.js';
import { RecordingBackend } from './recording-backend.js';

describe('vhost-user transport', () => {
  let dir: string;
  let path: string;
  let cap: LogCapture;
  let before: number;
  let backend: RecordingBackend;
  /** Whatever a test opened, closed even when it fails (a live poll handle would keep mocha running). */
  let cleanup: (() => void)[];
  const track = <T extends { close(): void }>(x: T): T => {
    cleanup.push(() => x.close());
    return x;
  };
  beforeEach(() => {
    cleanup = [];
    dir = tempDir();
    path = join(dir, 'vu.sock');
    cap = captureLog('info');
    before = openFdCount();
    backend = new RecordingBackend(bridgeLike());
  });
  afterEach(() => {
    for (const f of cleanup.reverse()) {
      try {
        f();
      } catch {
        /* already closed */
      }
    }
    cap.stop();
    rmSync(dir, { recursive: true, force: true });
    expect(sys.watchedCount(), 'no poll handle left').to.equal(0);
    expect(openFdCount(), 'no fd left').to.equal(before);
  });

  describe('server', () => {
    it('listens with mode 0600 by default, serves a front-end, and removes its socket on close', async () => {
      const server = track(VhostUserServer.listen(path, backend));
      expect(statSync(path).mode & 0o777).to.equal(0o600);
      const fe = track(TestFrontEnd.connect(path));
      const conn = await once<Connection>(server, 'connection');
      expect(conn).to.be.instanceOf(Connection);
      expect(await fe.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      const gone = once<string>(server, 'disconnect');
      fe.close();
      expect(await gone).to.equal('EOF');
      expect(backend.disconnects).to.equal(1);
      server.close();
      expect(existsSync(path)).to.equal(false);
      expect(cap.texts()).to.deep.equal([
        `INFO listening on ${path} (mode 0600)`,
        'INFO front-end connected',
        'INFO front-end disconnected',
      ]);
    });

    const hangUp = 'a back-end hang-up stops the back end before the socket closes (the front-end sees EOF only then)';
    it(hangUp, async () => {
      // docs/qemu-quirks.md "When the back-end hangs up": QEMU takes the used index as the next base on EOF,
      // so the kernel must be done with the rings before the front-end can see the socket close.
      const server = track(VhostUserServer.listen(path, backend));
      const fe = track(TestFrontEnd.connect(path));
      const conn = await once<Connection>(server, 'connection');
      expect(await fe.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      let socketOpenDuringTeardown: boolean | null = null;
      backend.onDisconnected = () => {
        try {
          fstatSync(conn.fd);
          socketOpenDuringTeardown = true;
        } catch {
          socketOpenDuringTeardown = false;
        }
      };
      const gone = once<string>(server, 'disconnect');
      conn.close('reset by the operator');
      expect(await gone).to.equal('reset by the operator');
      expect(socketOpenDuringTeardown, 'the socket was still open while the back end stopped').to.equal(true);
      expect(() => fstatSync(conn.fd), 'and closed after').to.throw(/EBADF/);
      expect(await fe.reply(2000)).to.equal('eof');
    });

    it('takes another mode when told', () => {
      const server = track(VhostUserServer.listen(path, backend, { mode: 0o660 }));
      expect(statSync(path).mode & 0o777).to.equal(0o660);
      server.close();
    });

    it('removes a stale socket file (nobody listening) and starts', async () => {
      sys.close(sys.unixListen(path)); // bound, then closed: the file stays, connect() is refused
      expect(() => sys.unixConnect(path)).to.throw(sys.SysError, 'ECONNREFUSED');
      const server = track(VhostUserServer.listen(path, backend));
      expect(cap.texts()[0]).to.equal(`INFO removing stale socket ${path} (nobody is listening on it)`);
      const fe = track(TestFrontEnd.connect(path));
      expect(await fe.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      const gone = once(server, 'disconnect');
      fe.close();
      await gone;
      server.close();
    });

    it('refuses to start where another process is listening, and leaves its socket alone', async () => {
      const other = sys.unixListen(path);
      expect(() => VhostUserServer.listen(path, backend)).to.throw(
        `another process is listening on ${path}; refusing to start`,
      );
      expect(existsSync(path)).to.equal(true);
      await readable(other); // our probe connection reached it
      const probe = sys.accept(other)!;
      sys.closeAll([probe, other]);
    });

    it('refuses to replace a path that is not a socket', () => {
      writeFileSync(path, 'not a socket');
      expect(() => VhostUserServer.listen(path, backend)).to.throw(
        `${path} exists and is not a socket; refusing to replace it`,
      );
      expect(existsSync(path)).to.equal(true);
      rmSync(path);
    });

    const secondTurnedAway =
      'turns a second concurrent front-end away at once, and accepts the next one after the first leaves';
    it(secondTurnedAway, async () => {
      const server = track(VhostUserServer.listen(path, backend));
      const first = track(TestFrontEnd.connect(path));
      await once(server, 'connection');
      const second = track(TestFrontEnd.connect(path));
      await once(server, 'rejected');
      expect(await second.reply(), 'closed without a word').to.equal('eof');
      second.close();
      expect(cap.texts('warn')).to.deep.equal([
        'WARN a second front-end connected while one is being served; closing it',
      ]);
      expect(await first.ask(msg.getFeatures()), 'the first is still served').to.deep.equal(
        reply.u64(ID.GET_FEATURES, NET_FEATURES),
      );
      const gone = once(server, 'disconnect');
      first.close();
      await gone;
      const third = track(TestFrontEnd.connect(path));
      await once(server, 'connection');
      expect(await third.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      expect(backend.disconnects, 'the rejected one never reached the back end').to.equal(1);
      server.close();
      expect(await third.reply(), 'server shutdown drops the front-end').to.equal('eof');
      third.close();
      expect(backend.disconnects).to.equal(2);
    });

    it('serves on an inherited listening fd (--fd N) and closes it on close()', async () => {
      const inherited = sys.unixListen(path);
      const server = track(VhostUserServer.fromFd(inherited, backend));
      expect(cap.texts().at(-1)).to.equal(`INFO serving on inherited listening fd ${inherited}`);
      expect(server.servesOne).to.equal(false);
      const fe = track(TestFrontEnd.connect(path));
      expect(await fe.ask(msg.getQueueNum().withFlags(1))).to.equal('eof'); // MQ not negotiated: dropped
      fe.close();
      const fe2 = track(TestFrontEnd.connect(path));
      expect(await fe2.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      const gone = once(server, 'disconnect');
      fe2.close();
      await gone;
      server.close();
      expect(sys.isOpen(inherited)).to.equal(false);
      expect(existsSync(path), 'a socket file it did not create is not removed').to.equal(true);
    });

    it('serves a front-end connected on an inherited fd (SO_ACCEPTCONN 0) alone, then is finished', async () => {
      const [ours, theirs] = sys.socketPair();
      const listening = sys.unixListen(path);
      expect([sys.isListening(ours), sys.isListening(listening)]).to.deep.equal([false, true]);
      sys.close(listening);
      const server = track(VhostUserServer.fromFd(ours, backend));
      expect(server.servesOne).to.equal(true);
      expect(cap.texts().at(-1)).to.equal(
        `INFO serving the front-end connected on inherited fd ${ours}; ending when it leaves`,
      );
      const fe = track(TestFrontEnd.over(theirs));
      expect(await fe.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      const finished = once(server, 'finished');
      fe.close();
      await finished;
      expect(backend.disconnects).to.equal(1);
      expect(sys.isOpen(ours)).to.equal(false);
      server.close();
    });

    it('refuses an inherited fd that is not a socket', () => {
      const fd = sys.eventfd();
      expect(() => VhostUserServer.fromFd(fd, backend)).to.throw(`fd ${fd} is not a socket (it is a other)`);
      sys.close(fd);
    });
  });

  describe('client', () => {
    /** The VMM side when QEMU listens (-chardev socket,server=on): accept one connection. */
    async function acceptOne(listenFd: number): Promise<TestFrontEnd> {
      for (;;) {
        const fd = sys.accept(listenFd);
        if (fd !== null) return TestFrontEnd.over(fd);
        await readable(listenFd, 5000);
      }
    }

    const retriesThenServes =
      'retries with backoff until the socket appears, then serves; reconnects after the front-end goes away';
    it(retriesThenServes, async () => {
      const client = track(VhostUserClient.connect(path, backend, { retryInitialMs: 10, retryMaxMs: 40 }));
      await new Promise((r) => setTimeout(r, 100)); // a few failed attempts: 10, 20, 40, 40 ms
      expect(cap.texts().filter((l) => l.startsWith('INFO cannot connect'))).to.have.length(1);
      const connected = once(client, 'connection');
      const listenFd = sys.unixListen(path);
      cleanup.push(() => sys.close(listenFd));
      const fe = track(await acceptOne(listenFd));
      await connected;
      expect(await fe.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));

      const gone = once<string>(client, 'disconnect');
      const reconnected = once(client, 'connection');
      fe.close();
      expect(await gone).to.equal('EOF');
      const again = track(await acceptOne(listenFd)); // the client came back by itself
      await reconnected;
      expect(await again.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      client.close();
      expect(await again.reply()).to.equal('eof');
      expect(backend.disconnects).to.equal(2);
    });

    it('stops retrying on close()', async () => {
      const client = track(VhostUserClient.connect(path, backend, { retryInitialMs: 5 }));
      await new Promise((r) => setTimeout(r, 20));
      client.close();
      const listenFd = sys.unixListen(path);
      cleanup.push(() => sys.close(listenFd));
      await new Promise((r) => setTimeout(r, 30));
      expect(sys.accept(listenFd), 'no connection after close').to.equal(null);
    });

    it('does not reconnect when told not to', async () => {
      const listenFd = sys.unixListen(path);
      cleanup.push(() => sys.close(listenFd));
      const client = track(VhostUserClient.connect(path, backend, { reconnect: false, retryInitialMs: 5 }));
      const fe = track(await acceptOne(listenFd));
      const gone = once(client, 'disconnect');
      fe.close();
      await gone;
      await new Promise((r) => setTimeout(r, 30));
      expect(sys.accept(listenFd)).to.equal(null);
    });
  });

  it('records a trace of what each connection sent and got (--record)', async () => {
    const file = join(dir, 'trace.msgpack');
    const trace = new TraceWriter(file, { features: `0x${NET_FEATURES.toString(16)}` });
    const server = track(VhostUserServer.listen(path, backend, { trace }));
    const fe = track(TestFrontEnd.connect(path));
    expect(await fe.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
    fe.send(msg.setVringCall(1));
    expect(await fe.ask(msg.getVringBase(1))).to.deep.equal(reply.vringState(ID.GET_VRING_BASE, 1, 0));
    const gone = once(server, 'disconnect');
    fe.close();
    await gone;
    server.close();
    trace.close();
    const { header, events } = readTrace(file);
    expect(header.meta).to.deep.equal({ features: `0x${NET_FEATURES.toString(16)}` });
    expect(events.map((e) => e.e)).to.deep.equal(['connect', 'msg', 'msg', 'msg', 'disconnect']);
    const msgs = events.filter((e): e is TraceMessage => e.e === 'msg');
    expect(msgs.map((m) => [m.request, m.fds, m.result])).to.deep.equal([
      [ID.GET_FEATURES, 0, 'ok'],
      [ID.SET_VRING_CALL, 1, 'ok'],
      [ID.GET_VRING_BASE, 0, 'ok'],
    ]);
    expect(msgs[0].reply).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
    expect(msgs[1].reply).to.equal(null);
    expect(msgs[1].payload).to.deep.equal(msg.setVringCall(1).payload);
  });
});
