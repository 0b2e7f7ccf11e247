/**
 * The other sockets vhost-net drives (docs/backends.md), each with one L3 guest that pings L2 and
 * moves a little TCP both ways through the bridge:
 *  - a raw packet socket (--raw-socket) bound to one end of a veth pair whose other end has L2's
 *    address; busy polling (--busy-poll-us) on the same port, read back from the kernel
 *    (VHOST_GET_VRING_BUSYLOOP_TIMEOUT, in the status);
 *  - a macvtap (--macvtap) in bridge mode on one end of a veth pair, carrying the guest's MAC, the
 *    other end with L2's address.
 * Runs inside L2 only: scripts/lab/run -- node_modules/.bin/mocha dist/test/qemu/backends.test.js
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { BRIDGE_COMMAND, BridgeProcess, EVENTS_ARGS } from '../../lab/bridge-process.js';
import { Guest, TRAFFIC_MIN_BYTES } from '../../lab/guest.js';
import { hostIfCounter, macvtapOnVeth, removeTap, vethPair } from '../../lab/host.js';
import { inLab, requireLab, retryOnGuestFault } from './lab.js';

const xchg = process.env.LAB_XCHG ?? '/tmp';

const run = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

/** The bridge's fds that are open on `path`. */
function fdsOn(pid: number, path: string): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === path;
    } catch {
      return false;
    }
  }).length;
}

/** Boot one guest on `sock`, ping, TCP both ways; returns what the checks print. */
async function traffic(ctx: Mocha.Context, guest: Guest, host: string): Promise<void> {
  await retryOnGuestFault(ctx, guest, async () => {
    const p = await guest.ping(host, { count: 3 });
    expect(p.received, `ping replies (rtt ${p.rttMs.join(' ')})`).to.equal(3);
    for (const reverse of [false, true]) {
      // 5 s at any speed: the packet socket's MTU-sized frames moved 1.4 MB in 3 s on a slow lab day. Not
      // `iperf3 -n`: its receiver stops counting at the client's end of test, with bytes still in flight.
      const r = await guest.iperf3({ seconds: 5, reverse });
      console.log(
        `      ${reverse ? 'host -> guest' : 'guest -> host'}: ${(r.bytes / 1e6).toFixed(1)} MB, ` +
          `${(r.bitsPerSecond / 1e6).toFixed(0)} Mbit/s`,
      );
      expect(r.bytes).to.be.at.least(TRAFFIC_MIN_BYTES);
    }
  });
}

describe('backends: a raw packet socket, with busy polling (lab)', function () {
  this.timeout(240_000);
  const IF = 'vbrw0';
  const PEER = 'vbrw1';
  const HOST = '10.0.5.1';
  const SOCK = '/tmp/vb-raw.sock';
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;

  before(async function () {
    this.timeout(300_000);
    requireLab(this);
    vethPair(IF, PEER, `${HOST}/24`);
    // The socket carries no virtio-net header: what L2 sends the guest must be whole, checksummed frames.
    run('ethtool', '-K', PEER, 'tx', 'off', 'tso', 'off', 'gso', 'off');
    run('ethtool', '-K', IF, 'gro', 'off');
    bridge = await BridgeProcess.start({
      name: 'raw',
      args: ['--socket-path', SOCK, '--raw-socket', IF, '--busy-poll-us', '50'],
    });
    guest = await Guest.boot({
      name: 'raw',
      net: { kind: 'vhost-user', socketPath: SOCK },
      ip: '10.0.5.2/24',
      peer: HOST,
      logFile: `${xchg}/guest-raw.log`,
    });
  });

  after(async function () {
    this.timeout(60_000);
    await guest?.shutdown();
    await bridge?.stop();
    if (inLab()) removeTap(IF);
  });

  it('the guest pings L2 and moves TCP both ways through the packet socket', async function () {
    if (!guest || !bridge) throw new Error('no guest or bridge');
    const peerRx = hostIfCounter(PEER, 'rx_packets');
    await traffic(this, guest, HOST);
    expect(hostIfCounter(PEER, 'rx_packets') - peerRx, 'frames from the guest on the wire').to.be.above(1000);
    const s = bridge.status();
    expect(s.datapath).to.include({ socket: 'packet', interface: IF });
    expect(bridge.attachedRings()).to.deep.equal([0, 1]);
    // Nothing a header would carry was negotiated.
    for (const n of ['CSUM', 'GUEST_CSUM', 'HOST_TSO4', 'GUEST_TSO4'])
      expect(s.features.negotiatedNames).to.not.include(n);
    const flags = Number.parseInt(readFileSync(`/sys/class/net/${IF}/flags`, 'utf8'), 16);
    expect(flags & 0x100, `${IF} promiscuous while the socket is open`).to.equal(0x100);
    expect(bridge.problems()).to.deep.equal([]);
  });

  const busy =
    '--busy-poll-us 50 reached the kernel (VHOST_GET_VRING_BUSYLOOP_TIMEOUT answers 50 on both rings); ' +
    'experimental_zcopytx is reported';
  it(busy, () => {
    if (!bridge) throw new Error('no bridge');
    const d = bridge.status().datapath;
    console.log(`      busy poll: asked ${d.busyPollUs} us, kernel ${JSON.stringify(d.kernelBusyPollUs)}`);
    expect(d.busyPollUs).to.equal(50);
    expect(d.kernelBusyPollUs).to.deep.equal([50, 50]);
    // The module parameter it cannot set per port, reported as the kernel has it.
    const zc = readFileSync('/sys/module/vhost_net/parameters/experimental_zcopytx', 'utf8').trim();
    console.log(`      vhost_net experimental_zcopytx: ${zc}, status says ${d.zeroCopyTx}`);
    expect(d.zeroCopyTx).to.equal(zc !== '0');
  });
});

