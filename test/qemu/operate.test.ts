/**
 * Operating the daemon safely, in the lab (L2's real vhost-net and taps, synthetic front-ends from
 * lab/frontend; no L3 guest): a uid outside a port's allow-list is refused before any message is
 * read while that port's own front-end and another port are served; a front-end announcing more
 * guest memory than its port allows is refused and the daemon's RSS and mappings do not grow
 * (docs/operating.md).
 * Runs inside L2 only: scripts/lab/run -- node_modules/.bin/mocha --no-config dist/test/qemu/operate.test.js
 */
import { expect } from 'chai';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { DaemonProcess } from '../../lab/daemon-process.js';
import { msg } from '../../lab/frontend/builder.js';
import { memfd } from '../../lab/frontend/frontend.js';
import { type Handshaken, handshake } from '../../lab/frontend/handshake.js';
import { vhostNetFds } from '../../lab/host.js';
import { connectAsNobody, NOBODY } from '../daemon/as-user.js';
import { requireLab } from './lab.js';

const DIR = '/tmp/vb-operate';
const CONFIG = `${DIR}/config.json`;
const sock = (port: string): string => `${DIR}/${port}.sock`;
const GiB = 1n << 30n;

/** What /proc says of a process: resident KiB, mapping lines, open fds. */
function footprint(pid: number): { rssKiB: number; maps: number; fds: number } {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return {
    rssKiB: m ? Number(m[1]) : NaN,
    maps: readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n').length,
    fds: readdirSync(`/proc/${pid}/fd`).length,
  };
}

describe('operating the daemon in the lab: allow-lists and memory limits on the real vhost-net', function () {
  this.timeout(120_000);
  let daemon: DaemonProcess | undefined;
  const fes: Handshaken[] = [];
  const d = (): DaemonProcess => {
    if (!daemon) throw new Error('no daemon');
    return daemon;
  };

  before(async function () {
    requireLab(this);
    rmSync(DIR, { recursive: true, force: true });
    mkdirSync(DIR, { recursive: true, mode: 0o755 });
    writeFileSync(
      CONFIG,
      JSON.stringify({
        control: { path: sock('control'), allowUsers: [0] },
        ports: {
          guarded: { tap: 'vbopg', socket: sock('guarded'), mode: '0666', allowUsers: ['root'] },
          open: { tap: 'vbopo', socket: sock('open'), mode: '0666' },
          small: { tap: 'vbops', socket: sock('small'), maxMemory: '64M', maxRegions: 2 },
        },
      }),
    );
    daemon = await DaemonProcess.start('operate', CONFIG);
  });

  after(async () => {
    for (const f of fes) f.close();
    await daemon?.stop();
    rmSync(DIR, { recursive: true, force: true });
  });

  const refused =
    "a uid outside a port's allow-list is refused before any message (log line, fd closed, counted); the port's " +
    'own front-end and another port are served';
  it(refused, async () => {
    // Another port's front-end is running first: it must not notice.
    fes.push(await handshake(sock('open')));
    const before = footprint(d().pid);
    const lines = d().lines.length;
    const seen = await connectAsNobody(sock('guarded'));
    expect(seen, 'hung up on, no reply').to.include({ got: 0, hungUp: true });
    const line = d()
      .problems(lines)
      .find((l) => l.includes('refused'));
    expect(line).to.match(
      new RegExp(
        `WARN guarded: refused a front-end pid ${seen.pid} uid ${NOBODY} gid ${NOBODY}: .*\\(allowed: users 0; ` +
          'groups none\\); closed before any message was read$',
      ),
    );
    expect(footprint(d().pid).fds, "the daemon's fds: the refused one closed").to.equal(before.fds);
    const g = await d().status('guarded');
    expect(g.device?.refusedPeers).to.equal(1);
    expect(g.device?.sessions, 'no session began').to.equal(0);

    // The port's own front-end (root) is served: both rings on the real vhost-net.
    fes.push(await handshake(sock('guarded')));
    const g2 = await d().status('guarded');
    expect(g2.device?.rings.map((r) => r.attached)).to.deep.equal([true, true]);
    expect(g2.peer?.uid).to.equal(0);
    const o = await d().status('open');
    expect(
      o.device?.rings.map((r) => r.attached),
      'the other port kept running',
    ).to.deep.equal([true, true]);
    // The same uid on a port without a rule is served (GET_FEATURES answered).
    fes.at(-2)?.close(); // open's front-end leaves so the next is not turned away as a second one
    const other = await connectAsNobody(sock('open'));
    expect(other).to.include({ got: 20, hungUp: false });
    expect(vhostNetFds(d().pid), 'vhost-net fds: guarded + open').to.be.at.least(1);
  });

  const memory =
    "a front-end announcing more guest memory than its port's limit is refused with a log line; the daemon's RSS " +
    'and mappings do not grow';
  it(memory, async () => {
    const hs = await handshake(sock('small')); // 1 MiB: within 64M
    fes.push(hs);
    const before = footprint(d().pid);
    const lines = d().lines.length;
    const big = await hs.fe.ask(msg.setMemTable([{ gpa: 0n, size: GiB, qva: 0x7f10_0000_0000n }]).needReply(), [
      memfd(GiB, 'vb-operate-1g'),
    ]);
    expect(big !== 'eof' && big.readBigUInt64LE(12), 'NACK').to.equal(1n);
    const three = [0n, 1n, 2n].map((i) => ({
      gpa: i * (1n << 20n),
      size: 1n << 20n,
      qva: 0x7f20_0000_0000n + i * (1n << 20n),
    }));
    const many = await hs.fe.ask(
      msg.setMemTable(three).needReply(),
      three.map(() => memfd(1n << 20n)),
    );
    expect(many !== 'eof' && many.readBigUInt64LE(12), 'NACK').to.equal(1n);
    const after = footprint(d().pid);
    console.log(
      `      daemon before/after: RSS ${before.rssKiB}/${after.rssKiB} KiB, ${before.maps}/${after.maps} mappings, ` +
        `${before.fds}/${after.fds} fds`,
    );
    expect(after.maps, '/proc/PID/maps').to.equal(before.maps);
    expect(after.fds, 'fds').to.equal(before.fds);
    // RSS: nothing of the 1 GiB was mapped, so at most the noise of a few requests (< 1 MiB).
    expect(after.rssKiB - before.rssKiB, 'RSS growth in KiB').to.be.below(1024);
    const warns = d().problems(lines);
    const tooBig =
      'WARN small: SET_MEM_TABLE: 1 region(s) of 0x40000000 (1024 MiB) in total, more than the limit of ' +
      "0x4000000 (64 MiB) (this port's maxMemory)";
    const tooMany = "WARN small: SET_MEM_TABLE: 3 regions, at most 2 allowed (this port's maxRegions is 2)";
    expect(
      warns.filter((l) => l.includes(tooBig) || l.includes(tooMany)),
      warns.join('\n'),
    ).to.have.length(2);
    const s = await d().status('small');
    expect(
      s.device?.memory.regions.map((r) => r.size),
      'the 1 MiB table stays',
    ).to.deep.equal(['0x100000']);
    expect(s.device?.rings.map((r) => r.attached)).to.deep.equal([true, true]);
  });
});
