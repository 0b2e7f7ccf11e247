/**
 * The soak inside L2 (started by scripts/soak.ts through lab/job.ts; docs/soak.md). Its options come
 * from the job file; it writes the result as JSON to soak.json in the exchange directory, which
 * scripts/soak.ts turns into the report, and meanwhile every event as one JSON line to
 * soak.json.jsonl (the run's head first), so that a run cut short by the nested lab (L2 dying:
 * docs/lab.md "Guest faults") still leaves its record.
 */
import * as fs from 'node:fs';
import { jobOptions, xchgPath } from '../../lab/job.js';
import { parseKinds, runSoak } from '../../lab/soak/soak.js';

/** What scripts/soak.ts asks of one L2 boot of the soak. */
export interface SoakJob {
  seconds: number;
  seed: number;
  guests: number;
  onePort: boolean;
  /** comma-separated kinds of event (default all) */
  kinds?: string;
  /** start no event later than this many seconds after the soak's start */
  budgetSeconds?: number;
}

const job = jobOptions<SoakJob>({ seconds: 180, seed: 1, guests: 3, onePort: true });
const out = xchgPath('soak.json');
const result = await runSoak({
  seconds: job.seconds,
  seed: job.seed,
  guests: job.guests,
  onePort: job.onePort,
  kinds: parseKinds(job.kinds),
  budgetSeconds: job.budgetSeconds,
  onStart: (head) => fs.writeFileSync(`${out}.jsonl`, `${JSON.stringify({ head })}\n`),
  onEvent: (event, sample) => fs.appendFileSync(`${out}.jsonl`, `${JSON.stringify({ event, sample })}\n`),
});
fs.writeFileSync(out, JSON.stringify(result, null, 1));
process.exit(0);
