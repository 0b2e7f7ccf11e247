/**
 * The daemon's configuration (`vhost-bridge serve --config FILE`): a JSON file with the control
 * socket and one entry per port, validated with a zod schema into {@link DaemonConfig}. Every error
 * names the port and the field (`ports.vm1.queues: expected a number from 1 to 128`), so a
 * reload or an `add` that is refused says exactly what to fix.
 *
 * ```json
 * { "control": { "path": "/run/vhost-bridge/control.sock", "mode": "0660", "group": "kvm" },
 *   "ports": { "vm1": { "tap": "vbtap1", "queues": 2, "mtu": 1500, "owner": "libvirt-qemu", "mode": "0600" },
 *              "vm2": { "tap": "vbtap2", "role": "client", "socket": "/run/qemu/vm2-net0.sock" } } }
 * ```
 *
 * A port is one vhost-user socket (role server: the daemon listens and the VMM connects; role
 * client: the VMM listens, QEMU `server=on`, vhost-user.rst "Introduction") served on one tap.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { SUN_PATH_MAX } from '../sys/index.js';
import { checkIfName } from '../vhost-kernel/structs.js';
import type { PeerRule } from '../vhost-user/peer.js';
import { groupId, userId } from '../host/ids.js';
import { parseSize } from '../host/sizes.js';
import { BUSY_POLL_US, type IntRange, MEMORY_REGIONS, MTU, QUEUE_PAIRS } from '../port/spec.js';

/** Where sockets go unless a port says otherwise (systemd RuntimeDirectory=vhost-bridge). */
export const RUN_DIR = '/run/vhost-bridge';
export const DEFAULT_CONTROL_PATH = `${RUN_DIR}/control.sock`;
/** A port's settings in the file, resolved (user and group names turned into ids, defaults filled in). */
export interface PortConfig {
  name: string;
  /** The vhost-user socket path. */
  socket: string;
  /** server: the daemon listens on `socket`; client: it connects to a VMM listening there. */
  role: 'server' | 'client';
  /**
   * The interface the rings are attached to: the tap, the macvtap, or the interface of the raw packet socket
   * (`backend` says which; docs/backends.md).
   */
  tap: string;
  /** Which socket vhost-net is given: a tap (`tap`), a macvtap (`macvtap`) or a raw packet socket (`rawSocket`). */
  backend: 'tap' | 'macvtap' | 'packet';
  /** VHOST_SET_VRING_BUSYLOOP_TIMEOUT on every ring, µs (0: off). */
  busyPollUs: number;
  /** true: attach to an existing (persistent) tap only; never create one. */
  persistentTap: boolean;
  queues: number;
  /** Tap MTU set at start, or null to leave it. */
  mtu: number | null;
  /** Owner, group and mode of a server socket (null: the daemon's own). */
  owner: number | null;
  group: number | null;
  mode: number;
  /** Who may be the front-end (`allowUsers`, `allowGroups`: vhost-user/peer.ts); null: whoever opens the socket. */
  peers: PeerRule | null;
  /** Guest memory the front-end may have mapped (`maxMemory`), in bytes, or null: no limit of the port's own. */
  maxMemory: bigint | null;
  /** Memory regions it may have mapped (`maxRegions`), or null: what the kernel takes. */
  maxRegions: number | null;
  /**
   * The cgroup v2 directory each session's vhost workers are moved into (`workerCgroup`), or null:
   * they stay where the kernel puts them, the daemon's cgroup (docs/operating.md "Placing each port's worker").
   */
  workerCgroup: string | null;
}

/** The control socket (control.ts). */
export interface ControlSpec {
  path: string;
  mode: number;
  group: number | null;
  /** Who may send requests (`allowUsers`, `allowGroups`), or null: whoever can open the socket. */
  peers: PeerRule | null;
}

export interface DaemonConfig {
  control: ControlSpec;
  /** By port name, in the file's order. */
  ports: Map<string, PortConfig>;
}

/** One problem: the dotted path of the field (`ports.vm1.queues`) and what is wrong with it. */
export interface ConfigIssue {
  field: string;
  message: string;
}

