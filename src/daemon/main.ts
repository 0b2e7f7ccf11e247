/**
 * The daemon's command lines: `vhost-bridge serve --config FILE` (many ports in one process) and
 * `vhost-bridge ctl ...` (its control socket's client). The one-port mode (src/one-port.ts) is
 * another entry of the same binary (src/cli.ts).
 */
import { existsSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { FORMATS, LEVELS, log, setLogFormat, setLogLevel } from '../log.js';
import { stopOnSignals } from '../signals.js';
import { ConfigError, DEFAULT_CONTROL_PATH, loadConfig, type PortConfig } from './config.js';
import {
  CtlError,
  DEFAULT_TIMEOUT_S,
  EXIT,
  EXIT_HELP,
  formatPorts,
  formatReload,
  formatStats,
  formatStatus,
  type PortRow,
  portsOfFile,
  request,
} from './ctl.js';
import { Daemon } from './daemon.js';
import { groupId, primaryGroup, userId } from '../host/ids.js';
import { daemonHealth, daemonRegistry, MetricsServer, parseMetricsAddress } from './metrics.js';
import { socketDirsCreated } from './socket-dir.js';
import { dropPrivileges } from './privileges.js';
import { type Health, healthLine, type PortReport, type PortStats } from './report.js';
import type { ReloadResult } from './manager.js';
import type { VhostWorker } from '../vhost-kernel/workers.js';
import { TUN_PATH } from '../vhost-kernel/tap.js';
import { VERSION } from '../version.js';

const SERVE_HELP = `
The configuration (JSON; every field but "tap" is optional):
  { "control": { "path": "${DEFAULT_CONTROL_PATH}", "mode": "0660", "group": "kvm" },
    "ports": {
      "vm1": { "tap": "vbtap1", "queues": 2, "mtu": 1500, "owner": "libvirt-qemu", "mode": "0600" },
      "vm2": { "tap": "vbtap2", "persistentTap": true, "socket": "/run/vhost-bridge/vm2.sock" },
      "vm3": { "tap": "vbtap3", "role": "client", "socket": "/run/qemu/vm3-net0.sock" } } }
A port's socket defaults to /run/vhost-bridge/<port>.sock (role server: QEMU connects to it).
SIGHUP reloads the file: added ports start, removed ones stop, changed ones restart, the others are
not touched; a file that moves control.path is refused (the control socket moves at a restart).
systemd socket activation: one .socket unit per port with FileDescriptorName=<port> (and
FileDescriptorName=control for the control socket). See examples/.
When no port can start because /dev/vhost-net (or /dev/net/tun, for taps) is missing, serve exits
with status 1, unless --wait-for-kernel: then it stays up, and ctl reset PORT or a reload starts them.

Examples:
  vhost-bridge serve --check --config /etc/vhost-bridge.json     (exit 0: the file would start)
  vhost-bridge serve --config /etc/vhost-bridge.json --metrics 127.0.0.1:9101 --user vhost-bridge`;

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
    .option(
      '--check',
      'check the configuration and the options as a start would, print the same errors, and exit (0: valid); ' +
        'binds nothing, creates nothing, opens no device',
    )
    .option('--wait-for-kernel', 'stay up when /dev/vhost-net or /dev/net/tun is missing for every port (see below)')
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
  check?: boolean;
  waitForKernel?: boolean;
}

/**
 * Why no port could start when the cause is the host, not a port: /dev/vhost-net missing (every
 * port needs it), or /dev/net/tun missing when every port is on a tap. Null otherwise.
 */
