/**
 * node dist/scripts/check-lines.js [PATH...]
 *
 * Lines at most 120 characters in the TypeScript sources: biome.json's lineWidth, which the formatter cannot
 * hold to inside a long string or comment, so this checks what it leaves. Walks src, lab, test and
 * scripts (or the given files and directories, relative to the repository), prints `file:line: N chars` for
 * every longer line and exits 1 if there is any.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const MAX = 120;
const root = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');

function* tsFiles(path: string): Generator<string> {
  if (statSync(path).isDirectory()) {
    for (const e of readdirSync(path).sort()) {
      if (e !== 'node_modules') yield* tsFiles(join(path, e));
    }
  } else if (path.endsWith('.ts')) yield path;
}

const args = process.argv.slice(2);
let long = 0;
for (const top of args.length ? args : ['src', 'lab', 'test', 'scripts']) {
  for (const file of tsFiles(resolve(root, top))) {
    const lines = readFileSync(file, 'utf8').split('\n');
    for (const [i, line] of lines.entries()) {
      const n = [...line.replace(/\r$/, '')].length;
      if (n > MAX) {
        console.log(`${relative(root, file)}:${i + 1}: ${n} chars`);
        long++;
      }
    }
  }
}
if (long) {
  console.error(`${long} line(s) longer than ${MAX} characters`);
  process.exit(1);
}
