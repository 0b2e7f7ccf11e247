/**
 * The bridge's start-up problems, as a user meets them, and unprivileged use: each problem ends
 * with one line saying what to do and exit status 1. Lab only (needs /dev/vhost-net and taps).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { BridgeProcess, EVENTS_ARGS } from '../../lab/bridge-process.js';
import { Guest, TRAFFIC_MIN_BYTES } from '../../lab/guest.js';
import { hostTap, removeTap } from '../../lab/host.js';
import { inLab, requireLab } from './lab.js';

const CLI = resolve(import.meta.dirname, '..', '..', 'src', 'cli.js');
const xchg = process.env.LAB_XCHG ?? '/tmp';

/** Run the CLI through bash (for fd redirections and runuser); it must fail at start-up. */
function startupFailure(script: string): { status: number | null; lines: string[] } {
  const r = spawnSync('bash', ['-c', script], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, CLI, NODE: process.execPath },
  });
  return {
    status: r.status,
    lines: r.stderr
      .trim()
      .split('\n')
      .filter((l) => l),
  };
}

describe('bridge start-up problems and unprivileged use (lab)', function () {
  this.timeout(240_000);
  const cleanup: (() => void)[] = [];

  before(function () {
    requireLab(this);
    // Most distributions make /dev/net/tun 0666; the lab's devtmpfs leaves it 0600.
    const mode = statSync('/dev/net/tun').mode & 0o777;
    chmodSync('/dev/net/tun', 0o666);
    cleanup.push(() => chmodSync('/dev/net/tun', mode));
  });

  after(() => {
    for (const f of cleanup.reverse()) f();
    if (inLab()) for (const t of ['vbcli0', 'vbcli1', 'vbnopriv0']) removeTap(t);
  });

  it('without access to /dev/vhost-net: one line that says what to do', () => {
    const r = startupFailure('runuser -u nobody -- "$NODE" "$CLI" --socket-path /tmp/vb-cli-a.sock --tap vbcli0');
    expect(r.status).to.equal(1);
    expect(r.lines, r.lines.join('\n')).to.have.length(1);
    expect(r.lines[0]).to.match(
      /^vhost-bridge: open \/dev\/vhost-net: EACCES: permission denied: .*run as root.*--vhost-fd/,
    );
  });

  it('without CAP_NET_ADMIN for a new tap: one line that says what to do', () => {
    const r = startupFailure(
      'runuser -u nobody -- "$NODE" "$CLI" --socket-path /tmp/vb-cli-b.sock --tap vbcli1 --vhost-fd 3 ' +
        '3<>/dev/vhost-net',
    );
    expect(r.status).to.equal(1);
    expect(r.lines, r.lines.join('\n')).to.have.length(1);
    expect(r.lines[0]).to.match(/^vhost-bridge: TUNSETIFF vbcli1: EPERM: operation not permitted: .*CAP_NET_ADMIN/);
  });

  it('with the socket path in use by a running bridge: one line, and the running one is untouched', async () => {
    hostTap('vbcli0', { ip: '10.0.9.1/24' });
    const first = await BridgeProcess.start({
      name: 'cli-first',
      args: ['--socket-path', '/tmp/vb-cli-c.sock', '--tap', 'vbcli0'],
    });
    try {
      const r = startupFailure('"$NODE" "$CLI" --socket-path /tmp/vb-cli-c.sock --tap vbcli1');
      expect(r.status).to.equal(1);
      expect(r.lines, r.lines.join('\n')).to.have.length(1);
      expect(r.lines[0])
        .to.match(/^vhost-bridge: .*(listening|in use)/)
        .and.include('/tmp/vb-cli-c.sock');
      expect(statSync('/tmp/vb-cli-c.sock').isSocket(), 'the running bridge keeps its socket').to.equal(true);
      expect(first.running).to.equal(true);
    } finally {
      await first.stop();
    }
  });

  const runsUnprivileged =
    'runs unprivileged (user nobody) with a vhost-net fd from its manager and a tap it owns, and a guest uses it';
  it(runsUnprivileged, async function () {
    this.timeout(300_000);
    // The manager's part: a persistent tap owned by nobody, up, addressed; /dev/vhost-net opened as fd 4
    // (fd 3 carries the bridge's events to the test).
    removeTap('vbnopriv0');
    spawnSync('ip', ['tuntap', 'add', 'dev', 'vbnopriv0', 'mode', 'tap', 'user', 'nobody', 'vnet_hdr']);
    spawnSync('ip', ['addr', 'add', '10.0.3.1/24', 'dev', 'vbnopriv0']);
    spawnSync('ip', ['link', 'set', 'vbnopriv0', 'up']);
    const sock = '/tmp/vb-nopriv/vu.sock';
    spawnSync('bash', ['-c', 'rm -rf /tmp/vb-nopriv && mkdir -p /tmp/vb-nopriv && chown nobody /tmp/vb-nopriv']);
    const bridge = await BridgeProcess.start({
      name: 'nopriv',
      command: 'bash',
      // setpriv execs the bridge as nobody (no capabilities left after the uid change); fds 3 and 4 stay open.
      args: [
        '-c',
        `exec setpriv --reuid=nobody --regid=nogroup --clear-groups -- "${process.execPath}" --enable-source-maps ` +
          `"${CLI}" --socket-path ${sock} --socket-mode 0666 --tap vbnopriv0 --vhost-fd 4 ` +
          `${EVENTS_ARGS.join(' ')} 4<>/dev/vhost-net`,
      ],
    });
    let guest: Guest | undefined;
    try {
      const uid = spawnSync('ps', ['-o', 'user=', '-p', String(bridge.pid)], { encoding: 'utf8' }).stdout.trim();
      expect(['nobody', '65534']).to.include(uid);
      guest = await Guest.boot({
        name: 'nopriv',
        net: { kind: 'vhost-user', socketPath: sock },
        logFile: `${xchg}/guest-nopriv.log`,
      });
      const p = await guest.ping('10.0.3.1', { count: 3 });
      expect(p.received).to.equal(3);
      const r = await guest.iperf3({ seconds: 3 });
      expect(r.bytes).to.be.at.least(TRAFFIC_MIN_BYTES);
      expect(bridge.problems()).to.deep.equal([]);
    } finally {
      await guest?.shutdown();
      await bridge.stop();
    }
  });
});
