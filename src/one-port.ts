/**
 * One-port mode (`vhost-bridge --socket-path PATH --tap NAME`, src/cli.ts): one {@link Port} per
 * process, following vhost-user.rst "Backend program conventions": --socket-path / --fd /
 * --print-capabilities, no daemonizing, a clean end on SIGTERM. Start-up problems end with one line
 * on stderr and exit 1.
 *
 * {@link main} maps the flags onto a PortSpec (the daemon maps its configuration onto the same one)
 * and starts the Port on the parts it is given; {@link runOnePort} is the process around it.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { fstatSync } from 'node:fs';
import { eventsToFd } from './bridge/events.js';
import { inheritedSockets } from './host/activation.js';
import { groupId, userId } from './host/ids.js';
import { parseSize } from './host/sizes.js';
import { FORMATS, LEVELS, setLogFormat, setLogLevel } from './log.js';
import { kernelParts, type PortParts } from './port/parts.js';
import { Port } from './port/port.js';
import { BUSY_POLL_US, type IntRange, MEMORY_REGIONS, MTU, type PortSpec, QUEUE_PAIRS } from './port/spec.js';
import { stopOnSignals } from './signals.js';
import { VERSION } from './version.js';

/** What main() runs on besides its arguments: the port's parts and where its text goes. */
export interface OnePortIo {
  /** What the port is built on (default: the real kernel, kernelParts()). */
  parts?: PortParts;
  /** Where help, the version and the capabilities go (default stdout). */
  out?: (text: string) => void;
  /** Where refusals and start-up errors go (default stderr). */
  err?: (text: string) => void;
}

const EXAMPLE = `
Example (QEMU connects to the bridge; guest memory must be shared with it):
  vhost-bridge --socket-path /run/vhost-bridge.sock --tap vbtap0 &
  qemu-system-x86_64 ... \\
    -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \\
    -chardev socket,id=vu0,path=/run/vhost-bridge.sock,reconnect-ms=1000 \\
    -netdev vhost-user,id=net0,chardev=vu0 \\
    -device virtio-net-pci,netdev=net0
reconnect-ms= is QEMU 9.2's; QEMU before 9.2 takes reconnect=1 instead, QEMU 10.1 and later refuse it.

Two queue pairs: --queues 2 here, and queues=2 on -netdev and mq=on on -device (QEMU); cloud-hypervisor:
num_queues=4 (it counts virtqueues, two per pair: docs/frontends.md).
QEMU as the server: -chardev socket,...,server=on,wait=off and vhost-bridge --connect PATH.
Unprivileged: a manager opens /dev/vhost-net and the tap and passes --vhost-fd N and --tap-fd N.
Many ports in one process: vhost-bridge serve --config FILE (see vhost-bridge serve --help), and vhost-bridge ctl.`;

/** An option's integer in its range (spec.ts: the daemon's configuration checks the same ranges). */
function int(name: string, { min, max }: IntRange) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max)
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return n;
  };
}

/** An fd number this process inherited. */
const FD: IntRange = { min: 0, max: 1 << 20 };

function fdList(v: string, prev: number[] = []): number[] {
  const out = [...prev];
  for (const part of v.split(',')) out.push(int('an fd', FD)(part.trim()));
  return out;
}

function idList(kind: 'user' | 'group') {
  return (v: string): number[] =>
    v.split(',').map((x) => {
      const id = kind === 'user' ? userId(x.trim()) : groupId(x.trim());
      if (id === null) throw new InvalidArgumentError(`no ${kind} '${x.trim()}'`);
      return id;
    });
}

function octal(v: string): number {
  if (!/^0?[0-7]{3}$/.test(v)) throw new InvalidArgumentError('a mode such as 0600 or 0660');
  return parseInt(v, 8);
}

