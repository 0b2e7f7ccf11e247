/**
 * `npm run demo`: set up what is missing (scripts/lab/setup), then boot a guest through
 * vhost-bridge in the lab and compare it with QEMU's own tap,vhost=on (scripts/lab-runs/demo.ts).
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { runInLab } from '../lab/job.js';
import type { DemoJob } from './lab-runs/demo.js';

const repo = resolve(import.meta.dirname, '..', '..');
const step = (what: string, cmd: string, args: string[]): number => {
  console.log(`== ${what}`);
  const r = spawnSync(cmd, args, { cwd: repo, stdio: 'inherit' });
  return r.status ?? 1;
};

if (
  step(
    'lab: setting up (idempotent; the first time downloads a Debian kernel and builds two initramfs images)',
    'scripts/lab/setup',
    [],
  ) !== 0
) {
  console.error('demo: the lab could not be set up (see above)');
  process.exit(1);
}
console.log('== lab: booting L2 (TCG) and running the demo inside it');
const options: DemoJob = { seconds: Number(process.env.VB_DEMO_SECONDS ?? 5) };
const lab = await runInLab({ name: 'demo', script: 'dist/scripts/lab-runs/demo.js', options, timeoutSeconds: 900 });
process.exit(lab.status);
