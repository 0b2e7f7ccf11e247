/**
 * The daemon's command lines: `vhost-bridge serve --config FILE` (many ports in one process) and
 * `vhost-bridge ctl ...` (its control socket's client). The one-port mode (src/one-port.ts) is
 * another entry of the same binary (src/cli.ts).
 */
import { Command, Option } from 'commander';
import { FORMATS, LEVELS, log, setLogFormat, setLogLevel } from '../log.js';
import { stopOnSignals } from '../signals.js';
import { ConfigError, DEFAULT_CONTROL_PATH } from './config.js';
import { CtlError, formatPorts, formatStats, formatStatus, type PortRow, portsOfFile, request } from './ctl.js';
import { Daemon } from './daemon.js';
import { groupId, primaryGroup, userId } from '../host/ids.js';
import { daemonRegistry, MetricsServer } from './metrics.js';
import { socketDirsCreated } from './socket-dir.js';
import { dropPrivileges } from './privileges.js';
import type { PortReport, PortStats } from './report.js';
import type { VhostWorker } from '../vhost-kernel/workers.js';

const SERVE_HELP = `
The configuration (JSON; every field but "tap" is optional):
  { "control": { "path": "${DEFAULT_CONTROL_PATH}", "mode": "0660", "group": "kvm" },
    "ports": {
      "vm1": { "tap": "vbtap1", "queues": 2, "mtu": 1500, "owner": "libvirt-qemu", "mode": "0600" },
      "vm2": { "tap": "vbtap2", "persistentTap": true, "socket": "/run/vhost-bridge/vm2.sock" },
      "vm3": { "tap": "vbtap3", "role": "client", "socket": "/run/qemu/vm3-net0.sock" } } }
A port's socket defaults to /run/vhost-bridge/<port>.sock (role server: QEMU connects to it).
SIGHUP reloads the file: added ports start, removed ones stop, changed ones restart, the others are
not touched. systemd socket activation: one .socket unit per port with FileDescriptorName=<port>
(and FileDescriptorName=control for the control socket). See examples/.`;

function serveCommand(): Command {
  return new Command('serve')
    .description('serve many ports (vhost-user socket + tap each) in one process, with a control socket')
    .requiredOption('--config <file>', 'the JSON configuration')
    .addOption(new Option('--log-level <level>', 'error, warn, info or debug').choices(LEVELS).default('info'))
    .addOption(
      new Option('--log-format <format>', 'text lines, or one JSON object per line (pino)')
        .choices(FORMATS)
        .default('text'),
    )
    .option(
      '--metrics <address>',
      'serve Prometheus metrics on HOST:PORT (127.0.0.1:9101) or a unix socket path, read when scraped',
    )
    .option('--user <user>', 'after start-up, drop root for this user (name or id): no capabilities are left')
    .option('--group <group>', "with --user: the group (default: the user's primary group)")
    .addHelpText('after', SERVE_HELP)
    .action((o: ServeOptions) => serve(o));
}

interface ServeOptions {
  config: string;
  logLevel: string;
  logFormat: string;
  metrics?: string;
  user?: string;
  group?: string;
}

/** --user/--group as ids; exits with a message if they name nobody. */
function dropTarget(o: ServeOptions): { uid: number; gid: number } | null {
  if (o.user === undefined) {
    if (o.group !== undefined) fail('--group needs --user');
    return null;
  }
  const uid = userId(o.user);
  if (uid === null) fail(`--user: no user '${o.user}' (/etc/passwd)`);
  const gid = o.group !== undefined ? groupId(o.group) : primaryGroup(uid);
  if (gid === null)
    fail(o.group !== undefined ? `--group: no group '${o.group}' (/etc/group)` : `--user: no group for uid ${uid}`);
  return { uid, gid };
}

function fail(message: string): never {
  process.stderr.write(`vhost-bridge serve: ${message}\n`);
  process.exit(1);
}

async function serve(o: ServeOptions): Promise<void> {
  const configFile = o.config;
  setLogLevel(o.logLevel);
  setLogFormat(o.logFormat);
  const dropTo = dropTarget(o);
  // A port's failure is handled where it happens (manager.ts); this is the last line of defence, so
  // that a bug outside any port's guard is seen and the other ports keep serving.
  process.on('uncaughtException', (e) => log.error(`internal error outside any port: ${e.stack ?? e}`));
  let daemon: Daemon;
  try {
    daemon = Daemon.start({ configFile, log });
  } catch (e) {
    process.stderr.write(`vhost-bridge serve: ${(e as Error).message}\n`);
    process.exit(1);
  }
  let metrics: MetricsServer | null = null;
  if (o.metrics !== undefined) {
    try {
      metrics = await MetricsServer.listen(o.metrics, daemonRegistry(daemon.manager, daemon.control), log);
    } catch (e) {
      daemon.close();
      fail((e as Error).message);
    }
  }
  if (dropTo) {
    try {
      dropPrivileges(dropTo.uid, dropTo.gid, socketDirsCreated(), log);
    } catch (e) {
      metrics?.close();
      daemon.close();
      fail((e as Error).message);
    }
  }
  process.on('SIGHUP', () => {
    log.info(`SIGHUP: reloading ${configFile}`);
    try {
      daemon.reload();
    } catch (e) {
      const what = e instanceof ConfigError ? 'the configuration is not valid' : 'failed';
      log.error(`reload ${what}; the running ports are kept as they are:\n${(e as Error).message}`);
    }
  });
  stopOnSignals(() => {
    metrics?.close();
    daemon.close();
  }, log);
}

