/**
 * The command line as a user meets it: help, capabilities, and start-up problems that end with one
 * line and a non-zero exit. (Start-up problems that need /dev/vhost-net are in test/qemu/bridge-cli.)
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as sys from '../src/sys/index.js';
import { tempDir } from './fdcount.js';

const CLI = resolve(import.meta.dirname, '..', 'src', 'cli.js');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });

describe('cli', () => {
  it('--help explains the options and shows a QEMU command line', () => {
    const r = run('--help');
    expect(r.status).to.equal(0);
    for (const o of [
      '--socket-path',
      '--connect',
      '--fd',
      '--tap',
      '--tap-fd',
      '--vhost-fd',
      '--queues',
      '--mtu',
      '--log-level',
      '--print-capabilities',
    ])
      expect(r.stdout).to.include(o);
    expect(r.stdout).to.include('-netdev vhost-user').and.include('memory-backend-memfd').and.include('share=on');
  });

  it('--print-capabilities prints the vhost-user.json capabilities and nothing else', () => {
    const r = run('--print-capabilities', '--tap', 'ignored');
    expect(r.status).to.equal(0);
    expect(JSON.parse(r.stdout)).to.deep.equal({ type: 'net' });
    expect(r.stderr).to.equal('');
  });

  it('refuses contradictory or missing options with one line and exit status 1', () => {
    for (const [args, want] of [
      [['--tap', 't0'], 'exactly one of --socket-path, --connect or --fd'],
      [['--socket-path', '/tmp/x.sock'], '--tap NAME, --tap-fd N, --macvtap NAME or --raw-socket IFNAME'],
      [['--socket-path', '/tmp/x.sock', '--tap', 't', '--raw-socket', 'eth0'], 'cannot be used with'],
      [['--socket-path', '/tmp/x.sock', '--macvtap', 'm', '--tap-fd', '3'], 'cannot be used with'],
      [['--socket-path', '/tmp/x.sock', '--tap', 't', '--busy-poll-us', 'x'], '--busy-poll-us must be an integer'],
      [['--socket-path', '/tmp/x.sock', '--connect', '/tmp/y.sock', '--tap', 't'], 'cannot be used with'],
      [['--socket-path', '/tmp/x.sock', '--tap', 't', '--queues', '0'], '--queues must be an integer'],
      [['--socket-path', '/tmp/x.sock', '--tap', 't', '--log-level', 'loud'], 'loud'],
    ] as const) {
      const r = run(...args);
      expect(r.status, args.join(' ')).to.equal(1);
      expect(r.stderr, args.join(' ')).to.include(want);
      expect(r.stdout).to.equal('');
    }
  });

  it('takes the one socket of socket activation (LISTEN_FDS=1) without --fd, and refuses several', () => {
    const dir = tempDir();
    const listening = sys.unixListen(join(dir, 'vu.sock'));
    try {
      const activated = (n: number) =>
        spawnSync(process.execPath, [CLI, '--tap', 't0', '--vhost-fd', '0'], {
          encoding: 'utf8',
          timeout: 20_000,
          env: { ...process.env, LISTEN_FDS: String(n) },
          stdio: ['pipe', 'pipe', 'pipe', ...Array<number>(n).fill(listening)],
        });
      const two = activated(2);
      expect(two.status).to.equal(1);
      expect(two.stderr).to.include('socket activation passed 2 sockets; one port serves one');
      // One: past the choice of transport, the start goes on to the kernel (here a --vhost-fd that is a pipe).
      const one = activated(1);
      expect(one.status).to.equal(1);
      expect(one.stderr).to.match(/^vhost-bridge: vhost fd 0: ENOTTY/);
      const none = spawnSync(process.execPath, [CLI, '--tap', 't0'], { encoding: 'utf8', timeout: 20_000 });
      expect(none.stderr).to.include('give exactly one of --socket-path, --connect or --fd');
    } finally {
      sys.close(listening);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a --vhost-fd that is not /dev/vhost-net ends the start with one line naming it', () => {
    // fd 0 is the pipe spawnSync gives as stdin: not a character device.
    const r = run('--socket-path', '/tmp/vb-cli-test.sock', '--tap', 't0', '--vhost-fd', '0');
    expect(r.status).to.equal(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).to.have.length(1);
    expect(lines[0]).to.match(/^vhost-bridge: vhost fd 0: ENOTTY: .*not \/dev\/vhost-net/);
  });
});
