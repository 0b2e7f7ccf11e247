/**
 * The soak (docs/soak.md): guests on the ports of one daemon (and optionally one guest on a one-port
 * bridge), synthetic front-ends on spare ports, a ping every 50 ms from L2 to every guest, and one
 * fault at a time, picked at random from a seeded generator. After every fault it checks what an
 * operator relies on: the daemon is alive (or back within 10 s), the guests that were not the fault's
 * target lost no reply, the target passes traffic again within 10 s, the daemon's fd count is back at
 * its level for these ports, and no port is left half set up. Runs inside L2 only.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { BridgeProcess } from '../bridge-process.js';
import { DaemonProcess } from '../daemon-process.js';
import { type PortRow, request } from '../../src/daemon/ctl.js';
import type { PortReport } from '../../src/daemon/report.js';
import { ID, msg } from '../frontend/builder.js';
import { memfd, TestFrontEnd } from '../frontend/frontend.js';
import { type Handshaken, handshake } from '../frontend/handshake.js';
import { NobodyPeer } from '../as-user.js';
import { Guest } from '../guest.js';
import { hostTap, removeTap } from '../host.js';
import { HostPinger } from './pinger.js';
import { Rng } from './rng.js';
import { guestCommand, TrafficSink } from './traffic.js';

/** The longest a target may take to pass traffic again, and the daemon to answer after a restart. */
export const RECOVERY_LIMIT_MS = 10_000;
/**
 * A guest's TCP stream that completed no checked transfer for this long (since its last start) has
 * stalled. After an outage near RECOVERY_LIMIT_MS, TCP's doubling retransmission timeout (RFC 6298)
 * may leave a healthy connection quiet for as long again: 30 s was hit after 12 s daemon restarts.
 */
export const STREAM_STALL_MS = 60_000;

/** VB_SOAK_LOG_LEVEL=debug logs every vhost-user message of the daemon (to diagnose a failure). */
const DAEMON_ARGS = process.env.VB_SOAK_LOG_LEVEL ? ['--log-level', process.env.VB_SOAK_LOG_LEVEL] : [];

/** Every kind of event the injector knows (docs/soak.md's table). */
export const EVENT_KINDS = [
  'daemon-kill',
  'qemu-kill',
  'guest-reboot',
  'link-flap',
  'ctl-reset',
  'ctl-remove-add',
  'garbage',
  'sighup',
  'vanish',
  'memtable',
  'refused-uid',
] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

/**
 * How often the injector picks each kind (relative weights; docs/soak.md, "Pace"). The issue asks for
 * 300 events in 30 minutes, at most 6 s each on average, with every kind in the mix. Under L2's TCG
 * an L3 guest boots in 25-60 s (`qemu-kill`, `guest-reboot`) and a restarted daemon takes 15-30 s
 * (`daemon-kill`: Node's start), while the other kinds take 1-4 s: the boots are made rare enough
 * for the average to fit, yet common enough to come up 5-10 times each in 30 minutes
 * (`ctl-reset` and `ctl-remove-add` have two targets each, a guest's port and a spare one).
 */
export const WEIGHTS: Readonly<Record<EventKind, number>> = {
  'daemon-kill': 3,
  'qemu-kill': 2,
  'guest-reboot': 2,
  'link-flap': 14,
  'ctl-reset': 20,
  'ctl-remove-add': 20,
  garbage: 14,
  sighup: 12,
  vanish: 14,
  memtable: 14,
  'refused-uid': 12,
};

/**
 * The pace these weights give, from each kind's seconds per event (start to checked, plus the gap):
 * the average seconds per event and how many of each kind to expect in `seconds`.
 */
export function expectedPace(
  secondsPerKind: Readonly<Record<EventKind, number>>,
  seconds: number,
  weights: Readonly<Record<EventKind, number>> = WEIGHTS,
): { perEvent: number; events: number; byKind: Record<EventKind, number> } {
  const total = EVENT_KINDS.reduce((n, k) => n + weights[k], 0);
  const perEvent = EVENT_KINDS.reduce((n, k) => n + (weights[k] / total) * secondsPerKind[k], 0);
  const events = seconds / perEvent;
  const byKind = Object.fromEntries(EVENT_KINDS.map((k) => [k, (events * weights[k]) / total])) as Record<
    EventKind,
    number
  >;
  return { perEvent, events, byKind };
}

/** A comma-separated list of kinds (`--only`, VB_SOAK_KINDS); undefined for none given. */
export function parseKinds(list: string | undefined): EventKind[] | undefined {
  if (!list) return undefined;
  const kinds = list.split(',').map((k) => k.trim());
  const bad = kinds.filter((k) => !(EVENT_KINDS as readonly string[]).includes(k));
  if (bad.length) throw new Error(`no such kind of event: ${bad.join(', ')} (kinds: ${EVENT_KINDS.join(', ')})`);
  return kinds as EventKind[];
}