/** `2 threads of the daemon (tid 301 42 ticks, tid 305 40 ticks)`, or `none`. */
function formatWorkers(ws: VhostWorker[]): string {
  if (!ws.length) return 'none';
  const kinds = [...new Set(ws.map((w) => (w.kind === 'thread' ? 'threads of the daemon' : 'kernel threads')))];
  const id = (w: VhostWorker) => `${w.kind === 'thread' ? 'tid' : 'pid'} ${w.pid} ${w.cpuTicks} ticks`;
  return `${ws.length} ${kinds.join(' and ')} (${ws.map(id).join(', ')})`;
}

interface CtlOptions {
  json?: boolean;
  control: string;
}

function print(o: CtlOptions, value: unknown, human: () => string): void {
  process.stdout.write(`${o.json ? JSON.stringify(value, null, 2) : human()}\n`);
}

async function ctl(o: CtlOptions, run: (o: CtlOptions) => Promise<void>): Promise<void> {
  try {
    await run(o);
  } catch (e) {
    if (!(e instanceof CtlError)) throw e;
    process.stderr.write(`vhost-bridge ctl: ${e.message}\n`);
    process.exitCode = 1;
  }
}

function ctlCommand(): Command {
  const cmd = new Command('ctl').description('ask a running `vhost-bridge serve` through its control socket');
  const leaf = (name: string, description: string) =>
    cmd
      .command(name)
      .description(description)
      .option('--json', 'print the reply as JSON')
      .option('--control <path>', 'the control socket', DEFAULT_CONTROL_PATH);
  leaf('ports', 'list the ports').action((o: CtlOptions) =>
    ctl(o, async () => {
      const [ports] = await request(o.control, [{ method: 'ports' }]);
      print(o, ports, () => formatPorts(ports as PortRow[]));
    }),
  );
  leaf('status [port]', "a port's front-end, features, rings, memory and tap (every port without PORT)").action(
    (port: string | undefined, o: CtlOptions) =>
      ctl(o, async () => {
        const names = port
          ? [port]
          : ((await request(o.control, [{ method: 'ports' }]))[0] as PortRow[]).map((p) => p.name);
        const reports = (await request(
          o.control,
          names.map((n) => ({ method: 'status', params: { port: n } })),
        )) as PortReport[];
        print(o, port ? reports[0] : reports, () =>
          reports.length ? reports.map(formatStatus).join('\n\n') : 'no ports',
        );
      }),
  );
  leaf('stats', "every port's counters").action((o: CtlOptions) =>
    ctl(o, async () => {
      const [stats] = await request(o.control, [{ method: 'stats' }]);
      print(o, stats, () => formatStats(stats as PortStats[]));
    }),
  );
  leaf(
    'add <file>',
    'add the ports of FILE ({"ports": {...}} as in the configuration); they last until a restart',
  ).action((file: string, o: CtlOptions) =>
    ctl(o, async () => {
      const ports = portsOfFile(file);
      const added: PortReport[] = [];
      for (const [name, config] of ports)
        added.push(...((await request(o.control, [{ method: 'add', params: { name, config } }])) as PortReport[]));
      print(o, added, () =>
        added.map((r) => `${r.name}: added, ${r.state}${r.error ? ` (${r.error})` : ''}`).join('\n'),
      );
    }),
  );
  leaf('remove <port>', 'stop a port and forget it').action((port: string, o: CtlOptions) =>
    ctl(o, async () => {
      const [r] = await request(o.control, [{ method: 'remove', params: { port } }]);
      print(o, r, () => `${port}: removed`);
    }),
  );
  leaf('reset <port>', "drop a port's front-end (it reconnects) or restart a failed port").action(
    (port: string, o: CtlOptions) =>
      ctl(o, async () => {
        const [r] = (await request(o.control, [{ method: 'reset', params: { port } }])) as PortReport[];
        print(o, r, () => `${port}: reset, ${r.state}${r.error ? ` (${r.error})` : ''}`);
      }),
  );
  leaf('version', "the daemon's version, pid, uptime and vhost workers").action((o: CtlOptions) =>
    ctl(o, async () => {
      const [v] = await request(o.control, [{ method: 'version' }]);
      print(o, v, () =>
        Object.entries(v as Record<string, unknown>)
          .map(([k, x]) => `${k}: ${k === 'vhostWorkers' ? formatWorkers(x as VhostWorker[]) : x}`)
          .join('\n'),
      );
    }),
  );
  return cmd;
}

/** Run `serve` or `ctl` (argv: the arguments after the program, starting with the subcommand). */
export async function main(argv: string[]): Promise<void> {
  const program = new Command()
    .name('vhost-bridge')
    .showHelpAfterError('(add --help for usage)')
    .addCommand(serveCommand())
    .addCommand(ctlCommand());
  await program.parseAsync(argv, { from: 'user' });
}
