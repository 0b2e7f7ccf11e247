/**
 * Placing a port's vhost worker in its `workerCgroup` (docs/operating.md "Placing each port's
 * worker"): placeWorker's writes, on a temporary directory standing in for a cgroup v2 directory
 * (the kernel's refusals are the lab's: test/qemu/operate.test.ts), and the datapath placing the
 * worker each SET_OWNER starts, every session, where a stand-in process named vhost-<this pid>
 * plays the worker (as in workers.test.ts); a move that fails is a warning and a status field,
 * never a failed session.
 */
import { expect } from 'chai';
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VhostNetDatapath, type VhostNetProvider } from '../../src/bridge/vhost-net-datapath.js';
import { formatStatus } from '../../src/daemon/ctl.js';
import type { PortReport, WorkerReport } from '../../src/daemon/report.js';
import { portLog, log as processLog } from '../../src/log.js';
import { captureLog } from '../log-capture.js';
import type { VhostNetDevice } from '../../src/vhost-kernel/index.js';
import { placeWorker } from '../../src/vhost-kernel/workers.js';
import { FakeTap, LAB_KERNEL_FEATURES } from '../bridge/fake-kernel.js';
import { tempDir } from '../fdcount.js';
import { RecordingVhostNet } from './fake-vhost-net.js';

