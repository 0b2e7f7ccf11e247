/**
 * The control socket's client (`vhost-bridge ctl ...`): one request per connection, and the
 * replies as tables for people (or as JSON with --json, for machines).
 */
import { connect } from 'node:net';
import { readFileSync, statSync } from 'node:fs';
import { busyPollText, type RingStatus, zeroCopyText } from '../bridge/status.js';
import { decodeBody, encodeFrame, FrameReader, MAX_REPLY, type Reply } from './protocol.js';
import type { ReloadResult } from './manager.js';
import type { Counters, PortReport, PortStats } from './report.js';

/**
 * ctl's exit statuses, the one table of them (`ctl --help` prints it, docs/operating.md "ctl in
 * scripts" repeats it): a script tells "the daemon said no" from "there is no daemon" from "it
 * answers, but a port is down".
 */
export const EXIT = { ok: 0, error: 1, usage: 2, unreachable: 3, degraded: 4 } as const;

const MEANING: Record<keyof typeof EXIT, string> = {
  ok: 'done; every port it shows serves',
  error: 'the daemon refused the request (no such port, an invalid file) or it failed',
  usage: 'the command line is wrong (unknown command or option, a missing argument)',
  unreachable: 'no daemon answered: nothing at the path, not a socket, no reply in time, or not its protocol',
  degraded: 'the daemon answered, and a port it reports is failed',
};

/** The {@link EXIT} table as --help shows it. */
export const EXIT_HELP = `Exit status:\n${(Object.keys(EXIT) as (keyof typeof EXIT)[])
  .map((k) => `  ${EXIT[k]}  ${MEANING[k]}`)
  .join('\n')}`;

/** An error reply of the daemon, or no daemon to ask; `exit` is the status ctl ends with. */
export class CtlError extends Error {
  constructor(
    message: string,
    readonly field?: string,
    readonly exit: number = EXIT.error,
  ) {
    super(message);
    this.name = 'CtlError';
  }
}

/** How long ctl waits for a reply by default, in seconds: the daemon answers in milliseconds. */
export const DEFAULT_TIMEOUT_S = 5;

const unreachable = (message: string) => new CtlError(message, undefined, EXIT.unreachable);

/** Why `path` cannot be connected to, in words, from the connect error and what is at the path. */
function connectFailure(path: string, e: NodeJS.ErrnoException): CtlError {
  let st: ReturnType<typeof statSync> | undefined;
  try {
    st = statSync(path);
  } catch {
    // nothing there (or not ours to look at): the connect error says it
  }
  if (st && !st.isSocket()) {
    const what = st.isDirectory() ? 'a directory' : st.isFile() ? 'a regular file' : 'not a socket';
    return unreachable(`${path} is ${what}, not a control socket (--control PATH or VHOST_BRIDGE_CONTROL)`);
  }
  const hint =
    e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
      ? ' (is `vhost-bridge serve` running? --control PATH or VHOST_BRIDGE_CONTROL)'
      : e.code === 'EACCES'
        ? " (root or the control socket's group may use it)"
        : '';
  return unreachable(`${path}: ${e.message}${hint}`);
}

/** A decoded frame as a reply, or why it is not one. */
function asReply(body: Buffer): Reply | string {
  let r: unknown;
  try {
    r = decodeBody(body);
  } catch (e) {
    return (e as Error).message;
  }
  if (typeof r !== 'object' || r === null) return 'not a map';
  if ('error' in r) {
    const err = (r as { error: unknown }).error;
    if (typeof err !== 'object' || err === null || typeof (err as { message?: unknown }).message !== 'string')
      return 'an error without a message';
    return r as Reply;
  }
  return 'result' in r ? (r as Reply) : 'neither a result nor an error';
}

/**
 * Send requests over one connection and return their results in order; an error reply rejects.
 * Every failure is a CtlError with one line: a peer that is not the daemon (bytes that are not its
 * frames) is named as such, and a socket that accepts and never answers ends after `timeoutMs`.
 */
