/**
 * The cloud-hypervisor binary of the lab's CH guests: built once per kit by scripts/lab/cloud-hypervisor
 * (which scripts/lab/setup runs) into a cache outside the tree; .lab/cloud-hypervisor.env says where it
 * is, or why there is none.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { labFiles } from './guest/files.js';

/** The binary, or why there is none (for a test's skip or failure message). */
export function findChBinary(): { path: string } | { why: string } {
  let env: string;
  try {
    env = path.join(labFiles().labDir, 'cloud-hypervisor.env');
  } catch (e) {
    return { why: (e as Error).message };
  }
  let text: string;
  try {
    text = fs.readFileSync(env, 'utf8');
  } catch {
    return { why: `${env} does not exist: run scripts/lab/setup (it builds cloud-hypervisor from the kit)` };
  }
  const get = (k: string): string | undefined => new RegExp(`^${k}=(.*)$`, 'm').exec(text)?.[1];
  const bin = get('LAB_CH');
  if (!bin) return { why: get('LAB_CH_ERROR') ?? `${env} names no binary` };
  if (!fs.existsSync(bin)) return { why: `${bin} (from ${env}) is gone: run scripts/lab/setup again` };
  return { path: bin };
}

/** The binary's path; throws with the reason when there is none. */
export function chBinary(): string {
  const r = findChBinary();
  if ('why' in r) throw new Error(`no cloud-hypervisor: ${r.why}`);
  return r.path;
}
