/**
 * A peer of another user: a child process that setpriv(1) runs as nobody (uid and gid 65534, no
 * supplementary groups) connects to a unix socket, sends one vhost-user header and reports what
 * came back. The daemon's peer-credential tests (unit and lab) and the soak's `refused-uid` event use it;
 * it needs root.
 */
import { type ChildProcess, spawn } from 'node:child_process';

export const NOBODY = 65534;

/** What the child saw: its pid, the bytes the back-end sent, and whether it was hung up on. */
export interface Seen {
  pid: number;
  got: number;
  hungUp: boolean;
}

/**
 * The child: for every socket path on a line of its stdin, connect, send a GET_FEATURES header
 * (vhost-user.rst: request 1, flags version 1, size 0) and write what came back within a second as
 * one JSON line; the paths are taken one at a time.
 */
const SCRIPT = `
  const net = require('node:net');
  const paths = [];
  let busy = false, ended = false, rest = '';
  const next = () => {
    if (busy) return;
    if (!paths.length) { if (ended) process.exit(0); return; }
    busy = true;
    const c = net.createConnection(paths.shift());
    let got = 0, hungUp = false, done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(t);
      c.destroy();
      process.stdout.write(JSON.stringify({ pid: process.pid, got, hungUp }) + '\\n');
      busy = false;
      next();
    };
    const t = setTimeout(finish, 1000);
    c.on('connect', () => c.write(Buffer.from([1,0,0,0, 1,0,0,0, 0,0,0,0])));
    c.on('data', (d) => { got += d.length; });
    c.on('end', () => { hungUp = true; finish(); });
    c.on('error', () => { hungUp = true; finish(); });
  };
  process.stdin.on('data', (d) => {
    const lines = (rest + d).split('\\n');
    rest = lines.pop();
    paths.push(...lines.filter((l) => l));
    next();
  });
  process.stdin.on('end', () => { ended = true; next(); });`;

/**
 * One long-lived child as nobody that connects on request. Starting Node is what costs: 0.1 s on the
 * lab's host, 3-8 s in L2 under TCG with guests running (docs/soak.md, "Pace"), so the soak starts one
 * at set-up and its `refused-uid` events reuse it.
 */
export class NobodyPeer {
  private out = '';
  private readonly waiting: { resolve: (s: Seen) => void; reject: (e: Error) => void }[] = [];
  private exit: string | null = null;
  private readonly closed: Promise<void>;

  private constructor(private readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => {
      const lines = (this.out + d.toString()).split('\n');
      this.out = lines.pop() ?? '';
      for (const l of lines) if (l) this.waiting.shift()?.resolve(JSON.parse(l) as Seen);
    });
    const gone = (why: string): void => {
      this.exit ??= why;
      for (const w of this.waiting.splice(0)) w.reject(new Error(`the peer as nobody ${why}`));
    };
    child.stdin!.on('error', () => undefined); // a dead child: reported by 'close'
    child.on('error', (e) => gone(`did not start: ${e.message}`));
    this.closed = new Promise((res) =>
      child.on('close', (code, signal) => {
        gone(`exited (${signal ?? code})`);
        res();
      }),
    );
  }

  static start(): NobodyPeer {
    const args = ['--reuid', `${NOBODY}`, '--regid', `${NOBODY}`, '--clear-groups', process.execPath, '-e', SCRIPT];
    return new NobodyPeer(spawn('setpriv', args, { stdio: ['pipe', 'pipe', 'inherit'] }));
  }

  /** Connect to `path` as nobody, send a header, and report what came back within a second. */
  connect(path: string): Promise<Seen> {
    if (this.exit) return Promise.reject(new Error(`the peer as nobody ${this.exit}`));
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.child.stdin!.write(`${path}\n`);
    });
  }

  /** Ends the child (once its connections are reported); resolves when it has exited, its pipes closed. */
  close(): Promise<void> {
    this.child.stdin!.end();
    return this.closed;
  }
}

/** One connection as nobody to `path` (a child started for it): see NobodyPeer.connect. */
export async function connectAsNobody(path: string): Promise<Seen> {
  const peer = NobodyPeer.start();
  try {
    return await peer.connect(path);
  } finally {
    await peer.close();
  }
}
