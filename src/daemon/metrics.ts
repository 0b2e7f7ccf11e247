/**
 * `serve --metrics ADDRESS`: a Prometheus endpoint (`GET /metrics`, text format 0.0.4) with every
 * port's state and counters, built with prom-client. Everything is read when scraped: each metric's
 * `collect()` reads one snapshot of the ports taken for that scrape (the port's status, the tap's
 * counters from sysfs: report.ts). There are no timers, no default metrics and no event-loop monitor
 * (prom-client's collectDefaultMetrics is what would start those), and the HTTP side is a plain
 * `net` server answering one request per connection (node:http keeps a 30 s connection-checking
 * interval running), so an idle daemon with metrics on stays idle (docs/operating.md). Beside it,
 * `GET /healthz` answers 200 when every port serves and 503 otherwise, with one line.
 *
 * ADDRESS is `HOST:PORT` (`127.0.0.1:9101`, `[::1]:9101`) or the absolute path of a unix socket.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import type { Logger } from '../log.js';
import { removeStaleSocket } from '../vhost-user/transport.js';
import type { ControlServer } from './control.js';
import type { PortManager } from './manager.js';
import { type Counters, type Health, healthLine, healthOf, portStats } from './report.js';

/** One port at scrape time. */
interface PortSample {
  name: string;
  up: boolean;
  frontEnd: boolean;
  ringsRunning: number;
  memoryBytes: number;
  memoryRegions: number;
  reconnects: number;
  resets: number;
  refusedPeers: number;
  fromGuest: Counters | null;
  toGuest: Counters | null;
}

function sample(manager: PortManager): PortSample[] {
  return manager.list().map((p) => {
    const stats = manager.guard(p, 'metrics', () => portStats(p)) ?? portStats({ ...p, port: null });
    const status = (p.port && manager.guard(p, 'metrics', () => p.port?.status())) || null;
    return {
      name: p.name,
      up: stats.state === 'running',
      frontEnd: stats.frontEnd,
      ringsRunning: status?.rings.filter((r) => r.attached).length ?? 0,
      memoryBytes: status?.memory.regions.reduce((t, r) => t + Number(BigInt(r.size)), 0) ?? 0,
      memoryRegions: status?.memory.regions.length ?? 0,
      reconnects: stats.reconnects,
      resets: stats.resets,
      refusedPeers: status?.refusedPeers ?? 0,
      // The tap's rx is what came from the guest, its tx what went to it (report.ts TapReport).
      fromGuest: stats.rx,
      toGuest: stats.tx,
    };
  });
}

/** What `/healthz` reads: the manager's ports now. */
export const daemonHealth = (manager: PortManager) => (): Health => healthOf(manager.list());

/**
 * The daemon's metrics. Each scrape calls `registry.metrics()`; the first collect() of that scrape
 * takes the snapshot, the others read it (so one scrape reads sysfs once per port).
 */
