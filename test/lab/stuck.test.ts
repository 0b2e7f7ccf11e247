/**
 * A process that outlives SIGKILL declares L2 stuck (lab/stuck.ts, docs/lab.md "Guest faults"): with a
 * real process standing in for the stuck one (a `sleep` that was never sent the signal), the wait gives
 * up at its limit, names the process, prints its threads, and writes the line that makes
 * `scripts/lab/run` stop L2 — only inside the lab (LAB=1), and never for a process that exits in time.
 * Stopping a bridge or a daemon (`stopProcess`) passes on an exit by the signal and fails when it took
 * the SIGKILL that follows.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { exitWithin, stopProcess } from '../../lab/stuck.js';

describe('lab: a process that outlives SIGKILL', () => {
  let dir: string;
  const saved = { LAB: process.env.LAB, LAB_XCHG: process.env.LAB_XCHG };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vb-stuck-'));
    process.env.LAB = '1';
    process.env.LAB_XCHG = dir;
  });
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `f` with console.log captured. */
  async function quietly<T>(f: () => Promise<T>): Promise<{ out: string; result: T | Error }> {
    const log = console.log;
    let out = '';
    console.log = (...a: unknown[]) => {
      out += `${a.join(' ')}\n`;
    };
    try {
      return { out, result: await f() };
    } catch (e) {
      return { out, result: e as Error };
    } finally {
      console.log = log;
    }
  }

  it('gives up at its limit: names the process, prints its threads, declares L2 stuck', async () => {
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    const pid = sleeper.pid ?? 0;
    try {
      const never = new Promise<never>(() => {});
      const t = Date.now();
      const { out, result } = await quietly(() => exitWithin(never, 300, pid, 'QEMU of guest x'));
      expect(Date.now() - t, 'gave up at its limit, not later').to.be.below(10_000);
      expect(result).to.be.instanceOf(Error);
      expect((result as Error).message).to.equal(
        `QEMU of guest x (pid ${pid}) still there 0 s after SIGKILL: stuck in L2's kernel`,
      );
      expect(out).to.include(`process ${pid}:`);
      expect(out, 'its thread, with its state').to.match(new RegExp(`  ${pid} sleep state [SR] wchan `));
      expect(out).to.include('other tasks of L2 in uninterruptible sleep (D):');
      expect(readFileSync(join(dir, 'l2-stuck'), 'utf8')).to.equal(`${(result as Error).message}\n`);
    } finally {
      sleeper.kill('SIGKILL');
    }
  });

  it('outside the lab it only fails; a process that exits in time is no such thing', async () => {
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => sleeper.once('exit', (code) => r(code)));
    delete process.env.LAB;
    const { result } = await quietly(() => exitWithin(new Promise<never>(() => {}), 100, sleeper.pid ?? 0, 'x'));
    expect(result).to.be.instanceOf(Error);
    expect(existsSync(join(dir, 'l2-stuck')), 'no line written outside the lab').to.equal(false);

    process.env.LAB = '1';
    sleeper.kill('SIGKILL');
    const { out, result: code } = await quietly(() => exitWithin(exited, 5000, sleeper.pid ?? 0, 'y'));
    expect(code).to.equal(null);
    expect(out).to.equal('');
    expect(existsSync(join(dir, 'l2-stuck'))).to.equal(false);
  });

  it('stopping: an exit on the signal passes; ours fails if it needed SIGKILL, another is only ended', async () => {
    const exitOf = (c: ReturnType<typeof spawn>) =>
      new Promise<{ code: number | null; signal: string | null }>((r) =>
        c.once('exit', (code, signal) => r({ code, signal })),
      );
    const polite = spawn('sleep', ['60'], { stdio: 'ignore' });
    expect(await stopProcess(polite, exitOf(polite), 'polite')).to.deep.equal({ code: null, signal: 'SIGTERM' });

    // a shell that ignores SIGTERM (and waits on its own, so the trap holds)
    const deaf = spawn('sh', ['-c', 'trap "" TERM; while :; do sleep 0.1; done'], { stdio: 'ignore' });
    const deafExit = exitOf(deaf);
    await new Promise((r) => setTimeout(r, 300));
    const { result } = await quietly(() =>
      stopProcess(deaf, deafExit, 'deaf', { timeoutMs: 300, killIsFailure: true }),
    );
    expect(result).to.be.instanceOf(Error);
    expect((result as Error).message).to.equal('deaf: still running 0.3 s after SIGTERM; killed');
    expect((await deafExit).signal, 'gone, by the SIGKILL').to.equal('SIGKILL');

    // another program (ping, libvirtd) is only ended
    const other = spawn('sh', ['-c', 'trap "" TERM; while :; do sleep 0.1; done'], { stdio: 'ignore' });
    const otherExit = exitOf(other);
    await new Promise((r) => setTimeout(r, 300));
    expect(await stopProcess(other, otherExit, 'other', { timeoutMs: 300 })).to.deep.equal({
      code: null,
      signal: 'SIGKILL',
    });
  });
});
