/**
 * `serve --metrics` and `--log-format json`: a scrape returns every port's series (real transport
 * and device on the fake kernel, real HTTP over a unix socket); the real daemon process, with both
 * on, writes one JSON object per line naming the port, and stays idle between scrapes (no thread of
 * it runs: no timer, no event-loop monitor).
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Daemon } from '../../src/daemon/daemon.js';
import { daemonHealth, daemonRegistry, MetricsServer } from '../../src/daemon/metrics.js';
import { handshake } from '../../lab/frontend/handshake.js';
import { tempDir } from '../fdcount.js';
import { fakeKernel } from './fake-port.js';

const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };
const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

/** GET `path` over the unix socket `sock`: status and body. */
function get(sock: string, path = '/metrics'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: sock, path }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Voluntary + involuntary context switches of every thread of `pid`, and its CPU ticks (utime + stime). */
function activity(pid: number): { switches: number; ticks: number } {
  let switches = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    for (const m of readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8').matchAll(/ctxt_switches:\s+(\d+)/g))
      switches += Number(m[1]);
  }
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { switches, ticks: Number(f[11]) + Number(f[12]) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('daemon: metrics and JSON logs', () => {
  it('a scrape returns per-port states and counters, read when scraped', async () => {
    const dir = tempDir('vb-metrics-');
    const config = join(dir, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({
        control: { path: join(dir, 'control.sock') },
        ports: {
          a: { tap: 'vbt-a', socket: join(dir, 'a.sock') },
          b: { tap: 'vbt-b', socket: join(dir, 'b.sock') },
          bad: { tap: 'vbt-bad', socket: join(dir, 'bad.sock') },
        },
      }),
    );
    const kernel = fakeKernel();
    kernel.failing.add('bad');
    const daemon = Daemon.start({ configFile: config, log: quiet, partsFor: kernel.partsFor, env: {} });
    const sock = join(dir, 'metrics.sock');
    const metrics = await MetricsServer.listen(
      sock,
      { registry: daemonRegistry(daemon.manager, daemon.control), health: daemonHealth(daemon.manager) },
      quiet,
    );
    try {
      const idle = await get(sock);
      expect(idle.status).to.equal(200);
      expect(idle.body).to.include('vhost_bridge_ports 3\n');
      expect(idle.body).to.include('vhost_bridge_port_frontend_connected{port="a"} 0\n');
      const fe = await handshake(join(dir, 'a.sock'));
      daemon.manager.reset('b');
      const { body } = await get(sock);
      for (const line of [
        'vhost_bridge_port_up{port="a"} 1',
        'vhost_bridge_port_up{port="bad"} 0',
        'vhost_bridge_port_frontend_connected{port="a"} 1',
        'vhost_bridge_port_frontend_connected{port="b"} 0',
        'vhost_bridge_port_rings_running{port="a"} 2',
        'vhost_bridge_port_rings_running{port="b"} 0',
        'vhost_bridge_port_guest_memory_bytes{port="a"} 1048576',
        'vhost_bridge_port_memory_regions{port="a"} 1',
        'vhost_bridge_port_resets_total{port="b"} 1',
        'vhost_bridge_port_reconnects_total{port="a"} 0',
        'vhost_bridge_port_refused_peers_total{port="a"} 0',
        'vhost_bridge_control_refused_peers_total 0',
        '# TYPE vhost_bridge_port_tap_packets_total counter',
      ])
        expect(body).to.include(`${line}\n`);
      fe.close();
      expect((await get(sock, '/')).status).to.equal(404);
      daemon.manager.remove('bad');
      expect((await get(sock)).body, 'a removed port has no series').not.to.include('port="bad"');
    } finally {
      metrics.close();
      daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const health =
    '/healthz: 200 and one line when every port serves, 503 naming the failed ones; 32 idle clients keep no scrape out';
  it(health, async () => {
    const dir = tempDir('vb-metrics-');
    const config = join(dir, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({
        control: { path: join(dir, 'control.sock') },
        ports: {
          a: { tap: 'vbt-a', socket: join(dir, 'a.sock') },
          bad: { tap: 'vbt-bad', socket: join(dir, 'bad.sock') },
        },
      }),
    );
    const kernel = fakeKernel();
    kernel.failing.add('bad');
    const daemon = Daemon.start({ configFile: config, log: quiet, partsFor: kernel.partsFor, env: {} });
    const sock = join(dir, 'metrics.sock');
    const metrics = await MetricsServer.listen(sock, null, quiet);
    const idle: Socket[] = [];
    try {
      expect(await get(sock, '/healthz'), 'before the daemon is given').to.deep.equal({
        status: 503,
        body: 'starting\n',
      });
      metrics.serve({ registry: daemonRegistry(daemon.manager, daemon.control), health: daemonHealth(daemon.manager) });
      expect(await get(sock, '/healthz')).to.deep.equal({
        status: 503,
        body: 'degraded: 1 of 2 port(s) serving; failed: bad\n',
      });
      daemon.manager.remove('bad');
      expect(await get(sock, '/healthz')).to.deep.equal({ status: 200, body: 'ok: 1 of 1 port(s) serving\n' });
      // 32 clients that connect and send half a request head, more than the server holds at once
      for (let i = 0; i < 32; i++) {
        const c = connect(sock);
        c.on('error', () => {});
        await new Promise((r) => c.once('connect', r));
        c.write('GET /metrics HTTP/1.1\r\n');
        idle.push(c);
      }
      const deadline = new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no answer within 5 s')), 5000));
      const scrape = await Promise.race([get(sock), deadline]);
      expect(scrape.status).to.equal(200);
      expect(scrape.body).to.include('vhost_bridge_ports 1\n');
      expect(metrics.connections, 'the server holds at most 16').to.be.at.most(16);
    } finally {
      for (const c of idle) c.destroy();
      metrics.close();
      daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const idle =
    'the daemon process with --metrics and --log-format json: every log line is JSON naming its port, and between ' +
    'scrapes none of its threads runs';
  it(idle, async function () {
    this.timeout(20_000);
    const dir = tempDir('vb-metrics-');
    const config = join(dir, 'config.json');
    const sock = join(dir, 'metrics.sock');
    // A port that cannot start here (no /dev/vhost-net on this machine, or no such tap): its lines name it.
    writeFileSync(
      config,
      JSON.stringify({
        control: { path: join(dir, 'control.sock') },
        ports: { p1: { tap: 'vbt-p1', socket: join(dir, 'p1.sock'), persistentTap: true } },
      }),
    );
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--config', config, '--metrics', sock, '--log-format', 'json', '--wait-for-kernel'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    try {
      for (let i = 0; !err.includes('metrics on'); i++) {
        if (i > 200) throw new Error(`the daemon did not start:\n${err}`);
        await sleep(25);
      }
      expect((await get(sock)).body).to.include('vhost_bridge_port_up{port="p1"} 0\n');
      await sleep(500); // the scrape's own work (and a GC after it) settles
      const before = activity(child.pid!);
      await sleep(2000);
      const after = activity(child.pid!);
      expect(after.switches - before.switches, 'context switches of all its threads in 2 s').to.be.at.most(2);
      expect(after.ticks - before.ticks, 'CPU ticks in 2 s').to.be.at.most(1);

      const lines = err.trim().split('\n');
      const parsed = lines.map((l) => JSON.parse(l) as { level: string; msg: string; port?: string });
      expect(parsed.find((l) => l.msg.startsWith('cannot start'))).to.include({ level: 'error', port: 'p1' });
      expect(parsed.map((l) => l.msg)).to.include(`metrics on ${sock}`);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
