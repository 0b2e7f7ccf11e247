/**
 * libvirt's QEMU driver in L2, for the lab's libvirt test: libvirtd started by the test (L2 has no
 * systemd), domains defined from examples/ XML, and their serial console as a Guest (lab/guest.ts).
 *
 * libvirt comes from Debian's packages (libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients,
 * installed by scripts/lab/setup without the -system package, which would bring systemd units and
 * users). What the -system package would set up is done here, in L2's throw-away overlay only: the
 * QEMU user libvirt expects (libvirt-qemu), and a qemu.conf that runs QEMU as root without a security
 * driver or virtlogd (L2 has none of them).
 *
 * A domain's serial console is `<serial type='unix'><source mode='connect' path=.../>`: QEMU connects
 * to a socket the console process listens on before `virsh start`, so not a byte of the boot is lost;
 * that process (this module run as a program) copies the console to its stdio, which is what Guest
 * drives (its `console` option).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopProcess } from './stuck.js';

const URI = 'qemu:///system';
const THIS = fileURLToPath(import.meta.url);

/** `virsh -c qemu:///system ARGS`: its stdout; throws with its stderr on failure. */
export function virsh(...args: string[]): string {
  const r = spawnSync('virsh', ['-c', URI, ...args], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`virsh ${args.join(' ')}: ${(r.stderr || r.stdout || String(r.error)).trim()}`);
  return r.stdout;
}

/** What the -system package and a real host would have; in L2's overlay only. */
function prepareL2(): void {
  if (process.env.LAB !== '1' || !fs.existsSync('/lab-host'))
    throw new Error('lab/libvirt.ts changes /etc: it runs inside the lab VM (L2) only');
  if (spawnSync('getent', ['passwd', 'libvirt-qemu']).status !== 0)
    spawnSync('useradd', ['--system', '--user-group', '--no-create-home', 'libvirt-qemu'], { stdio: 'inherit' });
  if (spawnSync('getent', ['group', 'kvm']).status !== 0) spawnSync('groupadd', ['--system', 'kvm']);
  fs.mkdirSync('/etc/libvirt', { recursive: true });
  fs.writeFileSync(
    '/etc/libvirt/qemu.conf',
    [
      '# written by the lab (lab/libvirt.ts), in L2 only',
      'user = "root"',
      'group = "root"',
      'dynamic_ownership = 0',
      'security_driver = "none"',
      'stdio_handler = "file"',
      '',
    ].join('\n'),
  );
}

/** libvirtd in the foreground, as a child of the test; its log in the lab's exchange dir. */
export class Libvirtd {
  private constructor(private readonly child: ChildProcess) {}

  /** Start libvirtd and wait until `virsh version` answers (the QEMU driver probes QEMU first). */
  static async start(): Promise<Libvirtd> {
    prepareL2();
    const log = fs.openSync(join(process.env.LAB_XCHG ?? '/tmp', 'libvirtd.log'), 'a');
    const child = spawn('libvirtd', [], { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const d = new Libvirtd(child);
    for (let i = 0; ; i++) {
      const r = spawnSync('virsh', ['-c', URI, 'version'], { encoding: 'utf8', timeout: 60_000 });
      if (r.status === 0) return d;
      if (child.exitCode !== null || i > 120) {
        child.kill('SIGKILL');
        throw new Error(`libvirtd did not answer: ${r.stderr.trim()} (libvirtd.log in the exchange dir)`);
      }
      await new Promise((res) => setTimeout(res, 500));
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const gone = new Promise((res) => this.child.once('exit', res));
    await stopProcess(this.child, gone, 'libvirtd', { timeoutMs: 10_000 });
  }
}

/**
 * `xml` with each key of `paths` (a path the example names) replaced by its value; throws if the
 * example no longer names one, so that a changed example cannot silently stop being the one tested.
 */
export function withPaths(xml: string, paths: Record<string, string>): string {
  let out = xml;
  for (const [from, to] of Object.entries(paths)) {
    if (!out.includes(`'${from}'`) && !out.includes(`>${from}<`)) throw new Error(`the example does not name ${from}`);
    out = out.replaceAll(from, to);
  }
  return out;
}

/** The `n`th (from 0) `<interface>` element of an XML text, comments left out. */
export function interfaceElement(xml: string, n = 0): string {
  const found = xml.replace(/<!--[\s\S]*?-->/g, '').match(/<interface[\s\S]*?<\/interface>/g) ?? [];
  if (!found[n]) throw new Error(`no interface number ${n}`);
  return found[n];
}

/** A domain XML with its (one) `<interface>` replaced by `element`. */
export function withInterface(domainXml: string, element: string): string {
  const start = domainXml.indexOf('<interface', domainXml.indexOf('<devices>'));
  const end = domainXml.indexOf('</interface>', start) + '</interface>'.length;
  if (start < 0 || end < start) throw new Error('the domain has no <interface>');
  return domainXml.slice(0, start) + element + domainXml.slice(end);
}

/** The domain's name (`<name>`). */
export function domainName(xml: string): string {
  const m = /<domain[^>]*>[\s\S]*?<name>([^<]+)<\/name>/.exec(xml);
  if (!m) throw new Error('no <name> in the domain XML');
  return m[1];
}

/**
 * Guest's `console` option for a defined domain whose serial console connects to `consolePath`:
 * a process that listens there, runs `virsh start`, and copies the console to its stdio. Killed,
 * it leaves the domain running (the boot-hang retry starts the console again, which destroys it first).
 */
export function domainConsole(domain: string, consolePath: string): { command: string; args: string[] } {
  return { command: process.execPath, args: [THIS, 'console', domain, consolePath] };
}

async function consoleMain(domain: string, path: string): Promise<void> {
  spawnSync('virsh', ['-c', URI, 'destroy', domain], { stdio: 'ignore' }); // a domain a killed console left running
  fs.rmSync(path, { force: true });
  const server = createServer((c) => {
    server.close();
    process.stdin.pipe(c);
    c.pipe(process.stdout);
    c.on('close', () => process.exit(0));
    c.on('error', () => process.exit(0));
  });
  await new Promise<void>((res) => server.listen(path, res));
  const r = spawnSync('virsh', ['-c', URI, 'start', domain], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) {
    process.stderr.write(`virsh start ${domain}: ${(r.stderr || String(r.error)).trim()}\n`);
    process.exit(1);
  }
  process.stderr.write(`libvirt started domain ${domain}\n`);
}

if (process.argv[1] === THIS && process.argv[2] === 'console') await consoleMain(process.argv[3], process.argv[4]);
