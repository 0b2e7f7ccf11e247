/** The daemon's configuration: what is accepted, the defaults, and errors that name the port and the field. */
import { expect } from 'chai';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, loadConfig, parseConfig, parsePort, sameConfig } from '../../src/daemon/config.js';
import { tempDir } from '../fdcount.js';

function errorsOf(doc: unknown): string[] {
  try {
    parseConfig(doc);
  } catch (e) {
    expect(e).to.be.instanceOf(ConfigError);
    return (e as ConfigError).message.split('\n');
  }
  throw new Error('the configuration was accepted');
}

describe('daemon config', () => {
  const defaults =
    'fills in the defaults: server role, /run/vhost-bridge/<port>.sock, 1 queue pair, mode 0600, the control socket';
  it(defaults, () => {
    const c = parseConfig({ ports: { vm1: { tap: 'vbtap1' } } });
    expect(c.control).to.deep.equal({ path: '/run/vhost-bridge/control.sock', mode: 0o660, group: null, peers: null });
    expect(c.ports.get('vm1')).to.deep.equal({
      name: 'vm1',
      socket: '/run/vhost-bridge/vm1.sock',
      role: 'server',
      tap: 'vbtap1',
      backend: 'tap',
      busyPollUs: 0,
      persistentTap: false,
      queues: 1,
      mtu: null,
      owner: null,
      group: null,
      mode: 0o600,
      peers: null,
      maxMemory: null,
      maxRegions: null,
      workerCgroup: null,
    });
  });

  it("takes a port's workerCgroup as a plain absolute directory path, and says what is wrong with others", () => {
    const c = parseConfig({ ports: { vm1: { tap: 't1', workerCgroup: '/sys/fs/cgroup/vb.service/vm1' } } });
    expect(c.ports.get('vm1')?.workerCgroup).to.equal('/sys/fs/cgroup/vb.service/vm1');
    const plain = 'expected a plain absolute path: no "." or ".." parts, no empty parts, no trailing "/"';
    expect(
      errorsOf({
        ports: {
          a: { tap: 'ta', workerCgroup: 'vb/vm1' },
          b: { tap: 'tb', workerCgroup: '/sys/fs/cgroup/vb/../other' },
          c: { tap: 'tc', workerCgroup: '/sys/fs/cgroup/vb/' },
          d: { tap: 'td', workerCgroup: '/sys/fs/cgroup/vb/cgroup.threads' },
          e: { tap: 'te', workerCgroup: 5 },
          f: { tap: 'tf', workerCgroup: '/' },
        },
      }),
    ).to.have.members([
      'ports.a.workerCgroup: expected an absolute path of a cgroup v2 directory, such as "/sys/fs/cgroup/vb/vm1"',
      `ports.b.workerCgroup: ${plain}`,
      `ports.c.workerCgroup: ${plain}`,
      'ports.d.workerCgroup: expected the cgroup directory, not a file in it (the daemon picks cgroup.procs or ' +
        'cgroup.threads)',
      'ports.e.workerCgroup: expected the path of a cgroup v2 directory',
      `ports.f.workerCgroup: ${plain}`,
    ]);
    const a = parsePort('p', { tap: 't', workerCgroup: '/sys/fs/cgroup/a' });
    expect(sameConfig(a, parsePort('p', { tap: 't', workerCgroup: '/sys/fs/cgroup/a' }))).to.equal(true);
    expect(sameConfig(a, parsePort('p', { tap: 't', workerCgroup: '/sys/fs/cgroup/b' }))).to.equal(false);
  });

  it('takes allow-lists of users and groups (names or ids) and memory limits with binary suffixes', () => {
    const c = parseConfig({
      control: { path: '/run/vb/ctl.sock', allowUsers: ['root'] },
      ports: {
        a: { tap: 'ta', allowUsers: ['root', 65534], allowGroups: [0], maxMemory: '512M', maxRegions: 2 },
        b: { tap: 'tb', allowGroups: ['root'], maxMemory: 4096 },
        c: { tap: 'tc', maxMemory: '2g' },
      },
    });
    expect(c.control.peers).to.deep.equal({ uids: [0], gids: [] });
    expect(c.ports.get('a')).to.deep.include({
      peers: { uids: [0, 65534], gids: [0] },
      maxMemory: 512n << 20n,
      maxRegions: 2,
    });
    expect(c.ports.get('b')).to.deep.include({ peers: { uids: [], gids: [0] }, maxMemory: 4096n, maxRegions: null });
    expect(c.ports.get('c')?.maxMemory).to.equal(2n << 30n);
    expect(
      errorsOf({
        ports: {
          vm1: { tap: 't1', allowUsers: 'root', maxMemory: '4X', maxRegions: 0 },
          vm2: { tap: 't2', allowGroups: ['no-such-group-here'], maxMemory: 0 },
        },
      }),
    ).to.have.members([
      'ports.vm1.allowUsers: expected a list of user names or ids',
      'ports.vm1.maxMemory: expected a size above 0 such as "4G", "512M" or a number of bytes',
      'ports.vm1.maxRegions: expected a number from 1 to 509',
      "ports.vm2.allowGroups.0: no group 'no-such-group-here' (/etc/group)",
      'ports.vm2.maxMemory: expected a size above 0 such as "4G", "512M" or a number of bytes',
    ]);
  });

  it('a reload sees an allow-list or a limit as a change, and equal ones as no change', () => {
    const a = parsePort('p', { tap: 't', allowUsers: [0], maxMemory: '1G' });
    expect(sameConfig(a, parsePort('p', { tap: 't', allowUsers: [0], maxMemory: '1024M' }))).to.equal(true);
    expect(sameConfig(a, parsePort('p', { tap: 't', allowUsers: [0, 1], maxMemory: '1G' }))).to.equal(false);
    expect(sameConfig(a, parsePort('p', { tap: 't', allowUsers: [0], maxMemory: '2G' }))).to.equal(false);
    expect(sameConfig(a, parsePort('p', { tap: 't', maxMemory: '1G' }))).to.equal(false);
  });

  it('takes every setting, users and groups by name or id, modes as octal strings', () => {
    const c = parseConfig({
      control: { path: '/run/vb/ctl.sock', mode: '0600', group: 'root' },
      ports: {
        a: {
          tap: 'ta',
          socket: '/run/vb/a.sock',
          queues: 4,
          mtu: 9000,
          owner: 'root',
          group: 0,
          mode: '0660',
          persistentTap: true,
        },
        b: { tap: 'tb', role: 'client', socket: '/run/qemu/b.sock' },
      },
    });
    expect(c.control).to.deep.equal({ path: '/run/vb/ctl.sock', mode: 0o600, group: 0, peers: null });
    expect(c.ports.get('a')).to.include({ queues: 4, mtu: 9000, owner: 0, group: 0, mode: 0o660, persistentTap: true });
    expect(c.ports.get('b')).to.include({ role: 'client', socket: '/run/qemu/b.sock' });
    expect([...c.ports.keys()]).to.deep.equal(['a', 'b']);
  });

  it('a port on a macvtap or a raw packet socket, with busy polling; exactly one socket, and what fits it', () => {
    const c = parseConfig({
      ports: { m: { macvtap: 'vbmvt0', busyPollUs: 50, queues: 2 }, r: { rawSocket: 'eth3' } },
    });
    expect(c.ports.get('m')).to.include({ tap: 'vbmvt0', backend: 'macvtap', busyPollUs: 50, queues: 2 });
    expect(c.ports.get('r')).to.include({ tap: 'eth3', backend: 'packet', busyPollUs: 0 });
    expect(
      errorsOf({
        ports: {
          a: { tap: 't', macvtap: 'm' },
          b: {},
          c: { rawSocket: 'eth3', queues: 2, persistentTap: true },
          d: { tap: 't2', busyPollUs: -1 },
        },
      }),
    ).to.have.members([
      'ports.a.macvtap: give exactly one of tap, macvtap or rawSocket (the socket the rings are attached to)',
      'ports.b.tap: give exactly one of tap, macvtap or rawSocket (the socket the rings are attached to)',
      'ports.c.persistentTap: applies to a tap only',
      'ports.c.queues: a raw packet socket serves one queue pair',
      'ports.d.busyPollUs: expected a number from 0 to 1000000',
    ]);
  });

  it('names the port and the field of every problem, all at once', () => {
    expect(errorsOf({ ports: { vm1: { tap: 'vbtap1', queues: 0 } } })).to.deep.equal([
      'ports.vm1.queues: expected a number from 1 to 128',
    ]);
    expect(errorsOf({ ports: { vm1: { tap: 'vbtap1', queues: 2.5 } } })).to.deep.equal([
      'ports.vm1.queues: expected a number from 1 to 128',
    ]);
    expect(
      errorsOf({
        ports: {
          vm1: { tap: 'vbtap1', mtu: 20, mode: 660, owner: 'no-such-user-here', role: 'both', queus: 2 },
          vm2: { tap: 7 },
        },
      }),
    ).to.have.members([
      'ports.vm1.mtu: expected a number from 68 to 65521',
      'ports.vm1.mode: expected an octal mode as a string, such as "0660"',
      "ports.vm1.owner: no user 'no-such-user-here' (/etc/passwd)",
      'ports.vm1.role: expected "server" or "client"',
      'ports.vm1.queus: unknown field',
      'ports.vm2.tap: expected an interface name',
    ]);
  });

  it('refuses a socket path longer than sun_path holds, saying so', () => {
    const path = `/run/${'x'.repeat(110)}.sock`;
    expect(errorsOf({ ports: { vm1: { tap: 't', socket: path } } })).to.deep.equal([
      `ports.vm1.socket: ${Buffer.byteLength(path)} bytes is too long for a unix socket path (at most 107: ` +
        `sun_path is 108 bytes with its NUL)`,
    ]);
    expect(errorsOf({ ports: { vm1: { tap: 't', socket: 'relative.sock' } } })).to.deep.equal([
      'ports.vm1.socket: expected an absolute path',
    ]);
    // 107 bytes is the most that fits
    const fits = `/${'y'.repeat(101)}.sock`;
    expect(Buffer.byteLength(fits)).to.equal(107);
    expect(parseConfig({ ports: { vm1: { tap: 't', socket: fits } } }).ports.get('vm1')?.socket).to.equal(fits);
  });

  it('refuses bad names, shared sockets and taps, and settings that do not apply to the role', () => {
    expect(errorsOf({ ports: { 'a/b': { tap: 't' } } })[0]).to.match(/^ports\.a\/b: a port name is 1 to 64 letters/);
    expect(errorsOf({ ports: { vm1: { tap: 'a-very-long-tap-name' } } })).to.deep.equal([
      'ports.vm1.tap: "a-very-long-tap-name" is 20 bytes; interface names have at most 15',
    ]);
    expect(
      errorsOf({ ports: { vm1: { tap: 't1' }, vm2: { tap: 't1', socket: '/run/vhost-bridge/vm1.sock' } } }),
    ).to.deep.equal([
      'ports.vm2.socket: /run/vhost-bridge/vm1.sock is already the socket of port vm1',
      'ports.vm2.tap: t1 is already the tap of port vm1',
    ]);
    expect(
      errorsOf({ ports: { vm1: { tap: 't1', role: 'client', socket: '/run/q.sock', mode: '0660' } } }),
    ).to.deep.equal(['ports.vm1.mode: applies to role "server" only (with role "client" the VMM creates the socket)']);
    expect(
      errorsOf({ control: { path: '/run/c.sock' }, ports: { vm1: { tap: 't1', socket: '/run/c.sock' } } }),
    ).to.deep.equal(['ports.vm1.socket: /run/c.sock is the control socket']);
    expect(errorsOf({ ports: [], extra: 1 })).to.have.members([
      'extra: unknown field',
      'ports: expected an object of ports by name',
    ]);
    expect(errorsOf(null)).to.deep.equal(['expected an object with "ports"']);
  });

  it('loadConfig names the file, also when it is not JSON', () => {
    const dir = tempDir();
    try {
      const f = join(dir, 'c.json');
      writeFileSync(f, '{ "ports": { "vm1": { "tap": "t", "queues": 999 } } }');
      expect(() => loadConfig(f)).to.throw(ConfigError, `${f}: ports.vm1.queues: expected a number from 1 to 128`);
      writeFileSync(f, '{ ports: }');
      expect(() => loadConfig(f)).to.throw(ConfigError, new RegExp(`^${f}: not JSON: `));
      expect(() => loadConfig(join(dir, 'missing.json'))).to.throw(ConfigError, /cannot read it: ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('examples/vhost-bridge.json is a valid configuration of three ports (its users and groups as ids here)', () => {
    const file = resolve(import.meta.dirname, '..', '..', '..', 'examples', 'vhost-bridge.json');
    const ids = (_: string, v: unknown) => (v === 'kvm' || v === 'libvirt-qemu' ? 0 : v);
    const c = parseConfig(JSON.parse(readFileSync(file, 'utf8'), ids));
    expect([...c.ports.values()].map((p) => [p.name, p.role, p.tap, p.queues])).to.deep.equal([
      ['vm1', 'server', 'vbtap1', 1],
      ['vm2', 'server', 'vbtap2', 2],
      ['vm3', 'client', 'vbtap3', 1],
    ]);
  });

  it('sameConfig tells a changed port from an unchanged one', () => {
    const a = parsePort('vm1', { tap: 't1', queues: 2 });
    expect(sameConfig(a, parsePort('vm1', { tap: 't1', queues: 2, role: 'server' }))).to.equal(true);
    expect(sameConfig(a, parsePort('vm1', { tap: 't1', queues: 1 }))).to.equal(false);
    expect(sameConfig(a, parsePort('vm1', { tap: 't1', queues: 2, mode: '0660' }))).to.equal(false);
  });
});
