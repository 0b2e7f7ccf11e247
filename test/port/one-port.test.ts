/**
 * One-port mode's main() in this process, on the recording kernel (fake-parts.ts): its flags become
 * the Port's spec, the ranges it checks are spec.ts's (the ones the daemon's configuration checks),
 * and what it refuses ends with one line and exit status 1 before anything is opened.
 * test/cli.test.ts runs the binary itself.
 */
import { expect } from 'chai';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../../src/one-port.js';
import { Port } from '../../src/port/port.js';
import { BUSY_POLL_US, MEMORY_REGIONS, MTU, QUEUE_PAIRS } from '../../src/port/spec.js';
import { tempDir } from '../fdcount.js';
import { recordingKernel } from './fake-parts.js';

const quiet = { error() {}, warn() {}, info() {}, debug() {}, enabled: () => false };

describe('one-port main()', () => {
  let dir: string;
  const ports: Port[] = [];
  beforeEach(() => {
    dir = tempDir('vb-one-port-');
  });
  afterEach(() => {
    for (const p of ports.splice(0)) p.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** main() on a fresh recording kernel, with what it wrote. */
  function run(argv: string[], o: { failSocket?: Error } = {}) {
    const kernel = recordingKernel(quiet, o);
    const out: string[] = [];
    const err: string[] = [];
    const r = main(argv, {}, { parts: kernel.parts, out: (s) => out.push(s), err: (s) => err.push(s) });
    if (r instanceof Port) ports.push(r);
    return { r, kernel, out: out.join(''), err: err.join('') };
  }

  it('maps its flags onto the Port spec, and serves on the backend socket they name', () => {
    const sock = join(dir, 'one.sock');
    const { r, kernel, err } = run([
      '--socket-path',
      sock,
      '--socket-mode',
      '0660',
      '--tap',
      'vbt-one',
      '--queues',
      '2',
      '--mtu',
      '9000',
      '--busy-poll-us',
      '50',
      '--max-memory',
      '512M',
      '--max-regions',
      '8',
      '--allow-users',
      '0',
    ]);
    expect(err).to.equal('');
    expect(r).to.be.instanceOf(Port);
    const port = r as Port;
    expect(port.spec).to.deep.equal({
      transport: { mode: 'server', path: sock, socketMode: 0o660, peers: { uids: [0], gids: [] } },
      backendSocket: { tap: 'vbt-one' },
      busyPollUs: 50,
      vhostFds: undefined,
      queuePairs: 2,
      mtu: 9000,
      memoryLimit: { bytes: 512n << 20n, regions: 8 },
      record: undefined,
    });
    expect(kernel.socketSpec).to.deep.equal({ tap: 'vbt-one' });
    expect(port.status().port, 'one-port mode names the port after its tap').to.equal('vbt-one');
    expect(port.status().rings.length).to.equal(4);
  });

  it('takes the other transports and backend sockets: --connect; --macvtap, --raw-socket, --tap-fd', () => {
    const specOf = (argv: string[]) => {
      const { r, err } = run(argv);
      expect(r, err).to.be.instanceOf(Port);
      const s = (r as Port).spec;
      (r as Port).close();
      return [s.transport.mode, s.backendSocket];
    };
    const sock = join(dir, 'vmm.sock');
    expect(specOf(['--connect', sock, '--macvtap', 'mvt0'])).to.deep.equal(['client', { macvtap: 'mvt0' }]);
    expect(specOf(['--socket-path', sock, '--raw-socket', 'eth9'])).to.deep.equal(['server', { packet: 'eth9' }]);
    expect(specOf(['--socket-path', sock, '--tap-fd', '7,8', '--queues', '2'])).to.deep.equal([
      'server',
      { fds: [7, 8] },
    ]);
  });

  it("refuses a number outside the range the daemon's configuration also checks, naming the option", () => {
    const cases: [string, string, { min: number; max: number }][] = [
      ['--queues', String(QUEUE_PAIRS.max + 1), QUEUE_PAIRS],
      ['--queues', String(QUEUE_PAIRS.min - 1), QUEUE_PAIRS],
      ['--mtu', String(MTU.min - 1), MTU],
      ['--busy-poll-us', String(BUSY_POLL_US.max + 1), BUSY_POLL_US],
      ['--max-regions', String(MEMORY_REGIONS.max + 1), MEMORY_REGIONS],
    ];
    for (const [flag, value, range] of cases) {
      const { r, kernel, err } = run(['--socket-path', join(dir, 's.sock'), '--tap', 'vbt0', flag, value]);
      expect(r, `${flag} ${value}`).to.equal(1);
      expect(err).to.include(`${flag} must be an integer from ${range.min} to ${range.max}`);
      expect(kernel.socket, 'nothing was opened').to.equal(null);
    }
  });

  it('ends with status 1 and one line when options are missing or the start fails; 0 for the capabilities', () => {
    const sock = join(dir, 's.sock');
    const none = run(['--tap', 'vbt0']);
    expect([none.r, none.err]).to.deep.equal([
      1,
      'vhost-bridge: give exactly one of --socket-path, --connect or --fd (or start it by socket activation)\n' +
        '(run vhost-bridge --help for usage)\n',
    ]);
    const noTap = run(['--socket-path', sock]);
    expect(noTap.r).to.equal(1);
    expect(noTap.err).to.match(/^vhost-bridge: give --tap NAME, --tap-fd N, --macvtap NAME or --raw-socket IFNAME\n/);
    const failed = run(['--socket-path', sock, '--tap', 'vbt0'], { failSocket: new Error('tap vbt0: EPERM (test)') });
    expect([failed.r, failed.err]).to.deep.equal([1, 'vhost-bridge: tap vbt0: EPERM (test)\n']);
    const caps = run(['--print-capabilities']);
    expect([caps.r, caps.out]).to.deep.equal([0, '{"type":"net"}\n']);
  });
});