export function kernelMissing(
  specs: readonly PortConfig[],
  exists: (path: string) => boolean = existsSync,
): string | null {
  const missing: string[] = [];
  if (!exists('/dev/vhost-net')) missing.push('/dev/vhost-net (modprobe vhost_net)');
  if (specs.length && specs.every((p) => p.backend === 'tap') && !exists(TUN_PATH))
    missing.push(`${TUN_PATH} (modprobe tun)`);
  return missing.length ? `${missing.join(' and ')} missing` : null;
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

/**
 * `serve --check`: what a start checks before it binds or creates anything (the options, the
 * file), with the same lines; exits 0 if the file would start, 1 with the errors if not.
 */
function check(o: ServeOptions): never {
  let ports: number;
  try {
    ports = loadConfig(o.config).ports.size;
  } catch (e) {
    fail((e as Error).message);
  }
  process.stdout.write(`vhost-bridge serve: ${o.config}: valid, ${ports} port(s)\n`);
  process.exit(0);
}

async function serve(o: ServeOptions): Promise<void> {
  const configFile = o.config;
  setLogLevel(o.logLevel);
  setLogFormat(o.logFormat);
  const dropTo = dropTarget(o);
  if (o.metrics !== undefined) {
    try {
      parseMetricsAddress(o.metrics);
    } catch (e) {
      fail((e as Error).message);
    }
  }
  if (o.check) check(o);
  // A port's failure is handled where it happens (manager.ts); this is the last line of defence, so
  // that a bug outside any port's guard is seen and the other ports keep serving.
  process.on('uncaughtException', (e) => log.error(`internal error outside any port: ${e.stack ?? e}`));
  // The metrics address is taken before any port starts: one that cannot be listened on ends the
  // start there, and a scrape before the ports exist answers 503.
  let metrics: MetricsServer | null = null;
  if (o.metrics !== undefined) {
    try {
      metrics = await MetricsServer.listen(o.metrics, null, log);
    } catch (e) {
      fail((e as Error).message);
    }
  }
  let daemon: Daemon;
  try {
    daemon = Daemon.start({ configFile, log });
  } catch (e) {
    metrics?.close();
    fail((e as Error).message);
  }
  const specs = daemon.manager.list().map((p) => p.config);
  const missing = daemon.manager.list().every((p) => !p.port) ? kernelMissing(specs) : null;
  if (missing && specs.length) {
    if (!o.waitForKernel) {
      metrics?.close();
      daemon.close();
      fail(`no port can start: ${missing} (--wait-for-kernel to stay up and start them later)`);
    }
    log.warn(`no port can start: ${missing}; waiting (--wait-for-kernel): ctl reset PORT or a reload starts them`);
  }
  metrics?.serve({ registry: daemonRegistry(daemon.manager, daemon.control), health: daemonHealth(daemon.manager) });
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
  timeout: number;
}

function print(o: CtlOptions, value: unknown, human: () => string): void {
  process.stdout.write(`${o.json ? JSON.stringify(value, null, 2) : human()}\n`);
}

/** Exit status {@link EXIT}.degraded when a port the reply shows is failed. */
function degradedIf(failed: boolean): void {
  if (failed && !process.exitCode) process.exitCode = EXIT.degraded;
}

/** Run one ctl command: every failure ends as one line on stderr and its {@link EXIT} status, never a stack. */
async function ctl(cmd: Command, run: (o: CtlOptions) => Promise<void>): Promise<void> {
  const o = cmd.optsWithGlobals<CtlOptions>();
  try {
    await run(o);
  } catch (e) {
    process.stderr.write(`vhost-bridge ctl: ${(e as Error).message}\n`);
    process.exitCode = e instanceof CtlError ? e.exit : EXIT.error;
  }
}

function seconds(v: string): number {
  const n = Number(v);
  if (!(n > 0 && n <= 3600)) throw new InvalidArgumentError('expected a number of seconds above 0 (at most 3600)');
  return n;
}

const CTL_HELP = `
The options above may come before or after the command: ctl --control PATH ports, ctl ports --json.

Examples:
  vhost-bridge ctl ports
  VHOST_BRIDGE_CONTROL=/run/vb/control.sock vhost-bridge ctl --json status vm1
  vhost-bridge ctl --timeout 1 health || echo "not every port serves"
  vhost-bridge ctl reload          (what the file changed; exit 1 and nothing changed if it is not valid)

${EXIT_HELP}`;

function ctlCommand(): Command {
  const cmd = new Command('ctl')
    .description('ask a running `vhost-bridge serve` through its control socket')
    .addOption(
      new Option('--control <path>', 'the control socket').env('VHOST_BRIDGE_CONTROL').default(DEFAULT_CONTROL_PATH),
    )
    .addOption(
      new Option('--timeout <seconds>', 'how long to wait for a reply').argParser(seconds).default(DEFAULT_TIMEOUT_S),
    )
    .option('--json', 'print the reply as JSON')
    .configureHelp({ showGlobalOptions: true })
    .addHelpText('after', CTL_HELP);
  const leaf = (name: string, description: string) => cmd.command(name).description(description);
  const ask = (o: CtlOptions, calls: { method: string; params?: Record<string, unknown> }[]) =>
    request(o.control, calls, o.timeout * 1000);
  leaf('ports', 'list the ports (exit 4 if one is failed)').action((_: unknown, c: Command) =>
    ctl(c, async (o) => {
      const [ports] = (await ask(o, [{ method: 'ports' }])) as PortRow[][];
      print(o, ports, () => formatPorts(ports));
      degradedIf(ports.some((p) => p.state === 'failed'));
    }),
  );
  leaf('status [port]', "a port's front-end, features, rings, memory and tap (every port without PORT)").action(
    (port: string | undefined, _: unknown, c: Command) =>
      ctl(c, async (o) => {
        const names = port ? [port] : ((await ask(o, [{ method: 'ports' }]))[0] as PortRow[]).map((p) => p.name);
        const reports = (await ask(
          o,
          names.map((n) => ({ method: 'status', params: { port: n } })),
        )) as PortReport[];
        print(o, port ? reports[0] : reports, () =>
          reports.length ? reports.map(formatStatus).join('\n\n') : 'no ports',
        );
        degradedIf(reports.some((r) => r.state === 'failed'));
      }),
  );
  leaf('stats', "every port's counters").action((_: unknown, c: Command) =>
    ctl(c, async (o) => {
      const [stats] = await ask(o, [{ method: 'stats' }]);
      print(o, stats, () => formatStats(stats as PortStats[]));
    }),
  );
  leaf('health', 'how many ports serve, in one line (exit 4 if one is failed)').action((_: unknown, c: Command) =>
    ctl(c, async (o) => {
      const [h] = (await ask(o, [{ method: 'health' }])) as Health[];
      print(o, h, () => healthLine(h));
      degradedIf(h.failed.length > 0);
    }),
  );
  leaf(
    'add <file>',
    'add the ports of FILE ({"ports": {...}} as in the configuration); they last until a restart',
  ).action((file: string, _: unknown, c: Command) =>
    ctl(c, async (o) => {
      const ports = portsOfFile(file);
      const added: PortReport[] = [];
      for (const [name, config] of ports)
        added.push(...((await ask(o, [{ method: 'add', params: { name, config } }])) as PortReport[]));
      print(o, added, () =>
        added.map((r) => `${r.name}: added, ${r.state}${r.error ? ` (${r.error})` : ''}`).join('\n'),
      );
      degradedIf(added.some((r) => r.state === 'failed'));
    }),
  );
  leaf('remove <port>', 'stop a port and forget it').action((port: string, _: unknown, c: Command) =>
    ctl(c, async (o) => {
      const [r] = await ask(o, [{ method: 'remove', params: { port } }]);
      print(o, r, () => `${port}: removed`);
    }),
  );
  leaf('reset <port>', "drop a port's front-end (it reconnects) or restart a failed port").action(
    (port: string, _: unknown, c: Command) =>
      ctl(c, async (o) => {
        const [r] = (await ask(o, [{ method: 'reset', params: { port } }])) as PortReport[];
        print(o, r, () => `${port}: reset, ${r.state}${r.error ? ` (${r.error})` : ''}`);
        degradedIf(r.state === 'failed');
      }),
  );
  leaf('reload', 'read the configuration file again and apply it (as SIGHUP), and say what changed').action(
    (_: unknown, c: Command) =>
      ctl(c, async (o) => {
        const [r] = (await ask(o, [{ method: 'reload' }])) as ReloadResult[];
        print(o, r, () => formatReload(r));
        degradedIf(r.failed.length > 0);
      }),
  );
  leaf('version', "the daemon's version, pid, uptime and vhost workers").action((_: unknown, c: Command) =>
    ctl(c, async (o) => {
      const [v] = await ask(o, [{ method: 'version' }]);
      print(o, v, () =>
        Object.entries(v as Record<string, unknown>)
          .map(([k, x]) => `${k}: ${k === 'vhostWorkers' ? formatWorkers(x as VhostWorker[]) : x}`)
          .join('\n'),
      );
    }),
  );
  return cmd;
}

/**
 * The same for every command: `--version`, usage errors that end with {@link EXIT}.usage (the
 * help and the version end with 0) instead of commander's exit, the help's hint after an error.
 */
function configure(cmd: Command): Command {
  cmd
    .version(VERSION, '--version', "print the package's version and exit")
    .showHelpAfterError('(add --help for usage)')
    .exitOverride();
  for (const sub of cmd.commands) configure(sub);
  return cmd;
}

/** Run `serve` or `ctl` (argv: the arguments after the program, starting with the subcommand). */
export async function main(argv: string[]): Promise<void> {
  const program = configure(new Command().name('vhost-bridge').addCommand(serveCommand()).addCommand(ctlCommand()));
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    // commander has printed the help, the version or the error
    process.exitCode = e.exitCode === 0 ? 0 : EXIT.usage;
  }
}
