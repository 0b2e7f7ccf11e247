/**
 * The daemon with three L3 guests on three ports: all three
 * ping and move iperf3 traffic; a port removed and added back while the others ping every 50 ms
 * without a lost reply; garbage on one port; SIGHUP with one port added, one removed and one
 * unchanged; SIGKILL and restart. Needs three L3 guests at once, which the nested lab does not yet
 * run reliably (docs/lab.md, "Guest faults"): not a `*.test.ts`, so the default lab run leaves it
 * out; run it by hand inside L2:
 *   scripts/lab/run -t 1800 -- node_modules/.bin/mocha --no-config --exit dist/test/qemu/daemon-guests.multi.js
 */
import { expect } from 'chai';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { Guest } from '../../lab/guest.js';
import { hostTap, removeTap } from '../../lab/host.js';
import { TestFrontEnd } from '../../lab/frontend/frontend.js';
import { DaemonProcess } from '../../lab/daemon-process.js';
import { inLab, requireLab, retryOnGuestFault } from './lab.js';

const DIR = '/tmp/vb-daemon3';
const CONFIG = `${DIR}/config.json`;
const xchg = process.env.LAB_XCHG ?? '/tmp';
const VMS = [0, 1, 2].map((i) => ({
  port: `vm${i}`,
  tap: `vbdm${i}`,
  host: `10.0.${3 + i}.1`,
  ip: `10.0.${3 + i}.2/24`,
  mac: `52:54:00:00:30:0${i}`,
}));
const sock = (port: string): string => `${DIR}/${port}.sock`;
const portOf = (v: (typeof VMS)[number]) => ({ tap: v.tap, persistentTap: true, socket: sock(v.port) });

function writeConfig(ports: Record<string, unknown>): void {
  writeFileSync(CONFIG, JSON.stringify({ control: { path: sock('control') }, ports }));
}

