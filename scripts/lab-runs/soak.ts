/**
 * The soak inside L2 (started by scripts/soak.ts through scripts/lab/run; docs/soak.md). Writes the
 * result as JSON to VB_SOAK_OUT, which scripts/soak.ts turns into the report, and meanwhile every
 * event as one JSON line to VB_SOAK_OUT.jsonl (the run's head first), so that a run cut short by the
 * nested lab (L2 dying: docs/lab.md "Guest faults") still leaves its record.
 *
 * Environment (set by scripts/soak.ts): VB_SOAK_SECONDS, VB_SOAK_SEED, VB_SOAK_GUESTS,
 * VB_SOAK_ONE_PORT (1 or 0), VB_SOAK_OUT, VB_SOAK_KINDS and VB_SOAK_BUDGET_S (optional: start no
 * event later than this many seconds after the soak's start).
 */
import * as fs from 'node:fs';
import { parseKinds, runSoak } from '../../lab/soak/soak.js';

const env = (k: string, d: string): string => process.env[k] ?? d;
const out = env('VB_SOAK_OUT', '/lab-xchg/soak.json');
const result = await runSoak({
  seconds: Number(env('VB_SOAK_SECONDS', '180')),
  seed: Number(env('VB_SOAK_SEED', '1')),
  guests: Number(env('VB_SOAK_GUESTS', '3')),
  onePort: env('VB_SOAK_ONE_PORT', '1') === '1',
  kinds: parseKinds(process.env.VB_SOAK_KINDS),
  budgetSeconds: process.env.VB_SOAK_BUDGET_S ? Number(process.env.VB_SOAK_BUDGET_S) : undefined,
  onStart: (head) => fs.writeFileSync(`${out}.jsonl`, `${JSON.stringify({ head })}\n`),
  onEvent: (event, sample) => fs.appendFileSync(`${out}.jsonl`, `${JSON.stringify({ event, sample })}\n`),
});
fs.writeFileSync(out, JSON.stringify(result, null, 1));
process.exit(0);
