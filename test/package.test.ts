/**
 * The installable package: `npm pack` holds what runs (the compiled dist/src) and what explains it
 * (README, CONTRIBUTING, LICENSE, examples, docs/ and the results/ they show; no tests, no lab, no
 * sources, no scripts), and `npm install -g` of that tarball into a fresh prefix gives a `vhost-bridge`
 * on that prefix's PATH that answers --help, --print-capabilities, --version (package.json's) and
 * `ctl --help`; in the installed package every relative link of its README and docs/ resolves, and so
 * does every docs/ page that its --help and src name.
 *
 * The tarball is packed from the dist/ this test runs from (--ignore-scripts: `prepare` would run tsc
 * again under the running tests); the dependencies come from the npm registry the machine is set up
 * for, through npm's cache (--prefer-offline).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { anchors, docPages, docRefs, relativeLinks, sources } from './doc-links.js';
import { tempDir } from './fdcount.js';

const ROOT = resolve(import.meta.dirname, '..', '..');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

function npm(args: string[], cwd: string): string {
  const r = spawnSync('npm', args, { cwd, encoding: 'utf8', timeout: 50_000 });
  if (r.status !== 0) throw new Error(`npm ${args.join(' ')}: exit ${r.status}\n${r.stderr}${r.error ?? ''}`);
  return r.stdout;
}

/** Every file under dir, relative to dir, with '/' separators. */
function walk(dir: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`],
  );
}

describe('package', function () {
  this.timeout(90_000);
  let tmp: string;
  let files: string[];
  /** The installed package's directory and its --help outputs, once the install test has run. */
  let installed: { dir: string; help: string[] } | undefined;
  before(() => {
    tmp = tempDir();
    const out = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], ROOT);
    const [packed] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
    expect(packed.filename).to.equal(`${PKG.name}-${PKG.version}.tgz`);
    files = packed.files.map((f) => f.path).sort();
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('npm pack holds the compiled sources, README, CONTRIBUTING, LICENSE, examples, docs and results only', () => {
    const outside = files.filter(
      (f) =>
        !['package.json', 'README.md', 'CONTRIBUTING.md', 'LICENSE'].includes(f) &&
        !/^(examples|docs|results)\//.test(f) &&
        !/^dist\/src\/.*\.js$/.test(f),
    );
    expect(outside, 'files outside what runs').to.deep.equal([]);
    // Every source file is there compiled, and every example.
    const sources = walk(join(ROOT, 'src')).filter((f) => f.endsWith('.ts'));
    expect(files).to.include.members(sources.map((f) => `dist/src/${f.replace(/\.ts$/, '.js')}`));
    expect(files).to.include.members(walk(join(ROOT, 'examples')).map((f) => `examples/${f}`));
    expect(files).to.include.members(docPages(ROOT));
    expect(files.some((f) => /(^|\/)(test|lab|scripts)\//.test(f))).to.equal(false);
  });

  it('npm install -g of the tarball gives a vhost-bridge that runs', () => {
    const prefix = join(tmp, 'prefix');
    npm(
      [
        'install',
        '-g',
        '--prefix',
        prefix,
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        `./${PKG.name}-${PKG.version}.tgz`,
      ],
      tmp,
    );
    const bin = join(prefix, 'bin', 'vhost-bridge');
    // The installed binary runs through its shebang (`env node`), as it would from a shell.
    const env = {
      ...process.env,
      PATH: `${join(prefix, 'bin')}${delimiter}${dirname(process.execPath)}${delimiter}/usr/bin:/bin`,
    };
    const run = (...args: string[]) => {
      const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 20_000, env, cwd: tmp });
      expect(r.status, `vhost-bridge ${args.join(' ')}: ${r.stderr}${r.error ?? ''}`).to.equal(0);
      return r.stdout;
    };
    expect(run('--version').trim()).to.equal(PKG.version);
    expect(JSON.parse(run('--print-capabilities'))).to.deep.equal({ type: 'net' });
    expect(run('--help')).to.include('--socket-path').and.include('--fd').and.include('-netdev vhost-user');
    expect(run('ctl', '--help')).to.include('status').and.include('stats');
    expect(run('serve', '--help')).to.include('--config');
    installed = { dir: join(prefix, 'lib', 'node_modules', PKG.name), help: [run('--help'), run('serve', '--help')] };
  });

  it('the installed package holds every page and heading its README, docs/, --help and src link to', () => {
    expect(installed, 'installed by the test before').to.not.equal(undefined);
    const { dir, help } = installed!;
    const resolves = (path: string, anchor: string | undefined) =>
      existsSync(join(dir, path)) &&
      (anchor === undefined || anchors(readFileSync(join(dir, path), 'utf8')).has(anchor));
    const links = docPages(dir).flatMap((page) => relativeLinks(dir, page));
    expect(links.length).to.be.greaterThan(50);
    const named = [...help, ...sources(ROOT).map((f) => readFileSync(join(ROOT, f), 'utf8'))].flatMap(docRefs);
    expect(named, 'src names docs/ pages').to.not.deep.equal([]);
    const broken = [
      ...links.filter((l) => !resolves(l.path, l.anchor)).map((l) => `${l.page}: ${l.path}#${l.anchor ?? ''}`),
      ...named.filter((ref) => !resolves(...(ref.split('#', 2) as [string, string | undefined]))),
    ];
    expect(broken).to.deep.equal([]);
  });
});
