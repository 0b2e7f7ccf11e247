/**
 * `scripts/lab/run` ends a run whose L2 is stuck (docs/lab.md, "Guest faults": L2 stuck), in real L2
 * boots: the line the harness writes when a process outlives SIGKILL (lab/stuck.ts), and a line of
 * L2's hung-task detector in /dev/kmsg, each stop the VM at once with status 125 and the line in the
 * message; a stale line left in a reused exchange directory stops nothing.
 *
 * Needs the lab built (`scripts/lab/setup`; `npm test` sets it up before the unit tests): without it
 * these skip, and fail with CI=true.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'chai';

const repo = resolve(import.meta.dirname, '..', '..', '..');

/** A lab run: its status, its output (both streams), its wall time. */
function labRun(command: string, xchg: string): Promise<{ status: number | null; out: string; ms: number }> {
  const t = Date.now();
  return new Promise((res) => {
    const child = spawn('scripts/lab/run', ['-t', '240', '--', 'sh', '-c', command], {
      cwd: repo,
      env: { ...process.env, LAB_XCHG_DIR: xchg },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('exit', (status) => res({ status, out, ms: Date.now() - t }));
  });
}

describe('lab: scripts/lab/run stops an L2 that is stuck (real L2 boots)', function () {
  this.timeout(300_000);
  let xchg: string;
  before(function () {
    const built = spawnSync('bash', ['-c', '. scripts/lab/lib.sh && lab_is_built 6.1'], { cwd: repo });
    if (built.status === 0) return;
    if (process.env.CI === 'true') throw new Error('the 6.1 lab is not built (npm test sets it up first)');
    console.log('  (skipped: the 6.1 lab is not built; scripts/lab/setup builds it)');
    this.skip();
  });
  beforeEach(() => {
    xchg = mkdtempSync(join(tmpdir(), 'vb-runner-'));
  });
  afterEach(() => rmSync(xchg, { recursive: true, force: true }));

  it('a process that outlived SIGKILL (l2-stuck): 125 at once, the line in the message', async () => {
    const r = await labRun("echo 'QEMU of guest x (pid 1) still there' > /lab-xchg/l2-stuck; sleep 200", xchg);
    expect(r.status, r.out).to.equal(125);
    expect(r.out).to.include('L2 locked up (QEMU of guest x (pid 1) still there)');
    expect(r.ms, 'well before the command would have ended').to.be.below(150_000);

    // the same exchange directory again, the line still in it: a new run is not stopped by it
    writeFileSync(join(xchg, 'l2-stuck'), 'stale\n');
    const again = await labRun('echo fine', xchg);
    expect(again.status, again.out).to.equal(0);
    expect(again.out).to.include('fine');
  });

  it("a line of L2's hung-task detector: 125 at once, the tasks in state D listed", async () => {
    const line = 'INFO: task fake:1 blocked for more than 120 seconds.';
    const r = await labRun(`echo '${line}' > /dev/kmsg; sleep 200`, xchg);
    expect(r.status, r.out).to.equal(125);
    expect(r.out).to.include(`L2's hung-task detector: ${line}; the tasks in state D:`);
    expect(r.out).to.include(`L2 locked up (hung-task detector: ${line})`);
    expect(r.ms).to.be.below(150_000);
  });
});
