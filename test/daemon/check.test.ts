/**
 * `serve --check --config FILE`: each bad configuration of test/daemon/config.test.ts gives the
 * line a start gives, exit 1; a good one exits 0; nothing is bound or created (the directory the
 * file names for its sockets stays absent). A bad --metrics is refused before any port starts.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Daemon } from '../../src/daemon/daemon.js';
import { kernelMissing } from '../../src/daemon/main.js';
import { parseMetricsAddress } from '../../src/daemon/metrics.js';
import { tempDir } from '../fdcount.js';
import { fakeKernel } from './fake-port.js';

const CLI = resolve(import.meta.dirname, '..', '..', 'src', 'cli.js');
const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };

function serve(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (status) => res({ status, stdout, stderr }));
  });
}

/** The bad documents of test/daemon/config.test.ts (and its files that are not JSON or not there). */
const BAD: (unknown | { text: string })[] = [
  {
    ports: {
      a: { tap: 'ta', workerCgroup: 'vb/vm1' },
      b: { tap: 'tb', workerCgroup: '/sys/fs/cgroup/vb/../other' },
      d: { tap: 'td', workerCgroup: '/sys/fs/cgroup/vb/cgroup.threads' },
      e: { tap: 'te', workerCgroup: 5 },
    },
  },
  {
    ports: {
      vm1: { tap: 't1', allowUsers: 'root', maxMemory: '4X', maxRegions: 0 },
      vm2: { tap: 't2', allowGroups: ['no-such-group-here'], maxMemory: 0 },
    },
  },
  {
    ports: {
      a: { tap: 't', macvtap: 'm' },
      b: {},
      c: { rawSocket: 'eth3', queues: 2, persistentTap: true },
      d: { tap: 't2', busyPollUs: -1 },
    },
  },
  { ports: { vm1: { tap: 'vbtap1', queues: 0 } } },
  { ports: { vm1: { tap: 'vbtap1', queues: 2.5 } } },
  {
    ports: {
      vm1: { tap: 'vbtap1', mtu: 20, mode: 660, owner: 'no-such-user-here', role: 'both', queus: 2 },
      vm2: { tap: 7 },
    },
  },
  { ports: { vm1: { tap: 't', socket: `/run/${'x'.repeat(110)}.sock` } } },
  { ports: { vm1: { tap: 't', socket: 'relative.sock' } } },
  { ports: { 'a/b': { tap: 't' } } },
  { ports: { vm1: { tap: 'a-very-long-tap-name' } } },
  { ports: { vm1: { tap: 't1' }, vm2: { tap: 't1', socket: '/run/vhost-bridge/vm1.sock' } } },
  { ports: { vm1: { tap: 't1', role: 'client', socket: '/run/q.sock', mode: '0660' } } },
  { control: { path: '/run/c.sock' }, ports: { vm1: { tap: 't1', socket: '/run/c.sock' } } },
  { ports: [], extra: 1 },
  null,
  { ports: { vm1: { tap: 't', queues: 999 } } },
  { text: '{ ports: }' },
];

