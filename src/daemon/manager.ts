/**
 * The daemon's ports: start, stop, reset and reload them one by one, so that nothing one port does
 * reaches another. A port that cannot start is logged with its name and kept as "failed" (the
 * others serve); every call into a port is guarded, so an exception in one port's handling is
 * logged with its name and never escapes into the process. Idle costs nothing: no timers, no polls.
 */
import { type Logger, portLog } from '../log.js';
import { closeQuiet, dup } from '../sys/index.js';
import { checkDistinct, ConfigError, type PortSpec, sameSpec } from './config.js';
import type { PortOpener, PortUnit } from './port.js';

/** Where a port came from: the configuration file (a reload may remove it) or the control socket's `add`. */
export type PortOrigin = 'config' | 'control';

export interface PortState {
  readonly name: string;
  spec: PortSpec;
  origin: PortOrigin;
  /** The running port, or null if it could not start. */
  unit: PortUnit | null;
  /** Why it is not running (its last start failed), or null. */
  error: string | null;
  /** When the running unit started (ms since the epoch), or null. */
  since: number | null;
  /** Resets asked for (control `reset`) and done after an internal error. */
  resets: number;
}

/** What a reload did, by port name. */
export interface ReloadResult {
  added: string[];
  removed: string[];
  changed: string[];
  unchanged: string[];
  /** Ports (of any of the above) that are not running after the reload, with why. */
  failed: { name: string; error: string }[];
}

/** A request about a port that does not exist (the control socket answers it with field `port`). */
export class NoSuchPort extends Error {
  constructor(readonly port: string) {
    super(`no port named '${port}'`);
    this.name = 'NoSuchPort';
  }
}

/**
 * The difference between the running ports of the file and the file's new ports. Ports added over
 * the control socket are not the file's: a reload leaves them alone unless the file names them.
 */
export function diffPorts(
  running: ReadonlyMap<string, { spec: PortSpec; origin: PortOrigin }>,
  next: ReadonlyMap<string, PortSpec>,
) {
  const out = { added: [] as string[], removed: [] as string[], changed: [] as string[], unchanged: [] as string[] };
  for (const [name, cur] of running) if (cur.origin === 'config' && !next.has(name)) out.removed.push(name);
  for (const [name, spec] of next) {
    const cur = running.get(name);
    if (!cur) out.added.push(name);
    else if (sameSpec(cur.spec, spec)) out.unchanged.push(name);
    else out.changed.push(name);
  }
  return out;
}

export interface ManagerOptions {
  opener: PortOpener;
  log: Logger;
  /**
   * Listening sockets systemd passed, by port name (LISTEN_FDNAMES); the manager keeps them and gives each
   * start a dup.
   */
  inherited?: Map<string, number>;
}

export class PortManager {
  private readonly ports = new Map<string, PortState>();
  private readonly log: Logger;

  constructor(private readonly opts: ManagerOptions) {
    this.log = opts.log;
  }

  /** The ports, in the order they were added. */
  list(): PortState[] {
    return [...this.ports.values()];
  }

  get(name: string): PortState {
    const p = this.ports.get(name);
    if (!p) throw new NoSuchPort(name);
    return p;
  }

  has(name: string): boolean {
    return this.ports.has(name);
  }

  /**
   * Add and start one port. Its settings are checked against the other ports first (socket, tap);
   * a port that then fails to start is kept, failed, with its error (`reset` tries again).
   */
  add(spec: PortSpec, origin: PortOrigin = 'control'): PortState {
    if (this.ports.has(spec.name))
      throw new ConfigError([
        { field: `ports.${spec.name}`, message: 'a port with this name exists; remove it first' },
      ]);
    const issues = checkDistinct([...[...this.ports.values()].map((p) => p.spec), spec]);
    if (issues.length) throw new ConfigError(issues);
    const state: PortState = { name: spec.name, spec, origin, unit: null, error: null, since: null, resets: 0 };
    this.ports.set(spec.name, state);
    this.start(state);
    return state;
  }

