/**
 * A QMP client (QEMU docs/interop/qmp-spec.rst) over a unix socket: the migration tests drive QEMU with
 * it (lab/migration.ts), and the guest harness watches each guest's resets with it (lab/guest.ts).
 * Runs inside L2.
 */
import * as net from 'node:net';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How long a command may wait for QEMU's answer (all of the lab's return at once, a migration's too). */
const QMP_ANSWER_MS = 60_000;

/** One QMP event, with QEMU's own timestamp (ms since the epoch). */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  at: number;
}

/** A QMP client (QEMU docs/interop/qmp-spec.rst): one command at a time, events kept with their time. */
export class Qmp {
  readonly events: QmpEvent[] = [];
  /** Called with every event as it arrives (the guest harness watches RESET: lab/guest.ts). */
  onEvent: ((e: QmpEvent) => void) | null = null;
  private buffer = '';
  private pending: { resolve: (v: unknown) => void; reject: (e: Error) => void; what: string }[] = [];
  private greeted: () => void = () => {};
  private closed: Error | null = null;

  private constructor(
    readonly name: string,
    private readonly sock: net.Socket,
  ) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.data(d));
    const gone = (e?: Error) => {
      this.closed ??= e ?? new Error(`QMP ${name}: connection closed`);
      for (const p of this.pending.splice(0)) p.reject(this.closed);
    };
    sock.on('error', gone);
    sock.on('close', () => gone());
  }

  /** Connect (retrying until QEMU has made the socket), read the greeting, enter command mode. */
  static async connect(name: string, path: string, timeoutMs = 30_000): Promise<Qmp> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((res, rej) => {
          const s = net.createConnection(path, () => res(s));
          s.once('error', rej);
        });
        const q = new Qmp(name, sock);
        await new Promise<void>((res) => {
          q.greeted = res;
        });
        await q.execute('qmp_capabilities');
        return q;
      } catch (e) {
        if (Date.now() > end) throw new Error(`QMP ${name}: cannot connect to ${path}: ${(e as Error).message}`);
        await sleep(100);
      }
    }
  }

  private data(d: string): void {
    this.buffer += d;
    for (let i = this.buffer.indexOf('\n'); i >= 0; i = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, i).trim();
      this.buffer = this.buffer.slice(i + 1);
      if (!line) continue;
      const m = JSON.parse(line) as {
        QMP?: unknown;
        event?: string;
        data?: Record<string, unknown>;
        timestamp?: { seconds: number; microseconds: number };
        return?: unknown;
        error?: { class: string; desc: string };
      };
      if (m.QMP) this.greeted();
      else if (m.event) {
        const t = m.timestamp ?? { seconds: Date.now() / 1000, microseconds: 0 };
        const e = { event: m.event, data: m.data ?? {}, at: t.seconds * 1000 + t.microseconds / 1000 };
        this.events.push(e);
        this.onEvent?.(e);
      } else {
        const p = this.pending.shift();
        if (!p) continue;
        if (m.error) p.reject(new Error(`QMP ${this.name}: ${p.what}: ${m.error.class}: ${m.error.desc}`));
        else p.resolve(m.return);
      }
    }
  }

  /**
   * Run one command. QEMU answers in order, so a command with no answer within `timeoutMs` ends the
   * connection: every later answer would be matched to the wrong command. A QEMU whose monitor is
   * silent that long is wedged (its main loop waits on something: a back-end's reply, L2's kernel),
   * and the caller's error says which command found it so, instead of a test's hang.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = QMP_ANSWER_MS): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        const e = new Error(`QMP ${this.name}: ${command}: no answer within ${timeoutMs / 1000} s`);
        this.closed = e;
        for (const p of this.pending.splice(0)) p.reject(e);
        this.sock.destroy();
      }, timeoutMs);
      const done =
        <V>(f: (v: V) => void) =>
        (v: V) => {
          clearTimeout(t);
          f(v);
        };
      this.pending.push({ resolve: done(resolve as (v: unknown) => void), reject: done(reject), what: command });
      this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  /** The first event named `name` (from index `from`), now or within `timeoutMs`. */
  async waitForEvent(name: string, timeoutMs: number, from = 0): Promise<QmpEvent> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.slice(from).find((x) => x.event === name);
      if (e) return e;
      if (this.closed) throw this.closed;
      if (Date.now() > end) throw new Error(`QMP ${this.name}: no ${name} event within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
