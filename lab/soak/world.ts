/**
 * What the soak's fault kinds and its checks share (docs/soak.md): the daemon and its config, the
 * synthetic front-ends on the spare ports, the guests with their pingers and traffic, the one-port
 * bridge, the peer of another uid and the seeded generator. One object, passed to every fault kind
 * (lab/soak/faults/) and to the checks after it (lab/soak/check.ts): a daemon-kill replaces the
 * daemon here, and every later step sees the new one.
 */
import * as fs from 'node:fs';
import { NobodyPeer } from '../as-user.js';
import type { BridgeProcess } from '../bridge-process.js';
import { DaemonProcess } from '../daemon-process.js';
import { type Handshaken, handshake } from '../frontend/handshake.js';
import type { Guest } from '../guest.js';
import { hostTap, removeTap } from '../host.js';
import type { HostPinger } from './pinger.js';
import type { Rng } from './rng.js';
import { guestCommand, TrafficSink } from './traffic.js';

/** The longest a target may take to pass traffic again, and the daemon to answer after a restart. */
export const RECOVERY_LIMIT_MS = 10_000;
export const DIR = '/tmp/vb-soak';
export const CONFIG = `${DIR}/config.json`;
export const SPARES = ['s1', 's2'] as const;
export const sock = (port: string): string => `${DIR}/${port}.sock`;
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Guest.boot calls per guest at set-up, and recover() calls per guest during the run. */
export const BOOT_TRIES = 3;
/** VB_SOAK_LOG_LEVEL=debug logs every vhost-user message of the daemon (to diagnose a failure). */
export const DAEMON_ARGS = process.env.VB_SOAK_LOG_LEVEL ? ['--log-level', process.env.VB_SOAK_LOG_LEVEL] : [];

export interface GuestRef {
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
  /** the end of the last event that targeted it, while its bursts after that are not known (check.ts) */
  udpForgiveBefore: number | null;
  /** the guest's fault count as last absorbed: a fault after it (set-up, an event, the gap between
   *  events) is absorbed by the next event's check, never charged to the bridge */
  faultsSeen: number;
}

/** What a fault did, as its kind reports it to the checks. */
export interface Outcome {
  target: string;
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

/** A daemon port's spec in the soak's config (lab/soak/soak.ts writes one per guest and spare). */
export interface SoakPortSpec {
  tap: string;
  persistentTap?: boolean;
  socket: string;
  mode?: string;
  allowUsers?: number[];
}

export class SoakWorld {
  /** the daemon serving the ports (a daemon-kill starts a new one) */
  daemon: DaemonProcess;
  /** the daemon's restarts so far (each restart's log has its own name) */
  restarts = 0;
  bridge: BridgeProcess | null = null;
  readonly refs: GuestRef[] = [];
  /** every guest booted (shut down at the end, also if set-up failed half-way) */
  readonly booted: Guest[] = [];

  private constructor(
    readonly rng: Rng,
    readonly log: (line: string) => void,
    readonly guestPorts: readonly string[],
    readonly specs: Readonly<Record<string, SoakPortSpec>>,
    readonly onePort: boolean,
    daemon: DaemonProcess,
    /** the refused-uid event's peer as nobody: one child for the run (Node's start costs seconds in L2) */
    readonly nobody: NobodyPeer,
    readonly sink: TrafficSink,
    /** the synthetic front-end on each spare port that has one */
    readonly synths: Map<string, Handshaken>,
  ) {
    this.daemon = daemon;
  }

