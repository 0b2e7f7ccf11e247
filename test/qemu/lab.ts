/**
 * Lab detection for mocha tests that need the real kernel datapath (see docs/lab.md).
 *
 * Lab tests run inside L2 (`scripts/lab/run -- node_modules/.bin/mocha ...`), where
 * LAB=1 and /dev/vhost-net exist. Anywhere else they skip, except in CI
 * (CI=true), where a lab test that cannot run is a failure.
 */
import * as fs from 'node:fs';

/** true inside the lab's L2 VM: LAB=1 and the kernel has vhost-net. */
export function inLab(): boolean {
  return process.env.LAB === '1' && fs.existsSync('/dev/vhost-net');
}

function whyNotLab(): string {
  if (process.env.LAB !== '1') return 'not inside the lab VM (LAB is not 1)';
  return 'LAB=1 but /dev/vhost-net does not exist';
}

let reported = false;

/**
 * Call from a `before` hook (`before(function () { requireLab(this); })`): outside
 * the lab the suite is skipped (with the reason printed once); with CI=true it
 * fails instead.
 */
export function requireLab(ctx: Mocha.Context): void {
  if (inLab()) return;
  const why = whyNotLab();
  if (process.env.CI === 'true') {
    throw new Error(`lab test cannot run in CI: ${why}; run it with scripts/lab/run -- node_modules/.bin/mocha 'dist/test/qemu/**/*.test.js'`);
  }
  if (!reported) {
    reported = true;
    console.log(`  (lab tests skipped: ${why}; run them with scripts/lab/run -- node_modules/.bin/mocha 'dist/test/qemu/**/*.test.js')`);
  }
  ctx.skip();
}
