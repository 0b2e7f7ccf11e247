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

/** Tests that were run a second time after a guest fault (read by test/summary-reporter.ts). */
const retried: string[] = ((globalThis as { vbFaultRetries?: string[] }).vbFaultRetries ??= []);

/**
 * Run a lab test body; if it fails AND the guest faulted meanwhile (a kernel panic, a self-reset
 * or a stall of the nested lab, seen under QEMU's own vhost=on as under the bridge: docs/lab.md),
 * bring the guest back (guest.recover()) and run the body once more, and report that. Any other
 * failure fails the test at once: a retry must never hide a fault of the bridge.
 */
export async function retryOnGuestFault<T>(ctx: Mocha.Context, guest: { faults: number; lastFault: string; recover(): Promise<void> }, body: () => Promise<T>): Promise<T> {
  const before = guest.faults;
  try {
    return await body();
  } catch (e) {
    if (guest.faults === before) throw e;
    const title = ctx.test?.fullTitle() ?? 'a lab test';
    retried.push(`${title}: ${guest.lastFault}`);
    console.log(`      (retrying: guest fault during the test: ${guest.lastFault.slice(0, 160)})`);
    ctx.timeout(ctx.timeout() + 300_000);
    await guest.recover();
    return await body();
  }
}