describe('vhost workers: placed in a cgroup (workerCgroup)', () => {
  let dir = '';
  before(() => {
    dir = tempDir('vb-placement-');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  /** A fresh stand-in cgroup directory with these files. */
  const cgroup = (name: string, files: Record<string, string>): string => {
    const d = join(dir, name);
    mkdirSync(d);
    for (const [f, v] of Object.entries(files)) writeFileSync(join(d, f), v);
    return d;
  };
  const read = (d: string, f: string) => readFileSync(join(d, f), 'utf8');

  it('a kthread (< 6.4) goes into cgroup.procs; cgroup.threads and cgroup.type are not touched', () => {
    const d = cgroup('k', { 'cgroup.procs': '', 'cgroup.threads': '', 'cgroup.type': 'domain\n' });
    placeWorker({ pid: 4242, kind: 'kthread' }, d);
    expect([read(d, 'cgroup.procs'), read(d, 'cgroup.threads'), read(d, 'cgroup.type')]).to.deep.equal([
      '4242',
      '',
      'domain\n',
    ]);
  });

  const threadIn =
    'a thread of the daemon (>= 6.4) goes into cgroup.threads, ' + "a domain cgroup below the daemon's made threaded";
  it(threadIn, () => {
    // The daemon's own cgroup lists it in cgroup.procs; the port's cgroup is below it.
    const own = cgroup('daemon', { 'cgroup.procs': `1\n${process.pid}\n` });
    const d = join(own, 't');
    mkdirSync(d);
    for (const [f, v] of Object.entries({ 'cgroup.procs': '', 'cgroup.threads': '', 'cgroup.type': 'domain\n' }))
      writeFileSync(join(d, f), v);
    placeWorker({ pid: 4243, kind: 'thread' }, d);
    expect([read(d, 'cgroup.procs'), read(d, 'cgroup.threads'), read(d, 'cgroup.type')]).to.deep.equal([
      '',
      '4243',
      'threaded',
    ]);
    // Already threaded: used as it is, wherever it is (the kernel decides).
    const already = cgroup('t2', { 'cgroup.threads': '', 'cgroup.type': 'threaded\n' });
    placeWorker({ pid: 4244, kind: 'thread' }, already);
    expect([read(already, 'cgroup.threads'), read(already, 'cgroup.type')]).to.deep.equal(['4244', 'threaded\n']);
  });

  it("a domain cgroup that is not below the daemon's (a VM's) is never made threaded", () => {
    const vm = cgroup('vm', { 'cgroup.procs': '4321\n' });
    const d = join(vm, 'x');
    mkdirSync(d);
    writeFileSync(join(d, 'cgroup.type'), 'domain\n');
    writeFileSync(join(d, 'cgroup.threads'), '');
    expect(() => placeWorker({ pid: 9, kind: 'thread' }, d)).to.throw(
      `${d} is a domain cgroup that is not below the daemon's own cgroup`,
    );
    expect([read(d, 'cgroup.type'), read(d, 'cgroup.threads')]).to.deep.equal(['domain\n', '']);
  });

  it('what refused the move is named: a missing cgroup, a cgroup.threads that takes no write', () => {
    const missing = join(dir, 'no-such-cgroup');
    expect(() => placeWorker({ pid: 1, kind: 'kthread' }, missing)).to.throw(
      `kthread 1 into ${missing}/cgroup.procs: ENOENT (open)`,
    );
    expect(() => placeWorker({ pid: 1, kind: 'thread' }, missing)).to.throw(
      `${missing}/cgroup.type: ENOENT (open) (not a cgroup v2 directory?)`,
    );
    // A directory where the file should be: the write fails as the kernel's refusal would.
    const d = cgroup('bad', { 'cgroup.type': 'threaded\n' });
    mkdirSync(join(d, 'cgroup.threads'));
    expect(() => placeWorker({ pid: 7, kind: 'thread' }, d)).to.throw(
      new RegExp(
        `^thread 7 into ${d}/cgroup\\.threads: EISDIR \\(open\\): ` +
          `a worker thread of the daemon \\(kernels >= 6\\.4\\) can only move into a threaded cgroup ` +
          "under the daemon's own cgroup",
      ),
    );
  });

  describe("the datapath places each session's worker", () => {
    const children: ChildProcess[] = [];
    let bin = '';
    before(() => {
      bin = join(dir, `vhost-${process.pid}`);
      copyFileSync('/bin/sleep', bin);
    });
    after(() => {
      for (const c of children) c.kill();
    });

    /** vhost-net fds whose SET_OWNER starts a stand-in worker (a process named vhost-<this pid>). */
    class StartingWorker extends RecordingVhostNet {
      override setOwner(): void {
        super.setOwner();
        // spawn() returns after the exec: the stand-in is in /proc under its name by then.
        children.push(spawn(bin, ['30'], { stdio: 'ignore' }));
      }
    }
    const provider: VhostNetProvider = {
      open: (pair) => new StartingWorker(pair, LAB_KERNEL_FEATURES),
      release: (_pair, dev: VhostNetDevice) => dev.close(),
    };
    const datapath = (workerCgroup: string) =>
      new VhostNetDatapath({
        queuePairs: 1,
        offered: 0n,
        vhostNetFeatures: LAB_KERNEL_FEATURES,
        vhostNet: provider,
        socket: new FakeTap([]),
        workerCgroup,
        log: portLog(processLog, 'vm1'),
      });

    it('every session: the worker its SET_OWNER started is written into the cgroup, and reported', () => {
      const d = cgroup('dp', { 'cgroup.procs': '' });
      const dp = datapath(d);
      const cap = captureLog('info');
      try {
        for (const session of [1, 2]) {
          dp.open();
          const [w] = dp.workers();
          expect(w?.worker.pid, `session ${session}: its worker was found`).to.equal(children.at(-1)?.pid);
          expect(w.placement).to.deep.equal({ cgroup: d, error: null });
          expect(read(d, 'cgroup.procs'), `session ${session}`).to.equal(String(w.worker.pid));
          expect(cap.texts('info').at(-1)).to.equal(
            `INFO vm1: queue pair 0: vhost worker (kthread ${w.worker.pid}) placed in cgroup ${d}`,
          );
          dp.release('test');
          expect(dp.workers(), 'no session, no worker').to.deep.equal([]);
        }
      } finally {
        cap.stop();
      }
    });

    it('a move that fails: a warning naming the port and the cgroup, a status field; the session goes on', () => {
      const missing = join(dir, 'gone');
      const dp = datapath(missing);
      const cap = captureLog('warn');
      try {
        dp.open(); // does not throw
        const [w] = dp.workers();
        const error = `kthread ${w.worker.pid} into ${missing}/cgroup.procs: ENOENT (open)`;
        expect(w.placement).to.deep.equal({ cgroup: missing, error });
        expect(cap.texts('warn')).to.deep.equal([
          `WARN vm1: queue pair 0: vhost worker (kthread ${w.worker.pid}) not placed in cgroup ${missing}: ${error}`,
        ]);
        expect(dp.opened).to.equal(true);
        dp.release('test');
      } finally {
        cap.stop();
      }
    });
  });

  it('ctl status says where the worker was placed, or why not', () => {
    const worker = (placement: WorkerReport['placement']): WorkerReport => ({
      pair: 0,
      pid: 812,
      kind: 'thread',
      cpuTicks: 452,
      cgroup: '/vb/vm1',
      placement,
    });
    const lines = (w: WorkerReport) =>
      formatStatus({
        name: 'vm1',
        state: 'running',
        error: null,
        origin: 'config',
        role: 'server',
        socket: '/run/vb/vm1.sock',
        queues: 1,
        device: null,
        tap: null,
        peer: null,
        reconnects: 0,
        resets: 0,
        uptimeMs: 1000,
        workers: [w],
      } satisfies PortReport)
        .split('\n')
        .filter((l) => l.startsWith('  worker'));
    const row = '  worker     pair 0: thread 812 of the daemon, 452 ticks, cgroup /vb/vm1';
    expect(lines(worker(null))).to.deep.equal([row]);
    expect(lines(worker({ cgroup: '/sys/fs/cgroup/vb/vm1', error: null }))).to.deep.equal([
      `${row} (placed by workerCgroup /sys/fs/cgroup/vb/vm1)`,
    ]);
    expect(lines(worker({ cgroup: '/sys/fs/cgroup/x', error: 'EOPNOTSUPP' }))).to.deep.equal([
      `${row} (NOT placed in workerCgroup /sys/fs/cgroup/x: EOPNOTSUPP)`,
    ]);
  });
});