describe('backends: a macvtap in bridge mode on a veth (lab)', function () {
  this.timeout(240_000);
  const LOWER = 'vbmv0';
  const PEER = 'vbmv1';
  const MACVTAP = 'vbmvt0';
  const MAC = '52:54:00:5b:00:01';
  const HOST = '10.0.6.1';
  const SOCK = '/tmp/vb-macvtap.sock';
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;

  before(async function () {
    this.timeout(300_000);
    requireLab(this);
    // The guest's MAC on the macvtap; L2's address on the veth's other end (lab/host.ts).
    macvtapOnVeth({ lower: LOWER, peer: PEER, name: MACVTAP, mac: MAC, hostIp: `${HOST}/24` });
    bridge = await BridgeProcess.start({ name: 'macvtap', args: ['--socket-path', SOCK, '--macvtap', MACVTAP] });
    guest = await Guest.boot({
      name: 'macvtap',
      net: { kind: 'vhost-user', socketPath: SOCK },
      mac: MAC,
      ip: '10.0.6.2/24',
      peer: HOST,
      logFile: `${xchg}/guest-macvtap.log`,
    });
  });

  after(async function () {
    this.timeout(60_000);
    await guest?.shutdown();
    await bridge?.stop();
    if (inLab()) removeTap(LOWER); // its macvtap goes with it
  });

  it('the guest pings L2 and moves TCP both ways through the macvtap, with offloads', async function () {
    if (!guest || !bridge) throw new Error('no guest or bridge');
    await traffic(this, guest, HOST);
    const s = bridge.status();
    expect(s.datapath).to.include({ socket: 'macvtap', interface: MACVTAP });
    expect(bridge.attachedRings()).to.deep.equal([0, 1]);
    expect(s.features.negotiatedNames, 'the macvtap carries the header: offloads').to.include.members([
      'CSUM',
      'GUEST_CSUM',
      'GUEST_TSO4',
    ]);
    const ifindex = readFileSync(`/sys/class/net/${MACVTAP}/ifindex`, 'utf8').trim();
    expect(fdsOn(bridge.pid, `/dev/tap${ifindex}`), `the bridge holds /dev/tap${ifindex}`).to.equal(1);
    expect(hostIfCounter(MACVTAP, 'rx_packets'), 'the macvtap carried the guest frames').to.be.above(1000);
    expect(bridge.problems()).to.deep.equal([]);
  });

  it('takes a macvtap fd a manager opened (--tap-fd) and knows it for a macvtap', async () => {
    // The first port goes first: a second open of /dev/tapN would be one more queue of the same macvtap.
    await guest?.shutdown();
    guest = undefined;
    await bridge?.stop();
    bridge = undefined;
    const ifindex = readFileSync(`/sys/class/net/${MACVTAP}/ifindex`, 'utf8').trim();
    const cmd = [...BRIDGE_COMMAND, '--socket-path', SOCK, '--tap-fd', '4', ...EVENTS_ARGS].map((a) => `'${a}'`);
    const adopted = await BridgeProcess.start({
      name: 'macvtap-fd',
      command: 'bash',
      args: ['-c', `exec ${cmd.join(' ')} 4<>/dev/tap${ifindex}`],
    });
    try {
      const s = adopted.status();
      expect(s.datapath).to.include({ socket: 'macvtap', interface: MACVTAP });
      expect(s.features.offeredNames).to.include.members(['CSUM', 'GUEST_TSO4']);
      expect(adopted.problems()).to.deep.equal([]);
    } finally {
      await adopted.stop();
    }
  });
});