/** A configuration that cannot be used; `message` lists every issue, one per line. */
export class ConfigError extends Error {
  constructor(
    readonly issues: ConfigIssue[],
    where = '',
  ) {
    super(issues.map((i) => `${where}${i.field ? `${i.field}: ` : ''}${i.message}`).join('\n'));
    this.name = 'ConfigError';
  }
}

const PORT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function intIn({ min, max }: IntRange) {
  const error = `expected a number from ${min} to ${max}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

/** A file mode as an octal string ("0660"); JSON has no octal numbers, and 660 in decimal is a trap. */
const mode = z
  .string({ error: 'expected an octal mode as a string, such as "0660"' })
  .regex(/^0?[0-7]{3}$/, { error: 'expected an octal mode as a string, such as "0660"' })
  .transform((s) => parseInt(s, 8));

/** A user or group: a name (looked up in /etc/passwd or /etc/group) or a numeric id. */
const idOf = (kind: 'user' | 'group') =>
  z.union([z.string(), z.number()], { error: `expected a ${kind} name or id` }).transform((v, ctx) => {
    const id = kind === 'user' ? userId(v) : groupId(v);
    if (id === null) {
      ctx.addIssue({
        code: 'custom',
        message: `no ${kind} '${v}' (${kind === 'user' ? '/etc/passwd' : '/etc/group'})`,
      });
      return z.NEVER;
    }
    return id;
  });

/** An allow-list: users or groups by name or id (SO_PEERCRED is checked against it on accept). */
const idList = (kind: 'user' | 'group') =>
  z.array(idOf(kind), { error: `expected a list of ${kind} names or ids` }).max(256, { error: 'at most 256 entries' });

/** The peer rule of `allowUsers` / `allowGroups`; null when neither is given. */
function peerRule(users: number[] | undefined, groups: number[] | undefined): PeerRule | null {
  if (users === undefined && groups === undefined) return null;
  return { uids: users ?? [], gids: groups ?? [] };
}

/** A size in bytes: a number, or a string with a binary suffix. */
const size = z
  .union([z.string(), z.number()], { error: 'expected a size such as "4G" or a number of bytes' })
  .transform((v, ctx) => {
    const bytes = parseSize(v);
    if (bytes === null) {
      ctx.addIssue({ code: 'custom', message: 'expected a size above 0 such as "4G", "512M" or a number of bytes' });
      return z.NEVER;
    }
    return bytes;
  });

const socketPath = z.string({ error: 'expected a socket path' }).check((ctx) => {
  const n = Buffer.byteLength(ctx.value);
  if (!ctx.value.startsWith('/'))
    ctx.issues.push({ code: 'custom', input: ctx.value, message: 'expected an absolute path' });
  else if (n > SUN_PATH_MAX) {
    ctx.issues.push({
      code: 'custom',
      input: ctx.value,
      message:
        `${n} bytes is too long for a unix socket path (at most ${SUN_PATH_MAX}: sun_path is 108 bytes with ` +
        `its NUL)`,
    });
  }
});

/**
 * A cgroup v2 directory: absolute, without `.` or `..` parts or a trailing slash (so a reload that
 * names the same cgroup is the same spec), and not a file in one (`.../cgroup.procs`).
 */
const cgroupDir = z.string({ error: 'expected the path of a cgroup v2 directory' }).check((ctx) => {
  const v = ctx.value;
  const bad = (message: string) => ctx.issues.push({ code: 'custom', input: v, message });
  if (!v.startsWith('/')) bad('expected an absolute path of a cgroup v2 directory, such as "/sys/fs/cgroup/vb/vm1"');
  else if (v === '/' || v.endsWith('/') || v.includes('//') || v.split('/').some((s) => s === '.' || s === '..'))
    bad('expected a plain absolute path: no "." or ".." parts, no empty parts, no trailing "/"');
  else if (/\/cgroup\.[a-z_.]+$/.test(v))
    bad('expected the cgroup directory, not a file in it (the daemon picks cgroup.procs or cgroup.threads)');
  else if (Buffer.byteLength(v) > 4095) bad('longer than PATH_MAX');
});

const tapName = z.string({ error: 'expected an interface name' }).check((ctx) => {
  const bad = checkIfName(ctx.value);
  if (bad) ctx.issues.push({ code: 'custom', input: ctx.value, message: bad });
});

/** One port as written in the file (before defaults and the checks across ports). */
const portSchema = z.strictObject(
  {
    tap: tapName.optional(),
    macvtap: tapName.optional(),
    rawSocket: tapName.optional(),
    busyPollUs: intIn(BUSY_POLL_US).optional(),
    persistentTap: z.boolean({ error: 'expected true or false' }).optional(),
    socket: socketPath.optional(),
    role: z.enum(['server', 'client'], { error: 'expected "server" or "client"' }).optional(),
    queues: intIn(QUEUE_PAIRS).optional(),
    mtu: intIn(MTU).optional(),
    owner: idOf('user').optional(),
    group: idOf('group').optional(),
    mode: mode.optional(),
    allowUsers: idList('user').optional(),
    allowGroups: idList('group').optional(),
    maxMemory: size.optional(),
    maxRegions: intIn(MEMORY_REGIONS).optional(),
    workerCgroup: cgroupDir.optional(),
  },
  { error: (iss) => (iss.code === 'unrecognized_keys' ? undefined : "expected an object with the port's settings") },
);

type PortInput = z.output<typeof portSchema>;

const controlSchema = z.strictObject(
  {
    path: socketPath.optional(),
    mode: mode.optional(),
    group: idOf('group').optional(),
    allowUsers: idList('user').optional(),
    allowGroups: idList('group').optional(),
  },
  { error: (iss) => (iss.code === 'unrecognized_keys' ? undefined : 'expected an object') },
);

const configSchema = z.strictObject(
  {
    control: controlSchema.optional(),
    ports: z.record(z.string(), z.unknown(), { error: 'expected an object of ports by name' }),
  },
  { error: (iss) => (iss.code === 'unrecognized_keys' ? undefined : 'expected an object with "ports"') },
);

/** The zod issues as field paths and messages (unknown keys get one issue each, on the key itself). */
function issuesOf(err: z.ZodError, prefix: (string | number)[] = []): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const i of err.issues) {
    const path = [...prefix, ...i.path.map((p) => String(p))];
    if (i.code === 'unrecognized_keys') {
      for (const k of i.keys) out.push({ field: [...path, k].join('.'), message: 'unknown field' });
    } else {
      out.push({ field: path.join('.'), message: i.message });
    }
  }
  return out;
}

/** The default socket path of a port. */
export const defaultSocket = (port: string): string => `${RUN_DIR}/${port}.sock`;

/**
 * Check one port's settings (`add` over the control socket, and each entry of a file) and fill in
 * defaults. Throws ConfigError with fields under `ports.<name>`.
 */
export function parsePort(name: string, input: unknown): PortConfig {
  const at = ['ports', name];
  if (!PORT_NAME.test(name)) {
    throw new ConfigError([
      {
        field: at.join('.'),
        message: 'a port name is 1 to 64 letters, digits, "_", "." or "-", starting with a letter or digit',
      },
    ]);
  }
  const r = portSchema.safeParse(input);
  if (!r.success) throw new ConfigError(issuesOf(r.error, at));
  return resolvePort(name, r.data);
}

function resolvePort(name: string, p: PortInput): PortConfig {
  const at = `ports.${name}`;
  const issues: ConfigIssue[] = [];
  const role = p.role ?? 'server';
  const socket = p.socket ?? defaultSocket(name);
  if (p.socket === undefined && Buffer.byteLength(socket) > SUN_PATH_MAX) {
    issues.push({
      field: `${at}.socket`,
      message:
        `the default path ${socket} is longer than ${SUN_PATH_MAX} bytes: give a shorter port name or a ` +
        `socket path`,
    });
  }
  if (role === 'client') {
    for (const k of ['owner', 'group', 'mode'] as const) {
      if (p[k] !== undefined)
        issues.push({
          field: `${at}.${k}`,
          message: 'applies to role "server" only (with role "client" the VMM creates the socket)',
        });
    }
  }
  const given = (['tap', 'macvtap', 'rawSocket'] as const).filter((k) => p[k] !== undefined);
  if (given.length !== 1) {
    issues.push({
      field: `${at}.${given[1] ?? 'tap'}`,
      message: 'give exactly one of tap, macvtap or rawSocket (the socket the rings are attached to)',
    });
  }
  if (p.persistentTap !== undefined && p.tap === undefined)
    issues.push({ field: `${at}.persistentTap`, message: 'applies to a tap only' });
  if (p.rawSocket !== undefined && (p.queues ?? 1) > 1)
    issues.push({ field: `${at}.queues`, message: 'a raw packet socket serves one queue pair' });
  if (issues.length) throw new ConfigError(issues);
  const backend = p.macvtap !== undefined ? 'macvtap' : p.rawSocket !== undefined ? 'packet' : 'tap';
  return {
    name,
    socket,
    role,
    tap: (p.tap ?? p.macvtap ?? p.rawSocket)!,
    backend,
    busyPollUs: p.busyPollUs ?? 0,
    persistentTap: p.persistentTap ?? false,
    queues: p.queues ?? 1,
    mtu: p.mtu ?? null,
    owner: p.owner ?? null,
    group: p.group ?? null,
    mode: p.mode ?? 0o600,
    peers: peerRule(p.allowUsers, p.allowGroups),
    maxMemory: p.maxMemory ?? null,
    maxRegions: p.maxRegions ?? null,
    workerCgroup: p.workerCgroup ?? null,
  };
}

/** Two ports may not share a socket path or a tap (the second would fail, or steal the first's). */
export function checkDistinct(ports: Iterable<PortConfig>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const sockets = new Map<string, string>();
  const taps = new Map<string, string>();
  for (const p of ports) {
    const s = sockets.get(p.socket);
    if (s !== undefined)
      issues.push({ field: `ports.${p.name}.socket`, message: `${p.socket} is already the socket of port ${s}` });
    else sockets.set(p.socket, p.name);
    const t = taps.get(p.tap);
    if (t !== undefined)
      issues.push({ field: `ports.${p.name}.tap`, message: `${p.tap} is already the tap of port ${t}` });
    else taps.set(p.tap, p.name);
  }
  return issues;
}

/** Validate a parsed JSON document. Every issue of every port is reported at once. */
export function parseConfig(doc: unknown): DaemonConfig {
  const r = configSchema.safeParse(doc);
  if (!r.success) throw new ConfigError(issuesOf(r.error));
  const issues: ConfigIssue[] = [];
  const ports = new Map<string, PortConfig>();
  for (const [name, input] of Object.entries(r.data.ports)) {
    try {
      ports.set(name, parsePort(name, input));
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      issues.push(...e.issues);
    }
  }
  issues.push(...checkDistinct(ports.values()));
  const c = r.data.control ?? {};
  const control: ControlSpec = {
    path: c.path ?? DEFAULT_CONTROL_PATH,
    mode: c.mode ?? 0o660,
    group: c.group ?? null,
    peers: peerRule(c.allowUsers, c.allowGroups),
  };
  for (const p of ports.values()) {
    if (p.socket === control.path)
      issues.push({ field: `ports.${p.name}.socket`, message: `${p.socket} is the control socket` });
  }
  if (issues.length) throw new ConfigError(issues);
  return { control, ports };
}

/** Read and validate a configuration file; errors start with the file's name. */
export function loadConfig(file: string): DaemonConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([{ field: '', message: `cannot read it: ${(e as Error).message}` }], `${file}: `);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ConfigError([{ field: '', message: `not JSON: ${(e as Error).message}` }], `${file}: `);
  }
  try {
    return parseConfig(doc);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(e.issues, `${file}: `);
    throw e;
  }
}

/** True if two port configurations would serve the same way (a reload leaves such a port alone). */
export function sameConfig(a: PortConfig, b: PortConfig): boolean {
  const keys = Object.keys(a) as (keyof PortConfig)[];
  // The allow-list is the one object: equal when its lists are.
  const same = (x: unknown, y: unknown) =>
    x === y || (typeof x === 'object' && typeof y === 'object' && JSON.stringify(x) === JSON.stringify(y));
  return keys.every((k) => same(a[k], b[k]));
}