describe('daemon: serve --check', function () {
  this.timeout(300_000); // a Node process per case

  it('every bad configuration: the lines a start gives, exit 1; nothing created', async () => {
    const dir = tempDir('vb-check-');
    try {
      const files = BAD.map((doc, i) => {
        const f = join(dir, `bad${i}.json`);
        const text = (doc as { text?: string } | null)?.text;
        writeFileSync(f, text ?? JSON.stringify(doc));
        return f;
      });
      files.push(join(dir, 'missing.json'));
      // What a start says: Daemon.start's error, which serve prints after `vhost-bridge serve: `.
      const startLine = (f: string) => {
        try {
          Daemon.start({ configFile: f, log: quiet, partsFor: fakeKernel().partsFor, env: {} }).close();
        } catch (e) {
          return `vhost-bridge serve: ${(e as Error).message}\n`;
        }
        throw new Error(`${f} started`);
      };
      for (let i = 0; i < files.length; i += 4) {
        const batch = files.slice(i, i + 4);
        const runs = await Promise.all(batch.map((f) => serve(['--check', '--config', f])));
        for (const [j, r] of runs.entries()) {
          expect(r.stderr, batch[j]).to.equal(startLine(batch[j]));
          expect(r.status, batch[j]).to.equal(1);
          expect(r.stdout).to.equal('');
        }
      }
      // and a real start of one of them says the same
      const start = await serve(['--config', files[5]]);
      expect([start.status, start.stderr]).to.deep.equal([1, startLine(files[5])]);
      expect(readdirSync(dir).sort()).to.deep.equal(
        files
          .slice(0, -1)
          .map((f) => f.slice(dir.length + 1))
          .sort(),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const good =
    'a good file exits 0 with one line, binds nothing and creates no directory; bad options exit 1 as a start';
  it(good, async () => {
    const dir = tempDir('vb-check-');
    try {
      const run = join(dir, 'run');
      const config = join(dir, 'good.json');
      writeFileSync(
        config,
        JSON.stringify({
          control: { path: join(run, 'control.sock') },
          ports: { a: { tap: 'vbt-a', socket: join(run, 'a.sock') }, b: { tap: 'vbt-b', socket: join(run, 'b.sock') } },
        }),
      );
      const metrics = join(dir, 'metrics.sock');
      const [good, badMetrics, badUser, start] = await Promise.all([
        serve(['--check', '--config', config, '--metrics', metrics, '--user', 'nobody']),
        serve(['--check', '--config', config, '--metrics', '127.0.0.1:99999']),
        serve(['--check', '--config', config, '--user', 'no-such-user-here']),
        serve(['--config', config, '--metrics', '127.0.0.1:99999']),
      ]);
      expect([good.status, good.stdout, good.stderr]).to.deep.equal([
        0,
        `vhost-bridge serve: ${config}: valid, 2 port(s)\n`,
        '',
      ]);
      const refused = 'vhost-bridge serve: --metrics 127.0.0.1:99999: port 99999 is not a TCP port (0 to 65535)\n';
      expect([badMetrics.status, badMetrics.stderr]).to.deep.equal([1, refused]);
      expect([start.status, start.stderr], 'a start refuses it before any port or socket').to.deep.equal([1, refused]);
      expect([badUser.status, badUser.stderr]).to.deep.equal([
        1,
        "vhost-bridge serve: --user: no user 'no-such-user-here' (/etc/passwd)\n",
      ]);
      expect(readdirSync(dir), 'no socket directory, no metrics socket').to.deep.equal(['good.json']);
      expect(existsSync(run)).to.equal(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--metrics: HOST:PORT or an absolute socket path, anything else in one line', () => {
    expect(parseMetricsAddress('127.0.0.1:9101')).to.deep.equal({ host: '127.0.0.1', port: 9101 });
    expect(parseMetricsAddress('[::1]:9101')).to.deep.equal({ host: '::1', port: 9101 });
    expect(parseMetricsAddress('/run/vb/metrics.sock')).to.deep.equal({ path: '/run/vb/metrics.sock' });
    for (const [a, why] of [
      ['127.0.0.1:99999', 'port 99999 is not a TCP port (0 to 65535)'],
      ['127.0.0.1', 'expected HOST:PORT'],
      ['metrics.sock', 'expected HOST:PORT'],
      ['::1:9101', 'expected HOST:PORT'],
      [`/${'m'.repeat(120)}`, '121 bytes is too long for a unix socket path (at most 107)'],
    ])
      expect(() => parseMetricsAddress(a), a).to.throw(`--metrics ${a}: ${why}`);
  });

  const policy = 'the start-up policy: no /dev/vhost-net, or no /dev/net/tun for ports that are all taps, is the host';
  it(policy, async () => {
    const tap = { backend: 'tap' } as const;
    const macvtap = { backend: 'macvtap' } as const;
    const has =
      (...paths: string[]) =>
      (p: string) =>
        paths.includes(p);
    type Spec = Parameters<typeof kernelMissing>[0][number];
    const specs = (...b: object[]) => b as Spec[];
    expect(kernelMissing(specs(tap), has('/dev/vhost-net', '/dev/net/tun'))).to.equal(null);
    expect(kernelMissing(specs(tap), has('/dev/net/tun'))).to.equal('/dev/vhost-net (modprobe vhost_net) missing');
    expect(kernelMissing(specs(tap, tap), has('/dev/vhost-net'))).to.equal('/dev/net/tun (modprobe tun) missing');
    expect(kernelMissing(specs(tap, macvtap), has('/dev/vhost-net')), 'a macvtap port needs no tun').to.equal(null);
    expect(kernelMissing(specs(tap), has())).to.equal(
      '/dev/vhost-net (modprobe vhost_net) and /dev/net/tun (modprobe tun) missing',
    );
    if (existsSync('/dev/vhost-net')) return; // the rest is a machine without it
    const dir = tempDir('vb-check-');
    try {
      const config = join(dir, 'c.json');
      writeFileSync(
        config,
        JSON.stringify({
          control: { path: join(dir, 'control.sock') },
          ports: { a: { tap: 'vbt-a', socket: join(dir, 'a.sock') } },
        }),
      );
      const r = await serve(['--config', config]);
      expect(r.status).to.equal(1);
      expect(r.stderr.trimEnd().split('\n').at(-1)).to.match(
        /^vhost-bridge serve: no port can start: \/dev\/vhost-net \(modprobe vhost_net\)( and .*)? missing \(--wait/,
      );
      expect(readdirSync(dir), 'the control socket is gone').to.deep.equal(['c.json']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
