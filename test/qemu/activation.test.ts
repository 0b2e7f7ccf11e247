/**
 * systemd socket activation, in the lab. L2 has no systemd, so `systemd-socket-activate` (from the
 * systemd package) holds the sockets of the examples/ units and starts their ExecStart= as systemd
 * would (lab/examples.ts): LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES.
 *
 * - the one-port mode (vhost-bridge-one@.socket/.service): started when an L3 guest's QEMU first
 *   connects, it serves that guest on the inherited listening socket (ping, iperf3); that QEMU ran
 *   with the options of examples/qemu-vhost-user.sh;
 * - a connected socket (Accept=yes, and --inetd's fd 0): each front-end gets its own bridge, which
 *   serves it and exits with status 0 when it leaves (SO_ACCEPTCONN tells the bridge which kind);
 * - the daemon (vhost-bridge.service, vhost-bridge-port@.socket x 2, vhost-bridge-control.socket):
 *   started by a ctl request, it serves each port on the socket named after it (LISTEN_FDNAMES).
 */
import { expect } from 'chai';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { BRIDGE_COMMAND, BridgeProcess } from '../../lab/bridge-process.js';
import { msg } from '../../lab/frontend/builder.js';
import { TestFrontEnd } from '../../lab/frontend/frontend.js';
import { type Handshaken, handshake } from '../../lab/frontend/handshake.js';
import { Guest, TRAFFIC_MIN_BYTES } from '../../lab/guest.js';
import { hostTap, removeTap, vhostNetFds } from '../../lab/host.js';
import {
  execStartArgs,
  listenPaths,
  qemuExampleOptions,
  type SocketUnit,
  socketActivateOptions,
} from '../../lab/examples.js';
import { request } from '../../src/daemon/ctl.js';
import type { PortReport } from '../../src/daemon/report.js';
import { requireLab, retryOnGuestFault } from './lab.js';

