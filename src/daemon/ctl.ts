/**
 * The control socket's client (`vhost-bridge ctl ...`): one request per connection, and the
 * replies as tables for people (or as JSON with --json, for machines).
 */
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { busyPollText, type RingStatus, zeroCopyText } from '../bridge/status.js';
import { decodeBody, encodeFrame, FrameReader, MAX_REPLY, type Reply } from './protocol.js';
import type { Counters, PortReport, PortStats } from './report.js';

/** An error reply of the daemon, or no daemon to ask. */
export class CtlError extends Error {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'CtlError';
  }
}

/** Send requests over one connection and return their results in order; an error reply rejects. */
export function request(
  path: string,
  calls: { method: string; params?: Record<string, unknown> }[],
  timeoutMs = 30_000,
): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    const reader = new FrameReader(MAX_REPLY);
    const results: unknown[] = [];
    const fail = (e: Error) => {
      sock.destroy();
      reject(e);
    };
    sock.setTimeout(timeoutMs, () => fail(new CtlError(`no reply from ${path} within ${timeoutMs / 1000} s`)));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      const hint =
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? ' (is `vhost-bridge serve` running? --control PATH)'
          : e.code === 'EACCES'
            ? " (root or the control socket's group may use it)"
            : '';
      fail(new CtlError(`${path}: ${e.message}${hint}`));
    });
    sock.on('connect', () => {
      sock.write(Buffer.concat(calls.map((c, id) => encodeFrame({ id, method: c.method, params: c.params ?? {} }))));
    });
    sock.on('data', (chunk: Buffer) => {
      let bodies: Buffer[];
      try {
        bodies = reader.push(chunk);
      } catch (e) {
        return fail(new CtlError(`bad reply: ${(e as Error).message}`));
      }
      for (const b of bodies) {
        const r = decodeBody(b) as Reply;
        if ('error' in r) return fail(new CtlError(r.error.message, r.error.field));
        results.push(r.result);
      }
      if (results.length === calls.length) {
        sock.end();
        resolve(results);
      }
    });
    sock.on('end', () => {
      if (results.length < calls.length)
        fail(new CtlError(`${path}: the daemon closed the connection before replying`));
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
