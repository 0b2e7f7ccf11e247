/**
 * Mocha reporter: the usual spec output, plus the run's counts written as JSON to the file named by
 * its option `summary` (`--reporter-option summary=FILE`), so scripts/test.ts can add the unit run
 * and the lab run into one final line.
 * A failing hook counts as a failure (its tests never ran); a pending (skipped) test is reported
 * separately so that CI can count it as a failure. Retries (lab tests that may meet a guest fault of the
 * nested lab) are listed with the first failure's message.
 *
 * With `--reporter-option progress=FILE` it also records, after every result, which file each result belongs to
 * (lab/suite-progress.ts), so that a lab run cut short by L2 dying goes on with the files it had not
 * finished (scripts/test.ts).
 */
import Mocha from 'mocha';
import { writeFileSync } from 'node:fs';
import { emptyCounts, type FileCounts, type SuiteProgress } from '../lab/suite-progress.js';

const {
  EVENT_RUN_END,
  EVENT_SUITE_BEGIN,
  EVENT_SUITE_END,
  EVENT_TEST_PASS,
  EVENT_TEST_FAIL,
  EVENT_TEST_PENDING,
  EVENT_TEST_RETRY,
} = Mocha.Runner.constants;

export default class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    const counts = emptyCounts();
    const files = (options as { reporterOption?: { summary?: string; progress?: string } } | undefined)?.reporterOption;
    const progressFile = files?.progress;
    const progress: SuiteProgress = { files: [] };
    /** The results of the file `r` belongs to (the current one if mocha gives none), and the run's. */
    const both = (r: Mocha.Runnable | Mocha.Suite): FileCounts[] => {
      const mine = [...progress.files].reverse().find((f) => f.file === r.file) ?? progress.files.at(-1);
      return mine ? [counts, mine.counts] : [counts];
    };
    const record = (): void => {
      if (progressFile) writeFileSync(progressFile, JSON.stringify(progress));
    };
    // Guest-fault retries inside a test (lab/retry.ts) are listed in a global; each file takes its own.
    const faultRetries = (): string[] => (globalThis as { vbFaultRetries?: string[] }).vbFaultRetries ?? [];
    let faultsTaken = 0;
    const takeFaultRetries = (): void => {
      const f = progress.files.at(-1);
      if (f) f.counts.retried.push(...faultRetries().slice(faultsTaken));
      faultsTaken = faultRetries().length;
    };
    runner.on(EVENT_SUITE_BEGIN, (s: Mocha.Suite) => {
      if (s.file && progress.files.at(-1)?.file !== s.file) {
        takeFaultRetries();
        progress.files.push({ file: s.file, startedAt: Date.now(), counts: emptyCounts() });
        record();
      }
    });
    runner.on(EVENT_SUITE_END, (s: Mocha.Suite) => {
      const f = progress.files.at(-1);
      if (f && s.file === f.file) {
        f.endedAt = Date.now();
        takeFaultRetries();
        record();
      }
    });
    runner.on(EVENT_TEST_PASS, (t: Mocha.Test) => {
      for (const c of both(t)) c.passed++;
      record();
    });
    runner.on(EVENT_TEST_FAIL, (t: Mocha.Runnable, err: Error) => {
      for (const c of both(t)) {
        c.failed++;
        c.failures.push(`${t.fullTitle()}: ${String(err?.message ?? err).split('\n')[0]}`);
      }
      record();
    });
    runner.on(EVENT_TEST_PENDING, (t: Mocha.Test) => {
      for (const c of both(t)) {
        c.pending++;
        c.pendingTitles.push(t.fullTitle());
      }
      record();
    });
    // A lab test retried after a failure (this.retries): counted once, by its final result, and listed.
    runner.on(EVENT_TEST_RETRY, (t: Mocha.Test, err: Error) => {
      for (const c of both(t)) c.retried.push(`${t.fullTitle()}: ${String(err?.message ?? err).split('\n')[0]}`);
      record();
    });
    runner.once(EVENT_RUN_END, () => {
      counts.retried.push(...faultRetries());
      const file = files?.summary;
      if (file) writeFileSync(file, JSON.stringify(counts, null, 1));
    });
  }
}