export function request(
  path: string,
  calls: { method: string; params?: Record<string, unknown> }[],
  timeoutMs = DEFAULT_TIMEOUT_S * 1000,
): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    const reader = new FrameReader(MAX_REPLY);
    const results: unknown[] = [];
    let done = false;
    let connected = false;
    const fail = (e: CtlError) => {
      if (done) return;
      done = true;
      sock.destroy();
      reject(e);
    };
    const garbled = (why: string) => fail(unreachable(`the reply from ${path} is not a vhost-bridge reply (${why})`));
    sock.setTimeout(timeoutMs, () =>
      fail(unreachable(`no reply from ${path} within ${timeoutMs / 1000} s (--timeout SECONDS)`)),
    );
    sock.on('error', (e: NodeJS.ErrnoException) =>
      fail(connected ? unreachable(`${path}: ${e.message}`) : connectFailure(path, e)),
    );
    sock.on('connect', () => {
      connected = true;
      sock.write(Buffer.concat(calls.map((c, id) => encodeFrame({ id, method: c.method, params: c.params ?? {} }))));
    });
    sock.on('data', (chunk: Buffer) => {
      if (done) return;
      let bodies: Buffer[];
      try {
        bodies = reader.push(chunk);
      } catch (e) {
        return garbled((e as Error).message);
      }
      for (const b of bodies) {
        const r = asReply(b);
        if (typeof r === 'string') return garbled(r);
        if ('error' in r) return fail(new CtlError(r.error.message, r.error.field));
        results.push(r.result);
      }
      if (results.length === calls.length) {
        done = true;
        sock.end();
        resolve(results);
      }
    });
    sock.on('end', () => {
      if (results.length < calls.length)
        fail(
          reader.pending
            ? unreachable(`the reply from ${path} is not a vhost-bridge reply (it ends inside a frame)`)
            : unreachable(`${path}: the daemon closed the connection before replying`),
        );
    });
  });
}

/** Rows under a header, columns padded to their widest cell. */
export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const w = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function duration(ms: number | null): string {
  if (ms === null) return '-';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
}

const c = (x: Counters | null, k: keyof Counters): string | number => (x ? x[k] : '-');
const yes = (b: boolean): string => (b ? 'yes' : '-');

export interface PortRow {
  name: string;
  state: string;
  tap: string;
  role: string;
  socket: string;
  queues: number;
  frontEnd: boolean;
  error: string | null;
}

export function formatPorts(ports: PortRow[]): string {
  if (!ports.length) return 'no ports';
  return table(
    ['PORT', 'STATE', 'FRONT-END', 'TAP', 'QUEUES', 'ROLE', 'SOCKET'],
    ports.map((p) => [
      p.name,
      p.state,
      p.frontEnd ? 'connected' : '-',
      p.tap,
      p.queues,
      p.role,
      p.state === 'failed' ? `${p.socket} (${p.error})` : p.socket,
    ]),
  );
}

export function formatStats(stats: PortStats[]): string {
  if (!stats.length) return 'no ports';
  return table(
    [
      'PORT',
      'STATE',
      'FRONT-END',
      'RX PKTS',
      'RX BYTES',
      'RX DROP',
      'TX PKTS',
      'TX BYTES',
      'TX DROP',
      'RECONNECTS',
      'RESETS',
    ],
    stats.map((s) => [
      s.name,
      s.state,
      s.frontEnd ? 'connected' : '-',
      c(s.rx, 'packets'),
      c(s.rx, 'bytes'),
      c(s.rx, 'dropped'),
      c(s.tx, 'packets'),
      c(s.tx, 'bytes'),
      c(s.tx, 'dropped'),
      s.reconnects,
      s.resets,
    ]),
  );
}

function ringRows(rings: RingStatus[]): string[] {
  if (!rings.length) return ['  rings      none configured'];
  const t = table(
    ['ring', 'size', 'started', 'enabled', 'attached', 'kick', 'call', 'err', 'avail', 'used'],
    rings.map((r) => [
      r.index,
      r.size ?? '-',
      yes(r.started),
      yes(r.enabled),
      yes(r.attached),
      yes(r.kick),
      yes(r.call),
      yes(r.err),
      r.availIdx ?? '-',
      r.usedIdx ?? '-',
    ]),
  );
  return t.split('\n').map((l, i) => `  ${i === 0 ? 'rings' : ''}`.padEnd(13) + l);
}

