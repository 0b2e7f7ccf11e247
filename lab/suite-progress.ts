/**
 * The lab suite's progress, file by file, so that a run cut short by the L2 VM dying (a fault of
 * nested virtualization under TCG, docs/lab.md "Guest faults") can go on in a fresh L2 boot with
 * the files it had not finished, instead of running the whole suite again (docs/ci.md).
 *
 * The mocha reporter (test/summary-reporter.ts) records, as the suite runs, which file each test
 * belongs to and its result; `npm test` (scripts/test.ts) reads that record after a dead boot and
 * asks `resumeAfterDeath` what to keep and what to run again. The rule: a file counts only when it
 * finished in one boot. The file that was running when L2 died is run again from its start, and its
 * partial results are dropped, so nothing is counted twice and nothing is counted from half a file.
 */

/** Results of one test file (or of a whole run). */
export interface FileCounts {
  passed: number;
  failed: number;
  pending: number;
  failures: string[];
  pendingTitles: string[];
  retried: string[];
}

/** What the reporter wrote so far: the files in the order they started, each with its results. */
export interface SuiteProgress {
  files: { file: string; startedAt: number; endedAt?: number; counts: FileCounts }[];
}

export function emptyCounts(): FileCounts {
  return { passed: 0, failed: 0, pending: 0, failures: [], pendingTitles: [], retried: [] };
}

/** Adds `b` into `a`. */
export function addCounts(a: FileCounts, b: FileCounts): void {
  a.passed += b.passed;
  a.failed += b.failed;
  a.pending += b.pending;
  a.failures.push(...b.failures);
  a.pendingTitles.push(...b.pendingTitles);
  a.retried.push(...b.retried);
}

/**
 * After a boot died while running `files` (in that order): the results to keep (files that
 * finished), the file that was running (undefined if none had started), and the files to run in
 * the next boot (the running one and every one after it, in order). A file the reporter never
 * saw start is still to run. Files are matched by name as the reporter saw them (`sameFile`).
 */
export function resumeAfterDeath(
  files: readonly string[],
  progress: SuiteProgress | null,
): { kept: FileCounts; finished: string[]; running: string | undefined; remaining: string[] } {
  const kept = emptyCounts();
  const finished: string[] = [];
  const seen = progress?.files ?? [];
  // The last file that started was running when the boot died, even if its tests all passed: its
  // after-hooks (the guests' shutdown, the checks they make) had not necessarily run.
  const running = seen.length ? seen[seen.length - 1]?.file : undefined;
  for (const f of seen.slice(0, -1)) {
    addCounts(kept, f.counts);
    finished.push(f.file);
  }
  const done = (f: string): boolean => finished.some((g) => sameFile(f, g));
  return { kept, finished, running, remaining: files.filter((f) => !done(f)) };
}

/** Mocha reports absolute paths; the runner passes paths relative to the repository. */
export function sameFile(a: string, b: string): boolean {
  const norm = (p: string): string => p.replace(/^.*?(dist\/test\/)/, '$1');
  return norm(a) === norm(b);
}
