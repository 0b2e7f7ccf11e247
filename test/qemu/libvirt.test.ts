/**
 * libvirt drives it: libvirtd (Debian's, started by the test: L2 has no systemd) defines and starts
 * an L3 guest from examples/libvirt-domain.xml (memfd shared memory, direct kernel boot of the lab's
 * guest, `<interface type='vhostuser'>`), with the lab's paths put in place of the example's
 * (lab/libvirt.ts); the guest is driven over its serial console, a unix socket in the XML.
 *
 * - mode='client' (QEMU connects, the bridge listens): ping and iperf3; the bridge restarted under
 *   the running domain (QEMU reconnects: <reconnect enabled='yes' timeout='1'/>); `virsh destroy`,
 *   and the same bridge serves the domain started again;
 * - mode='server' (QEMU listens, the bridge connects: --connect), the interface of
 *   examples/libvirt-interface.xml: ping and iperf3; the bridge restarted connects again; after
 *   `virsh destroy` the bridge keeps trying.
 *   (libvirt 9.0 refuses <reconnect> in mode='server': "'reconnect' attribute unsupported 'server'
 *   mode for <interface type='vhostuser'>"; the bridge's own reconnecting stands for it.)
 */
import { expect } from 'chai';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { BridgeProcess } from '../../lab/bridge-process.js';
import { Guest, TRAFFIC_MIN_BYTES, labFiles } from '../../lab/guest.js';
import { hostTap, removeTap } from '../../lab/host.js';
import { example } from '../../lab/examples.js';
import {
  domainConsole,
  domainName,
  interfaceElement,
  Libvirtd,
  virsh,
  withInterface,
  withPaths,
} from '../../lab/libvirt.js';
import { inLab, requireLab, retryOnGuestFault } from './lab.js';

const HOST = '10.0.3.1';
const TAP = 'vblv0';
const DIR = '/tmp/vb-libvirt';
const LISTEN_SOCK = join(DIR, 'vm1.sock');
const SERVER_SOCK = join(DIR, 'vm3-net0.sock');
const CONSOLE = join(DIR, 'console.sock');
const xchg = process.env.LAB_XCHG ?? '/tmp';

/** examples/libvirt-domain.xml with the lab's files; optionally with another interface element. */
function domainXml(iface?: string): string {
  const files = labFiles();
  const xml = withPaths(example('libvirt-domain.xml'), {
    '/var/lib/libvirt/boot/vmlinux': files.vmlinux,
    '/var/lib/libvirt/boot/initrd.cpio.gz': files.l3Initrd,
    '/run/vhost-bridge/vm1.sock': LISTEN_SOCK,
    '/run/vb-guest-console.sock': CONSOLE,
  });
  return iface ? withInterface(xml, iface) : xml;
}

const NAME = domainName(example('libvirt-domain.xml'));

/** Define the domain from `xml` and start it; resolves when its guest is READY on the console. */
async function startDomain(label: string, xml: string): Promise<Guest> {
  const file = join(DIR, `${label}.xml`);
  fs.writeFileSync(file, xml);
  // The example has no <uuid> (each VM needs its own): defining it again needs the old definition gone.
  undefine();
  virsh('define', file);
  return Guest.boot({
    name: label,
    net: { kind: 'vhost-user', socketPath: LISTEN_SOCK }, // what the domain XML says; not used to start it
    console: domainConsole(NAME, CONSOLE),
    logFile: `${xchg}/guest-${label}.log`,
  });
}

function undefine(): void {
  try {
    virsh('undefine', NAME);
  } catch {
    /* not defined */
  }
}

/** `virsh destroy` (QEMU killed by libvirt); the console process ends with it. */
async function destroy(g: Guest): Promise<void> {
  virsh('destroy', NAME);
  for (let i = 0; g.running && i < 100; i++) await new Promise((r) => setTimeout(r, 100));
  await g.kill();
}

async function traffic(g: Guest): Promise<void> {
  const p = await g.ping(HOST, { count: 3 });
  expect(p.received, `ping replies (rtt ${p.rttMs.join(' ')})`).to.equal(3);
  const r = await g.iperf3({ seconds: 3 });
  console.log(
    `      iperf3 guest -> host: ${(r.bytes / 1e6).toFixed(1)} MB, ${(r.bitsPerSecond / 1e6).toFixed(0)} Mbit/s`,
  );
  expect(r.bytes).to.be.at.least(TRAFFIC_MIN_BYTES);
}

