/**
 * `vhost-bridge serve` and `vhost-bridge ctl` as a user meets them, in a child process: a bad
 * configuration ends with the errors and exit 1; the control socket passed by systemd
 * (LISTEN_FDS, LISTEN_FDNAMES=control) is served; a port that cannot start leaves the daemon up.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as sys from '../../src/sys/index.js';
import { tempDir } from '../fdcount.js';

const CLI = resolve(import.meta.dirname, '..', '..', 'src', 'cli.js');

describe('daemon cli', () => {
  it('serve refuses a bad configuration with every error naming port and field, exit status 1', () => {
    const dir = tempDir();
    try {
      const f = join(dir, 'c.json');
      writeFileSync(f, JSON.stringify({ ports: { vm1: { tap: 't1', queues: 0 }, vm2: { tap: 't2', mode: '999' } } }));
      const r = spawnSync(process.execPath, [CLI, 'serve', '--config', f], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status).to.equal(1);
      expect(r.stderr.trim().split('\n')).to.deep.equal([
        `vhost-bridge serve: ${f}: ports.vm1.queues: expected a number from 1 to 128`,
        `${f}: ports.vm2.mode: expected an octal mode as a string, such as "0660"`,
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ctl without a daemon says so in one line, exit status 3; the one-port --help mentions serve', () => {
    const r = spawnSync(process.execPath, [CLI, 'ctl', 'ports', '--control', '/nonexistent/control.sock'], {
      encoding: 'utf8',
    });
    expect(r.status).to.equal(3);
    expect(r.stderr).to.match(
      /^vhost-bridge ctl: \/nonexistent\/control\.sock: connect ENOENT .*is `vhost-bridge serve` running/,
    );
    expect(spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' }).stdout).to.include(
      'vhost-bridge serve --config FILE',
    );
  });

  const inheritedControl =
    'serves the control socket systemd passes (LISTEN_FDNAMES=control); a port that cannot start is reported, the ' +
    'daemon stays';
  it(inheritedControl, async function () {
    this.timeout(20_000);
    const dir = tempDir();
    const ctl = join(dir, 'ctl.sock');
    const listen = sys.unixListen(ctl, { mode: 0o600 });
    const f = join(dir, 'c.json');
    // A persistent tap that does not exist: the port fails on any machine (without /dev/vhost-net it fails earlier).
    writeFileSync(
      f,
      JSON.stringify({
        control: { path: join(dir, 'unused.sock') },
        ports: { vm1: { tap: 'vbnosuch0', persistentTap: true, socket: join(dir, 'vm1.sock') } },
      }),
    );
    const env = { ...process.env, LISTEN_FDS: '1', LISTEN_FDNAMES: 'control' };
    // --wait-for-kernel: on a machine without /dev/vhost-net the daemon stays up with its port failed.
    const child = spawn(process.execPath, [CLI, 'serve', '--config', f, '--wait-for-kernel'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe', listen],
    });
    sys.close(listen);
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    try {
      for (let i = 0; !stderr.includes('serving 0 of 1 port(s)') && i < 100; i++)
        await new Promise((r) => setTimeout(r, 100));
      expect(stderr)
        .to.match(/ERROR vm1: cannot start: /)
        .and.include('control socket on inherited fd 3');
      const r = spawnSync(process.execPath, [CLI, 'ctl', 'ports', '--json', '--control', ctl], { encoding: 'utf8' });
      expect(r.status, `degraded: ${r.stderr}`).to.equal(4);
      const ports = JSON.parse(r.stdout) as { name: string; state: string }[];
      expect(ports.map((p) => [p.name, p.state])).to.deep.equal([['vm1', 'failed']]);
      const t = spawnSync(process.execPath, [CLI, 'ctl', 'ports', '--control', ctl], { encoding: 'utf8' });
      expect(t.stdout.split('\n')[0]).to.match(/^PORT\s+STATE\s+FRONT-END\s+TAP\s+QUEUES\s+ROLE\s+SOCKET$/);
    } finally {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
      rmSync(dir, { recursive: true, force: true });
    }
    expect(stderr).to.include('SIGTERM: stopping');
  });
});
