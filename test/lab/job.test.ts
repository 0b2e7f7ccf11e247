/**
 * lab/job.ts without the lab: the job's options as the script in L2 reads them (the host's file over
 * the script's defaults, the defaults alone without a file), and how a run's end is said.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { endText, JOB_FILE, jobOptions, type LabEnd, xchgPath } from '../../lab/job.js';

describe('lab jobs: the options file', () => {
  let dir: string;
  let saved: string | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vb-job-'));
    saved = process.env.LAB_XCHG;
    process.env.LAB_XCHG = dir;
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.LAB_XCHG;
    else process.env.LAB_XCHG = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  it("reads the host's options over the defaults, and the defaults alone without a file", () => {
    const defaults = { seconds: 180, seed: 1, onePort: true, kinds: undefined as string | undefined };
    expect(jobOptions(defaults)).to.deep.equal(defaults);
    writeFileSync(join(dir, JOB_FILE), JSON.stringify({ seconds: 60, onePort: false, kinds: 'garbage' }));
    expect(jobOptions(defaults)).to.deep.equal({ seconds: 60, seed: 1, onePort: false, kinds: 'garbage' });
    expect(xchgPath('soak.json')).to.equal(join(dir, 'soak.json'));
  });
});

describe('lab jobs: how a run ended', () => {
  const end = (status: number, hung = false): LabEnd => ({
    status,
    l2Died: status === 125,
    timedOut: status === 124,
    hung,
    xchg: '/tmp/x',
  });
  it('names a dead L2, the time limit, a hang and any other status', () => {
    expect(endText(end(125))).to.match(/L2 VM died or locked up/);
    expect(endText(end(124), 900)).to.match(/timed out after 900 s/);
    expect(endText(end(143, true))).to.match(/hung/);
    expect(endText(end(1))).to.equal('exited 1');
  });
});
