/**
 * The README's manager sections cannot drift from what the tests run: each block that follows a
 * `<!-- example: examples/FILE -->` line is that file as it is, and the sections show the files the
 * tests use (the QEMU command line and the one-port units: test/qemu/activation; the libvirt domain:
 * test/qemu/libvirt; the daemon's configuration: test/daemon/config).
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..', '..');

/** file -> the fenced block that follows its marker in the README. */
function readmeExamples(): Map<string, string> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const out = new Map<string, string>();
  for (const m of readme.matchAll(/^<!-- example: (\S+) -->\n```[a-z]*\n([\s\S]*?)^```$/gm)) {
    expect(out.has(m[1]), `${m[1]} shown twice`).to.equal(false);
    out.set(m[1], m[2]);
  }
  return out;
}

describe('README', () => {
  it("shows the examples the managers' tests run, each exactly as its file", () => {
    const shown = readmeExamples();
    expect([...shown.keys()]).to.include.members([
      'examples/qemu-vhost-user.sh',
      'examples/vhost-bridge-one@.socket',
      'examples/vhost-bridge-one@.service',
      'examples/vhost-bridge.json',
      'examples/libvirt-domain.xml',
    ]);
    for (const [file, text] of shown) expect(text, file).to.equal(readFileSync(join(ROOT, file), 'utf8'));
  });
});