export interface SoakOptions {
  /** how long to inject faults */
  seconds: number;
  seed: number;
  /** guests on daemon ports */
  guests: number;
  /** one more guest on a one-port bridge */
  onePort: boolean;
  /**
   * start no event later than this many seconds after runSoak was called, even if `seconds` of
   * faults are not done (a deadline for the lab: `npm run soak -- --until`); the result's `seconds`
   * are then those soaked
   */
  budgetSeconds?: number;
  /** pause between events (default GAP_MS) */
  gapMs?: number;
  /** only these kinds of event (default all): to hammer one sequence that failed */
  kinds?: readonly EventKind[];
  /** progress lines (default console.log) */
  log?: (line: string) => void;
  /** called with every event's record and the sample after it, as soon as both are complete (a run
   *  cut short, by L2 dying for one, keeps them) */
  onEvent?: (rec: EventRecord, sample: Sample) => void;
  /** called once set up, with the run's parameters and the daemon's fd count for its ports */
  onStart?: (head: SoakResult) => void;
}

export interface Sample {
  /** ms since the soak started */
  t: number;
  /** the daemon process sampled (a daemon-kill starts a new one) */
  pid: number;
  fds: number;
  rssKiB: number;
}

export interface EventRecord {
  i: number;
  kind: EventKind;
  target: string;
  /** ms since the soak started */
  t: number;
  /** from the fault to the first reply of every affected guest (null: nothing to recover) */
  recoveryMs: number | null;
  /** replies lost by guests that were not the target, and requests they sent meanwhile */
  bystanderLost: number;
  bystanderSent: number;
  /** bystanders' UDP lines lost, of those their complete bursts sent during the event */
  bystanderUdpLost: number;
  bystanderUdpSent: number;
  /** checked TCP transfers (every guest) that ended since the previous event's check, and those cut or
   *  corrupt that ended during this event of guests it did not target */
  transfers: number;
  transfersBad: number;
  /** a fault of the nested lab's guest (docs/lab.md "Guest faults") during the event, if any */
  guestFault: string | null;
  failures: string[];
  /** what else the event measured (the daemon's restart time) */
  detail?: string;
  /** where its time went, ms: the fault, the target's recovery, the bystanders' checks (waiting for
   *  ping's reports), the port-state check (with its 3 s second look, if one was needed), the fd count */
  ms?: { run: number; recovery: number; bystanders: number; state: number; fds: number };
  fds: number;
  rssKiB: number;
}

export interface SoakResult {
  seed: number;
  kernel: string;
  seconds: number;
  guests: number;
  onePort: boolean;
  baselineFds: number;
  /** UDP lines L2 received over the run, every guest, checked or not (that traffic was there) */
  udpLines?: number;
  events: EventRecord[];
  samples: Sample[];
  /** failures outside the events (set-up, RSS growth) */
  failures: string[];
}

interface GuestRef {
  name: string;
  /** its daemon port, or null on the one-port bridge */
  port: string | null;
  guest: Guest;
  pinger: HostPinger;
  /** L2's address on the guest's tap (where its TCP and UDP traffic goes) */
  host: string;
  /** the token of its senders' latest start (traffic.ts) */
  token: string;
  starts: number;
  /** its UDP bursts of `token` up to this one are checked (or forgiven: sent while it was a target) */
  udpChecked: number;
  /** the end of the last event that targeted it, until its bursts after that are known (see below) */
  udpForgiveBefore: number | null;
}

interface Outcome {
  /** guests expected to lose replies */
  affected: GuestRef[];
  /** when the fault happened (recovery is measured from here) */
  from: number;
  /** replies before this do not count as recovered (the fault is over from the harness's side) */
  after: number;
  /** extra failures found by the event itself */
  failures?: string[];
  /** what else it measured, for the log line */
  detail?: string;
}

const DIR = '/tmp/vb-soak';
const CONFIG = `${DIR}/config.json`;
const SPARES = ['s1', 's2'] as const;
const sock = (port: string): string => `${DIR}/${port}.sock`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/**
 * The pause between two events. Nothing is checked in it (every check covers its event, from its
 * start to the end of its recovery), so it is short: the soak's pace comes from the checks.
 */
export const GAP_MS = 250;
/** Guest.boot calls per guest at set-up, and recover() calls per guest during the run. */
const BOOT_TRIES = 3;

