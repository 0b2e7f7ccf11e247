/**
 * The network configurations the demo and the benchmark boot the same L3 guest on, inside L2.
 * Each sets up its datapath, boots the guest, hands it to `use`, and tears everything down.
 *
 * - bridge:    QEMU -netdev vhost-user -> vhost-bridge -> the kernel's vhost-net on a tap
 * - vhost-on:  QEMU -netdev tap,vhost=on (QEMU owns vhost-net itself): the reference
 * - vhost-off: QEMU -netdev tap,vhost=off (QEMU's userspace virtio-net)
 * Every configuration: same memory (memfd, share=on), same vCPUs, queue sizes pinned to 256.
 */
import { BridgeProcess } from '../../test/qemu/bridge-process.js';
import { Guest, hostTap, removeTap, type GuestNet } from '../../test/qemu/guest.js';

export const HOST_IP = '10.0.3.1';
export const QUEUE_SIZE = 256;

export type ConfigName = 'bridge' | 'vhost-on' | 'vhost-off';

export interface RunContext {
  guest: Guest;
  /** The bridge process (bridge configuration only). */
  bridge?: BridgeProcess;
  /** ms from QEMU start to the guest's first ping reply. */
  firstPingMs: number;
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

/** Ping until the first reply; returns the guest's wall time spent, ms. */
async function untilFirstReply(g: Guest, tries = 60): Promise<number> {
  const t0 = Date.now();
  const r = await g.exec(`i=0; while [ $i -lt ${tries} ]; do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1 && exit 0; i=$((i+1)); done; exit 1`, { timeoutMs: (tries + 30) * 1000 });
  if (r.rc !== 0) throw new Error(`no ping reply from ${HOST_IP} after ${tries} tries`);
  return Date.now() - t0;
}

/** Set up configuration `name`, boot the guest on it, run `use`, tear down. */
export async function withConfig<T>(name: ConfigName, o: ConfigOptions, use: (ctx: RunContext) => Promise<T>): Promise<T> {
  const tap = 'vbbench0';
  const sock = `/tmp/vb-${o.tag}.sock`;
  const pairs = o.queuePairs ?? 1;
  hostTap(tap, { ip: `${HOST_IP}/24`, queues: pairs });
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;
  try {
    let net: GuestNet;
    if (name === 'bridge') {
      bridge = await BridgeProcess.start({ name: o.tag, args: ['--socket-path', sock, '--tap', tap, '--queues', String(pairs)], onLine: o.onBridgeLine });
      net = { kind: 'vhost-user', socketPath: sock, queues: pairs };
    } else {
      net = { kind: 'tap', ifname: tap, vhost: name === 'vhost-on', queues: pairs };
    }
    guest = await Guest.boot({
      name: o.tag, net, smp: o.smp ?? pairs, queueSize: QUEUE_SIZE,
      logFile: `${xchg()}/guest-${o.tag}.log`, log: o.log,
    });
    // QEMU start (of the boot attempt that worked) to the first reply.
    const firstPingMs = guest.bootMs + await untilFirstReply(guest);
    return await use({ guest, bridge, firstPingMs });
  } finally {
    await guest?.shutdown().catch(() => guest?.kill());
    await bridge?.stop();
    removeTap(tap);
  }
}
