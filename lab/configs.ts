/**
 * The network configurations the demo and the benchmark boot the same L3 guest on, inside L2.
 * Each sets up its datapath, boots the guest, hands it to `use`, and tears everything down.
 *
 * - bridge:    QEMU -netdev vhost-user -> vhost-bridge -> the kernel's vhost-net on a tap
 * - vhost-on:  QEMU -netdev tap,vhost=on (QEMU owns vhost-net itself): the reference
 * - vhost-off: QEMU -netdev tap,vhost=off (QEMU's userspace virtio-net)
 * - dpdk:      QEMU -netdev vhost-user -> dpdk-testpmd (vhost PMD, io forwarding) -> tap PMD: what an
 *              operator would run instead of the bridge today (the OVS-DPDK kind of datapath), with
 *              DPDK's defaults and no hugepages (--no-huge -m 512)
 * - bridge-poll / vhost-on-poll: the same two with busy polling, 50 µs per ring (bridge --busy-poll-us 50,
 *              QEMU tap,vhost=on,poll-us=50: the same VHOST_SET_VRING_BUSYLOOP_TIMEOUT; docs/backends.md)
 * - bridge-mq2 / vhost-on-mq2: the same two with 2 queue pairs and 2 vCPUs
 * - bridge-macvtap / vhost-on-macvtap: the same two on a macvtap (bridge mode, on a veth whose other
 *              end has L2's address; lab/host.ts macvtapOnVeth) instead of a tap: bridge --macvtap,
 *              QEMU -netdev tap,fd=N,vhost=on,vhostfd=M on the macvtap's /dev/tapN, opened by the harness
 *              as libvirt's type='direct' does (lab/guest.ts TapFdNet)
 * - bridge-zc1 / bridge-zc0: the bridge on a tap with vhost_net reloaded as experimental_zcopytx=1 / =0
 *              before the run (nothing holds /dev/vhost-net then), and with its defaults after it
 * - ch-bridge / ch-tap: the guest under cloud-hypervisor (lab/guest/ch-args.ts): vhost-user to the bridge,
 *              and cloud-hypervisor's own virtio-net on the same tap (what its users have today)
 * Every configuration: same memory (memfd, share=on), same vCPUs, queue sizes pinned to 256.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { BridgeProcess } from './bridge-process.js';
import { Guest, type GuestNet, qemuOptValue, type Vmm } from './guest.js';
import { hostTap, macvtapOnVeth, reloadVhostModules, removeTap } from './host.js';
import { type Faulting, retryAfterGuestFault } from './retry.js';
import { stopProcess } from './stuck.js';

export const HOST_IP = '10.0.3.1';
export const QUEUE_SIZE = 256;

export type ConfigName =
  | 'bridge'
  | 'vhost-on'
  | 'vhost-off'
  | 'dpdk'
  | 'bridge-poll'
  | 'vhost-on-poll'
  | 'bridge-mq2'
  | 'vhost-on-mq2'
  | 'bridge-macvtap'
  | 'vhost-on-macvtap'
  | 'bridge-zc1'
  | 'bridge-zc0'
  | 'ch-bridge'
  | 'ch-tap';

/** Busy polling of the -poll configurations, µs per ring. */
const POLL_US = 50;

/** What a configuration's name says about how it is set up (the one place that reads the names). */
export interface ConfigFacts {
  /**
   * What serves the rings: the bridge, the VMM's own tap (QEMU's vhost=on or off, cloud-hypervisor's), or
   * dpdk-testpmd.
   */
  datapath: 'bridge' | 'vmm-tap' | 'dpdk';
  /** The guest's VMM. */
  vmm: Vmm;
  /** QEMU's tap: with vhost-net (vhost=on). */
  vhost: boolean;
  queuePairs: number;
  /** VHOST_SET_VRING_BUSYLOOP_TIMEOUT, µs per ring; 0 = off. */
  busyPollUs: number;
  /** The host side: a tap, or a macvtap on a veth (lab/host.ts macvtapOnVeth). */
  host: 'tap' | 'macvtap';
  /** vhost_net's experimental_zcopytx for the run (the module reloaded before and after); null = as loaded. */
  zcopytx: 0 | 1 | null;
}