  /** The daemon on its config, a synthetic front-end on every spare port, L2's traffic sink. */
  static async open(o: { guests: number; onePort: boolean }, rng: Rng, log: (line: string) => void) {
    fs.rmSync(DIR, { recursive: true, force: true });
    fs.mkdirSync(DIR, { recursive: true });
    const guestPorts = Array.from({ length: o.guests }, (_, i) => `g${i}`);
    // Guest ports: any user may connect (mode 0666), only root passes the allow-list (refused-uid).
    const specs: Record<string, SoakPortSpec> = {};
    guestPorts.forEach((p, i) => {
      specs[p] = { tap: `vbsoak${i}`, persistentTap: true, socket: sock(p), mode: '0666', allowUsers: [0] };
      hostTap(`vbsoak${i}`, { ip: `10.0.${40 + i}.1/24` });
    });
    for (const s of SPARES) specs[s] = { tap: `vbsoak${s}`, socket: sock(s) };
    fs.writeFileSync(CONFIG, JSON.stringify({ control: { path: sock('control') }, ports: specs }));
    const daemon = await DaemonProcess.start('soak', CONFIG, DAEMON_ARGS);
    const synths = new Map<string, Handshaken>();
    for (const s of SPARES) synths.set(s, await handshake(sock(s)));
    const nobody = NobodyPeer.start();
    const addresses = new Map<string, string>(guestPorts.map((p, i) => [`10.0.${40 + i}.2`, p]));
    if (o.onePort) addresses.set('10.0.50.2', 'one-port');
    const sink = await TrafficSink.open(addresses);
    return new SoakWorld(rng, log, guestPorts, specs, o.onePort, daemon, nobody, sink, synths);
  }

  /** A fresh synthetic front-end on a port (the old one closed). */
  async synth(p: string): Promise<void> {
    this.dropSynth(p);
    this.synths.set(p, await handshake(sock(p)));
  }

  dropSynth(p: string): void {
    this.synths.get(p)?.close();
    this.synths.delete(p);
  }

  daemonRefs(): GuestRef[] {
    return this.refs.filter((r) => r.port !== null);
  }

  pickGuest(daemonOnly = false): GuestRef {
    return this.rng.pick(daemonOnly ? this.daemonRefs() : this.refs);
  }

  /** (Re)starts a guest's TCP stream and UDP bursts: after every boot, reboot or fault of the lab. */
  async startTraffic(r: GuestRef): Promise<void> {
    r.token = `${r.name}.${++r.starts}`;
    // A fresh start's first burst may meet an empty neighbour cache: checked from the second on.
    r.udpChecked = 1;
    r.udpForgiveBefore = null;
    this.sink.startedAt.set(r.name, Date.now());
    await r.guest.exec(guestCommand(r.host, r.token), { timeoutMs: 15_000 });
  }

  /** recover() a guest, up to BOOT_TRIES times (each boot tries twice): the nested lab's boot hang. */
  async bringBack(r: GuestRef): Promise<void> {
    for (let k = 1; ; k++) {
      try {
        return await r.guest.recover();
      } catch (e) {
        if (k >= BOOT_TRIES) throw e;
        this.log(`soak: guest ${r.name} did not come back (${(e as Error).message.split('\n')[0]}); booting it again`);
      }
    }
  }

  /** After a lab fault of a guest (at set-up or in an event): boot it again, wait for its first
   *  ping reply, start its traffic once more. Returns what failed, or null. */
  async revive(r: GuestRef): Promise<string | null> {
    try {
      await this.bringBack(r);
    } catch (e) {
      return `${r.name}: the lab could not boot the guest again: ${(e as Error).message.split('\n')[0]}`;
    }
    try {
      await r.pinger.replyAfter(Date.now(), 30_000);
    } catch (e) {
      return (e as Error).message;
    }
    return this.startTraffic(r).then(
      () => null,
      (e: Error) => `${r.name}: traffic not restarted: ${e.message}`,
    );
  }

  /** Everything stopped and removed, also after a set-up that failed half-way. */
  async close(): Promise<void> {
    this.sink.close();
    await this.nobody.close();
    for (const r of this.refs) r.pinger.stop();
    await Promise.all(this.booted.map((g) => g.shutdown({ timeoutMs: 10_000 }).catch(() => undefined)));
    for (const f of this.synths.values()) f.close();
    await this.daemon.stop().catch(() => undefined);
    await this.bridge?.stop().catch(() => undefined);
    for (let i = 0; i < this.guestPorts.length; i++) removeTap(`vbsoak${i}`);
    if (this.onePort) removeTap('vbsoakp');
  }
}
