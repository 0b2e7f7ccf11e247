/** Helpers shared by tests: open-fd counting (leak checks) and temp paths. */
import { readdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Number of open fds of this process (/proc/self/fd, minus the one readdir itself holds). */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length - 1;
}

/** A fresh private directory for sockets and files of one test. */
export function tempDir(prefix = 'vb-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