export function daemonRegistry(manager: PortManager, control: ControlServer | null): Registry {
  const registry = new Registry();
  let snap: PortSample[] | null = null;
  const ports = (): PortSample[] => {
    snap ??= sample(manager);
    return snap;
  };
  const perPort = (name: string, help: string, value: (s: PortSample) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['port'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of ports()) this.set({ port: s.name }, value(s));
      },
    });
  const perPortCounter = (name: string, help: string, value: (s: PortSample) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['port'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of ports()) this.inc({ port: s.name }, value(s));
      },
    });
  const tapCounter = (name: string, help: string, field: keyof Counters) =>
    new Counter({
      name,
      help,
      labelNames: ['port', 'direction'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of ports()) {
          if (s.fromGuest) this.inc({ port: s.name, direction: 'from_guest' }, s.fromGuest[field]);
          if (s.toGuest) this.inc({ port: s.name, direction: 'to_guest' }, s.toGuest[field]);
        }
      },
    });

  new Gauge({
    name: 'vhost_bridge_ports',
    help: 'Ports configured (running or failed).',
    registers: [registry],
    collect() {
      snap = null; // registered first: a new scrape begins here
      this.set(ports().length);
    },
  });
  perPort('vhost_bridge_port_up', '1 if the port serves its socket, 0 if it failed to start.', (s) => +s.up);
  perPort('vhost_bridge_port_frontend_connected', '1 if a front-end (VMM) is connected.', (s) => +s.frontEnd);
  perPort(
    'vhost_bridge_port_rings_running',
    'Rings attached to the tap (VHOST_NET_SET_BACKEND).',
    (s) => s.ringsRunning,
  );
  perPort(
    'vhost_bridge_port_guest_memory_bytes',
    'Guest memory the front-end shared and the port maps.',
    (s) => s.memoryBytes,
  );
  perPort('vhost_bridge_port_memory_regions', 'Guest memory regions mapped.', (s) => s.memoryRegions);
  tapCounter('vhost_bridge_port_tap_packets_total', "Packets through the port's tap, by direction.", 'packets');
  tapCounter('vhost_bridge_port_tap_bytes_total', "Bytes through the port's tap, by direction.", 'bytes');
  tapCounter('vhost_bridge_port_tap_dropped_total', "Packets the port's tap dropped, by direction.", 'dropped');
  perPortCounter('vhost_bridge_port_reconnects_total', 'Front-end connections after the first.', (s) => s.reconnects);
  perPortCounter('vhost_bridge_port_resets_total', 'Resets (ctl reset, or after an internal error).', (s) => s.resets);
  perPortCounter(
    'vhost_bridge_port_refused_peers_total',
    "Peers outside the port's allow-list, closed before any message was read.",
    (s) => s.refusedPeers,
  );
  new Counter({
    name: 'vhost_bridge_control_refused_peers_total',
    help: "Clients outside the control socket's allow-list, closed before any request was read.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(control?.refused ?? 0);
    },
  });
  return registry;
}

/**
 * The most connections held at once, and the most bytes of a request's head. A connection that has
 * not sent its whole head is idle: when all {@link MAX_CLIENTS} are taken, a new one closes the
 * oldest idle one (never one being answered), so that idle clients cannot keep a scrape out.
 */
const MAX_CLIENTS = 16;
const MAX_HEAD = 8192;
/**
 * A request's head must arrive within this time of the connect (node:http's headersTimeout), and a
 * connection whose answer is not read for as long is dropped (its server.timeout). The timers exist
 * only while a connection does: an idle daemon has none.
 */
export const HEAD_TIMEOUT_MS = 5000;
export const IDLE_TIMEOUT_MS = 10_000;

