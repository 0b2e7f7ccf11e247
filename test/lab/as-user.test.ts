/**
 * The peer as nobody (lab/as-user.ts): one long-lived child of uid 65534 that connects on request,
 * which the soak's `refused-uid` events reuse instead of starting Node for each.
 */
import { expect } from 'chai';
import { chmodSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { NOBODY, NobodyPeer } from '../../lab/as-user.js';
import { tempDir } from '../fdcount.js';

const root = process.getuid?.() === 0;

describe('lab: a peer as nobody', function () {
  before(function () {
    if (root) return;
    if (process.env.CI === 'true') throw new Error('the peer as nobody needs root (setpriv): run the tests as root');
    this.skip();
  });

  it('connects as uid 65534 on every request, one child for all, each report to its own request', async function () {
    this.timeout(20_000);
    const dir = tempDir('vb-nobody-');
    chmodSync(dir, 0o755);
    const listen = async (name: string, onData: (s: net.Socket) => void): Promise<net.Server> => {
      const server = net.createServer((s) => s.once('data', () => onData(s)));
      await new Promise<void>((r) => server.listen(join(dir, name), r));
      chmodSync(join(dir, name), 0o666);
      return server;
    };
    const hangUp = await listen('hang-up.sock', (s) => s.end());
    const answer = await listen('answer.sock', (s) => s.write('hello'));
    const peer = NobodyPeer.start();
    try {
      const first = await peer.connect(join(dir, 'hang-up.sock'));
      expect(first).to.include({ got: 0, hungUp: true });
      const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${first.pid}/status`, 'utf8'))?.[1];
      expect(Number(uid)).to.equal(NOBODY);
      const [second, third] = await Promise.all([
        peer.connect(join(dir, 'answer.sock')),
        peer.connect(join(dir, 'hang-up.sock')),
      ]);
      expect(second).to.deep.equal({ pid: first.pid, got: 5, hungUp: false });
      expect(third).to.deep.equal({ pid: first.pid, got: 0, hungUp: true });
      const missing = await peer.connect(join(dir, 'nothing.sock'));
      expect(missing).to.include({ got: 0, hungUp: true });
    } finally {
      await peer.close();
      hangUp.close();
      answer.close();
    }
  });
});
