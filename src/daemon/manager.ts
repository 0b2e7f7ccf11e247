/**
 * The daemon's ports: start, stop, reset and reload them one by one, so that nothing one port does
 * reaches another. A port that cannot start is logged with its name and kept as "failed" (the
 * others serve); every call into a port is guarded, so an exception in one port's handling is
 * logged with its name and never escapes into the process. Idle costs nothing: no timers, no polls.
 */
import { dirname } from 'node:path';
import { type Logger, portLog } from '../log.js';
import type { PortParts } from '../port/parts.js';
import { Port } from '../port/port.js';
import type { PortSpec } from '../port/spec.js';
import { closeQuiet, dup } from '../sys/index.js';
import { checkDistinct, ConfigError, type PortConfig, sameConfig } from './config.js';
import { ensureSocketDir } from './socket-dir.js';

/** Where a port came from: the configuration file (a reload may remove it) or the control socket's `add`. */
export type PortOrigin = 'config' | 'control';

/** A port of the daemon: its configuration, the running Port, and what the daemon counts around it. */
export interface PortState {
  readonly name: string;
  config: PortConfig;
  origin: PortOrigin;
  /** The running port, or null if it could not start. */
  port: Port | null;
  /** Why it is not running (its last start failed), or null. */
  error: string | null;
  /** When the running port started (ms since the epoch), or null. */
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
  running: ReadonlyMap<string, { config: PortConfig; origin: PortOrigin }>,
  next: ReadonlyMap<string, PortConfig>,
) {
  const out = { added: [] as string[], removed: [] as string[], changed: [] as string[], unchanged: [] as string[] };
  for (const [name, cur] of running) if (cur.origin === 'config' && !next.has(name)) out.removed.push(name);
  for (const [name, config] of next) {
    const cur = running.get(name);
    if (!cur) out.added.push(name);
    else if (sameConfig(cur.config, config)) out.unchanged.push(name);
    else out.changed.push(name);
  }
  return out;
}

/**
 * What a port of the daemon is built on: its own parts at each start (a fresh recording kernel per
 * port in unit tests); `log` is the daemon's, which the port names itself in.
 */
export type PartsFor = (config: PortConfig, log: Logger) => PortParts;

/**
 * The Port a configured port runs: an inherited listening fd, the socket it listens on, or the VMM's
 * socket it connects to; its interface as the backend socket of its kind.
 */
export function portSpecOf(c: PortConfig, listenFd: number | null): PortSpec {
  const peers = c.peers;
  return {
    name: c.name,
    transport:
      listenFd !== null
        ? { mode: 'fd', fd: listenFd, peers }
        : c.role === 'client'
          ? { mode: 'client', path: c.socket, peers }
          : { mode: 'server', path: c.socket, socketMode: c.mode, uid: c.owner, gid: c.group, peers },
    backendSocket:
      c.backend === 'macvtap'
        ? { macvtap: c.tap }
        : c.backend === 'packet'
          ? { packet: c.tap }
          : { tap: c.tap, create: !c.persistentTap },
    queuePairs: c.queues,
    mtu: c.mtu ?? undefined,
    busyPollUs: c.busyPollUs || undefined,
    memoryLimit: { bytes: c.maxMemory, regions: c.maxRegions },
    workerCgroup: c.workerCgroup ?? undefined,
  };
}

export interface ManagerOptions {
  partsFor: PartsFor;
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
  add(config: PortConfig, origin: PortOrigin = 'control'): PortState {
    if (this.ports.has(config.name))
      throw new ConfigError([
        { field: `ports.${config.name}`, message: 'a port with this name exists; remove it first' },
      ]);
    const issues = checkDistinct([...[...this.ports.values()].map((p) => p.config), config]);
    if (issues.length) throw new ConfigError(issues);
    const state: PortState = { name: config.name, config, origin, port: null, error: null, since: null, resets: 0 };
    this.ports.set(config.name, state);
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
   * and serves the next (QEMU with reconnect-ms= comes back; a client port reconnects); a failed one is
   * started again.
   */
  reset(name: string, why = 'reset by the operator'): PortState {
    const p = this.get(name);
    p.resets++;
    if (!p.port) {
      this.start(p);
      return p;
    }
    this.guard(p, 'reset', () => p.port?.dropFrontEnd(why));
    portLog(this.log, name).info(`reset (${why})`);
    return p;
  }

  /**
   * Apply a configuration file's ports (SIGHUP): removed ports stop, changed ones restart with the
   * new settings, added ones start; unchanged ones are not touched (same port object, same fds,
   * the guest notices nothing), except that an unchanged port that had failed is started again.
   */
  reload(next: ReadonlyMap<string, PortConfig>): ReloadResult {
    const d = diffPorts(this.ports, next);
    // Socket and tap clashes with ports the file does not own (added over the control socket).
    const kept = [...this.ports.values()]
      .filter((p) => !next.has(p.name) && p.origin === 'control')
      .map((p) => p.config);
    const issues = checkDistinct([...next.values(), ...kept]);
    if (issues.length) throw new ConfigError(issues);
    for (const name of d.removed) this.remove(name);
    for (const name of d.changed) {
      const p = this.get(name);
      this.stop(p, 'its settings changed');
      p.config = next.get(name)!;
      p.origin = 'config';
      this.start(p);
    }
    for (const name of d.unchanged) {
      const p = this.get(name);
      p.origin = 'config';
      if (!p.port) this.start(p);
    }
    for (const name of d.added) this.add(next.get(name)!, 'config');
    const failed = [...d.added, ...d.changed, ...d.unchanged]
      .map((n) => this.get(n))
      .filter((p) => !p.port)
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
      if (what !== 'reset' && what !== 'stop' && p.port) {
        try {
          p.port.dropFrontEnd(`internal error in ${what}`);
          p.resets++;
        } catch (e2) {
          portLog(this.log, p.name).error(`reset after the error: ${(e2 as Error).message}`);
        }
      }
      return undefined;
    }
  }

  private start(p: PortState): void {
    const inherited = p.config.role === 'server' ? this.opts.inherited?.get(p.name) : undefined;
    let listenFd: number | null = null;
    try {
      if (inherited !== undefined) listenFd = dup(inherited);
      else if (p.config.role === 'server') ensureSocketDir(dirname(p.config.socket));
      p.port = Port.start(portSpecOf(p.config, listenFd), this.opts.partsFor(p.config, this.log));
      p.error = null;
      p.since = Date.now();
    } catch (e) {
      if (listenFd !== null) closeQuiet(listenFd);
      p.port = null;
      p.since = null;
      p.error = (e as Error).message;
      portLog(this.log, p.name).error(`cannot start: ${p.error}`);
    }
  }

  private stop(p: PortState, why: string): void {
    const port = p.port;
    p.port = null;
    p.since = null;
    if (port) this.guard(p, 'stop', () => port.close());
    portLog(this.log, p.name).debug(`stopped (${why})`);
  }
}
