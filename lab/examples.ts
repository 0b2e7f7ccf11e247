/**
 * The files of examples/ as the lab uses them, so that what the README shows (it includes these
 * files: test/readme.test.ts) is what the lab runs.
 *
 * systemd units run without systemd: L2 has no service manager, so the lab holds a unit's sockets
 * with `systemd-socket-activate` (from the systemd package), which passes them as systemd does
 * (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES from FileDescriptorName=; a connected socket per
 * connection with Accept=yes), and runs the service's ExecStart. What systemd-socket-activate does
 * not do (SocketUser=, SocketMode=, the sandboxing of the .service) is not exercised.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const EXAMPLES = resolve(import.meta.dirname, '..', '..', 'examples');
/** Where ExecStart= expects the installed binary (`npm install -g`, prefix /usr/local). */
const INSTALLED = '/usr/local/bin/vhost-bridge';
/** The bridge's socket in examples/qemu-vhost-user.sh. */
const EXAMPLE_SOCKET = '/run/vhost-bridge/vm1.sock';

/** An examples/ file as text. */
export function example(file: string): string {
  return readFileSync(join(EXAMPLES, file), 'utf8');
}

/**
 * The options of examples/qemu-vhost-user.sh (a QEMU command line) as [option, value] pairs, its
 * socket path replaced by `socketPath`.
 */
export function qemuExampleOptions(socketPath: string): [string, string][] {
  const words = example('qemu-vhost-user.sh')
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .join(' ')
    .replaceAll('\\', ' ')
    .split(/\s+/)
    .filter(Boolean);
  if (words[0] !== 'qemu-system-x86_64') throw new Error('examples/qemu-vhost-user.sh: not a QEMU command line');
  const out: [string, string][] = [];
  for (let i = 1; i < words.length; i += 2) out.push([words[i], words[i + 1].replace(EXAMPLE_SOCKET, socketPath)]);
  return out;
}

/** `Key=value` settings of one section of examples/FILE, %i replaced by the instance name; keys may repeat. */
function section(file: string, name: string, instance: string): [string, string][] {
  const out: [string, string][] = [];
  let current = '';
  for (const raw of example(file).split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) current = head[1];
    else if (current === name) {
      const eq = line.indexOf('=');
      out.push([line.slice(0, eq), line.slice(eq + 1).replaceAll('%i', instance)]);
    }
  }
  return out;
}

/** A .socket unit of examples/ and its instance name (for `name@.socket` templates). */
export interface SocketUnit {
  unit: string;
  instance?: string;
}

/** The socket paths of .socket units (ListenStream=), in the order systemd passes them. */
export function listenPaths(units: SocketUnit[]): string[] {
  return units.flatMap((u) =>
    section(u.unit, 'Socket', u.instance ?? '')
      .filter(([k]) => k === 'ListenStream')
      .map(([, v]) => v),
  );
}

/**
 * systemd-socket-activate's options that hold the sockets of these .socket units as systemd would:
 * `-l PATH` per ListenStream=, `--fdname` from FileDescriptorName=, `--accept` for Accept=yes.
 */
export function socketActivateOptions(units: SocketUnit[]): string[] {
  const out: string[] = [];
  const names: string[] = [];
  let accept = false;
  for (const u of units) {
    const s = section(u.unit, 'Socket', u.instance ?? '');
    for (const [k, v] of s) if (k === 'ListenStream') out.push('-l', v);
    const name = s.find(([k]) => k === 'FileDescriptorName')?.[1];
    if (name) names.push(name);
    accept ||= s.some(([k, v]) => k === 'Accept' && v === 'yes');
  }
  if (names.length) out.push(`--fdname=${names.join(':')}`);
  if (accept) out.push('--accept');
  return out;
}

/** The arguments of a .service unit's ExecStart= after the installed binary (no quoting in examples/). */
export function execStartArgs(serviceUnit: string, instance = ''): string[] {
  const exec = section(serviceUnit, 'Service', instance).find(([k]) => k === 'ExecStart')?.[1];
  const words = exec?.split(/\s+/) ?? [];
  if (words[0] !== INSTALLED) throw new Error(`${serviceUnit}: ExecStart= does not run ${INSTALLED}`);
  return words.slice(1);
}
