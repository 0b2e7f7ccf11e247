/**
 * Peer credentials: a port's and the control socket's allow-list, checked with SO_PEERCRED on
 * accept before anything is read. The refused peer is a real process of another uid (setpriv as
 * nobody) on real unix sockets; the ports are the real transport and device on the fake kernel.
 */
import { expect } from 'chai';
import { chmodSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PortEvent } from '../../src/bridge/status.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { request } from '../../src/daemon/ctl.js';
import type { PortReport } from '../../src/daemon/report.js';
import { log } from '../../src/log.js';
import { captureLog, type LogCapture } from '../log-capture.js';
import { openFdCount, tempDir } from '../fdcount.js';
import { handshake } from '../../lab/frontend/handshake.js';
import { connectAsNobody, NOBODY } from '../../lab/as-user.js';
import { fakeKernel } from './fake-port.js';
import { ensureSocketDir, SOCKET_DIR_MODE } from '../../src/daemon/socket-dir.js';

const root = process.getuid?.() === 0;

describe('peer credentials: allow-lists checked on accept', function () {
  before(function () {
    if (root) return;
    // setpriv to another uid needs root; in CI its absence is a failure, not a skip.
    if (process.env.CI === 'true') throw new Error('peer-credential tests need root (setpriv): run them as root');
    this.skip();
  });
  let cap: LogCapture | null = null;
  afterEach(() => {
    cap?.stop();
    cap = null;
  });

  const portRule =
    "a uid outside a port's allow-list is logged (port, pid/uid/gid, rule), closed unread, counted; the " +
    "port's own front-end and another port are served";
  it(portRule, async function () {
    this.timeout(20_000);
    const dir = tempDir('vb-peer-');
    chmodSync(dir, 0o755); // the socket modes below, not the directory, are what lets nobody reach them
    const config = join(dir, 'config.json');
    const control = join(dir, 'control.sock');
    writeFileSync(
      config,
      JSON.stringify({
        control: { path: control, mode: '0666', allowUsers: [0] },
        ports: {
          guarded: { tap: 'vbt-guarded', socket: join(dir, 'guarded.sock'), mode: '0666', allowUsers: ['root'] },
          open: { tap: 'vbt-open', socket: join(dir, 'open.sock'), mode: '0666' },
        },
      }),
    );
    const kernel = fakeKernel();
    cap = captureLog('info');
    const daemon = Daemon.start({ configFile: config, log, partsFor: kernel.partsFor, env: {} });
    const events: PortEvent[] = [];
    daemon.manager.get('guarded').port!.onEvent((e) => events.push(e));
    try {
      const fds = openFdCount();
      const seen = await connectAsNobody(join(dir, 'guarded.sock'));
      expect(seen.hungUp, 'the refused peer was hung up on').to.equal(true);
      expect(seen.got, 'and got no reply').to.equal(0);
      expect(openFdCount(), 'its fd was closed').to.equal(fds);
      const line = cap.texts('warn').find((t) => t.includes('refused'));
      expect(line).to.equal(
        `WARN guarded: refused a front-end pid ${seen.pid} uid ${NOBODY} gid ${NOBODY}: uid ${NOBODY} gid ${NOBODY} ` +
          'is not allowed (allowed: users 0; groups none); closed before any message was read',
      );
      const guarded = kernel.live('guarded');
      expect(daemon.manager.get('guarded').port!.status().sessions, 'no session began').to.equal(0);
      expect(guarded.journal, 'the kernel side was not touched').to.deep.equal([]);
      expect(events).to.deep.equal([
        {
          kind: 'peer-refused',
          peer: { pid: seen.pid, uid: NOBODY, gid: NOBODY },
          rule: 'users 0; groups none',
        },
      ]);
      const st = (await request(control, [{ method: 'status', params: { port: 'guarded' } }]))[0] as PortReport;
      expect(st.device?.refusedPeers).to.equal(1);

      // The same uid on a port without a rule is served (it gets GET_FEATURES' 20-byte reply).
      const other = await connectAsNobody(join(dir, 'open.sock'));
      expect(other).to.include({ got: 20, hungUp: false });
      // The port's own front-end (root) sets up both rings.
      const fe = await handshake(join(dir, 'guarded.sock'));
      expect(
        daemon.manager
          .get('guarded')
          .port!.status()
          .rings.map((r) => r.started),
      ).to.deep.equal([true, true]);
      fe.close();
    } finally {
      daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const control = "the control socket's allow-list: nobody is refused before a request is read, root is answered";
  it(control, async function () {
    this.timeout(20_000);
    const dir = tempDir('vb-peer-');
    chmodSync(dir, 0o755);
    const config = join(dir, 'config.json');
    const control = join(dir, 'control.sock');
    writeFileSync(config, JSON.stringify({ control: { path: control, mode: '0666', allowUsers: [0] }, ports: {} }));
    cap = captureLog('info');
    const daemon = Daemon.start({ configFile: config, log, partsFor: fakeKernel().partsFor, env: {} });
    try {
      const seen = await connectAsNobody(control);
      expect(seen).to.include({ got: 0, hungUp: true });
      expect(daemon.control.refused).to.equal(1);
      expect(cap.texts('warn')).to.include(
        `WARN control: refused pid ${seen.pid} uid ${NOBODY} gid ${NOBODY}: uid ${NOBODY} gid ${NOBODY} is not ` +
          'allowed (allowed: users 0; groups none); closed before any request was read',
      );
      const [v] = (await request(control, [{ method: 'version' }])) as { pid: number }[];
      expect(v.pid).to.equal(process.pid);
    } finally {
      daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('socket directories', () => {
  it('are created 0755 whatever the umask; one everyone may write without the sticky bit is refused', () => {
    const dir = tempDir('vb-sockdir-');
    const old = process.umask(0o077);
    try {
      ensureSocketDir(join(dir, 'a/b'));
      expect(statSync(join(dir, 'a/b')).mode & 0o7777).to.equal(SOCKET_DIR_MODE);
      const open = join(dir, 'open');
      mkdirSync(open);
      chmodSync(open, 0o777);
      expect(() => ensureSocketDir(open)).to.throw(/may be written by everyone \(mode 777\) without the sticky bit/);
      chmodSync(open, 0o1777); // like /tmp
      ensureSocketDir(open);
    } finally {
      process.umask(old);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
