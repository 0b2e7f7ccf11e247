/**
 * Log lines when stderr is the journal: systemd.exec(5)'s JOURNAL_STREAM names the stream's device
 * and inode, and a line that starts with sd-daemon(3)'s `<N>` is stored at syslog priority N; on any
 * other stderr the lines are as they were.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isJournalStream, textLine } from '../src/log.js';
import { tempDir } from './fdcount.js';

const LOG = pathToFileURL(resolve(import.meta.dirname, '..', 'src', 'log.js')).href;

describe('log lines for the journal', () => {
  const at = new Date('2026-12-07T12:00:00.000Z');

  it('prefixes <3> <4> <6> <7> (err, warning, info, debug) when writing to the journal, nothing otherwise', () => {
    expect(textLine('error', 'SET_VRING_ADDR: ring 3: bad', 'vm1', true, at)).to.equal(
      '<3>2026-12-07T12:00:00.000Z ERROR vm1: SET_VRING_ADDR: ring 3: bad\n',
    );
    expect(textLine('warn', 'w', null, true, at)).to.equal('<4>2026-12-07T12:00:00.000Z WARN w\n');
    expect(textLine('info', 'i', null, true, at)).to.equal('<6>2026-12-07T12:00:00.000Z INFO i\n');
    expect(textLine('debug', 'd', null, true, at)).to.equal('<7>2026-12-07T12:00:00.000Z DEBUG d\n');
    expect(textLine('error', 'two\nlines', null, true, at), 'each line of a message').to.equal(
      '<3>2026-12-07T12:00:00.000Z ERROR two\n<3>lines\n',
    );
    expect(textLine('error', 'x', 'vm1', false, at)).to.equal('2026-12-07T12:00:00.000Z ERROR vm1: x\n');
  });

  it("stderr is the journal only when JOURNAL_STREAM is its device and inode; a child's stderr shows it", () => {
    const dir = tempDir('vb-log-');
    try {
      const file = join(dir, 'stderr');
      const fd = openSync(file, 'w');
      const st = fstatSync(fd);
      const stream = `${st.dev}:${st.ino}`;
      expect(isJournalStream({ JOURNAL_STREAM: stream }, fd)).to.equal(true);
      expect(isJournalStream({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` }, fd)).to.equal(false);
      expect(isJournalStream({}, fd)).to.equal(false);
      expect(isJournalStream({ JOURNAL_STREAM: 'garbage' }, fd)).to.equal(false);
      const calls = "log.error('e'); log.warn('w'); log.info('i');";
      const script = `const { log } = await import(${JSON.stringify(LOG)}); ${calls}`;
      const child = (env: NodeJS.ProcessEnv, out: number) =>
        spawnSync(process.execPath, ['--input-type=module', '-e', script], { env, stdio: ['ignore', 'ignore', out] });
      child({ ...process.env, JOURNAL_STREAM: stream }, fd);
      closeSync(fd);
      const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
      expect(lines.map((l) => l.replace(/\d{4}-\S+Z /, ''))).to.deep.equal(['<3>ERROR e', '<4>WARN w', '<6>INFO i']);
      // the variable inherited, but stderr is another file: no prefixes
      const other = openSync(join(dir, 'other'), 'w');
      child({ ...process.env, JOURNAL_STREAM: stream }, other);
      closeSync(other);
      expect(readFileSync(join(dir, 'other'), 'utf8')).to.match(/^\d{4}-\S+Z ERROR e\n/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
