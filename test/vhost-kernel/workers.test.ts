/**
 * Finding the worker a VHOST_SET_OWNER started by the ids handed out since a mark (ns_last_pid):
 * a stand-in process named vhost-<this pid> (a copy of sleep(1) under that name, so its comm is
 * what the kernel gives a kthread worker) is found, with its CPU ticks and cgroup; one started
 * before the mark is not.
 */
import { expect } from 'chai';
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { lastPid, workerNow, workerStartedAfter } from '../../src/vhost-kernel/workers.js';
import { tempDir } from '../fdcount.js';

describe('vhost workers: the one a SET_OWNER started', () => {
  let dir = '';
  const children: ChildProcess[] = [];
  before(() => {
    dir = tempDir('vb-workers-');
    copyFileSync('/bin/sleep', join(dir, `vhost-${process.pid}`));
  });
  after(() => {
    for (const c of children) c.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  const standIn = (): ChildProcess => {
    const c = spawn(join(dir, `vhost-${process.pid}`), ['30'], { stdio: 'ignore' });
    children.push(c);
    return c;
  };
  const started = async (c: ChildProcess) => {
    for (let i = 0; i < 100; i++) {
      try {
        if (readFileSync(`/proc/${c.pid}/comm`, 'utf8').trim() === `vhost-${process.pid}`) return;
      } catch {
        /* not yet */
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error('the stand-in did not start');
  };

  it('finds a vhost-<pid> started after the mark, as a kthread-like worker with its cgroup', async () => {
    const mark = lastPid();
    expect(mark).to.be.a('number');
    const c = standIn();
    await started(c);
    const w = workerStartedAfter(mark);
    expect(w).to.deep.include({ pid: c.pid, kind: 'kthread', comm: `vhost-${process.pid}` });
    const now = workerNow(w!);
    const own = /^0::(.*)$/m.exec(readFileSync(`/proc/${c.pid}/cgroup`, 'utf8'))?.[1] ?? null;
    expect(now).to.deep.equal({ cpuTicks: now?.cpuTicks, cgroup: own });
    c.kill();
    await new Promise((r) => c.once('exit', r));
    expect(workerNow(w!), 'gone').to.equal(null);
  });

  it('does not take one started before the mark', async () => {
    const c = standIn();
    await started(c);
    expect(workerStartedAfter(lastPid())).to.equal(null);
  });
});
