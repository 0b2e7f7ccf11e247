/**
 * The control socket's methods: one table, each entry with the schema of its parameters and its
 * handler, so that every request is checked in one place and a handler never re-checks.
 *
 * | method  | params              | result                                  |
 * |---------|---------------------|-----------------------------------------|
 * | version | -                   | {version, node, pid, ports, uptimeMs, vhostWorkers} |
 * | ports   | -                   | [{name, state, tap, role, socket, ...}] |
 * | status  | {port}              | PortReport (report.ts)                  |
 * | stats   | -                   | PortStats[] (counters only)             |
 * | add     | {name, config}      | PortReport of the new port              |
 * | remove  | {port}              | {removed: name}                         |
 * | reset   | {port}              | PortReport after the reset              |
 * | health  | -                   | {serving, failed: [name], total}        |
 * | reload  | -                   | {added, removed, changed, unchanged, failed} (manager.ts ReloadResult) |
 */
import { z } from 'zod';
import type { PeerCred } from '../sys/index.js';
import { ConfigError, parsePort } from './config.js';
import { ControlError, type RequestHandler } from './control.js';
import { NoSuchPort, type PortManager, type ReloadResult } from './manager.js';
import type { Request } from './protocol.js';
import { healthOf, portReport, portStats } from './report.js';
import { vhostWorkers } from '../vhost-kernel/workers.js';
import { VERSION } from '../version.js';

const none = z.strictObject({});
const onePort = z.strictObject({ port: z.string({ error: 'expected a port name' }) });
const addParams = z.strictObject({
  name: z.string({ error: 'expected a port name' }),
  config: z.record(z.string(), z.unknown(), { error: "expected the port's settings (as in the configuration file)" }),
});

/** What the methods reach besides the ports. */
export interface HandlerOptions {
  /** When the daemon started (ms since the epoch): `version`'s uptime. */
  startedAt?: number;
  /**
   * Read the configuration file again and apply it (daemon.ts); throws ControlError when the file
   * is not valid (nothing changed). Without it, `reload` is refused.
   */
  reload?: () => ReloadResult;
}

interface Context {
  manager: PortManager;
  startedAt: number;
  peer: PeerCred | null;
  reload: (() => ReloadResult) | null;
}

type Method<S extends z.ZodType> = { params: S; run: (p: z.output<S>, ctx: Context) => unknown };
const method = <S extends z.ZodType>(params: S, run: (p: z.output<S>, ctx: Context) => unknown): Method<S> => ({
  params,
  run,
});

/** A ConfigError of an `add` as a control error: the field is named relative to the request (`config.queues`). */
function configToControl(e: ConfigError, name: string): ControlError {
  const first = e.issues[0];
  const prefix = `ports.${name}.`;
  const field = first?.field.startsWith(prefix)
    ? `config.${first.field.slice(prefix.length)}`
    : first?.field === `ports.${name}`
      ? 'name'
      : undefined;
  return new ControlError(e.message, field);
}

const METHODS: Record<string, Method<z.ZodType>> = {
  version: method(none, (_, ctx) => ({
    version: VERSION,
    node: process.version,
    pid: process.pid,
    ports: ctx.manager.list().length,
    uptimeMs: Date.now() - ctx.startedAt,
    // Every port's vhost-net workers, in the kernel's model (kthreads, or threads of this process
    // from 6.4): the kernel names them all after this process, so they are the daemon's, not a port's.
    vhostWorkers: vhostWorkers(),
  })),
  ports: method(none, (_, ctx) =>
    ctx.manager.list().map((p) => ({
      name: p.name,
      state: p.port ? 'running' : 'failed',
      tap: p.config.tap,
      role: p.config.role,
      socket: p.config.socket,
      queues: p.config.queues,
      frontEnd: p.port ? (ctx.manager.guard(p, 'status', () => p.port?.status().frontEnd) ?? false) : false,
      origin: p.origin,
      error: p.error,
    })),
  ),
  status: method(onePort, (p, ctx) => {
    const s = ctx.manager.get(p.port);
    return ctx.manager.guard(s, 'status', () => portReport(s)) ?? portReport({ ...s, port: null });
  }),
  stats: method(none, (_, ctx) =>
    ctx.manager.list().map((s) => ctx.manager.guard(s, 'stats', () => portStats(s)) ?? portStats({ ...s, port: null })),
  ),
  add: method(addParams, (p, ctx) => {
    try {
      return portReport(ctx.manager.add(parsePort(p.name, p.config), 'control'));
    } catch (e) {
      if (e instanceof ConfigError) throw configToControl(e, p.name);
      throw e;
    }
  }),
  remove: method(onePort, (p, ctx) => {
    ctx.manager.remove(p.port);
    return { removed: p.port };
  }),
  reset: method(onePort, (p, ctx) => portReport(ctx.manager.reset(p.port))),
  health: method(none, (_, ctx) => healthOf(ctx.manager.list())),
  reload: method(none, (_, ctx) => {
    if (!ctx.reload) throw new ControlError('this daemon has no configuration file to reload');
    return ctx.reload();
  }),
};

export const METHOD_NAMES = Object.keys(METHODS);

/** The control socket's request handler over a port manager. */
export function controlHandler(manager: PortManager, opts: HandlerOptions = {}): RequestHandler {
  const startedAt = opts.startedAt ?? Date.now();
  const reload = opts.reload ?? null;
  return (req: Request, peer: PeerCred | null) => {
    const m = Object.hasOwn(METHODS, req.method) ? METHODS[req.method] : undefined;
    if (!m) throw new ControlError(`unknown method '${req.method}' (one of ${METHOD_NAMES.join(', ')})`, 'method');
    const parsed = m.params.safeParse(req.params ?? {});
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      const path = i.code === 'unrecognized_keys' ? [...i.path, i.keys[0]] : i.path;
      const message = i.code === 'unrecognized_keys' ? `unknown parameter of ${req.method}` : i.message;
      throw new ControlError(`params.${path.join('.')}: ${message}`, path.join('.'));
    }
    try {
      return m.run(parsed.data, { manager, startedAt, peer, reload });
    } catch (e) {
      if (e instanceof NoSuchPort) throw new ControlError(e.message, 'port');
      throw e;
    }
  };
}