function command(out: (text: string) => void, err: (text: string) => void): Command {
  return new Command()
    .name('vhost-bridge')
    .description(
      "vhost-user back end for virtio-net whose datapath is the kernel's vhost-net on a tap:\nno packet and no " +
        'interrupt crosses this process.',
    )
    .addOption(
      new Option('--socket-path <path>', 'listen on this vhost-user socket (the VMM connects)').conflicts([
        'connect',
        'fd',
      ]),
    )
    .addOption(
      new Option('--socket-mode <mode>', 'file mode of the socket created by --socket-path')
        .argParser(octal)
        .default(0o600, '0600'),
    )
    .addOption(
      new Option(
        '--connect <path>',
        'connect to a VMM listening on this socket (QEMU server=on); reconnects when it goes',
      ).conflicts(['fd']),
    )
    .option(
      '--fd <n>',
      'serve on this inherited socket: a listening one (systemd, libvirt), or one connected to a front-end (served ' +
        'until it leaves); LISTEN_FDS=1 (socket activation) passes one as fd 3 without --fd',
      int('--fd', FD),
    )
    .option(
      '--allow-users <list>',
      'let in only front-ends of these users (names or ids, comma-separated; SO_PEERCRED, checked on accept)',
      idList('user'),
    )
    .option('--allow-groups <list>', 'let in only front-ends of these primary groups (names or ids)', idList('group'))
    .addOption(
      new Option(
        '--tap <name>',
        'tap to attach the rings to (created if missing; needs CAP_NET_ADMIN to create)',
      ).conflicts(['tapFd']),
    )
    .option('--tap-fd <n,...>', 'open tap (or macvtap) fds, one per queue pair (repeatable or comma-separated)', fdList)
    .addOption(
      new Option(
        '--macvtap <name>',
        'attach the rings to this macvtap interface (opens its /dev/tapN; create it with the guest MAC, mode bridge)',
      ).conflicts(['tap', 'tapFd']),
    )
    .addOption(
      new Option(
        '--raw-socket <ifname>',
        'attach the rings to a raw AF_PACKET socket bound to this interface (one queue pair, no offloads; ' +
          'docs/backends.md)',
      ).conflicts(['tap', 'tapFd', 'macvtap']),
    )
    .option(
      '--busy-poll-us <n>',
      'busy-poll every ring this many microseconds before sleeping (QEMU poll-us; costs up to a host CPU per ' +
        'busy ring; default off)',
      int('--busy-poll-us', BUSY_POLL_US),
    )
    .option('--vhost-fd <n,...>', 'open /dev/vhost-net fds, one per queue pair (repeatable or comma-separated)', fdList)
    .option('--queues <n>', 'queue pairs (one vhost-net fd and one tap queue each)', int('--queues', QUEUE_PAIRS), 1)
    .option('--mtu <n>', 'set the tap MTU at start', int('--mtu', MTU))
    .option(
      '--max-memory <size>',
      'refuse a front-end that shares more guest memory than this ("4G", "512M", bytes)',
      (v: string) => {
        const n = parseSize(v);
        if (n === null) throw new InvalidArgumentError('a size above 0 such as 4G, 512M or a number of bytes');
        return n;
      },
    )
    .option(
      '--max-regions <n>',
      'refuse a front-end that shares more memory regions than this',
      int('--max-regions', MEMORY_REGIONS),
    )
    .option('--record <file>', 'record every vhost-user message and reply (msgpack trace)')
    .option(
      '--events-fd <n>',
      'write every lifecycle event with the status after it to this inherited fd (one JSON line each)',
      int('--events-fd', FD),
    )
    .addOption(
      new Option('--log-level <level>', 'error, warn, info or debug (debug logs every message)')
        .choices(LEVELS)
        .default('info'),
    )
    .addOption(
      new Option('--log-format <format>', 'text lines, or one JSON object per line').choices(FORMATS).default('text'),
    )
    .option('--print-capabilities', 'print the back-end capabilities as JSON (vhost-user.json) and exit')
    .version(VERSION, '--version', "print the package's version and exit")
    .addHelpText('after', EXAMPLE)
    .showHelpAfterError('(run vhost-bridge --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: out, writeErr: err });
}

/** The options as commander parsed them. */
interface Options {
  socketPath?: string;
  socketMode: number;
  connect?: string;
  fd?: number;
  allowUsers?: number[];
  allowGroups?: number[];
  tap?: string;
  tapFd?: number[];
  macvtap?: string;
  rawSocket?: string;
  busyPollUs?: number;
  vhostFd?: number[];
  queues: number;
  mtu?: number;
  maxMemory?: bigint;
  maxRegions?: number;
  record?: string;
  eventsFd?: number;
  logLevel: string;
  logFormat: string;
  printCapabilities?: boolean;
}

/**
 * The socket systemd passed (LISTEN_FDS=1: a .socket unit, `systemd-socket-activate`), listening or
 * already connected (Accept=yes); served as `--fd` would serve it. Undefined when none was passed.
 */
function activatedSocket(program: Command, env: NodeJS.ProcessEnv): number | undefined {
  let sockets: ReturnType<typeof inheritedSockets>;
  try {
    sockets = inheritedSockets(env);
  } catch (e) {
    return program.error(`vhost-bridge: socket activation: ${(e as Error).message}`);
  }
  if (sockets.length > 1)
    program.error(
      `vhost-bridge: socket activation passed ${sockets.length} sockets; one port serves one (many ports: ` +
        'vhost-bridge serve, with FileDescriptorName=<port> on each socket)',
    );
  return sockets[0]?.fd;
}

/** The spec of the options (checked: one transport, one backend socket, an open --events-fd). */
function specOf(program: Command, o: Options, env: NodeJS.ProcessEnv): PortSpec {
  const transports = [o.socketPath, o.connect, o.fd].filter((x) => x !== undefined).length;
  const fd = transports === 0 ? activatedSocket(program, env) : o.fd;
  if (transports > 1 || (transports === 0 && fd === undefined))
    program.error(
      'vhost-bridge: give exactly one of --socket-path, --connect or --fd (or start it by socket activation)',
    );
  if (!o.tap && !o.tapFd && !o.macvtap && !o.rawSocket)
    program.error('vhost-bridge: give --tap NAME, --tap-fd N, --macvtap NAME or --raw-socket IFNAME');
  if (o.eventsFd !== undefined) {
    try {
      fstatSync(o.eventsFd);
    } catch {
      program.error(
        `vhost-bridge: --events-fd ${o.eventsFd}: that fd is not open in this process (the starting process must ` +
          `pass it)`,
      );
    }
  }
  const peers = o.allowUsers || o.allowGroups ? { uids: o.allowUsers ?? [], gids: o.allowGroups ?? [] } : null;
  return {
    transport:
      o.socketPath !== undefined
        ? { mode: 'server', path: o.socketPath, socketMode: o.socketMode, peers }
        : o.connect !== undefined
          ? { mode: 'client', path: o.connect, peers }
          : { mode: 'fd', fd: fd!, peers },
    backendSocket: o.tapFd
      ? { fds: o.tapFd }
      : o.macvtap
        ? { macvtap: o.macvtap }
        : o.rawSocket
          ? { packet: o.rawSocket }
          : { tap: o.tap! },
    busyPollUs: o.busyPollUs,
    vhostFds: o.vhostFd,
    queuePairs: o.queues,
    mtu: o.mtu,
    memoryLimit: { bytes: o.maxMemory ?? null, regions: o.maxRegions ?? null },
    record: o.record,
  };
}

/**
 * Parse `argv` (the arguments after the program), map them onto a PortSpec and start the Port on
 * `io.parts`. Returns the serving Port, or the exit status when it ends before serving: 0 after
 * --help, --version or --print-capabilities; 1 after a refused option (commander's line, or one
 * naming the options to give) or a failed start (`vhost-bridge: <why>`). Neither exits the process
 * nor installs signal handlers: {@link runOnePort} does.
 */
export function main(argv: string[], env: NodeJS.ProcessEnv, io: OnePortIo = {}): Port | number {
  const parts = io.parts ?? kernelParts();
  const out = io.out ?? ((text: string) => process.stdout.write(text));
  const err = io.err ?? ((text: string) => process.stderr.write(text));
  const program = command(out, err);
  let spec: PortSpec;
  let o: Options;
  try {
    program.parse(argv, { from: 'user' });
    o = program.opts<Options>();
    if (o.printCapabilities) {
      // vhost-user.rst "Backend program conventions": other options are ignored.
      out(`${JSON.stringify({ type: 'net' })}\n`);
      return 0;
    }
    setLogLevel(o.logLevel);
    setLogFormat(o.logFormat);
    spec = specOf(program, o, env);
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    throw e;
  }
  const log = parts.log;
  let port: Port | undefined;
  try {
    port = Port.start(spec, parts, {
      onEvent: o.eventsFd !== undefined ? eventsToFd(o.eventsFd, log) : undefined,
      // passt's convention for a connected --fd: serve that front-end, and end when it leaves.
      onFinished: () => {
        log.info('the front-end of the inherited connection left; stopping');
        port?.close();
        process.exit(process.exitCode ?? 0);
      },
    });
  } catch (e) {
    err(`vhost-bridge: ${(e as Error).message}\n`);
    return 1;
  }
  return port;
}

/** The binary's one-port mode (cli.ts): {@link main}, then exit with its status, or serve until SIGTERM or SIGINT. */
export function runOnePort(argv: string[], env: NodeJS.ProcessEnv, parts: PortParts = kernelParts()): void {
  const r = main(argv, env, { parts });
  if (typeof r === 'number') process.exit(r);
  stopOnSignals(() => r.close(), parts.log);
}