describe('daemon in the lab: three guests on three ports of one daemon', function () {
  this.timeout(600_000);
  let daemon: DaemonProcess | undefined;
  const guests: Guest[] = [];
  const d = (): DaemonProcess => {
    if (!daemon) throw new Error('no daemon');
    return daemon;
  };

  before(async function () {
    this.timeout(900_000);
    requireLab(this);
    mkdirSync(DIR, { recursive: true });
    writeConfig(Object.fromEntries(VMS.map((v) => [v.port, portOf(v)])));
    for (const v of VMS) hostTap(v.tap, { ip: `${v.host}/24` });
    daemon = await DaemonProcess.start('three', CONFIG);
    for (const v of VMS) {
      guests.push(
        await Guest.boot({
          name: v.port,
          ip: v.ip,
          peer: v.host,
          mac: v.mac,
          net: { kind: 'vhost-user', socketPath: sock(v.port), reconnectSeconds: 1 },
          logFile: `${xchg}/guest-daemon-${v.port}.log`,
        }),
      );
    }
  });

  after(async function () {
    this.timeout(120_000);
    for (const g of guests) await g.shutdown();
    await daemon?.stop();
    if (inLab()) {
      for (const v of VMS) removeTap(v.tap);
      rmSync(DIR, { recursive: true, force: true });
    }
  });

  const allThree = 'all three ping and move iperf3 traffic; ctl status shows all three with features and counters';
  it(allThree, async function () {
    await retryOnGuestFault(this, guests, async () => {
      for (const [i, g] of guests.entries()) {
        expect((await g.ping(VMS[i].host, { count: 5 })).received, VMS[i].port).to.equal(5);
        expect((await g.iperf3({ seconds: 5 })).bytes, VMS[i].port).to.be.at.least(20e6);
      }
      const out = d().ctl('status');
      console.log(out.replace(/^/gm, '      '));
      for (const v of VMS) {
        const st = await d().status(v.port);
        expect(
          st.device?.rings.filter((r) => r.attached).map((r) => r.index),
          v.port,
        ).to.deep.equal([0, 1]);
        expect(st.tap?.rx?.packets, v.port).to.be.greaterThan(0);
      }
    });
  });

  const removedPort =
    'a port removed while the other two ping every 50 ms (no reply lost), added back, and its guest passes traffic ' +
    'again';
  it(removedPort, async function () {
    await retryOnGuestFault(this, guests, async () => {
      const pings = [1, 2].map((i) => guests[i].ping(VMS[i].host, { count: 100, intervalS: 0.05 }));
      await new Promise((r) => setTimeout(r, 1000));
      await d().ask('remove', { port: VMS[0].port });
      await new Promise((r) => setTimeout(r, 1000));
      await d().ask('add', { name: VMS[0].port, config: portOf(VMS[0]) });
      for (const [k, p] of (await Promise.all(pings)).entries()) expect(p.received, VMS[k + 1].port).to.equal(100);
      expect(await guests[0].untilReply(VMS[0].host, 30)).to.be.lessThan(20_000);
    });
  });

  it('garbage on one port is refused with a line naming it; the other guests lose no reply', async function () {
    await retryOnGuestFault(this, guests, async () => {
      const from = d().lines.length;
      const pings = [1, 2].map((i) => guests[i].ping(VMS[i].host, { count: 40, intervalS: 0.05 }));
      // A second front-end on vm0's socket is turned away by the transport; the garbage goes to a fresh port.
      await d().ask('add', { name: 'junk', config: { tap: 'vbdjunk', socket: sock('junk') } });
      const fe = TestFrontEnd.connect(sock('junk'));
      fe.send(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      expect(await fe.reply(5000)).to.equal('eof');
      fe.close();
      for (const p of await Promise.all(pings)) expect(p.received).to.equal(40);
      expect(
        d()
          .lines.slice(from)
          .some((l) => / WARN junk: /.test(l)),
      ).to.equal(true);
      await d().ask('remove', { port: 'junk' });
    });
  });

  it('SIGHUP with one port added, one removed, one unchanged: only the changed ones are touched', async function () {
    await retryOnGuestFault(this, guests, async () => {
      const s1 = await d().status(VMS[1].port);
      writeConfig({
        [VMS[0].port]: portOf(VMS[0]),
        [VMS[1].port]: portOf(VMS[1]),
        extra: { tap: 'vbdextra', socket: sock('extra') },
      });
      const from = d().lines.length;
      process.kill(d().pid, 'SIGHUP');
      for (
        let i = 0;
        i < 100 &&
        !d()
          .lines.slice(from)
          .some((l) => l.includes('reload:'));
        i++
      )
        await new Promise((r) => setTimeout(r, 100));
      expect(
        d()
          .lines.slice(from)
          .find((l) => l.includes('reload:')),
      ).to.include(`added extra; removed ${VMS[2].port}; changed none; 2 unchanged`);
      const after1 = await d().status(VMS[1].port);
      expect(after1.device?.sessions, 'vm1 untouched').to.equal(s1.device?.sessions);
      expect((await guests[1].ping(VMS[1].host, { count: 3 })).received).to.equal(3);
      writeConfig(Object.fromEntries(VMS.map((v) => [v.port, portOf(v)])));
      process.kill(d().pid, 'SIGHUP');
      expect(await guests[2].untilReply(VMS[2].host, 30)).to.be.lessThan(20_000);
    });
  });

  it('SIGKILL and restart from the same config: every guest passes traffic again within 10 s', async function () {
    await retryOnGuestFault(this, guests, async () => {
      await d().stop('SIGKILL');
      daemon = await DaemonProcess.start('three-restarted', CONFIG);
      const times = await Promise.all(guests.map((g, i) => g.untilReply(VMS[i].host, 20)));
      console.log(`      first replies ${times.map((t) => (t / 1000).toFixed(1)).join(', ')} s after the restart`);
      for (const t of times) expect(t).to.be.lessThan(10_000);
    });
  });
});
