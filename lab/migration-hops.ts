/**
 * Live migration as a benchmark figure (docs/migration.md, "As a figure"), inside L2: one L3 guest
 * migrates back and forth between QEMU 7.2 processes whose taps are ports of one Linux bridge (as a
 * host holds the taps of its VMs), behind two vhost-bridges or on QEMU's own tap,vhost=on. Each hop
 * starts a destination QEMU with -incoming on the other tap, migrates unthrottled and not paused, and
 * measures QEMU's reported downtime, the 50 ms pings from L2 lost across it, and the first reply
 * after the destination's RESUME event. `npm run bench` (scripts/lab-runs/bench.ts) runs it.
 */
import { BridgeProcess } from './bridge-process.js';
import { QUEUE_SIZE } from './configs.js';
import { Guest, type GuestNet } from './guest.js';
import { GuestGroup, hostBridge, migrate, PingWatch, removeHostBridge } from './migration.js';
import { Qmp } from './qmp.js';
import { retryAfterGuestFault } from './retry.js';

/** The configurations that migrate: the bridge, and QEMU's own vhost-net as the reference. */
export type MigrationConfig = 'bridge' | 'vhost-on';

/** Hops of one run: A -> B -> A, so that each run migrates the guest back and forth. */
export const HOPS_PER_RUN = 2;

/** One migration, as measured. */
export interface MigrationHop {
  /** 1 = A -> B, 2 = B -> A, ... */
  hop: number;
  /** ms the guest was stopped, as QEMU's query-migrate reports it */
  downtimeMs: number;
  /** ms from the migrate command to completion (QEMU's total-time) */
  totalMs: number;
  /** pings (every 50 ms from L2) that got no reply, from 1 s before the migration to 1 s after the first reply */
  lostPings: number;
  sentPings: number;
  /** ms from the destination's RESUME event to the first ping reply after it; null if none within 10 s */
  firstReplyMs: number | null;
}

export interface HopOptions {
  /** Prefix of the guest and bridge log files in $LAB_XCHG, and of the QEMU names. */
  tag: string;
  hops?: number;
  /** Progress, for people. */
  log?: (message: string) => void;
}

const HOST = '10.0.8.1';
const GUEST = '10.0.8.2';
/** Both QEMUs of a hop must give the guest the same MAC (the Guest default derives it from the name). */
const MAC = '52:54:00:08:00:02';
const BR = 'vbbmbr0';
const TAPS = ['vbbma', 'vbbmb'] as const;
const MiB = 1 << 20;
/** Unthrottled: the figure is the switch-over, not a migration stretched out to overlap traffic. */
const BANDWIDTH = 1024 * MiB;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const xchg = (): string => process.env.LAB_XCHG ?? '/tmp';

/**
 * Boot the guest on side A of `config`, migrate it `o.hops` times between the two sides, tear
 * everything down. Every guest it starts joins `group`; a fault of any of them during a hop voids
 * the attempt (the hop's figures would be the fault's), so it throws for lab/retry.ts to decide.
 */
async function hops(config: MigrationConfig, o: HopOptions, group: GuestGroup): Promise<MigrationHop[]> {
  const say = o.log ?? (() => {});
  const bridges: BridgeProcess[] = [];
  const live: { g: Guest; q: Qmp }[] = [];
  const sock = (side: number) => `/tmp/vb-${o.tag}-${side}.sock`;
  const faultsAtStart = group.faults;
  const out: MigrationHop[] = [];
  hostBridge(
    BR,
    `${HOST}/24`,
    TAPS.map((name) => ({ name })),
  );
  try {
    if (config === 'bridge') {
      for (const [side, tap] of TAPS.entries())
        bridges.push(
          await BridgeProcess.start({ name: `${o.tag}-${side}`, args: ['--socket-path', sock(side), '--tap', tap] }),
        );
    }
    const net = (side: number): GuestNet =>
      config === 'bridge'
        ? { kind: 'vhost-user', socketPath: sock(side) }
        : { kind: 'tap', ifname: TAPS[side], vhost: true };
    const start = async (n: number, incoming?: string) => {
      const name = `${o.tag}-${n}`;
      const qmp = `/tmp/vb-${name}.qmp`;
      const g = group.add(
        await Guest.boot({
          name,
          net: net(n % 2),
          queueSize: QUEUE_SIZE,
          mac: MAC,
          ip: `${GUEST}/24`,
          peer: HOST,
          logFile: `${xchg()}/guest-${name}.log`,
          log: o.log,
          extraQemuArgs: ['-qmp', `unix:${qmp},server=on,wait=off`],
          ...(incoming ? { incoming: { uri: incoming } } : {}),
        }),
      );
      const vm = { g, q: await Qmp.connect(name, qmp) };
      live.push(vm);
      return vm;
    };
    say('booting the guest on side A');
    let current = await start(0);
    await current.g.untilReply(HOST, 60);
    for (let hop = 1; hop <= (o.hops ?? HOPS_PER_RUN); hop++) {
      const uri = `unix:/tmp/vb-${o.tag}-${hop}.mig`;
      const next = await start(hop, uri);
      const ping = new PingWatch(GUEST);
      await sleep(1000);
      const r = await migrate(current.q, uri, { slowBytesPerS: BANDWIDTH, slowMs: 0, fastBytesPerS: BANDWIDTH });
      const resumed = await next.q.waitForEvent('RESUME', 30_000);
      current.q.close();
      await current.g.kill();
      const end = Date.now() + 10_000;
      while (!ping.after(resumed.at).length && Date.now() < end) await sleep(20);
      const first = ping.after(resumed.at)[0];
      await sleep(1000);
      const p = await ping.stop();
      if (group.faults !== faultsAtStart) throw new Error(`a guest fault during hop ${hop}: ${group.lastFault}`);
      const h: MigrationHop = {
        hop,
        downtimeMs: r.downtimeMs,
        totalMs: r.totalTimeMs,
        lostPings: p.lost,
        sentPings: p.sent,
        firstReplyMs: first ? Math.round(first.at - resumed.at) : null,
      };
      out.push(h);
      say(
        `hop ${hop} (${hop % 2 ? 'A -> B' : 'B -> A'}): ${(h.totalMs / 1000).toFixed(1)} s, downtime ` +
          `${h.downtimeMs} ms, ${h.lostPings} of ${h.sentPings} pings lost, ` +
          `first reply ${h.firstReplyMs} ms after RESUME`,
      );
      current = next;
    }
    return out;
  } finally {
    for (const v of live) {
      v.q.close();
      await v.g.kill();
    }
    for (const b of bridges) await b.stop();
    removeHostBridge(BR, [...TAPS]);
  }
}

/**
 * The hops under the lab's one retry (lab/retry.ts): if they fail and a guest faulted meanwhile,
 * every hop of the attempt is void and all are done once more from a fresh boot (logs tagged
 * `-again`); `onRetry` hears of the fault. Any other failure is final.
 */
export function migrateBackAndForth(
  config: MigrationConfig,
  o: HopOptions,
  onRetry?: (fault: string) => void,
): Promise<MigrationHop[]> {
  // The attempt's own finally tears its guests down: the recovery has nothing left to do.
  const group = new GuestGroup(o.tag, async () => {});
  return retryAfterGuestFault(
    group,
    (attempt) => hops(config, attempt === 1 ? o : { ...o, tag: `${o.tag}-again` }, group),
    { onRetry },
  );
}
