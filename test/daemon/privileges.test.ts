/**
 * Dropping root: the sys wrappers change every thread of a Node process (not only the main one),
 * and `serve --user nobody` ends with no root and no capability, its socket directory given to
 * nobody, its control socket still answering. Both run in child processes (a drop is for good);
 * they need root.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from '../../src/daemon/ctl.js';
import { tempDir } from '../fdcount.js';

const NOBODY = 65534;
const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const SYS = fileURLToPath(new URL('../../src/sys/index.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Uid, Gid, Groups and CapEff lines of /proc/PID/status (or of one thread). */
function creds(path: string): { uid: string; gid: string; groups: string; capEff: string } {
  const s = readFileSync(path, 'utf8');
  const f = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(s)?.[1].replace(/\s+/g, ' ').trim() ?? '';
  return { uid: f('Uid'), gid: f('Gid'), groups: f('Groups'), capEff: f('CapEff') };
}

describe('dropping root', function () {
  before(function () {
    if (process.getuid?.() === 0) return;
    // Dropping root needs root; in CI its absence is a failure, not a skip.
    if (process.env.CI === 'true') throw new Error('dropping root needs root: run the tests as root');
    this.skip();
  });

  it('setGroups, setGid, setUid change every thread of the Node process, and root cannot be taken back', () => {
    const script = `
      import * as sys from ${JSON.stringify(SYS)};
      import { readdirSync, readFileSync } from 'node:fs';
      sys.setGroups([${NOBODY}]); sys.setGid(${NOBODY}); sys.setUid(${NOBODY});
      let back = 'refused';
      try { sys.setUid(0); back = 'allowed'; } catch (e) { back = e.message; }
      const threads = readdirSync('/proc/self/task').map((t) => {
        const s = readFileSync('/proc/self/task/' + t + '/status', 'utf8');
        return /^Uid:\\s*(.*)$/m.exec(s)[1].split(/\\s+/).concat(/^CapEff:\\s*(.*)$/m.exec(s)[1]).join(' ');
      });
      process.stdout.write(JSON.stringify({ back, threads }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout) as { back: string; threads: string[] };
    expect(out.back).to.equal('setuid 0: EPERM: operation not permitted');
    expect(out.threads.length, 'Node runs several threads').to.be.above(3);
    for (const t of out.threads) expect(t).to.equal(`${NOBODY} ${NOBODY} ${NOBODY} ${NOBODY} 0000000000000000`);
  });

  const serve =
    'serve --user nobody: uid 65534 everywhere, CapEff 0, its socket directory given to it, control answers';
  it(serve, async function () {
    this.timeout(20_000);
    const dir = tempDir('vb-drop-');
    const run = join(dir, 'run'); // created by the daemon
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ control: { path: join(run, 'control.sock') }, ports: {} }));
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--config', config, '--user', 'nobody', '--group', `${NOBODY}`],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    try {
      for (let i = 0; !err.includes('dropped privileges'); i++) {
        if (i > 200 || child.exitCode !== null) throw new Error(`no drop:\n${err}`);
        await sleep(25);
      }
      expect(creds(`/proc/${child.pid}/status`)).to.deep.equal({
        uid: `${NOBODY} ${NOBODY} ${NOBODY} ${NOBODY}`,
        gid: `${NOBODY} ${NOBODY} ${NOBODY} ${NOBODY}`,
        groups: `${NOBODY}`,
        capEff: '0000000000000000',
      });
      expect(statSync(run).uid, 'the socket directory is the daemon user').to.equal(NOBODY);
      const [v] = (await request(join(run, 'control.sock'), [{ method: 'version' }])) as { pid: number }[];
      expect(v.pid).to.equal(child.pid);
      const all = `${NOBODY}/${NOBODY}/${NOBODY}/${NOBODY}`;
      expect(err).to.include(`dropped privileges: uid ${all}, gid ${all}, groups ${NOBODY}, CapEff 0000000000000000`);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
