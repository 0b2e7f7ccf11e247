/**
 * The import rules of docs/architecture.md ("Modules and the direction of data") and CONTRIBUTING.md,
 * checked by `npm run lint` (`depcruise`), and shown to fail by test/tools/import-rules.test.ts.
 *
 * depcruise reads the compiled ESM in dist/ (`tsc -p .` writes it; pretest and the lint script's callers
 * build first): it parses TypeScript only through the JavaScript compiler API, which TypeScript 7 (the
 * native port) does not have. dist/ mirrors the tree (dist/src, dist/lab, dist/scripts, dist/test), so
 * every path below is written once for both, `(dist/)?src/...`.
 */

const at = (p) => `^(dist/)?${p}`;

/**
 * The layers of src, top to bottom: a module may import its own layer and any layer below, never one
 * above. src/port/ (one port: a Port built from one spec and injected kernel parts) and src/host/ (host
 * helpers both modes share: ids, sizes, socket activation) are layers of their own.
 */
const LAYERS = [
  ['cli', at('src/cli\\.js$')],
  ['modes', `${at('src/daemon/')}|${at('src/one-port(\\.js$|/)')}`],
  ['port', at('src/port/')],
  ['host', at('src/host/')],
  ['bridge', at('src/bridge/')],
  // memtable translates what the protocol's messages say (vhost-user/messages, codec, constants), so it
  // sits on vhost-user; vhost-user never imports memtable.
  ['memtable', at('src/memtable/')],
  ['vhost-user', at('src/vhost-user/')],
  ['vhost-kernel', at('src/vhost-kernel/')],
  ['sys', at('src/sys/')],
];

/** Modules every layer may import; they import only each other (and npm packages). */
const LEAVES = at('src/(bits|virtio|format|log|version|signals)\\.js$');

const upward = LAYERS.slice(1).map(([name, path], i) => ({
  name: `no-upward-from-${name}`,
  comment: `src layers, top to bottom: ${LAYERS.map(([n]) => n).join(' > ')}; ${name} imports none above it`,
  severity: 'error',
  from: { path },
  to: { path: LAYERS.slice(0, i + 1).map(([, p]) => p) },
}));

module.exports = {
  forbidden: [
    ...upward,
    {
      name: 'modes-apart',
      comment: 'the daemon and the one-port mode stand side by side: neither imports the other',
      severity: 'error',
      from: { path: at('src/daemon/') },
      to: { path: at('src/one-port(\\.js$|/)') },
    },
    {
      name: 'modes-apart',
      comment: 'the daemon and the one-port mode stand side by side: neither imports the other',
      severity: 'error',
      from: { path: at('src/one-port(\\.js$|/)') },
      to: { path: at('src/daemon/') },
    },
    {
      name: 'leaves-import-only-leaves',
      comment: 'src/bits, virtio, format, log, version and signals are below every layer',
      severity: 'error',
      from: { path: LEAVES },
      to: { path: at('src/'), pathNot: LEAVES },
    },
    {
      name: 'koffi-only-in-sys',
      comment: 'libc is reached through src/sys alone; tests may use koffi to check C layouts',
      severity: 'error',
      from: { pathNot: [at('src/sys/'), at('test/')] },
      to: { path: '(^|/)node_modules/koffi/' },
    },
    {
      name: 'src-not-to-lab-test-scripts',
      comment: 'the package ships src alone: it never imports the lab, the tests or the scripts',
      severity: 'error',
      from: { path: at('src/') },
      to: { path: at('(lab|test|scripts)/') },
    },
    {
      name: 'scripts-not-to-test',
      comment: 'scripts use src and lab; what tests share with them belongs in lab/',
      severity: 'error',
      from: { path: at('scripts/') },
      to: { path: at('test/') },
    },
    {
      name: 'lab-not-to-test-or-scripts',
      comment: 'the lab is the library that tests and scripts use, not the other way round',
      severity: 'error',
      from: { path: at('lab/') },
      to: { path: at('(test|scripts)/') },
    },
    {
      name: 'no-circular',
      comment: 'an import cycle has no bottom: split the shared part into the lower module',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '\\.map$' },
  },
};