/** An unknown request carrying an fd: the daemon drops the connection and logs the port. */
const GARBAGE = Buffer.from([0x4d, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);

/** A run's result before its first event: its parameters, nothing measured yet. */
export function emptyResult(o: Pick<SoakResult, 'seed' | 'kernel' | 'seconds' | 'guests' | 'onePort'>): SoakResult {
  const { seed, kernel, seconds, guests, onePort } = o;
  return { seed, kernel, seconds, guests, onePort, baselineFds: 0, events: [], samples: [], failures: [] };
}

export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const log = o.log ?? ((l: string) => console.log(l));
  const rng = new Rng(o.seed);
  const t0 = Date.now();
  const xchg = process.env.LAB_XCHG ?? '/tmp';
  const result = emptyResult({ ...o, kernel: os.release() });

  fs.rmSync(DIR, { recursive: true, force: true });
  fs.mkdirSync(DIR, { recursive: true });
  const guestPorts = Array.from({ length: o.guests }, (_, i) => `g${i}`);
  // Guest ports: any user may connect (mode 0666), only root passes the allow-list (refused-uid).
  const specs: Record<
    string,
    { tap: string; persistentTap?: boolean; socket: string; mode?: string; allowUsers?: number[] }
  > = {};
  guestPorts.forEach((p, i) => {
    specs[p] = { tap: `vbsoak${i}`, persistentTap: true, socket: sock(p), mode: '0666', allowUsers: [0] };
    hostTap(`vbsoak${i}`, { ip: `10.0.${40 + i}.1/24` });
  });
  for (const s of SPARES) specs[s] = { tap: `vbsoak${s}`, socket: sock(s) };
  fs.writeFileSync(CONFIG, JSON.stringify({ control: { path: sock('control') }, ports: specs }));

  let daemon = await DaemonProcess.start('soak', CONFIG, DAEMON_ARGS);
  let restarts = 0;
  const synths = new Map<string, Handshaken>();
  const synth = async (p: string): Promise<void> => {
    synths.get(p)?.close();
    synths.delete(p);
    synths.set(p, await handshake(sock(p)));
  };
  for (const s of SPARES) await synth(s);

  // The refused-uid event's peer as nobody: one child for the run (Node's start costs seconds in L2).
  const nobody = NobodyPeer.start();
  let bridge: BridgeProcess | null = null;
  const refs: GuestRef[] = [];
  /** every guest booted (shut down at the end, also if set-up failed half-way) */
  const booted: Guest[] = [];
  const addresses = new Map<string, string>(guestPorts.map((p, i) => [`10.0.${40 + i}.2`, p]));
  if (o.onePort) addresses.set('10.0.50.2', 'one-port');
  const sink = await TrafficSink.open(addresses);
  /** (Re)starts a guest's TCP stream and UDP bursts: after every boot, reboot or fault of the lab. */
  const startTraffic = async (r: GuestRef): Promise<void> => {
    r.token = `${r.name}.${++r.starts}`;
    // A fresh start's first burst may meet an empty neighbour cache: checked from the second on.
    r.udpChecked = 1;
    r.udpForgiveBefore = null;
    sink.startedAt.set(r.name, Date.now());
    await r.guest.exec(guestCommand(r.host, r.token), { timeoutMs: 15_000 });
  };
  /** recover() a guest, up to BOOT_TRIES times (each boot tries twice): the nested lab's boot hang. */
  const bringBack = async (r: GuestRef): Promise<void> => {
    for (let k = 1; ; k++) {
      try {
        return await r.guest.recover();
      } catch (e) {
        if (k >= BOOT_TRIES) throw e;
        log(`soak: guest ${r.name} did not come back (${(e as Error).message.split('\n')[0]}); booting it again`);
      }
    }
  };
  /** After a lab fault of a guest (at set-up or in an event): boot it again, wait for its first
   *  ping reply, start its traffic once more. Returns what failed, or null. */
  const revive = async (r: GuestRef): Promise<string | null> => {
    try {
      await bringBack(r);
    } catch (e) {
      return `${r.name}: the lab could not boot the guest again: ${(e as Error).message.split('\n')[0]}`;
    }
    try {
      await r.pinger.replyAfter(Date.now(), 30_000);
    } catch (e) {
      return (e as Error).message;
    }
    return startTraffic(r).then(
      () => null,
      (e: Error) => `${r.name}: traffic not restarted: ${e.message}`,
    );
  };
  const cleanup = async (): Promise<void> => {
    sink.close();
    await nobody.close();
    for (const r of refs) r.pinger.stop();
    await Promise.all(booted.map((g) => g.shutdown({ timeoutMs: 10_000 }).catch(() => undefined)));
    for (const f of synths.values()) f.close();
    await daemon.stop().catch(() => undefined);
    await bridge?.stop().catch(() => undefined);
    for (let i = 0; i < o.guests; i++) removeTap(`vbsoak${i}`);
    if (o.onePort) removeTap('vbsoakp');
  };

  /** A guest's boot, up to BOOT_TRIES times (each Guest.boot tries twice): the nested lab's boot
   *  hang took the 4th guest's two attempts in a row at set-up on 2026-12-01 (docs/soak.md, "Pace"). */
  const bootGuest = async (opts: Parameters<typeof Guest.boot>[0]): Promise<Guest> => {
    for (let k = 1; ; k++) {
      try {
        const g = await Guest.boot(opts);
        booted.push(g);
        return g;
      } catch (e) {
        if (k >= BOOT_TRIES) throw e;
        log(`soak: guest ${opts.name} did not boot (${(e as Error).message.split('\n')[0]}); booting it again`);
      }
    }
  };

  try {
    // The guests boot one at a time, and are pinged and loaded only once all are up: every L3 exit
    // costs L2's TCG, and a boot is what the nested lab's faults come with most (docs/soak.md, "Pace").
    const up: Omit<GuestRef, 'pinger' | 'token' | 'starts' | 'udpChecked' | 'udpForgiveBefore'>[] = [];
    const ips: string[] = [];
    for (const [i, port] of guestPorts.entries()) {
      const ip = `10.0.${40 + i}.2`;
      const guest = await bootGuest({
        name: `soak-${port}`,
        net: { kind: 'vhost-user', socketPath: sock(port), reconnectSeconds: 1 },
        ip: `${ip}/24`,
        peer: `10.0.${40 + i}.1`,
        logFile: `${xchg}/guest-soak-${port}.log`,
      });
      up.push({ name: port, port, guest, host: `10.0.${40 + i}.1` });
      ips.push(ip);
    }
    if (o.onePort) {
      hostTap('vbsoakp', { ip: '10.0.50.1/24' });
      bridge = await BridgeProcess.start({
        name: 'soak-one-port',
        args: ['--socket-path', sock('p'), '--tap', 'vbsoakp'],
      });
      const guest = await bootGuest({
        name: 'soak-one-port',
        net: { kind: 'vhost-user', socketPath: sock('p'), reconnectSeconds: 1 },
        ip: '10.0.50.2/24',
        peer: '10.0.50.1',
        logFile: `${xchg}/guest-soak-one-port.log`,
      });
      up.push({ name: 'one-port', port: null, guest, host: '10.0.50.1' });
      ips.push('10.0.50.2');
    }
    for (const [k, g] of up.entries())
      refs.push({
        ...g,
        pinger: new HostPinger(g.name, ips[k]),
        token: '',
        starts: 0,
        udpChecked: 0,
        udpForgiveBefore: null,
      });
    // A lab fault of a guest during the set-up (a stall while its senders start, a reset before its
    // first reply) is absorbed as in the events: the guest is booted again, its senders started once more.
    /** each guest's fault count as last absorbed: a fault after it (set-up, an event, the gap between
     *  events) is absorbed by the next event's check (absorbFaults), never charged to the bridge */
    const faultsSeen: number[] = [];
    for (const r of refs) {
      const faults = r.guest.faults;
      try {
        await startTraffic(r);
        await r.pinger.replyAfter(Date.now(), 30_000);
      } catch (e) {
        if (r.guest.faults === faults) throw e;
        log(`soak: ${r.name} faulted while its traffic started (${r.guest.lastFault}); booting it again`);
        const failure = await revive(r);
        if (failure) throw new Error(failure);
      }
      faultsSeen.push(r.guest.faults);
    }
    const ready = Date.now();
    await sleep(1000);
    result.baselineFds = fdCount(daemon.pid);
    o.onStart?.({ ...result, events: [], samples: [] });
    log(
      `soak: seed ${o.seed}; ${o.guests} guest(s) on the daemon${o.onePort ? ' + 1 on a one-port bridge' : ''}, ` +
        `spare ports ${SPARES.join(', ')}; daemon pid ${daemon.pid}, ${result.baselineFds} fds, ` +
        `${rssKiB(daemon.pid)} KiB RSS`,
    );

    const daemonRefs = (): GuestRef[] => refs.filter((r) => r.port !== null);
    const pickGuest = (daemonOnly = false): GuestRef => rng.pick(daemonOnly ? daemonRefs() : refs);
    /** A port's front-end is connected and its rings 0 and 1 attached. */
    const ringsOf = (st: PortReport): boolean => {
      const attached = st.device?.rings.filter((r) => r.attached).map((r) => r.index) ?? [];
      return st.device?.frontEnd === true && attached.includes(0) && attached.includes(1);
    };

    /** The events the injector picks from; `weight` sets how often (boots are slow: rarer). */
    const events: { kind: EventKind; weight: number; run: () => Promise<Outcome & { target: string }> }[] = [
      {
        kind: 'daemon-kill',
        weight: WEIGHTS['daemon-kill'],
        run: async () => {
          const killed = Date.now();
          await daemon.stop('SIGKILL');
          for (const f of synths.values()) f.close();
          synths.clear();
          const spawned = Date.now();
          daemon = await DaemonProcess.start(`soak-restart-${++restarts}`, CONFIG, DAEMON_ARGS);
          const after = Date.now();
          // The restart's limit counts from the daemon's first log line: the runtime's own start
          // before it (Node loading the program: 0.34 s on the lab's host, 5-30 s under L2's TCG
          // with guests running) is the lab's speed, measured and shown, not the bridge's recovery
          // (docs/soak.md, "daemon-kill under TCG").
          const from = daemon.firstLineAt ?? spawned;
          const failures =
            after - from > RECOVERY_LIMIT_MS ? [`the daemon answered ${after - from} ms after its start`] : [];
          for (const s of SPARES) await synth(s);
          const detail =
            `daemon answered ${after - killed} ms after SIGKILL: Node's start ${from - spawned} ms, ` +
            `then the daemon's ${after - from} ms`;
          return { target: 'daemon', affected: daemonRefs(), from, after, failures, detail };
        },
      },
      {
        kind: 'qemu-kill',
        weight: WEIGHTS['qemu-kill'],
        run: async () => {
          const r = pickGuest();
          await r.guest.kill();
          await bringBack(r);
          const t = Date.now();
          await startTraffic(r);
          return { target: r.name, affected: [r], from: t, after: t };
        },
      },
      {
        kind: 'guest-reboot',
        weight: WEIGHTS['guest-reboot'],
        run: async () => {
          const r = pickGuest();
          await r.guest.reboot();
          const t = Date.now();
          await startTraffic(r);
          return { target: r.name, affected: [r], from: t, after: t };
        },
      },
      {
        kind: 'link-flap',
        weight: WEIGHTS['link-flap'],
        run: async () => {
          const r = pickGuest();
          await r.guest.exec('ip link set eth0 down; sleep 1; ip link set eth0 up');
          const t = Date.now();
          return { target: r.name, affected: [r], from: t, after: t };
        },
      },
      {
        kind: 'ctl-reset',
        weight: WEIGHTS['ctl-reset'],
        run: async () => {
          if (rng.next() < 0.5) {
            const s = rng.pick(SPARES);
            await daemon.ask('reset', { port: s });
            await synth(s);
            const t = Date.now();
            return { target: s, affected: [], from: t, after: t };
          }
          const r = pickGuest(true);
          const from = Date.now();
          await daemon.ask('reset', { port: r.port });
          return { target: r.name, affected: [r], from, after: Date.now() };
        },
      },
      {
        kind: 'ctl-remove-add',
        weight: WEIGHTS['ctl-remove-add'],
        run: async () => {
          const spare = rng.next() < 0.5;
          const port = spare ? rng.pick(SPARES) : pickGuest(true).port!;
          const from = Date.now();
          await daemon.ask('remove', { port });
          if (spare) {
            synths.get(port)?.close();
            synths.delete(port);
          }
          await sleep(300);
          await daemon.ask('add', { name: port, config: specs[port] });
          const after = Date.now();
          if (spare) await synth(port);
          const affected = refs.filter((r) => r.port === port);
          return { target: port, affected, from, after };
        },
      },
      {
        kind: 'garbage',
        weight: WEIGHTS.garbage,
        run: async () => {
          synths.get('s2')?.close();
          synths.delete('s2');
          const fe = TestFrontEnd.connect(sock('s2'));
          fe.send(GARBAGE);
          const r = await fe.reply(5000);
          fe.close();
          const failures = r === 'eof' ? [] : ['s2: the daemon answered garbage instead of dropping the connection'];
          await synth('s2');
          const t = Date.now();
          return { target: 's2', affected: [], from: t, after: t, failures };
        },
      },
      {
        kind: 'vanish',
        weight: WEIGHTS.vanish,
        run: async () => {
          synths.get('s2')?.close();
          synths.delete('s2');
          const fe = TestFrontEnd.connect(sock('s2'));
          await fe.ask(msg.getFeatures());
          fe.send(msg.setOwner());
          fe.close();
          await synth('s2');
          const t = Date.now();
          return { target: 's2', affected: [], from: t, after: t };
        },
      },
      {
        kind: 'memtable',
        weight: WEIGHTS.memtable,
        run: async () => {
          const h = synths.get('s1');
          if (!h) throw new Error('s1 has no synthetic front-end');
          const region = { gpa: 0x100_0000n, size: 1n << 20n, qva: 0x7f10_0000_0000n };
          const failures: string[] = [];
          const add = await h.fe.ask(msg.addMemReg(region).needReply(), [memfd(region.size, 'vb-soak-region')]);
          if (add === 'eof' || add.readUInt32LE(0) !== ID.ADD_MEM_REG || add.readBigUInt64LE(12) !== 0n)
            failures.push('s1: ADD_MEM_REG was not acked');
          const rem = await h.fe.ask(msg.remMemReg(region).needReply());
          if (rem === 'eof' || rem.readUInt32LE(0) !== ID.REM_MEM_REG || rem.readBigUInt64LE(12) !== 0n)
            failures.push('s1: REM_MEM_REG was not acked');
          const t = Date.now();
          return { target: 's1', affected: [], from: t, after: t, failures };
        },
      },
      {
        kind: 'refused-uid',
        weight: WEIGHTS['refused-uid'],
        run: async () => {
          // A peer of another uid on a guest's port (mode 0666, allow-list root): refused before any
          // message is read, its fd closed (the fd check below), the port's own guest undisturbed.
          const r = pickGuest(true);
          const port = r.port!;
          const refusedBefore = (await daemon.status(port)).device?.refusedPeers ?? 0;
          const from = Date.now();
          const seen = await nobody.connect(sock(port));
          const refusedNow = (await daemon.status(port)).device?.refusedPeers ?? 0;
          const failures: string[] = [];
          if (seen.got !== 0 || !seen.hungUp)
            failures.push(`${port}: a peer outside the allow-list got ${seen.got} bytes, hung up: ${seen.hungUp}`);
          if (refusedNow !== refusedBefore + 1)
            failures.push(`${port}: refusals counted ${refusedBefore} -> ${refusedNow}, expected one more`);
          return { target: port, affected: [], from, after: Date.now(), failures };
        },
      },
      {
        kind: 'sighup',
        weight: WEIGHTS.sighup,
        run: async () => {
          const sessions = async (): Promise<number[]> =>
            Promise.all([...guestPorts, ...SPARES].map(async (p) => (await daemon.status(p)).device?.sessions ?? -1));
          const before = await sessions();
          const from = Date.now();
          process.kill(daemon.pid, 'SIGHUP');
          await sleep(500);
          const now = await sessions();
          const failures =
            now.join() === before.join()
              ? []
              : [`SIGHUP with an unchanged config touched ports: sessions ${before.join()} -> ${now.join()}`];
          return { target: 'daemon', affected: [], from, after: Date.now(), failures };
        },
      },
    ];

    const chosen = o.kinds ? events.filter((e) => o.kinds?.includes(e.kind)) : events;
    if (!chosen.length) throw new Error(`no such kind of event: ${o.kinds?.join(',')}`);
    let i = 0;
    /** senders' tokens whose stalled stream was looked into (once each: what it shows does not change) */
    const stallShown = new Set<string>();
    /** transfers that ended before this were checked by an earlier event (ms since the epoch) */
    let transfersFrom = ready;
    const budgetOver = (): boolean => o.budgetSeconds !== undefined && Date.now() - t0 >= o.budgetSeconds * 1000;
    while (Date.now() - t0 < o.seconds * 1000 + (ready - t0) && !budgetOver()) {
      const ev = rng.weighted(chosen.map((e) => ({ value: e, weight: e.weight })));
      const start = Date.now();
      const rec: EventRecord = {
        i: ++i,
        kind: ev.kind,
        target: '?',
        t: start - t0,
        recoveryMs: null,
        bystanderLost: 0,
        bystanderSent: 0,
        bystanderUdpLost: 0,
        bystanderUdpSent: 0,
        transfers: 0,
        transfersBad: 0,
        guestFault: null,
        failures: [],
        fds: 0,
        rssKiB: 0,
      };
      let outcome: (Outcome & { target: string }) | null = null;
      const ms = { run: 0, recovery: 0, bystanders: 0, state: 0, fds: 0 };
      let lap = start;
      const took = (): number => {
        const now = Date.now();
        const d = now - lap;
        lap = now;
        return d;
      };
      try {
        outcome = await ev.run();
        rec.target = outcome.target;
        rec.detail = outcome.detail;
        rec.failures.push(...(outcome.failures ?? []));
      } catch (e) {
        rec.failures.push(`${ev.kind}: ${(e as Error).message.split('\n')[0]}`);
      }
      ms.run = took();
      // Recovery: every affected guest answers a ping sent after the fault is over.
      if (outcome?.affected.length) {
        let worst = 0;
        for (const r of outcome.affected) {
          try {
            const at = await r.pinger.replyAfter(outcome.after, 2 * RECOVERY_LIMIT_MS);
            worst = Math.max(worst, at - outcome.from);
          } catch (e) {
            rec.failures.push((e as Error).message);
            worst = Number.POSITIVE_INFINITY;
          }
        }
        rec.recoveryMs = Number.isFinite(worst) ? worst : null;
        if (worst > RECOVERY_LIMIT_MS && Number.isFinite(worst))
          rec.failures.push(`${outcome.target}: traffic again only after ${worst} ms`);
      }
      ms.recovery = took();
      const end = Date.now();
      // Bystanders: every other guest's requests sent during the event were all answered, every UDP
      // burst it sent since its last check arrived whole (bursts come every few seconds, so they are
      // checked from one event to the next while the guest is a bystander; those of a target's
      // fault are forgiven), and no TCP transfer of its was cut.
      const affected = new Set(outcome?.affected.map((r) => r.name) ?? []);
      await Promise.all(refs.filter((r) => !affected.has(r.name)).map((r) => r.pinger.settled(start, end)));
      for (const [k, r] of refs.entries()) {
        const bursts = sink.bursts.get(r.name);
        const newest = bursts?.newest(r.token) ?? 0;
        if (affected.has(r.name)) {
          // A burst sent during its own fault may never arrive, so the newest seen says nothing of
          // it: forgive every burst up to the first one to arrive after the fault, that one too
          // (its first lines may have waited out the fault in the guest's queue).
          r.udpChecked = Math.max(r.udpChecked, newest);
          r.udpForgiveBefore = Date.now();
          continue;
        }
        const lost = r.pinger.ledger.lost(start, end);
        rec.bystanderSent += r.pinger.ledger.sent(start, end);
        if (bursts && r.udpForgiveBefore !== null) {
          const b = bursts.firstArrivedAfter(r.token, r.udpForgiveBefore);
          if (b !== undefined) {
            r.udpChecked = Math.max(r.udpChecked, b);
            r.udpForgiveBefore = null;
          }
        }
        const upTo = bursts?.checkableBefore(r.token) ?? 0;
        const udp =
          bursts && r.udpForgiveBefore === null && upTo - 1 > r.udpChecked
            ? bursts.check(r.token, r.udpChecked, upTo)
            : { sent: 0, lost: 0 };
        r.udpChecked = Math.max(r.udpChecked, upTo - 1);
        rec.bystanderUdpSent += udp.sent;
        const cut = sink.ended(start, end, r.name).filter((t) => t.outcome === 'cut');
        if (udp.lost) rec.failures.push(`${r.name} (bystander) lost ${udp.lost} of ${udp.sent} UDP lines`);
        if (cut.length)
          rec.failures.push(`${r.name} (bystander): ${cut.length} TCP transfer(s) cut (${cut[0].bytes} bytes in)`);
        if (lost.length || udp.lost || cut.length) {
          // A stalled guest answers nothing: ask it once, so that the harness can tell a lab fault.
          await r.guest.exec('true', { timeoutMs: 15_000 }).catch(() => undefined);
          if (r.guest.faults === faultsSeen[k]) {
            rec.bystanderLost += lost.length;
            rec.bystanderUdpLost += udp.lost;
            if (lost.length)
              rec.failures.push(
                `${r.name} (bystander) lost ${lost.length} replies (icmp_seq ${lost.slice(0, 5).join(',')})`,
              );
          }
        }
      }
      // Every guest's checked transfers, each once: those that ended since the previous event's check
      // (in the gap between events too), none corrupt; a stream never silent for long. Cut or corrupt
      // counts against the event only inside its own window, for guests it did not target.
      const checked = Date.now();
      const done = sink.ended(transfersFrom, checked);
      transfersFrom = checked + 1;
      rec.transfers = done.length;
      rec.transfersBad = done.filter((t) => t.outcome !== 'ok' && t.end >= start && !affected.has(t.guest)).length;
      for (const t of done.filter((x) => x.outcome === 'corrupt'))
        rec.failures.push(`${t.guest}: a TCP transfer arrived corrupt (${t.bytes} bytes, checksum differs)`);
      for (const [k, r] of refs.entries()) {
        const quiet = sink.quietFor(r.name);
        if (quiet <= STREAM_STALL_MS) continue;
        rec.failures.push(`${r.name}: its TCP stream completed nothing for ${quiet} ms`);
        // (a guest the lab faulted during the event is booted again below: nothing of it to look into)
        if (!stallShown.has(r.token) && r.guest.faults === faultsSeen[k]) {
          stallShown.add(r.token);
          log(await stallDiagnosis(r));
        }
      }
      ms.bystanders = took();
      // Faults of the nested lab's guests: name them, bring the guest back, do not charge the bridge.
      const absorbFaults = async (): Promise<void> => {
        for (const [k, r] of refs.entries()) {
          if (r.guest.faults === faultsSeen[k]) continue;
          rec.guestFault = `${rec.guestFault ? `${rec.guestFault}; ` : ''}${r.name}: ${r.guest.lastFault}`;
          rec.failures = rec.failures.filter((f) => !f.startsWith(r.name) && !f.includes(`${r.name}:`));
          const failure = await revive(r);
          if (failure) rec.failures.push(failure);
          faultsSeen[k] = r.guest.faults;
        }
      };
      await absorbFaults();
      // No port stuck half set up: a state seen once is checked again 3 s later (a port may be in the
      // middle of a reconnect); only what persists fails, what passed is kept in the event's detail.
      took(); // a lab fault's recovery above is in the event's total, in none of its parts
      const state = await checkState();
      if (state.length) {
        await sleep(3000);
        const again = await checkState();
        rec.failures.push(...again);
        const passed = state.filter((x) => !again.includes(x));
        if (passed.length)
          rec.detail = `${rec.detail ? `${rec.detail}; ` : ''}seen once, gone 3 s later: ${passed.join('; ')}`;
      }
      // A guest the lab faulted during the check (a reset there stops its rings): absorbed the same way.
      await absorbFaults();
      ms.state = took();
      rec.fds = await settledFds();
      rec.rssKiB = rssKiB(daemon.pid);
      ms.fds = took();
      rec.ms = ms;
      const sample: Sample = { t: Date.now() - t0, pid: daemon.pid, fds: rec.fds, rssKiB: rec.rssKiB };
      result.samples.push(sample);
      if (rec.fds !== result.baselineFds)
        rec.failures.push(`daemon fd count ${rec.fds}, expected ${result.baselineFds} for its ports`);
      result.events.push(rec);
      o.onEvent?.(rec, sample);
      log(
        `#${rec.i} +${(rec.t / 1000).toFixed(1)}s ${rec.kind} ${rec.target}: ` +
          `${rec.recoveryMs === null ? '' : `recovered in ${(rec.recoveryMs / 1000).toFixed(1)} s; `}` +
          `bystanders lost ${rec.bystanderLost}/${rec.bystanderSent} pings, ${rec.bystanderUdpLost}/` +
          `${rec.bystanderUdpSent} UDP lines; ${rec.transfers} transfers; ${rec.fds} fds, ${rec.rssKiB} KiB` +
          `${rec.detail ? `; ${rec.detail}` : ''}` +
          `; ms: run ${ms.run}, recovery ${ms.recovery}, bystanders ${ms.bystanders}, ` +
          `state ${ms.state}, fds ${ms.fds}` +
          `${rec.guestFault ? `; guest fault ${rec.guestFault}` : ''}` +
          `${rec.failures.length ? `; FAILED: ${rec.failures.join('; ')}` : ''}`,
      );
      await sleep(o.gapMs ?? GAP_MS);
    }
    if (budgetOver() && Date.now() - ready < o.seconds * 1000) {
      result.seconds = Math.round((Date.now() - ready) / 1000);
      log(`soak: stopped at its deadline after ${result.seconds} s of the ${o.seconds} s asked`);
    }
    result.failures.push(...rssGrowth(result.samples));
    result.udpLines = [...sink.bursts.values()].reduce((n, b) => n + b.lines(), 0);
    return result;

    /**
     * What a stalled stream looks like from both ends, for the log (docs/soak.md "Results so far": a
     * stream once completed nothing for minutes after its guest's lab reset, pings answered): the
     * guest's processes and TCP sockets, and L2's sockets to that guest.
     */
    async function stallDiagnosis(r: GuestRef): Promise<string> {
      const inGuest = await r.guest
        .exec('ps; cat /proc/net/tcp; ls -l /tmp/vbsoak-stream', { timeoutMs: 15_000 })
        .then((x) => x.output)
        .catch((e: Error) => `(guest: ${e.message.split('\n')[0]})`);
      const ss = spawnSync('ss', ['-tnoi', 'dst', r.guest.ip], { encoding: 'utf8', timeout: 5000 });
      return (
        `${r.name}: its TCP stream stalled (token ${r.token}); in the guest:\n${inGuest}\n` +
        `L2's sockets to ${r.guest.ip} (ss -tnoi):\n${ss.stdout || ss.stderr || ss.error?.message}`
      );
    }

    async function checkState(): Promise<string[]> {
      const out: string[] = [];
      try {
        // One control connection for the list and every status (the daemon answers them in order).
        const guests = daemonRefs().map((r) => r.port!);
        const spares = [...synths.keys()];
        const [ports, ...reports] = await request(daemon.control, [
          { method: 'ports' },
          ...[...guests, ...spares].map((port) => ({ method: 'status', params: { port } })),
        ]);
        for (const p of ports as PortRow[]) if (p.state !== 'running') out.push(`port ${p.name} is ${p.state}`);
        (reports as PortReport[]).forEach((st, k) => {
          if (ringsOf(st)) return;
          out.push(
            k < guests.length
              ? `port ${guests[k]}: guest's rings not attached (half set up)`
              : `port ${spares[k - guests.length]}: synthetic front-end's rings not attached`,
          );
        });
      } catch (e) {
        out.push(`the daemon does not answer: ${(e as Error).message}`);
      }
      if (bridge && !bridge.running) out.push('the one-port bridge exited');
      else if (bridge && bridge.attachedRings().join() !== '0,1')
        out.push(`one-port bridge: rings ${bridge.attachedRings().join()} attached`);
      return out;
    }

    /** The fd count once the daemon has closed what the last requests left (a control connection). */
    async function settledFds(): Promise<number> {
      let n = fdCount(daemon.pid);
      for (let k = 0; k < 10 && n !== result.baselineFds; k++) {
        await sleep(200);
        n = fdCount(daemon.pid);
      }
      return n;
    }
  } finally {
    await cleanup();
  }
}

