/**
 * The documentation's cross-references, for test/readme (they resolve in the repository) and
 * test/package (they resolve in the installed package): the relative links of README.md and docs/*.md,
 * and the docs/ pages that src names (in --help and in log lines).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';

/** README.md and docs/*.md, relative to root. */
export function docPages(root: string): string[] {
  const docs = readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md'));
  return ['README.md', ...docs.sort().map((f) => `docs/${f}`)];
}

/** Markdown without its fenced blocks, where `#` starts no heading and `](` no link. */
function unfenced(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```$/gm, '');
}

/** One relative link: the page it is on, the path it names (relative to root; '' for the page itself). */
export interface DocLink {
  page: string;
  path: string;
  anchor: string | undefined;
}

/** Every relative link and image of a page (not http:, mailto: or absolute ones). */
export function relativeLinks(root: string, page: string): DocLink[] {
  const text = unfenced(readFileSync(join(root, page), 'utf8')).replace(/`[^`\n]*`/g, 'code');
  return [...text.matchAll(/\]\(([^)\s]+)\)/g)]
    .map((m) => m[1])
    .filter((url) => !/^([a-z]+:|\/)/.test(url))
    .map((url) => {
      const [file, anchor] = url.split('#', 2);
      const path = file === '' ? page : relative(root, normalize(join(root, dirname(page), file)));
      return { page, path: file.endsWith('/') ? `${path}/` : path, anchor };
    });
}

/** The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as '-'. */
export function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  for (const m of unfenced(markdown).matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = m[1]
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    let unique = slug;
    for (let n = 1; out.has(unique); n++) unique = `${slug}-${n}`;
    out.add(unique);
  }
  return out;
}

/** The docs/ pages (with their anchors) that a text names, e.g. a --help output or a source file. */
export function docRefs(text: string): string[] {
  return [...text.matchAll(/\bdocs\/[\w.-]+\.md(#[\w-]+)?/g)].map((m) => m[0]);
}

/** Every .ts file under dir, relative to root. */
export function sources(root: string, dir = 'src'): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(root, `${dir}/${e.name}`) : e.name.endsWith('.ts') ? [`${dir}/${e.name}`] : [],
  );
}
