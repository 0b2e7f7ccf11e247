/**
 * The README and docs/ cannot drift from what the tests run: each block that follows a
 * `<!-- example: examples/FILE -->` line is that file as it is, and the pages show the files the tests
 * use (the QEMU command line and the one-port units: test/qemu/activation; the libvirt domain:
 * test/qemu/libvirt; the daemon's configuration: test/daemon/config). Every relative link of the README
 * and docs/*.md resolves in the repository (test/package checks the installed package), anchors
 * included, and so does every docs/ page that src names (in --help and in log lines).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { anchors, docPages, docRefs, relativeLinks, sources } from './doc-links.js';

const ROOT = resolve(import.meta.dirname, '..', '..');

/** file -> the fenced block that follows its marker, for every marker of the README and docs/. */
function shownExamples(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const page of docPages(ROOT)) {
    const text = readFileSync(join(ROOT, page), 'utf8');
    const onPage = new Set<string>();
    for (const m of text.matchAll(/^<!-- example: (\S+) -->\n```[a-z]*\n([\s\S]*?)^```$/gm)) {
      expect(onPage.has(m[1]), `${m[1]} shown twice in ${page}`).to.equal(false);
      onPage.add(m[1]);
      out.set(m[1], [...(out.get(m[1]) ?? []), m[2]]);
    }
  }
  return out;
}

/** A link's target exists, and its anchor is a heading of the page it names. */
function resolves(path: string, anchor: string | undefined): boolean {
  if (!existsSync(join(ROOT, path))) return false;
  return anchor === undefined || anchors(readFileSync(join(ROOT, path), 'utf8')).has(anchor);
}

describe('README and docs', () => {
  it("show the examples the managers' tests run, each exactly as its file", () => {
    const shown = shownExamples();
    expect([...shown.keys()]).to.include.members([
      'examples/qemu-vhost-user.sh',
      'examples/vhost-bridge-one@.socket',
      'examples/vhost-bridge-one@.service',
      'examples/vhost-bridge.json',
      'examples/libvirt-domain.xml',
    ]);
    for (const [file, texts] of shown) {
      for (const text of texts) expect(text, file).to.equal(readFileSync(join(ROOT, file), 'utf8'));
    }
  });

  it('link only to files and headings that exist', () => {
    const links = docPages(ROOT).flatMap((page) => relativeLinks(ROOT, page));
    expect(links.length).to.be.greaterThan(50);
    const broken = links.filter((l) => !resolves(l.path, l.anchor));
    expect(broken.map((l) => `${l.page}: ${l.path}${l.anchor ? `#${l.anchor}` : ''}`)).to.deep.equal([]);
  });

  it('hold every docs/ page that src names, and that --help shows', () => {
    const cli = join(ROOT, 'dist', 'src', 'cli.js');
    const help = [[], ['serve'], ['ctl']].map((sub) => {
      const r = spawnSync(process.execPath, [cli, ...sub, '--help'], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status, r.stderr).to.equal(0);
      return r.stdout;
    });
    expect(docRefs(help.join('\n')), '--help names a page').to.not.deep.equal([]);
    const named = [...help, ...sources(ROOT).map((f) => readFileSync(join(ROOT, f), 'utf8'))].flatMap(docRefs);
    const broken = named.filter((ref) => {
      const [path, anchor] = ref.split('#', 2);
      return !resolves(path, anchor);
    });
    expect(broken).to.deep.equal([]);
  });
});