/**
 * RSS must not grow across events, judged per daemon process (a daemon-kill starts a fresh one, whose
 * heap grows again from its start): of each process's run of at least `minSamples` samples, the largest
 * RSS of the last third may exceed the largest of the first third by at most `slackKiB` (the garbage
 * collector's slack: V8 grows its heap in steps before a major collection).
 */
export function rssGrowth(samples: readonly Sample[], slackKiB = 8 * 1024, minSamples = 9): string[] {
  const runs: Sample[][] = [];
  for (const s of samples) {
    const run = runs.at(-1);
    if (run && run[0].pid === s.pid) run.push(s);
    else runs.push([s]);
  }
  const out: string[] = [];
  for (const run of runs) {
    if (run.length < minSamples) continue;
    const third = Math.floor(run.length / 3);
    const first = Math.max(...run.slice(0, third).map((s) => s.rssKiB));
    const last = Math.max(...run.slice(-third).map((s) => s.rssKiB));
    if (last - first > slackKiB)
      out.push(
        `daemon pid ${run[0].pid}: RSS grew from ${first} KiB to ${last} KiB over its ${run.length} events ` +
          `(+${((last - first) / 1024).toFixed(1)} MiB, slack ${slackKiB / 1024} MiB)`,
      );
  }
  return out;
}
