/**
 * `serve --metrics ADDRESS`: a Prometheus endpoint (`GET /metrics`, text format 0.0.4) with every
 * port's state and counters, built with prom-client. Everything is read when scraped: each metric's
 * `collect()` reads one snapshot of the ports taken for that scrape (the port's status, the tap's
 * counters from sysfs: report.ts). There are no timers, no default metrics and no event-loop monitor
 * (prom-client's collectDefaultMetrics is what would start those), and the HTTP side is a plain
 * `net` server answering one request per connection (node:http keeps a 30 s connection-checking
 * interval running), so an idle daemon with metrics on stays idle (docs/operating.md).
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
import { type Counters, portStats } from './report.js';

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

/** The most requests served at once, and the most bytes of a request's head. */
const MAX_CLIENTS = 16;
const MAX_HEAD = 8192;

function respond(sock: Socket, status: string, type: string, body: string): void {
  const b = Buffer.from(body);
  sock.end(
    `HTTP/1.1 ${status}\r\nContent-Type: ${type}\r\nContent-Length: ${b.length}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** The HTTP side: one request per connection, `GET /metrics` only. */
export class MetricsServer {
  private constructor(
    private readonly server: Server,
    /** Where it listens, as the log says it (`http://127.0.0.1:9101/metrics`, or the socket path). */
    readonly where: string,
  ) {}

  /** Listen on `address` (HOST:PORT or an absolute unix socket path, made mode 0660). */
  static listen(address: string, registry: Registry, log: Logger): Promise<MetricsServer> {
    const server = createServer((sock) => {
      let head = '';
      sock.on('error', () => sock.destroy());
      sock.on('data', (d) => {
        head += d.toString('latin1');
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length > MAX_HEAD) respond(sock, '431 Request Header Fields Too Large', 'text/plain', 'too long\n');
          return;
        }
        sock.removeAllListeners('data');
        const [method, path] = head.slice(0, head.indexOf('\r\n')).split(' ');
        if (method !== 'GET') respond(sock, '405 Method Not Allowed', 'text/plain', 'GET /metrics\n');
        else if (path !== '/metrics') respond(sock, '404 Not Found', 'text/plain', 'GET /metrics\n');
        else
          registry.metrics().then(
            (text) => respond(sock, '200 OK', registry.contentType, text),
            (e: Error) => {
              log.error(`metrics: ${e.message}`);
              respond(sock, '500 Internal Server Error', 'text/plain', `${e.message}\n`);
            },
          );
      });
    });
    server.maxConnections = MAX_CLIENTS; // more are closed at once by net.Server
    const unix = address.startsWith('/');
    if (unix) removeStaleSocket(address, log);
    const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(address);
    if (!unix && !m) return Promise.reject(new Error(`--metrics ${address}: expected HOST:PORT or a socket path`));
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`--metrics ${address}: ${e.message}`)));
      const listening = () => {
        let where = address;
        if (unix) chmodSync(address, 0o660);
        else {
          const a = server.address();
          if (a && typeof a === 'object')
            where = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`;
        }
        log.info(`metrics on ${where}`);
        resolve(new MetricsServer(server, where));
      };
      if (unix) server.listen(address, listening);
      else server.listen(Number(m![2]), m![1], listening);
    });
  }

  close(): void {
    this.server.close();
    if (this.where.startsWith('/')) rmSync(this.where, { force: true });
  }
}
