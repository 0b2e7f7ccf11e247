/**
 * A port's limits on guest memory (`maxMemory`) and regions (`maxRegions`): a front-end asking for
 * more is refused with a line naming the port, the request and the limit, before anything is mapped
 * (no new mapping in /proc/self/maps), and the table it had stays.
 */
import { expect } from 'chai';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Daemon } from '../../src/daemon/daemon.js';
import { log } from '../../src/log.js';
import { captureLog, type LogCapture } from '../log-capture.js';
import { mappedRegionCount } from '../../src/memtable/index.js';
import { ID, msg } from '../../lab/frontend/builder.js';
import { memfd } from '../../lab/frontend/frontend.js';
import { handshake } from '../../lab/frontend/handshake.js';
import { tempDir } from '../fdcount.js';
import { fakeKernel } from './fake-port.js';

const MiB = 1n << 20n;
const mapsLines = () => readFileSync('/proc/self/maps', 'utf8').split('\n').length;

describe("daemon: a port's memory limits", () => {
  let cap: LogCapture | null = null;
  afterEach(() => {
    cap?.stop();
    cap = null;
  });

  const what =
    'more guest memory or regions than the port allows is refused (NACK, a line naming port, request and ' +
    'limit) and maps nothing; GET_MAX_MEM_SLOTS says the limit';
  it(what, async () => {
    const dir = tempDir('vb-limits-');
    const config = join(dir, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({
        control: { path: join(dir, 'control.sock') },
        ports: { small: { tap: 'vbt-small', socket: join(dir, 'small.sock'), maxMemory: '1M', maxRegions: 1 } },
      }),
    );
    const kernel = fakeKernel();
    const daemon = Daemon.start({ configFile: config, log: { ...log, info() {} }, partsFor: kernel.partsFor, env: {} });
    try {
      // The synthetic front-end's 1 MiB table is at the limit: served.
      const hs = await handshake(join(dir, 'small.sock'));
      const session = daemon.manager.get('small').port!;
      const before = { regions: mappedRegionCount(), maps: mapsLines(), table: session.status().memory.regions };
      cap = captureLog('warn');

      const big = await hs.fe.ask(msg.setMemTable([{ gpa: 0n, size: 64n * MiB, qva: 0x7f10_0000_0000n }]).needReply(), [
        memfd(64n * MiB, 'vb-too-big'),
      ]);
      expect(big !== 'eof' && big.readBigUInt64LE(12), 'SET_MEM_TABLE NACKed').to.equal(1n);
      const second = await hs.fe.ask(msg.addMemReg({ gpa: MiB, size: MiB, qva: 0x7f20_0000_0000n }).needReply(), [
        memfd(MiB, 'vb-second'),
      ]);
      expect(second !== 'eof' && second.readBigUInt64LE(12), 'ADD_MEM_REG NACKed').to.equal(1n);
      const slots = await hs.fe.ask(msg.getMaxMemSlots());
      expect(slots !== 'eof' && slots.readUInt32LE(0)).to.equal(ID.GET_MAX_MEM_SLOTS);
      expect(slots !== 'eof' && slots.readBigUInt64LE(12), 'GET_MAX_MEM_SLOTS').to.equal(1n);

      expect(cap.texts('warn')).to.deep.equal([
        'WARN small: SET_MEM_TABLE: 1 region(s) of 0x4000000 (64 MiB) in total, more than the limit of 0x100000 ' +
          "(1 MiB) (this port's maxMemory) (refused; NACK sent)",
        'WARN small: ADD_MEM_REG: region 1 (gpa 0x100000 size 0x100000 qva 0x7f2000000000 offset 0x0): no free ' +
          "memory slot, the table has 1 of 1 (this port's maxRegions is 1) (refused; NACK sent)",
      ]);
      expect(mappedRegionCount(), 'no region mapped').to.equal(before.regions);
      expect(mapsLines(), '/proc/self/maps did not grow').to.equal(before.maps);
      expect(session.status().memory.regions, 'the table it had stays').to.deep.equal(before.table);
      expect(session.status().rings.map((r) => r.started)).to.deep.equal([true, true]);
      hs.close();
    } finally {
      daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