/** One port, as `ctl status PORT` prints it. */
export function formatStatus(r: PortReport): string {
  const state = `${r.state}${r.error ? ` (${r.error})` : ''}`;
  const origin = r.origin === 'config' ? 'configuration' : 'control socket';
  const counts = `${r.reconnects} reconnect(s), ${r.resets} reset(s)`;
  const out = [`${r.name}: ${state}, up ${duration(r.uptimeMs)}, ${counts}, from the ${origin}`];
  out.push(`  socket     ${r.socket} (${r.role}), ${r.queues} queue pair(s)`);
  const d = r.device;
  if (d) {
    const peer = r.peer ? ` by pid ${r.peer.pid} (uid ${r.peer.uid}, gid ${r.peer.gid})` : '';
    out.push(`  front-end  ${d.frontEnd ? `connected${peer}` : 'none'}, ${d.sessions} session(s)`);
    const names = (list: readonly string[]) => (list.length ? ` ${list.join(' ')}` : '');
    out.push(`  features   ${d.features.negotiated ?? 'not negotiated'}${names(d.features.negotiatedNames)}`);
    out.push(`  protocol   ${d.features.protocol ?? '-'}${names(d.features.protocolNames)}`);
    out.push(`  offered    ${d.features.offered} ${d.features.offeredNames.join(' ')}`);
    out.push(...ringRows(d.rings));
    const dp = d.datapath;
    const kernel = dp.kernelBusyPollUs.length ? ` (kernel: ${dp.kernelBusyPollUs.join(' ')})` : '';
    out.push(
      `  datapath   vhost-net on ${dp.socket} ${dp.interface}, busy poll ` +
        `${busyPollText(dp.busyPollUs)}${kernel}, zero-copy tx ${zeroCopyText(dp.zeroCopyTx)}`,
    );
    const regions = d.memory.regions.map((m) => `${m.guestAddr}+${m.size}`).join(', ');
    out.push(
      `  memory     ${d.memory.regions.length} ` +
        `region(s)${regions ? `: ${regions}` : ''}${d.memory.dirtyLog ? ', dirty log' : ''}`,
    );
  }
  for (const w of r.workers ?? []) {
    const who = w.kind === 'thread' ? `thread ${w.pid} of the daemon` : `kthread ${w.pid}`;
    const placed = !w.placement
      ? ''
      : w.placement.error === null
        ? ` (placed by workerCgroup ${w.placement.cgroup})`
        : ` (NOT placed in workerCgroup ${w.placement.cgroup}: ${w.placement.error})`;
    out.push(`  worker     pair ${w.pair}: ${who}, ${w.cpuTicks} ticks, cgroup ${w.cgroup ?? '-'}${placed}`);
  }
  const t = r.tap;
  if (t) {
    out.push(
      `  tap        ${t.name} ${t.link}${t.carrier === null ? '' : t.carrier ? ' carrier' : ' no-carrier'} mtu ` +
        `${t.mtu ?? '-'}`,
    );
    out.push(
      `  from guest ${c(t.rx, 'packets')} packets, ${c(t.rx, 'bytes')} bytes, ${c(t.rx, 'dropped')} dropped (tap rx)`,
    );
    out.push(
      `  to guest   ${c(t.tx, 'packets')} packets, ${c(t.tx, 'bytes')} bytes, ${c(t.tx, 'dropped')} dropped (tap tx)`,
    );
  }
  return out.join('\n');
}

/** `ctl add FILE`: the file has the configuration file's shape, `{"ports": {name: settings, ...}}`. */
export function portsOfFile(file: string): [string, Record<string, unknown>][] {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CtlError(`${file}: ${(e as Error).message}`);
  }
  const ports = (doc as { ports?: unknown } | null)?.ports;
  if (typeof ports !== 'object' || ports === null || Array.isArray(ports)) {
    throw new CtlError(`${file}: expected {"ports": {"<name>": {<settings>}}} as in the daemon's configuration`);
  }
  return Object.entries(ports as Record<string, Record<string, unknown>>);
}

/** What `ctl reload` prints: what the reload changed, or that nothing did, and the ports left failed. */
export function formatReload(r: ReloadResult): string {
  const names = (l: string[]) => (l.length ? l.join(', ') : 'none');
  const out =
    r.added.length + r.removed.length + r.changed.length === 0
      ? [`reloaded: nothing changed (${r.unchanged.length} port(s) of the file run as it says)`]
      : [
          `reloaded: added ${names(r.added)}; removed ${names(r.removed)}; changed ${names(r.changed)}; ` +
            `${r.unchanged.length} unchanged`,
        ];
  for (const f of r.failed) out.push(`${f.name}: not running (${f.error})`);
  return out.join('\n');
}