describe('libvirt: domains from examples/ on vhost-bridge', function () {
  this.timeout(300_000);
  let libvirtd: Libvirtd | undefined;
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;

  before(async function () {
    requireLab(this);
    fs.mkdirSync(DIR, { recursive: true });
    hostTap(TAP, { ip: `${HOST}/24` });
    const t = Date.now();
    libvirtd = await Libvirtd.start();
    console.log(`      libvirtd answers after ${((Date.now() - t) / 1000).toFixed(1)} s`);
  });

  after(async function () {
    this.timeout(60_000);
    if (guest?.running) await destroy(guest).catch(() => undefined);
    await bridge?.stop();
    undefine();
    await libvirtd?.stop();
    if (inLab()) removeTap(TAP);
  });

  const listening = () => BridgeProcess.start({ name: 'libvirt', args: ['--socket-path', LISTEN_SOCK, '--tap', TAP] });

  it("mode='client' (the bridge listens): the domain's guest pings and moves iperf3 traffic", async function () {
    bridge = await listening();
    guest = await startDomain('libvirt-client', domainXml());
    console.log(`      guest up in ${(guest.bootMs / 1000).toFixed(1)} s`);
    expect(virsh('domstate', NAME).trim()).to.equal('running');
    const g = guest;
    await retryOnGuestFault(this, g, () => traffic(g));
    expect(bridge.attachedRings()).to.deep.equal([0, 1]);
  });

  it('the bridge restarted under the running domain: QEMU reconnects, no reboot', async function () {
    const g = guest!;
    await bridge!.stop();
    bridge = await listening();
    await bridge.waitForStatus((s) => s.rings.filter((r) => r.attached).length === 2, 30_000, 'both rings attached');
    await retryOnGuestFault(this, g, async () => {
      const ms = await g.untilReply(HOST, 20);
      console.log(`      first reply ${(ms / 1000).toFixed(1)} s after the rings were attached again`);
      const p = await g.ping(HOST, { count: 3 });
      expect(p.received).to.equal(3);
    });
  });

  it('virsh destroy: the bridge lets the domain go and serves it when it is started again', async function () {
    const b = bridge!;
    const from = b.mark();
    await destroy(guest!);
    await b.waitForEvent('disconnected', 30_000, from);
    expect(b.running).to.equal(true);
    expect(b.attachedRings()).to.deep.equal([]);
    guest = await startDomain('libvirt-again', domainXml());
    const g = guest;
    try {
      await retryOnGuestFault(this, g, async () => {
        const p = await g.ping(HOST, { count: 3 });
        expect(p.received).to.equal(3);
      });
      // One connection per QEMU process: the domain's start, and one more for each boot attempt the
      // harness made again after a nested-KVM boot hang, or recovery after a guest fault (docs/lab.md,
      // "Guest faults"; a boot hang makes it 2, which an exact 1 would fail).
      const starts = 1 + g.bootRetries + g.faults;
      expect(b.since(from, 'connected').length, `connections (QEMU processes: ${starts})`).to.be.within(1, starts);
    } finally {
      // (else the next tests find the domain running and the tap held; a clean-up error must not hide
      // the test's own)
      await destroy(g).catch((e: Error) => console.log(`      clean-up: ${e.message}`));
      await b.stop();
      bridge = undefined;
    }
  });

  it("mode='server' (QEMU listens, the bridge connects): libvirt-interface.xml's", async function () {
    const iface = withPaths(interfaceElement(example('libvirt-interface.xml'), 1), {
      '/run/libvirt/qemu/vm3-net0.sock': SERVER_SOCK,
    });
    expect(iface).to.include("mode='server'");
    bridge = await BridgeProcess.start({ name: 'libvirt-connect', args: ['--connect', SERVER_SOCK, '--tap', TAP] });
    guest = await startDomain('libvirt-server', domainXml(iface));
    const g = guest;
    await retryOnGuestFault(this, g, () => traffic(g));
  });

  it("mode='server': the bridge restarted connects again; after virsh destroy it keeps trying", async function () {
    const g = guest!;
    await bridge!.stop();
    bridge = await BridgeProcess.start({ name: 'libvirt-reconnect', args: ['--connect', SERVER_SOCK, '--tap', TAP] });
    await bridge.waitForStatus((s) => s.rings.filter((r) => r.attached).length === 2, 30_000, 'both rings attached');
    await retryOnGuestFault(this, g, async () => {
      const ms = await g.untilReply(HOST, 20);
      console.log(`      first reply ${(ms / 1000).toFixed(1)} s after the rings were attached again`);
      const p = await g.ping(HOST, { count: 3 });
      expect(p.received).to.equal(3);
    });
    const from = bridge.mark();
    await destroy(g);
    await bridge.waitForEvent('disconnected', 30_000, from);
    expect(bridge.running, 'the bridge keeps trying to connect').to.equal(true);
  });
});
