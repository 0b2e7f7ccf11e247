/**
 * The package's version: package.json's, read at run time so that it has one owner. package.json
 * sits two levels above this file both in the repository (dist/src/version.js) and in an installed
 * package (node_modules/vhost-bridge/dist/src/version.js).
 */
import { readFileSync } from 'node:fs';

export const VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string })
      .version;
  } catch {
    return 'unknown';
  }
})();
