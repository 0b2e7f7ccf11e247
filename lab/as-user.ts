/**
 * A peer of another user: a child process that setpriv(1) runs as nobody (uid and gid 65534, no
 * supplementary groups) connects to a unix socket, sends one vhost-user header and reports what
 * came back. The daemon's peer-credential tests (unit and lab) and the soak's `refused-uid` event use it;
 * it needs root.
 */
import { spawn } from 'node:child_process';

export const NOBODY = 65534;

/** What the child saw: its pid, the bytes the back-end sent, and whether it was hung up on. */
export interface Seen {
  pid: number;
  got: number;
  hungUp: boolean;
}

/**
 * Connect to `path` as uid/gid 65534 (setpriv), send a GET_FEATURES header (vhost-user.rst: request 1,
 * flags version 1, size 0) and report what came back within a second.
 */
export function connectAsNobody(path: string): Promise<Seen> {
  const script = `
    const c = require('node:net').createConnection(${JSON.stringify(path)});
    let got = 0, hungUp = false;
    const done = () => { process.stdout.write(JSON.stringify({ pid: process.pid, got, hungUp })); process.exit(0); };
    c.on('connect', () => c.write(Buffer.from([1,0,0,0, 1,0,0,0, 0,0,0,0])));
    c.on('data', (d) => { got += d.length; });
    c.on('end', () => { hungUp = true; done(); });
    c.on('error', () => { hungUp = true; done(); });
    setTimeout(done, 1000);`;
  const args = ['--reuid', `${NOBODY}`, '--regid', `${NOBODY}`, '--clear-groups', process.execPath, '-e', script];
  return new Promise((resolve, reject) => {
    const child = spawn('setpriv', args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as Seen) : reject(new Error(`child: ${code}`))));
  });
}
