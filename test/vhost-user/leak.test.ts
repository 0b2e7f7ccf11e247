/**
 * 1000 bad connections in a row leave /proc/self/fd exactly as they found it: every fd a bad
 * message carried, every accepted socket, every poll handle and every guest mapping is released.
 */
import { expect } from 'chai';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { captureLog } from '../log-capture.js';
import { mappedRegionCount } from '../../src/memtable/index.js';
import * as sys from '../../src/sys/index.js';
import { VhostUserServer } from '../../src/vhost-user/transport.js';
import { openFdCount, tempDir } from '../fdcount.js';
import { Bytes, ID, msg, reply } from '../../lab/frontend/builder.js';
import { BRIDGE_PROTOCOL_FEATURES, bridgeLike, NET_FEATURES } from './fixtures.js';
import { memfd, once, TestFrontEnd } from '../../lab/frontend/frontend.js';
import { RecordingBackend } from './recording-backend.js';

const MiB = 1n << 20n;
const REGION = { gpa: 0n, size: MiB, qva: 0x7f0000000000n };

/**
 * Kinds of bad connection, cycled: each sends something with fds, and the back end must hang up (or see the
 * front-end hang up).
 */
const kinds: { name: string; run: (fe: TestFrontEnd) => 'eof' | 'hangup' }[] = [
  {
    name: 'unknown request with an fd',
    run: (fe) => {
      fe.send(msg.raw(77).withFds(1));
      return 'eof';
    },
  },
  {
    name: 'fd count wrong',
    run: (fe) => {
      fe.send(msg.setMemTable([REGION]), [memfd(MiB), memfd(MiB)]);
      return 'eof';
    },
  },
  {
    name: 'MSG_CTRUNC',
    run: (fe) => {
      fe.send(msg.setVringKick(0).withFds(10));
      return 'eof';
    },
  },
  {
    name: 'ring outside memory after a real mem table',
    run: (fe) => {
      fe.send(msg.setProtocolFeatures(BRIDGE_PROTOCOL_FEATURES));
      fe.send(msg.setMemTable([REGION]), [memfd(MiB)]);
      fe.send(msg.setVringKick(0));
      fe.send(msg.setVringNum(0, 256));
      fe.send(msg.setVringAddr({ index: 0, desc: 0x7f0000200000n, used: 0x7f0000002000n, avail: 0x7f0000001000n }));
      return 'eof';
    },
  },
  {
    name: 'hang-up mid-payload with an fd',
    run: (fe) => {
      fe.send(msg.setMemTable([REGION]).bytes.subarray(0, 20), [memfd(MiB)]);
      return 'hangup';
    },
  },
  {
    name: 'oversized payload',
    run: (fe) => {
      fe.send(
        new Bytes()
          .u32(ID.SET_VRING_CALL)
          .u32(1)
          .u32(1 << 20)
          .join(),
        [sys.eventfd()],
      );
      return 'eof';
    },
  },
];

describe('vhost-user leaks', () => {
  it('/proc/self/fd has the same count after 1000 bad connections as before', async function () {
    this.timeout(60_000);
    const dir = tempDir();
    const path = join(dir, 'vu.sock');
    const backend = new RecordingBackend(bridgeLike());
    const cap = captureLog('error');
    const server = VhostUserServer.listen(path, backend);
    try {
      // Warm up once (lazy allocations of the runtime), then count.
      const warm = TestFrontEnd.connect(path);
      expect(await warm.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      let gone = once(server, 'disconnect');
      warm.close();
      await gone;
      const before = openFdCount();

      for (let i = 0; i < 1000; i++) {
        const kind = kinds[i % kinds.length];
        const fe = TestFrontEnd.connect(path);
        gone = once(server, 'disconnect', 5000);
        try {
          if (kind.run(fe) === 'eof') expect(await fe.reply(), `${i}: ${kind.name}`).to.equal('eof');
        } finally {
          fe.close();
        }
        await gone;
      }

      expect(backend.heldFds).to.equal(0);
      expect(mappedRegionCount()).to.equal(0);
      expect(sys.watchedCount()).to.equal(1);
      expect(openFdCount(), 'fd count after 1000 bad connections').to.equal(before);
      expect(backend.disconnects).to.equal(1001);
      const still = TestFrontEnd.connect(path);
      expect(await still.ask(msg.getFeatures())).to.deep.equal(reply.u64(ID.GET_FEATURES, NET_FEATURES));
      still.close();
    } finally {
      server.close();
      cap.stop();
      rmSync(dir, { recursive: true, force: true });
    }
    expect(cap.lines, 'no error-level line').to.deep.equal([]);
  });
});
