/**
 * A lab run cut short by L2 dying goes on with the files it had not finished (lab/suite-progress.ts,
 * docs/lab.md "The one retry"): real mocha processes with the project's reporter, one of them killed
 * in the middle of a file as L2's death kills the lab's mocha, then the rest run in a second process.
 * Nothing is counted twice, nothing from half a file.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import { addCounts, emptyCounts, resumeAfterDeath, type SuiteProgress, sameFile } from '../../lab/suite-progress.js';

const repo = resolve(import.meta.dirname, '..', '..', '..');

describe('lab suite progress: going on after L2 dies', function () {
  this.timeout(60000);
  let dir: string;
  let files: string[];
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vb-progress-'));
    const body = (name: string, n: number, dieAt?: number): string =>
      `describe('${name}', () => {\n` +
      Array.from({ length: n }, (_, i) =>
        i === dieAt
          ? `  it('t${i}', () => { if (process.env.DIE) process.kill(process.pid, 'SIGKILL'); });\n`
          : `  it('t${i}', () => {});\n`,
      ).join('') +
      `  it('fails', () => { throw new Error('${name} fails'); });\n});\n`;
    files = [
      ['a.test.cjs', body('a', 2)],
      ['b.test.cjs', body('b', 3, 1)],
      ['c.test.cjs', body('c', 1)],
    ].map(([f, text]) => {
      writeFileSync(join(dir, f as string), text as string);
      return join(dir, f as string);
    });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** mocha with the project's reporter, writing its progress and summary where scripts/test.ts has them. */
  const run = (fs: string[], files: { progress: string; summary: string }, env: Record<string, string> = {}) =>
    spawnSync(
      join(repo, 'node_modules/.bin/mocha'),
      [
        '--no-config',
        '--reporter',
        join(repo, 'dist/test/summary-reporter.js'),
        ...['--reporter-option', `progress=${files.progress}`, '--reporter-option', `summary=${files.summary}`],
        ...fs,
      ],
      { cwd: dir, env: { ...process.env, ...env }, encoding: 'utf8' },
    );

  it('keeps the finished files, runs the one that was running and the rest again, counts each once', () => {
    const progressFile = join(dir, 'progress.json');
    const summary1 = join(dir, 'one.json');
    const first = run(files, { progress: progressFile, summary: summary1 }, { DIE: '1' });
    expect(first.signal, 'the first process died as L2 would have').to.equal('SIGKILL');
    expect(() => readFileSync(summary1), 'a dead run writes no summary').to.throw();
    const progress = JSON.parse(readFileSync(progressFile, 'utf8')) as SuiteProgress;
    expect(progress.files.map((f) => f.file)).to.deep.equal(files.slice(0, 2));
    expect(progress.files[1]?.counts.passed, "b's test before the death was recorded").to.equal(1);

    const r = resumeAfterDeath(files, progress);
    expect(r.finished).to.deep.equal([files[0]]);
    expect(r.running).to.equal(files[1]);
    expect(r.remaining, 'b from its start, then c').to.deep.equal(files.slice(1));
    expect(r.kept.passed).to.equal(2);
    expect(r.kept.failures).to.deep.equal(['a fails: a fails']);

    const summary2 = join(dir, 'two.json');
    run(r.remaining, { progress: join(dir, 'progress2.json'), summary: summary2 });
    const total = r.kept;
    addCounts(total, JSON.parse(readFileSync(summary2, 'utf8')));
    // As if one boot had run all three: a 2+1, b 3+1, c 1+1 tests.
    expect(total.passed).to.equal(6);
    expect(total.failed).to.equal(3);
    expect(total.failures).to.deep.equal(['a fails: a fails', 'b fails: b fails', 'c fails: c fails']);
  });

  it('a boot that died before any file started runs them all again', () => {
    const r = resumeAfterDeath(['x', 'y'], null);
    expect(r).to.deep.equal({ kept: emptyCounts(), finished: [], running: undefined, remaining: ['x', 'y'] });
  });

  it('matches the absolute paths mocha reports to the relative ones the runner passes', () => {
    expect(sameFile('/work/x/dist/test/qemu/a.test.js', 'dist/test/qemu/a.test.js')).to.equal(true);
    expect(sameFile('/work/x/dist/test/qemu/a.test.js', 'dist/test/qemu/b.test.js')).to.equal(false);
  });
});
