/**
 * `vhost-bridge ctl` as a script meets it, in a child process against a daemon in this process (on
 * the fake kernel): global options before the command and VHOST_BRIDGE_CONTROL, the exit table
 * (src/daemon/ctl.ts EXIT), one line and no stack for a peer that is not the daemon, a timeout on
 * one that never answers, `health`, and `reload` saying what changed or why nothing did.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { EXIT, EXIT_HELP, request } from '../../src/daemon/ctl.js';
import { Daemon } from '../../src/daemon/daemon.js';
import type { Health } from '../../src/daemon/report.js';
import { VERSION } from '../../src/version.js';
import { tempDir } from '../fdcount.js';
import { fakeKernel } from './fake-port.js';

const CLI = resolve(import.meta.dirname, '..', '..', 'src', 'cli.js');
const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** The CLI in a child, without blocking this process's event loop (the daemon under test runs in it). */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, VHOST_BRIDGE_CONTROL: undefined, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (status) => res({ status, stdout, stderr }));
  });
}

/** One line on stderr, starting `vhost-bridge ctl: `, and no stack frame. */
function oneLine(r: Run): string {
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).to.have.length(1);
  expect(lines[0]).to.match(/^vhost-bridge ctl: /);
  expect(r.stderr).to.not.match(/\n\s+at /);
  return lines[0];
}

function listen(path: string, onConn: (s: Socket) => void): Promise<Server> {
  return new Promise((res) => {
    const s = createServer(onConn);
    s.listen(path, () => res(s));
  });
}

