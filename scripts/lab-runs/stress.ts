/**
 * The lab's fault stress, inside L2 (started by scripts/stress.ts through lab/job.ts): one or
 * more L3 guests under back-to-back iperf3 load (alternating directions) for a fixed time, each on
 * its own tap and subnet, counting the nested lab's guest faults by kind (docs/lab.md, "Guest
 * faults"). A faulted guest is brought back (Guest.recover()) and the load goes on; the time spent
 * recovering is not counted as guest-minutes under load.
 *
 * Its options come from the job file (`StressJob`); it writes stress.json in the exchange directory
 * as it goes. The settings under test come from the lab's own variables (LAB_L3_CPU, LAB_L3_APPEND
 * in lab/guest.ts; LAB_L2_* in scripts/lab/run).
 */
import * as fs from 'node:fs';
import { BridgeProcess } from '../../lab/bridge-process.js';
import { Guest, L3_DEFAULTS, type GuestFaultKind } from '../../lab/guest.js';
import { hostTap, removeTap } from '../../lab/host.js';
import { jobOptions, xchgPath } from '../../lab/job.js';

/** What scripts/stress.ts asks of the stress in L2. */
export interface StressJob {
  minutes: number;
  guests: number;
  net: 'vhost-on' | 'bridge';
}
const job = jobOptions<StressJob>({ minutes: 10, guests: 2, net: 'vhost-on' });
const MINUTES = job.minutes;
const GUESTS = job.guests;
const NET = job.net === 'bridge' ? 'bridge' : 'vhost-on';
const OUT = xchgPath('stress.json');
const SECONDS = 10;
const xchg = process.env.LAB_XCHG ?? '/tmp';
const t0 = Date.now();
const say = (m: string): void => console.log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}`);

interface PerGuest {
  name: string;
  loadMs: number;
  transfers: number;
  bytes: number;
  faults: { kind: GuestFaultKind | 'boot-hang'; atS: number; text: string }[];
  /** failures that were not guest faults (a bridge or harness problem: they end the stress) */
  errors: string[];
}

const running: PerGuest[] = [];

/** Written after every transfer and at the end, so a run whose L2 dies still leaves its counts. */
let progress: (() => void) | null = null;

async function oneGuest(i: number, end: number): Promise<PerGuest> {
  const name = `stress-${i}`;
  const tap = `vbst${i}`;
  const subnet = `10.0.${10 + i}`;
  const r: PerGuest = { name, loadMs: 0, transfers: 0, bytes: 0, faults: [], errors: [] };
  running.push(r);
  hostTap(tap, { ip: `${subnet}.1/24` });
  let bridge: BridgeProcess | undefined;
  let guest: Guest | undefined;
  try {
    const sock = `/tmp/vb-stress-${i}.sock`;
    if (NET === 'bridge') bridge = await BridgeProcess.start({ name, args: ['--socket-path', sock, '--tap', tap] });
    guest = await Guest.boot({
      name,
      ip: `${subnet}.2/24`,
      peer: `${subnet}.1`,
      net:
        NET === 'bridge'
          ? { kind: 'vhost-user', socketPath: sock, reconnectSeconds: 1 }
          : { kind: 'tap', ifname: tap, vhost: true },
      logFile: `${xchg}/guest-${name}.log`,
      log: () => undefined,
    });
    if (guest.bootRetries)
      r.faults.push({ kind: 'boot-hang', atS: (Date.now() - t0) / 1000, text: 'no init marker (boot hang)' });
    say(`${name}: up in ${(guest.bootMs / 1000).toFixed(1)} s`);
    let seen = 0;
    while (Date.now() < end && r.errors.length === 0) {
      const start = Date.now();
      try {
        const res = await guest.iperf3({ seconds: SECONDS, reverse: r.transfers % 2 === 1, port: 5201 + i });
        r.bytes += res.bytes;
        r.transfers++;
        r.loadMs += Date.now() - start;
        progress?.();
      } catch (e) {
        r.loadMs += Date.now() - start;
        if (guest.faults === seen) {
          r.errors.push((e as Error).message.split('\n')[0]);
          break;
        }
      }
      for (const f of guest.faultLog.slice(seen)) {
        r.faults.push({ kind: f.kind, atS: (f.at - t0) / 1000, text: f.text.slice(0, 200) });
        say(`${name}: FAULT ${f.kind}: ${f.text.slice(0, 120)}`);
      }
      if (guest.faults !== seen) {
        seen = guest.faults;
        const hangs = guest.bootRetries;
        await guest.recover();
        if (guest.bootRetries > hangs)
          r.faults.push({ kind: 'boot-hang', atS: (Date.now() - t0) / 1000, text: 'boot hang on recovery' });
        say(`${name}: back after the fault`);
      }
    }
  } catch (e) {
    r.errors.push((e as Error).message.split('\n')[0]);
  } finally {
    await guest?.shutdown().catch(() => undefined);
    await bridge?.stop();
    removeTap(tap);
  }
  return r;
}

const kvmAmd = (p: string): string => {
  try {
    return fs.readFileSync(`/sys/module/kvm_amd/parameters/${p}`, 'utf8').trim();
  } catch {
    return '-';
  }
};

function meta(): Record<string, unknown> {
  return {
    date: new Date(t0).toISOString(),
    minutes: MINUTES,
    net: NET,
    seconds: SECONDS,
    l3: { cpu: L3_DEFAULTS.cpu, append: L3_DEFAULTS.append.join(' '), l2Cpus: L3_DEFAULTS.l2Cpus },
    l2: {
      kernel: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      cpus: fs
        .readFileSync('/proc/cpuinfo', 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('processor')).length,
      cmdline: fs
        .readFileSync('/proc/cmdline', 'utf8')
        .trim()
        .replace(/lab\.(ctl|dir)=\S+\s*/g, ''),
      kvmAmd: Object.fromEntries(['npt', 'nested', 'avic', 'vgif', 'vls', 'nrips', 'lbrv'].map((p) => [p, kvmAmd(p)])),
    },
  };
}

async function main(): Promise<void> {
  say(
    `stress: ${GUESTS} guest(s) on ${NET}, ${MINUTES} min of back-to-back ${SECONDS} s iperf3 transfers; ` +
      `L3 -cpu ${L3_DEFAULTS.cpu}, L3 append '${L3_DEFAULTS.append.join(' ')}'`,
  );
  const end = Date.now() + MINUTES * 60_000;
  progress = () => fs.writeFileSync(OUT, JSON.stringify({ ...meta(), done: false, guests: running }, null, 1));
  const guests = await Promise.all(Array.from({ length: GUESTS }, (_, i) => oneGuest(i, end)));
  progress = null;
  fs.writeFileSync(OUT, JSON.stringify({ ...meta(), done: true, guests }, null, 1));
  say(`done; ${guests.reduce((a, g) => a + g.faults.length, 0)} fault(s); result in ${OUT}`);
  if (guests.some((g) => g.errors.length)) {
    for (const g of guests) for (const e of g.errors) console.log(`${g.name}: ERROR (not a guest fault): ${e}`);
    process.exit(1);
  }
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    console.error(`stress failed: ${e.stack ?? e.message}`);
    process.exit(1);
  },
);