/** The facts of configuration `name`; `queuePairs` is the default for those that do not fix it. */
export function configFacts(name: ConfigName, queuePairs = 1): ConfigFacts {
  const datapath = name === 'dpdk' ? 'dpdk' : /^(ch-)?bridge/.test(name) ? 'bridge' : 'vmm-tap';
  return {
    datapath,
    vmm: name.startsWith('ch-') ? 'cloud-hypervisor' : 'qemu',
    vhost: name.startsWith('vhost-on'),
    queuePairs: name.endsWith('-mq2') ? 2 : queuePairs,
    busyPollUs: name.endsWith('-poll') ? POLL_US : 0,
    host: name.endsWith('-macvtap') ? 'macvtap' : 'tap',
    zcopytx: name.endsWith('-zc1') ? 1 : name.endsWith('-zc0') ? 0 : null,
  };
}

/** The -macvtap configurations' interfaces: the veth pair and the macvtap with the guest's MAC. */
const MACVTAP = { lower: 'vbbmv0', peer: 'vbbmv1', name: 'vbbmvt0', mac: '52:54:00:5b:0b:01' };

/** dpdk-testpmd as a process: the vhost-user server and a tap (dtap0) it forwards to. */
export class TestPmd {
  readonly tap = 'dtap0';
  private exit: Promise<unknown>;
  private constructor(
    readonly child: ChildProcess,
    readonly socketPath: string,
    private readonly logFd: number,
  ) {
    this.exit = new Promise((r) => child.once('exit', r));
  }