describe('daemon: ctl for scripts', function () {
  // Each case starts several Node processes (some seconds each on a loaded machine).
  this.timeout(120_000);
  let dir: string;
  let config: string;
  let control: string;
  let daemon: Daemon;
  const write = (doc: unknown) => writeFileSync(config, JSON.stringify(doc));
  const ports = (names: string[]) =>
    Object.fromEntries(names.map((n) => [n, { tap: `vbt-${n}`, socket: join(dir, `${n}.sock`) }]));

  beforeEach(() => {
    dir = tempDir('vb-ctl-');
    config = join(dir, 'config.json');
    control = join(dir, 'control.sock');
    const kernel = fakeKernel();
    kernel.failing.add('bad');
    write({ control: { path: control }, ports: ports(['good', 'bad']) });
    daemon = Daemon.start({ configFile: config, log: quiet, partsFor: kernel.partsFor, env: {} });
  });
  afterEach(() => {
    daemon.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('takes --control before the command, or VHOST_BRIDGE_CONTROL; exit 4 when a port it shows is failed', async () => {
    const before = await cli(['ctl', '--control', control, '--json', 'ports']);
    expect(before.status, before.stderr).to.equal(4);
    expect((JSON.parse(before.stdout) as { name: string; state: string }[]).map((p) => p.state)).to.deep.equal([
      'running',
      'failed',
    ]);
    const env = await cli(['ctl', 'status', 'good'], { VHOST_BRIDGE_CONTROL: control });
    expect(env.status, env.stderr).to.equal(0);
    expect(env.stdout).to.match(/^good: running/);
    const degraded = [
      ['ports', '--control', control],
      ['--control', control, 'status', 'bad'],
      ['--control', control, 'reset', 'bad'],
    ];
    for (const [i, r] of (await Promise.all(degraded.map((a) => cli(['ctl', ...a])))).entries())
      expect(r.status, `ctl ${degraded[i].join(' ')}: ${r.stderr}`).to.equal(4);
    const add = join(dir, 'add.json');
    writeFileSync(add, JSON.stringify({ ports: { more: { tap: 'vbt-more', socket: join(dir, 'more.sock') } } }));
    const added = await cli(['ctl', '--control', control, 'add', add]);
    expect(added.status, 'add shows the port it added, which runs').to.equal(0);
    expect(added.stdout).to.equal('more: added, running\n');
    daemon.manager.remove('bad');
    const healthy = await cli(['ctl', '--control', control, 'ports']);
    expect(healthy.status, healthy.stderr).to.equal(0);
    const noSuch = await cli(['ctl', '--control', control, 'status', 'nosuch']);
    expect(noSuch.status).to.equal(1);
    expect(oneLine(noSuch)).to.equal("vhost-bridge ctl: no port named 'nosuch'");
  });

  it('health: the control request and ctl health count the serving and the failed ports', async () => {
    const [h] = (await request(control, [{ method: 'health' }])) as Health[];
    expect(h).to.deep.equal({ serving: 1, failed: ['bad'], total: 2 });
    const r = await cli(['ctl', '--control', control, 'health']);
    expect(r.stdout).to.equal('1 of 2 port(s) serving; failed: bad\n');
    expect(r.status).to.equal(4);
  });

  it('reload says what changed, or that nothing did; an invalid file or a moved control.path is refused', async () => {
    const reload = () => cli(['ctl', '--control', control, 'reload']);
    write({ control: { path: control }, ports: ports(['good', 'new']) });
    const r = await reload();
    expect(r.stdout).to.equal('reloaded: added new; removed bad; changed none; 1 unchanged\n');
    expect(r.status, r.stderr).to.equal(0);
    const same = await reload();
    expect(same.stdout).to.equal('reloaded: nothing changed (2 port(s) of the file run as it says)\n');
    write({ control: { path: control }, ports: { good: { tap: 'vbt-good', queues: 0 } } });
    const bad = await reload();
    expect(bad.status).to.equal(1);
    expect(bad.stderr).to.include(`${config}: ports.good.queues: expected a number from 1 to 128`);
    expect(bad.stderr).to.not.match(/\n\s+at /);
    const moved = join(dir, 'moved.sock');
    write({ control: { path: moved }, ports: ports(['good']) });
    const m = await reload();
    expect(m.status).to.equal(1);
    expect(m.stderr).to.include(
      `${config}: control.path: ${moved} is not the running control socket ${control}; it moves only at a restart`,
    );
    expect(
      daemon.manager.list().map((p) => p.name),
      'nothing changed',
    ).to.deep.equal(['good', 'new']);
    expect(() => daemon.reload(), 'SIGHUP refuses it the same way').to.throw(
      /control\.path: .*moves only at a restart/,
    );
  });

  const peers =
    'a socket that never answers ends after --timeout; bytes that are not its protocol are one line, exit 3';
  it(peers, async () => {
    const silent = await listen(join(dir, 'silent.sock'), () => {});
    const http = await listen(join(dir, 'http.sock'), (s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    // A frame of 1 byte that is no MessagePack value (0xc1 is never used), then a map that is no reply.
    const junk = await listen(join(dir, 'junk.sock'), (s) => s.end(Buffer.from([0, 0, 0, 1, 0xc1])));
    const map = await listen(join(dir, 'map.sock'), (s) => s.end(Buffer.from([0, 0, 0, 1, 0x80])));
    const short = await listen(join(dir, 'short.sock'), (s) => s.end(Buffer.from([0, 0, 0, 9, 1])));
    try {
      const t = await cli(['ctl', '--control', join(dir, 'silent.sock'), '--timeout', '0.3', 'ports']);
      expect(t.status).to.equal(3);
      expect(oneLine(t)).to.equal(
        `vhost-bridge ctl: no reply from ${dir}/silent.sock within 0.3 s (--timeout SECONDS)`,
      );
      for (const [name, why] of [
        ['http', /a frame of \d+ bytes/],
        ['junk', /.+/],
        ['map', /neither a result nor an error/],
        ['short', /it ends inside a frame/],
      ] as const) {
        const r = await cli(['ctl', '--control', join(dir, `${name}.sock`), 'version']);
        expect(r.status, name).to.equal(3);
        const line = oneLine(r);
        expect(line).to.match(
          new RegExp(`^vhost-bridge ctl: the reply from ${dir}/${name}\\.sock is not a vhost-bridge reply \\(`),
        );
        expect(line).to.match(why);
      }
      const file = await cli(['ctl', '--control', config, 'ports']);
      expect(file.status).to.equal(3);
      expect(oneLine(file)).to.equal(
        `vhost-bridge ctl: ${config} is a regular file, not a control socket (--control PATH or VHOST_BRIDGE_CONTROL)`,
      );
    } finally {
      for (const s of [silent, http, junk, map, short]) s.close();
    }
  });

  it('usage errors exit 2; help and --version (on every command) exit 0', async () => {
    const usage = [['ctl', 'bogus'], ['ctl', 'remove'], ['ctl', '--timeout', 'x', 'ports'], ['serve']];
    for (const [i, r] of (await Promise.all(usage.map((a) => cli(a)))).entries()) {
      expect(r.status, `${usage[i].join(' ')}: ${r.stderr}`).to.equal(2);
      expect(r.stderr).to.match(/^error: /);
    }
    const versions = [
      ['serve', '--version'],
      ['ctl', '--version'],
      ['ctl', 'ports', '--version'],
    ];
    for (const [i, r] of (await Promise.all(versions.map((a) => cli(a)))).entries())
      expect([r.status, r.stdout], versions[i].join(' ')).to.deep.equal([0, `${VERSION}\n`]);
    const help = await cli(['help']);
    expect(help.status).to.equal(0);
    expect(help.stdout).to.include('vhost-bridge serve --config FILE');
    const ctlHelp = await cli(['ctl', 'help']);
    expect(ctlHelp.status).to.equal(0);
    expect(ctlHelp.stdout)
      .to.include('Exit status:')
      .and.include('4  the daemon answered, and a port it reports is failed');
    expect(ctlHelp.stdout).to.include('Examples:');
    const serveHelp = await cli(['help', 'serve']);
    expect(serveHelp.status).to.equal(0);
    expect(serveHelp.stdout).to.include('--check').and.include('--wait-for-kernel');
  });
});

describe('daemon: the exit table', () => {
  it("docs/operating.md has ctl --help's exit table, row by row", () => {
    const doc = readFileSync(resolve(import.meta.dirname, '..', '..', '..', 'docs', 'operating.md'), 'utf8');
    const rows = EXIT_HELP.split('\n').slice(1);
    expect(rows).to.have.length(Object.keys(EXIT).length);
    for (const r of rows) {
      const [, code, meaning] = /^ {2}(\d) {2}(.*)$/.exec(r) ?? [];
      expect(doc).to.include(`| ${code} | ${meaning} |`);
    }
  });
});
