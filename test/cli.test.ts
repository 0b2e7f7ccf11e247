/**
 * The command line as a user meets it: help, capabilities, and start-up problems that end with one
 * line and a non-zero exit. (Start-up problems that need /dev/vhost-net are in test/qemu/bridge-cli.)
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

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

  it('a --vhost-fd that is not /dev/vhost-net ends the start with one line naming it', () => {
    // fd 0 is the pipe spawnSync gives as stdin: not a character device.
    const r = run('--socket-path', '/tmp/vb-cli-test.sock', '--tap', 't0', '--vhost-fd', '0');
    expect(r.status).to.equal(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).to.have.length(1);
    expect(lines[0]).to.match(/^vhost-bridge: vhost fd 0: ENOTTY: .*not \/dev\/vhost-net/);
  });
});