  /** Stop a port and forget it (its guest loses the link; the socket file is removed). */
  remove(name: string): void {
    const p = this.get(name);
    this.stop(p, 'removed');
    this.ports.delete(name);
    portLog(this.log, name).info('removed');
  }

  /**
   * Reset a port: a running one drops its front-end (rings stopped, memory unmapped, fds closed)
   * and serves the next (QEMU reconnect=1 comes back; a client port reconnects); a failed one is
   * started again.
   */
  reset(name: string, why = 'reset by the operator'): PortState {
    const p = this.get(name);
    p.resets++;
    if (!p.unit) {
      this.start(p);
      return p;
    }
    this.guard(p, 'reset', () => p.unit?.dropFrontEnd(why));
    portLog(this.log, name).info(`reset (${why})`);
    return p;
  }

  /**
   * Apply a configuration file's ports (SIGHUP): removed ports stop, changed ones restart with the
   * new settings, added ones start; unchanged ones are not touched (same port object, same fds,
   * the guest notices nothing), except that an unchanged port that had failed is started again.
   */
  reload(next: ReadonlyMap<string, PortSpec>): ReloadResult {
    const d = diffPorts(this.ports, next);
    // Socket and tap clashes with ports the file does not own (added over the control socket).
    const kept = [...this.ports.values()].filter((p) => !next.has(p.name) && p.origin === 'control').map((p) => p.spec);
    const issues = checkDistinct([...next.values(), ...kept]);
    if (issues.length) throw new ConfigError(issues);
    for (const name of d.removed) this.remove(name);
    for (const name of d.changed) {
      const p = this.get(name);
      this.stop(p, 'its settings changed');
      p.spec = next.get(name)!;
      p.origin = 'config';
      this.start(p);
    }
    for (const name of d.unchanged) {
      const p = this.get(name);
      p.origin = 'config';
      if (!p.unit) this.start(p);
    }
    for (const name of d.added) this.add(next.get(name)!, 'config');
    const failed = [...d.added, ...d.changed, ...d.unchanged]
      .map((n) => this.get(n))
      .filter((p) => !p.unit)
      .map((p) => ({ name: p.name, error: p.error ?? 'not running' }));
    return { ...d, failed };
  }

  /** Stop every port (SIGTERM) and close the inherited sockets. */
  close(): void {
    for (const p of this.ports.values()) this.stop(p, 'daemon stopping');
    this.ports.clear();
    for (const fd of this.opts.inherited?.values() ?? []) closeQuiet(fd);
    this.opts.inherited?.clear();
  }

  /**
   * Run `f` on port `p`, never letting an exception out: it is logged with the port's name, and a
   * port whose handling threw drops its front-end, so that it starts over from a clean session.
   */
  guard<T>(p: PortState, what: string, f: () => T): T | undefined {
    try {
      return f();
    } catch (e) {
      portLog(this.log, p.name).error(`${what}: ${(e as Error).stack ?? e}`);
      if (what !== 'reset' && what !== 'stop' && p.unit) {
        try {
          p.unit.dropFrontEnd(`internal error in ${what}`);
          p.resets++;
        } catch (e2) {
          portLog(this.log, p.name).error(`reset after the error: ${(e2 as Error).message}`);
        }
      }
      return undefined;
    }
  }

  private start(p: PortState): void {
    const inherited = p.spec.role === 'server' ? this.opts.inherited?.get(p.name) : undefined;
    let listenFd: number | null = null;
    try {
      if (inherited !== undefined) listenFd = dup(inherited);
      p.unit = this.opts.opener(p.spec, { log: this.log, listenFd });
      p.error = null;
      p.since = Date.now();
    } catch (e) {
      if (listenFd !== null) closeQuiet(listenFd);
      p.unit = null;
      p.since = null;
      p.error = (e as Error).message;
      portLog(this.log, p.name).error(`cannot start: ${p.error}`);
    }
  }

  private stop(p: PortState, why: string): void {
    const unit = p.unit;
    p.unit = null;
    p.since = null;
    if (unit) this.guard(p, 'stop', () => unit.close());
    portLog(this.log, p.name).debug(`stopped (${why})`);
  }
}