const HOST = '10.0.3.1';
const ACTIVATE = 'systemd-socket-activate';
const xchg = process.env.LAB_XCHG ?? '/tmp';
const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** systemd-socket-activate and what it starts, with its stderr (its own lines and the bridges'). */
class Activator {
  readonly lines: string[] = [];
  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;
  private waiters: (() => void)[] = [];

  constructor(name: string, args: string[]) {
    const log = fs.openSync(join(xchg, `activate-${name}.log`), 'a');
    this.child = spawn(ACTIVATE, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let rest = '';
    this.child.stderr!.on('data', (d: Buffer) => {
      fs.writeSync(log, d);
      const parts = (rest + d.toString()).split('\n');
      rest = parts.pop() ?? '';
      this.lines.push(...parts);
      for (const w of this.waiters) w();
    });
    this.exited = new Promise((res) => this.child.once('exit', (code) => res(code)));
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The first line from `from` on matching `re` (now or within `ms`). */
  async line(re: RegExp, ms = 30_000, from = 0): Promise<RegExpExecArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      for (const l of this.lines.slice(from)) {
        const m = re.exec(l);
        if (m) return m;
      }
      if (Date.now() > deadline) throw new Error(`no line matching ${re} within ${ms} ms:\n${this.lines.join('\n')}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, 500);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
      this.waiters = [];
    }
  }

  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(t);
  }
}

/** Wait until systemd-socket-activate has created these sockets. */
async function untilListening(paths: string[]): Promise<void> {
  for (let i = 0; !paths.every((p) => fs.existsSync(p)); i++) {
    if (i > 200) throw new Error(`${ACTIVATE} did not create ${paths.join(', ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Connect and wait (long: the bridge is being started by the connection) until the back-end answers. */
async function frontEndOf(path: string): Promise<Handshaken> {
  const fe = TestFrontEnd.connect(path);
  fe.send(msg.getFeatures());
  if ((await fe.reply(60_000)) === 'eof') throw new Error(`${path}: the back-end hung up`);
  return handshake(fe);
}

describe('systemd socket activation (systemd-socket-activate, examples/ units)', function () {
  this.timeout(300_000);
  const cleanup: (() => Promise<void> | void)[] = [];

  before(function () {
    requireLab(this);
    fs.mkdirSync('/run/vhost-bridge', { recursive: true });
  });
  afterEach(async function () {
    this.timeout(60_000);
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('one port: started when a guest connects, serves it on the inherited listening socket', async function () {
    const instance = 'sa1';
    const units: SocketUnit[] = [{ unit: 'vhost-bridge-one@.socket', instance }];
    const [path] = listenPaths(units);
    const args = execStartArgs('vhost-bridge-one@.service', instance);
    const tap = args[args.indexOf('--tap') + 1];
    hostTap(tap, { ip: `${HOST}/24` });
    cleanup.push(() => removeTap(tap));
    fs.rmSync(path, { force: true });
    cleanup.push(() => fs.rmSync(path, { force: true }));
    // systemd-socket-activate passes fds 3.. only, so the events (--events-fd, fd 3 of BridgeProcess)
    // go through a FIFO that a `cat` in front of it copies to fd 3.
    const fifo = join(fs.mkdtempSync('/tmp/vb-activation-'), 'events');
    expect(spawnSync('sh', ['-c', `mkfifo ${quote(fifo)}`]).status).to.equal(0);
    cleanup.push(() => fs.rmSync(dirname(fifo), { recursive: true, force: true }));
    const bridgeCmd = [...BRIDGE_COMMAND, ...args, '--events-fd', '9'].map(quote).join(' ');
    const started = BridgeProcess.start({
      name: 'activated',
      command: 'sh',
      args: [
        '-c',
        `cat ${quote(fifo)} >&3 & exec ${ACTIVATE} ${socketActivateOptions(units).map(quote).join(' ')} ` +
          `sh -c ${quote(`exec ${bridgeCmd} 9>${quote(fifo)}`)}`,
      ],
    });
    // The socket is there before the bridge runs: QEMU connects to systemd-socket-activate's socket.
    await untilListening([path]);
    const booting = Guest.boot({
      name: 'activated',
      net: { kind: 'vhost-user', socketPath: path, reconnectSeconds: 1 },
      logFile: `${xchg}/guest-activated.log`,
    });
    const [bridge, guest] = await Promise.all([started, booting]);
    cleanup.push(async () => {
      await guest.shutdown();
      await bridge.stop();
    });
    await retryOnGuestFault(this, guest, async () => {
      const p = await guest.ping(HOST, { count: 3 });
      expect(p.received, `ping replies (rtt ${p.rttMs.join(' ')})`).to.equal(3);
      const r = await guest.iperf3({ seconds: 3 });
      console.log(`      iperf3 guest -> host: ${(r.bitsPerSecond / 1e6).toFixed(0)} Mbit/s`);
      expect(r.bytes).to.be.at.least(TRAFFIC_MIN_BYTES);
    });
    expect(bridge.attachedRings(), 'both rings attached').to.deep.equal([0, 1]);
    // The guest's QEMU ran with examples/qemu-vhost-user.sh's options (the README's QEMU command line),
    // but for the lab's QEMU 7.2 the chardev's reconnect-ms= (QEMU 9.2+) in 7.2's form, reconnect= in seconds.
    const argv = fs.readFileSync(`/proc/${guest.pid}/cmdline`, 'utf8').split('\0');
    const as72 = (v: string) => v.replace(/reconnect-ms=(\d+)/, (_, ms: string) => `reconnect=${Number(ms) / 1000}`);
    for (const [opt, example] of qemuExampleOptions(path)) {
      const value = as72(example);
      const used = argv.some(
        (a, i) => argv[i - 1] === opt && (a === value || (opt === '-device' && a.startsWith(`${value},`))),
      );
      expect(used, `${opt} ${value} in QEMU's command line: ${argv.join(' ')}`).to.equal(true);
    }
    expect(vhostNetFds(bridge.pid), 'the activated bridge holds /dev/vhost-net').to.equal(1);
    expect(
      bridge.lines.some((l) => /serving on inherited listening fd 3/.test(l)),
      bridge.lines.join('\n'),
    ).to.equal(true);
  });

  it('a connected socket (Accept=yes, --inetd): a bridge per front-end, exiting 0 when it leaves', async () => {
    const tap = 'vbsa2';
    hostTap(tap);
    cleanup.push(() => removeTap(tap));
    const base = fs.mkdtempSync('/tmp/vb-activation-');
    cleanup.push(() => fs.rmSync(base, { recursive: true, force: true }));
    const bridge = [...BRIDGE_COMMAND, '--tap', tap];
    // Accept=yes: the connected socket is fd 3 with LISTEN_FDS=1 (no --fd); --inetd: it is fd 0 and 1.
    const accept = new Activator('accept', ['-l', join(base, 'a.sock'), '--accept', ...bridge]);
    const inetd = new Activator('inetd', ['-l', join(base, 'i.sock'), '--inetd', '--accept', ...bridge, '--fd', '0']);
    cleanup.push(
      () => accept.stop(),
      () => inetd.stop(),
    );
    await untilListening([join(base, 'a.sock'), join(base, 'i.sock')]);
    for (const [a, path, round] of [
      [accept, join(base, 'a.sock'), 1],
      [accept, join(base, 'a.sock'), 2],
      [inetd, join(base, 'i.sock'), 1],
    ] as const) {
      const from = a.lines.length;
      const fe = await frontEndOf(path);
      const pid = Number((await a.line(/as PID (\d+)/, 5000, from))[1]);
      expect(vhostNetFds(pid), `round ${round}: the bridge of this connection holds /dev/vhost-net`).to.equal(1);
      fe.close();
      await a.line(new RegExp(`Child ${pid} died with code 0`), 30_000, from);
      expect(a.lines.slice(from).join('\n')).to.include('the front-end of the inherited connection left; stopping');
    }
  });

  it('the daemon: one socket per port and the control socket, by name (LISTEN_FDNAMES)', async () => {
    const units: SocketUnit[] = [
      { unit: 'vhost-bridge-port@.socket', instance: 'sap1' },
      { unit: 'vhost-bridge-port@.socket', instance: 'sap2' },
      { unit: 'vhost-bridge-control.socket' },
    ];
    const paths = listenPaths(units);
    for (const p of paths) fs.rmSync(p, { force: true });
    cleanup.push(() => {
      for (const p of paths) fs.rmSync(p, { force: true });
    });
    const dir = fs.mkdtempSync('/tmp/vb-activation-');
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const config = join(dir, 'vhost-bridge.json');
    // The ports' sockets are the inherited ones; "socket" is left to its default on purpose.
    fs.writeFileSync(config, JSON.stringify({ ports: { sap1: { tap: 'vbsap1' }, sap2: { tap: 'vbsap2' } } }));
    const args = execStartArgs('vhost-bridge.service').map((a) => (a === '/etc/vhost-bridge.json' ? config : a));
    expect(args).to.include(config);
    const a = new Activator('daemon', [...socketActivateOptions(units), ...BRIDGE_COMMAND, ...args]);
    cleanup.push(
      () => {
        removeTap('vbsap1');
        removeTap('vbsap2');
      },
      () => a.stop(),
    );
    await untilListening(paths);
    const control = paths[2];
    const [version] = (await request(control, [{ method: 'version' }], 60_000)) as { pid: number }[];
    expect(version.pid, 'the daemon runs as the activator exec()ed it').to.equal(a.pid);
    const fes = [await frontEndOf(paths[0]), await frontEndOf(paths[1])];
    cleanup.push(() => {
      for (const f of fes) f.close();
    });
    const reports = (await request(control, [
      { method: 'status', params: { port: 'sap1' } },
      { method: 'status', params: { port: 'sap2' } },
    ])) as PortReport[];
    for (const r of reports) {
      expect(r.state, JSON.stringify(r)).to.equal('running');
      expect(r.peer?.pid, `${r.name}: the front-end is this process`).to.equal(process.pid);
      expect(
        r.device?.rings.filter((x) => x.attached).map((x) => x.index),
        r.name,
      ).to.deep.equal([0, 1]);
    }
    expect(vhostNetFds(a.pid)).to.equal(2);
    expect(a.lines.filter((l) => / (WARN|ERROR) /.test(l))).to.deep.equal([]);
  });
});
