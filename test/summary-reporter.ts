/**
 * Mocha reporter: the usual spec output, plus the run's counts written as JSON to the file named by
 * VB_SUMMARY_FILE, so scripts/test.ts can add the unit run and the lab run into one final line.
 * A failing hook counts as a failure (its tests never ran); a pending (skipped) test is reported
 * separately so that CI can count it as a failure. Retries (lab tests that may meet a guest fault of the
 * nested lab) are listed with the first failure's message.
 */
import Mocha from 'mocha';
import { writeFileSync } from 'node:fs';

const { EVENT_RUN_END, EVENT_TEST_PASS, EVENT_TEST_FAIL, EVENT_TEST_PENDING, EVENT_TEST_RETRY } =
  Mocha.Runner.constants;

export default class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    const counts = {
      passed: 0,
      failed: 0,
      pending: 0,
      failures: [] as string[],
      pendingTitles: [] as string[],
      retried: [] as string[],
    };
    runner.on(EVENT_TEST_PASS, () => counts.passed++);
    runner.on(EVENT_TEST_FAIL, (t: Mocha.Runnable, err: Error) => {
      counts.failed++;
      counts.failures.push(`${t.fullTitle()}: ${String(err?.message ?? err).split('\n')[0]}`);
    });
    runner.on(EVENT_TEST_PENDING, (t: Mocha.Test) => {
      counts.pending++;
      counts.pendingTitles.push(t.fullTitle());
    });
    // A lab test retried after a failure (this.retries): counted once, by its final result, and listed.
    runner.on(EVENT_TEST_RETRY, (t: Mocha.Test, err: Error) => {
      counts.retried.push(`${t.fullTitle()}: ${String(err?.message ?? err).split('\n')[0]}`);
    });
    runner.once(EVENT_RUN_END, () => {
      counts.retried.push(...((globalThis as { vbFaultRetries?: string[] }).vbFaultRetries ?? []));
      const file = process.env.VB_SUMMARY_FILE;
      if (file) writeFileSync(file, JSON.stringify(counts, null, 1));
    });
  }
}
