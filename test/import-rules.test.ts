/**
 * The import rules (.dependency-cruiser.cjs) that `npm run lint` checks hold for the tree, and fail,
 * naming the rule and the file, when an import breaks them: the lint script's own depcruise command runs
 * on this repository's dist/, then on a scratch copy of it with one breaking import per rule added (an
 * upward import, one into a new src/host/ from a new src/port/ above it, the daemon importing the one-port
 * mode, a leaf importing a layer, koffi outside src/sys, src, scripts and lab importing what they may not,
 * a cycle).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import {
  appendFileSync,
  copyFileSync,
  cpSync,
  mkdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { tempDir } from './fdcount.js';

const ROOT = resolve(import.meta.dirname, '..', '..');
const CONFIG = '.dependency-cruiser.cjs';

/** The arguments `npm run lint` gives depcruise. */
function lintArgs(): string[] {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { lint: string } };
  const m = /(?:^|&& )depcruise ([^&]+)/.exec(pkg.scripts.lint);
  expect(m, 'npm run lint runs depcruise').to.not.equal(null);
  return m![1].trim().split(/\s+/);
}

function depcruise(cwd: string): { status: number | null; out: string } {
  const bin = join(ROOT, 'node_modules', '.bin', 'depcruise');
  const r = spawnSync(bin, lintArgs(), { cwd, encoding: 'utf8', timeout: 50_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}${r.error ?? ''}` };
}

/** The violations depcruise's default reporter lists, `error RULE: FROM → TO...`, as `RULE: FROM`. */
function violations(out: string): string[] {
  return [...out.matchAll(/^\s*error (\S+): (\S+) →/gm)].map((m) => `${m[1]}: ${m[2]}`).sort();
}

describe('import rules (npm run lint: depcruise)', function () {
  this.timeout(60_000);
  let tmp: string;
  before(() => {
    tmp = tempDir();
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('pass on the tree as it is', () => {
    const r = depcruise(ROOT);
    expect(r.status, r.out).to.equal(0);
    expect(r.out).to.match(/no dependency violations found \([1-9]\d* modules/);
  });

  it('fail, naming the rule and the file, on each kind of import they forbid', () => {
    cpSync(join(ROOT, 'dist'), join(tmp, 'dist'), { recursive: true, filter: (f) => !f.endsWith('.map') });
    copyFileSync(join(ROOT, CONFIG), join(tmp, CONFIG));
    symlinkSync(join(ROOT, 'node_modules'), join(tmp, 'node_modules'));
    const add = (file: string, text: string) => {
      mkdirSync(dirname(join(tmp, file)), { recursive: true });
      writeFileSync(join(tmp, file), text);
    };

    add('dist/src/bridge/above.js', 'export const above = 1;\n');
    add('dist/src/sys/upward.js', "export { above } from '../bridge/above.js';\n");
    add('dist/src/port/port.js', 'export const port = 1;\n');
    add('dist/src/host/upward.js', "export { port } from '../port/port.js';\n");
    add('dist/src/bridge/koffi.js', "export { default } from 'koffi';\n");
    add('dist/src/vhost-user/test-helper.js', "export { tempDir } from '../../test/fdcount.js';\n");
    add('dist/scripts/test-helper.js', "export { tempDir } from '../test/fdcount.js';\n");
    add('dist/lab/script-helper.js', "export * from '../scripts/test-helper.js';\n");
    add('dist/src/one-port/spec.js', 'export const spec = 1;\n');
    add('dist/src/daemon/one-port-spec.js', "export { spec } from '../one-port/spec.js';\n");
    appendFileSync(join(tmp, 'dist/src/signals.js'), "\nexport { above } from './bridge/above.js';\n");
    add('dist/src/memtable/cycle-a.js', "export { b } from './cycle-b.js';\nexport const a = 1;\n");
    add('dist/src/memtable/cycle-b.js', "export { a } from './cycle-a.js';\nexport const b = 1;\n");
    const r = depcruise(tmp);
    expect(r.status, r.out).to.not.equal(0);
    expect(violations(r.out), r.out).to.deep.equal(
      [
        'no-upward-from-sys: dist/src/sys/upward.js',
        'no-upward-from-host: dist/src/host/upward.js',
        'koffi-only-in-sys: dist/src/bridge/koffi.js',
        'src-not-to-lab-test-scripts: dist/src/vhost-user/test-helper.js',
        'scripts-not-to-test: dist/scripts/test-helper.js',
        'lab-not-to-test-or-scripts: dist/lab/script-helper.js',
        'modes-apart: dist/src/daemon/one-port-spec.js',
        'leaves-import-only-leaves: dist/src/signals.js',
        'no-circular: dist/src/memtable/cycle-a.js',
      ].sort(),
    );
    expect(r.out).to.include('no-upward-from-sys: dist/src/sys/upward.js → dist/src/bridge/above.js');
  });
});