function respond(sock: Socket, status: string, type: string, body: string): void {
  const b = Buffer.from(body);
  sock.end(
    `HTTP/1.1 ${status}\r\nContent-Type: ${type}\r\nContent-Length: ${b.length}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** Where --metrics listens: a TCP host and port, or a unix socket path. */
export type MetricsAddress = { host: string; port: number } | { path: string };

/** Parse --metrics ADDRESS, or throw an Error with one line naming it (before any port starts). */
export function parseMetricsAddress(address: string): MetricsAddress {
  const bad = (why: string) => new Error(`--metrics ${address}: ${why}`);
  if (address.startsWith('/')) {
    const n = Buffer.byteLength(address);
    if (n > 107) throw bad(`${n} bytes is too long for a unix socket path (at most 107)`);
    return { path: address };
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(address);
  if (!m) throw bad('expected HOST:PORT (127.0.0.1:9101, [::1]:9101) or the absolute path of a unix socket');
  const port = Number(m[3]);
  if (port > 65535) throw bad(`port ${m[3]} is not a TCP port (0 to 65535)`);
  return { host: m[1] ?? m[2], port };
}

/** What a scrape reads: the registry, and for /healthz the ports' health. */
export interface MetricsContent {
  registry: Registry;
  health: () => Health;
}

/** The HTTP side: one request per connection, `GET /metrics` and `GET /healthz`. */
export class MetricsServer {
  private content: MetricsContent | null = null;
  /** Open connections, oldest first, each with whether its head is still awaited. */
  private readonly conns = new Map<Socket, { idle: boolean }>();

  private constructor(
    private readonly server: Server,
    /** Where it listens, as the log says it (`http://127.0.0.1:9101/metrics`, or the socket path). */
    readonly where: string,
    private readonly log: Logger,
  ) {}

  /**
   * Listen on `address` (HOST:PORT or an absolute unix socket path, made mode 0660). Without
   * `content` yet (it is given by {@link serve} once the daemon runs) a request gets 503.
   */
  static listen(address: string, content: MetricsContent | null, log: Logger): Promise<MetricsServer> {
    let addr: MetricsAddress;
    try {
      addr = parseMetricsAddress(address);
    } catch (e) {
      return Promise.reject(e);
    }
    const server = createServer();
    if ('path' in addr) removeStaleSocket(addr.path, log);
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`--metrics ${address}: ${e.message}`)));
      const listening = () => {
        let where = address;
        if ('path' in addr) chmodSync(addr.path, 0o660);
        else {
          const a = server.address();
          if (a && typeof a === 'object')
            where = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`;
        }
        const m = new MetricsServer(server, where, log);
        if (content) m.serve(content);
        server.on('connection', (sock) => m.accept(sock));
        log.info(`metrics on ${where}`);
        resolve(m);
      };
      if ('path' in addr) server.listen(addr.path, listening);
      else server.listen(addr.port, addr.host, listening);
    });
  }

  /** What to answer with from here on. */
  serve(content: MetricsContent): void {
    this.content = content;
  }

  /** Connections held (tests). */
  get connections(): number {
    return this.conns.size;
  }

  private accept(sock: Socket): void {
    if (this.conns.size >= MAX_CLIENTS) {
      const idle = [...this.conns].find(([, c]) => c.idle)?.[0];
      if (!idle) {
        sock.destroy();
        return;
      }
      idle.destroy();
      this.conns.delete(idle);
    }
    const state = { idle: true };
    this.conns.set(sock, state);
    const headTimer = setTimeout(() => sock.destroy(), HEAD_TIMEOUT_MS);
    sock.setTimeout(IDLE_TIMEOUT_MS, () => sock.destroy());
    sock.on('close', () => {
      clearTimeout(headTimer);
      this.conns.delete(sock);
    });
    sock.on('error', () => sock.destroy());
    let head = '';
    sock.on('data', (d) => {
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_HEAD) {
          sock.removeAllListeners('data');
          state.idle = false;
          respond(sock, '431 Request Header Fields Too Large', 'text/plain', 'too long\n');
        }
        return;
      }
      sock.removeAllListeners('data');
      clearTimeout(headTimer);
      state.idle = false;
      const [method, path] = head.slice(0, head.indexOf('\r\n')).split(' ');
      this.answer(sock, method, path);
    });
  }

  private answer(sock: Socket, method: string, path: string): void {
    const content = this.content;
    if (method !== 'GET') respond(sock, '405 Method Not Allowed', 'text/plain', 'GET /metrics or /healthz\n');
    else if (path !== '/metrics' && path !== '/healthz')
      respond(sock, '404 Not Found', 'text/plain', 'GET /metrics or /healthz\n');
    else if (!content) respond(sock, '503 Service Unavailable', 'text/plain', 'starting\n');
    else if (path === '/healthz') {
      const h = content.health();
      const ok = h.failed.length === 0;
      respond(
        sock,
        ok ? '200 OK' : '503 Service Unavailable',
        'text/plain',
        `${ok ? 'ok' : 'degraded'}: ${healthLine(h)}\n`,
      );
    } else
      content.registry.metrics().then(
        (text) => respond(sock, '200 OK', content.registry.contentType, text),
        (e: Error) => {
          this.log.error(`metrics: ${e.message}`);
          respond(sock, '500 Internal Server Error', 'text/plain', `${e.message}\n`);
        },
      );
  }

  close(): void {
    this.server.close();
    for (const sock of this.conns.keys()) sock.destroy();
    if (this.where.startsWith('/')) rmSync(this.where, { force: true });
  }
}
