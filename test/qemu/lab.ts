/**
 * Lab detection for mocha tests that need the real kernel datapath (see docs/lab.md).
 *
 * Lab tests run inside L2 (`scripts/lab/run -- node_modules/.bin/mocha ...`), where
 * LAB=1 and /dev/vhost-net exist. Anywhere else they skip, except in CI
 * (CI=true), where a lab test that cannot run is a failure.
 */
import * as fs from 'node:fs';
import { findChBinary } from '../../lab/cloud-hypervisor.js';
import { type Faulting, retryAfterGuestFault } from '../../lab/retry.js';
import { l2Snapshot } from '../../lab/stuck.js';

/** true inside the lab's L2 VM: LAB=1 and the kernel has vhost-net. */
export function inLab(): boolean {
  return process.env.LAB === '1' && fs.existsSync('/dev/vhost-net');
}

function whyNotLab(): string {
  if (process.env.LAB !== '1') return 'not inside the lab VM (LAB is not 1)';
  return 'LAB=1 but /dev/vhost-net does not exist';
}

let reported = false;

// A lab test that timed out: what L2's QEMUs, bridges and kernel tasks were doing then, so that a
// hang says where it waits (lab/stuck.ts). Registered once, on the root suite, by the first test
// file that imports this module. It must never fail (a failed root hook would end the whole run):
// the snapshot bounds itself at 20 s, and its own errors are printed, not thrown.
afterEach(async function () {
  if (!inLab() || !this.currentTest?.timedOut) return;
  this.timeout(60_000);
  const t = Date.now();
  const snapshot = await l2Snapshot().catch((e: Error) => `(no snapshot: ${e.message})`);
  console.log(`      (the test timed out; L2 ${Date.now() - t} ms later:)\n${snapshot}`);
});

/**
 * Call from a `before` hook (`before(function () { requireLab(this); })`): outside
 * the lab the suite is skipped (with the reason printed once); with CI=true it
 * fails instead.
 */
export function requireLab(ctx: Mocha.Context): void {
  if (inLab()) return;
  const why = whyNotLab();
  if (process.env.CI === 'true') {
    throw new Error(
      `lab test cannot run in CI: ${why}; run it with scripts/lab/run -- ` +
        `node_modules/.bin/mocha 'dist/test/qemu/**/*.test.js'`,
    );
  }
  if (!reported) {
    reported = true;
    console.log(
      `  (lab tests skipped: ${why}; run them with scripts/lab/run -- ` +
        `node_modules/.bin/mocha 'dist/test/qemu/**/*.test.js')`,
    );
  }
  ctx.skip();
}

let chReported = false;

/**
 * requireLab, and the lab's cloud-hypervisor binary (scripts/lab/cloud-hypervisor builds it from the
 * kit): without it the suite is skipped with the reason, and with CI=true it fails.
 */
export function requireCloudHypervisor(ctx: Mocha.Context): void {
  requireLab(ctx);
  const ch = findChBinary();
  if ('path' in ch) return;
  if (process.env.CI === 'true') throw new Error(`cloud-hypervisor test cannot run in CI: ${ch.why}`);
  if (!chReported) {
    chReported = true;
    console.log(`  (cloud-hypervisor tests skipped: ${ch.why})`);
  }
  ctx.skip();
}

const shared = globalThis as { vbFaultRetries?: string[] };
shared.vbFaultRetries ??= [];
/** Tests that were run a second time after a guest fault (read by test/summary-reporter.ts). */
const retried: string[] = shared.vbFaultRetries;

/**
 * A lab test's body under the lab's one retry (lab/retry.ts): run again only if it failed AND a
 * guest faulted meanwhile, with more time, and listed at the end of `npm test`. The body gets its
 * attempt number and must measure what accumulates from its own start.
 */
export function retryOnGuestFault<T>(
  ctx: Mocha.Context,
  guests: Faulting | readonly Faulting[],
  body: (attempt: 1 | 2) => Promise<T>,
): Promise<T> {
  return retryAfterGuestFault(guests, body, {
    onRetry: (fault) => {
      retried.push(`${ctx.test?.fullTitle() ?? 'a lab test'}: ${fault}`);
      console.log(`      (retrying: guest fault during the test: ${fault.slice(0, 160)})`);
      ctx.timeout(ctx.timeout() + 300_000);
    },
  });
}