  static async start(socketPath: string, pairs: number, logFile: string): Promise<TestPmd> {
    if (fs.existsSync(socketPath)) fs.unlinkSync(socketPath);
    const logFd = fs.openSync(logFile, 'a');
    // lcore 0 = main, lcore 1 = the forwarding loop (a busy poll: one vCPU of L2 at 100%).
    const child = spawn(
      'dpdk-testpmd',
      [
        '-l',
        '0,1',
        '-n',
        '1',
        '--no-huge',
        '-m',
        '512',
        '--no-pci',
        '--no-shconf',
        '--iova-mode=va',
        '--vdev',
        `net_vhost0,iface=${socketPath},queues=${pairs}`,
        '--vdev',
        'net_tap0,iface=dtap0',
        '--',
        '--forward-mode=io',
        '--auto-start',
        `--rxq=${pairs}`,
        `--txq=${pairs}`,
        '--nb-cores=1',
        '--total-num-mbufs=32768',
      ],
      { stdio: ['pipe', logFd, logFd] },
    );
    const t = new TestPmd(child, socketPath, logFd);
    const end = Date.now() + 60_000;
    while (!fs.existsSync(socketPath) || !fs.existsSync('/sys/class/net/dtap0')) {
      if (child.exitCode !== null)
        throw new Error(`dpdk-testpmd exited (${child.exitCode}) before it was ready; see ${logFile}`);
      if (Date.now() > end) {
        child.kill('SIGKILL');
        throw new Error(`dpdk-testpmd not ready after 60 s; see ${logFile}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    execFileSync('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', 'dtap0']);
    execFileSync('ip', ['link', 'set', 'dtap0', 'up']);
    return t;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** testpmd stops at a newline on stdin ("Press enter to exit"). */
  async stop(): Promise<void> {
    this.child.stdin?.end('\n');
    await stopProcess(this.child, this.exit, 'dpdk-testpmd', { signal: null });
    fs.closeSync(this.logFd);
  }
}

export interface RunContext {
  guest: Guest;
  /** The bridge process (bridge configuration only). */
  bridge?: BridgeProcess;
  /** dpdk-testpmd (dpdk configuration only). */
  testpmd?: TestPmd;
  /** ms from QEMU start to the guest's first ping reply. */
  firstPingMs: number;
  /** The host (L2) interface the guest's packets arrive on. */
  hostIf: string;
}

export interface ConfigOptions {
  /** Prefix of guest/bridge log files in $LAB_XCHG. */
  tag: string;
  queuePairs?: number;
  smp?: number;
  /** Called with each line the bridge logs (bridge configuration). */
  onBridgeLine?: (line: string) => void;
  log?: (msg: string) => void;
}

const xchg = (): string => process.env.LAB_XCHG ?? '/tmp';

/** Set up configuration `name`, boot the guest on it, run `use`, tear down. */
export async function withConfig<T>(
  name: ConfigName,
  o: ConfigOptions,
  use: (ctx: RunContext) => Promise<T>,
): Promise<T> {
  const tap = 'vbbench0';
  const sock = `/tmp/vb-${o.tag}.sock`;
  const f = configFacts(name, o.queuePairs);
  const pairs = f.queuePairs;
  let bridge: BridgeProcess | undefined;
  let testpmd: TestPmd | undefined;
  let guest: Guest | undefined;
  let reloaded = false;
  try {
    // Before anything opens /dev/vhost-net: the previous run's holders have exited.
    if (f.zcopytx !== null) {
      reloaded = true;
      await reloadVhostModules({ experimentalZcopytx: f.zcopytx });
    }
    let hostIf = tap;
    let macvtapDevice = '';
    if (f.host === 'macvtap') {
      macvtapDevice = macvtapOnVeth({ ...MACVTAP, hostIp: `${HOST_IP}/24` });
      hostIf = MACVTAP.peer;
    } else if (f.datapath !== 'dpdk') hostTap(tap, { ip: `${HOST_IP}/24`, queues: pairs });
    let net: GuestNet;
    if (f.datapath === 'dpdk') {
      testpmd = await TestPmd.start(sock, pairs, `${xchg()}/testpmd-${o.tag}.log`);
      hostIf = testpmd.tap;
      net = { kind: 'vhost-user', socketPath: sock, queues: pairs };
    } else if (f.datapath === 'bridge') {
      const args = ['--socket-path', sock, '--queues', String(pairs)];
      args.push(...(f.host === 'macvtap' ? ['--macvtap', MACVTAP.name] : ['--tap', tap]));
      if (f.busyPollUs) args.push('--busy-poll-us', String(f.busyPollUs));
      bridge = await BridgeProcess.start({ name: o.tag, args, onLine: o.onBridgeLine });
      net = { kind: 'vhost-user', socketPath: sock, queues: pairs };
    } else if (f.host === 'macvtap') {
      net = { kind: 'tap-fd', device: macvtapDevice, vhost: f.vhost, pollUs: f.busyPollUs || undefined };
    } else {
      net = { kind: 'tap', ifname: tap, vhost: f.vhost, queues: pairs, pollUs: f.busyPollUs || undefined };
    }
    guest = await Guest.boot({
      name: o.tag,
      vmm: f.vmm,
      net,
      smp: o.smp ?? pairs,
      queueSize: QUEUE_SIZE,
      ...(f.host === 'macvtap' ? { mac: MACVTAP.mac } : {}),
      logFile: `${xchg()}/guest-${o.tag}.log`,
      log: o.log,
    });
    // QEMU start (of the boot attempt that worked) to the first reply.
    const firstPingMs = guest.bootMs + (await guest.untilReply(HOST_IP, 60));
    return await use({ guest, bridge, testpmd, firstPingMs, hostIf });
  } finally {
    await guest?.shutdown().catch(() => guest?.kill());
    await bridge?.stop();
    await testpmd?.stop();
    removeTap(tap);
    removeTap(MACVTAP.lower); // its macvtap goes with it
    // The module's defaults back, once QEMU and the bridge have let go of /dev/vhost-net.
    if (reloaded) await reloadVhostModules();
  }
}

/**
 * withConfig under the lab's one retry (lab/retry.ts): if the run fails and its guest faulted
 * meanwhile, the whole configuration is set up and booted again (a fresh guest, a fresh bridge)
 * and `use` runs once more; its figures are then all its own. Any other failure is final.
 * `onRetry` hears of the fault; `attempt` tells `use` (and the tag of the second attempt's logs).
 */
export async function withConfigRetried<T>(
  name: ConfigName,
  o: ConfigOptions,
  use: (ctx: RunContext, attempt: 1 | 2) => Promise<T>,
  onRetry?: (fault: string) => void,
): Promise<T> {
  let guest: Guest | undefined;
  const faulting: Faulting = {
    get name() {
      return guest?.name ?? o.tag;
    },
    get faults() {
      return guest?.faults ?? 0;
    },
    get lastFault() {
      return guest?.lastFault ?? '';
    },
    recover: async () => {
      guest = undefined; // the next attempt boots its own guest
    },
  };
  return retryAfterGuestFault(
    faulting,
    (attempt) =>
      withConfig(name, attempt === 1 ? o : { ...o, tag: `${o.tag}-again` }, (ctx) => {
        guest = ctx.guest;
        return use(ctx, attempt);
      }),
    { onRetry },
  );
}

/** One datapath of {@link withSameGuest}: where its packets arrive in L2 and the L2 address to test against. */
export interface SameGuestPath {
  /** L2's interface (the tap) */
  hostIf: string;
  /** L2's address on it; the guest's is .2 of the same /24 */
  peer: string;
  /** ms from QEMU start to the first reply over this NIC */
  firstPingMs: number;
}

export interface SameGuestContext {
  guest: Guest;
  bridge: BridgeProcess;
  paths: { bridge: SameGuestPath; 'vhost-on': SameGuestPath };
}

/**
 * The bridge and QEMU's tap,vhost=on in ONE guest boot, each on its own NIC, tap and subnet
 * (docs/backends.md, "The same guest on both datapaths"): the bench's tests can then alternate
 * between them within seconds, so that both sides of a ratio see the same boot and the same lab
 * speed. `bridgeFirst`: the bridge's NIC is the guest's first PCI device (eth0), else the second;
 * the bench alternates it between boots so that neither datapath always has the first slot.
 */
export async function withSameGuest<T>(
  o: ConfigOptions & { bridgeFirst: boolean },
  use: (ctx: SameGuestContext) => Promise<T>,
): Promise<T> {
  const taps = { bridge: 'vbbench0', 'vhost-on': 'vbbench1' } as const;
  const nets = { bridge: '10.0.3', 'vhost-on': '10.0.5' } as const;
  const macs = { bridge: '52:54:00:5b:0c:01', 'vhost-on': '52:54:00:5b:0c:02' } as const;
  const sock = `/tmp/vb-${o.tag}.sock`;
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;
  try {
    for (const k of ['bridge', 'vhost-on'] as const) hostTap(taps[k], { ip: `${nets[k]}.1/24` });
    bridge = await BridgeProcess.start({ name: o.tag, args: ['--socket-path', sock, '--tap', taps.bridge] });
    const first = o.bridgeFirst ? 'bridge' : 'vhost-on';
    const second = o.bridgeFirst ? 'vhost-on' : 'bridge';
    const sizes = `rx_queue_size=${QUEUE_SIZE},tx_queue_size=${QUEUE_SIZE}`;
    const bridgeNet: GuestNet = { kind: 'vhost-user', socketPath: sock };
    const tapNet: GuestNet = { kind: 'tap', ifname: taps['vhost-on'], vhost: true };
    // The second NIC, as Guest.boot writes the first (lab/guest.ts qemuArgs), with id n1.
    const extra =
      second === 'bridge'
        ? ['-chardev', `socket,id=vu1,path=${qemuOptValue(sock)}`, '-netdev', 'vhost-user,id=n1,chardev=vu1']
        : ['-netdev', `tap,id=n1,ifname=${taps['vhost-on']},script=no,downscript=no,vhost=on`];
    extra.push('-device', `virtio-net-pci,netdev=n1,mac=${macs[second]},${sizes}`);
    guest = await Guest.boot({
      name: o.tag,
      net: first === 'bridge' ? bridgeNet : tapNet,
      mac: macs[first],
      ip: `${nets[first]}.2/24`,
      peer: `${nets[first]}.1`,
      queueSize: QUEUE_SIZE,
      extraQemuArgs: extra,
      logFile: `${xchg()}/guest-${o.tag}.log`,
      log: o.log,
    });
    const g = guest;
    // The guest's init configures only its first NIC: the second by its MAC.
    const r = await g.exec(
      `for i in /sys/class/net/*; do [ "$(cat $i/address)" = ${macs[second]} ] && n=\${i##*/}; done; ` +
        `ip addr add ${nets[second]}.2/24 dev $n && ip link set $n up && echo $n`,
      { timeoutMs: 20_000 },
    );
    if (r.rc !== 0) throw new Error(`the guest's second NIC (${macs[second]}) not configured: ${r.output.trim()}`);
    const path = async (k: 'bridge' | 'vhost-on'): Promise<SameGuestPath> => ({
      hostIf: taps[k],
      peer: `${nets[k]}.1`,
      firstPingMs: g.bootMs + (await g.untilReply(`${nets[k]}.1`, 60)),
    });
    const paths = { bridge: await path('bridge'), 'vhost-on': await path('vhost-on') };
    return await use({ guest: g, bridge, paths });
  } finally {
    await guest?.shutdown().catch(() => guest?.kill());
    await bridge?.stop();
    for (const t of Object.values(taps)) removeTap(t);
  }
}
