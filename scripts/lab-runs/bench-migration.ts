/**
 * Live migration as a benchmark figure, inside L2 (docs/migration.md, "As a figure"): the same L3
 * guest migrates back and forth between two QEMU 7.2 processes whose taps are ports of one Linux
 * bridge, VB_BENCH_ROUNDS hops per configuration: behind two vhost-bridges, and on QEMU's own
 * tap,vhost=on. Per hop: QEMU's reported downtime, the 50 ms pings from L2 lost across the hop, and
 * the first reply after the destination's RESUME event. Prints median [min-max] per figure and
 * writes every hop to VB_BENCH_OUT (JSON).
 *
 *   npx tsc -p . && scripts/lab/run -t 900 -- node dist/scripts/lab-runs/bench-migration.js
 */
import * as fs from 'node:fs';
import { BridgeProcess } from '../../lab/bridge-process.js';
import { Guest, type GuestNet } from '../../lab/guest.js';
import { hostBridge, migrate, PingWatch, Qmp, removeHostBridge } from '../../lab/migration.js';
import { quantile } from '../bench/metrics.js';

const ROUNDS = Number(process.env.VB_BENCH_ROUNDS ?? 5);
const OUT = process.env.VB_BENCH_OUT ?? `${process.env.LAB_XCHG ?? '/tmp'}/bench-migration.json`;
const xchg = process.env.LAB_XCHG ?? '/tmp';
const HOST = '10.0.8.1';
const GUEST = '10.0.8.2';
const BR = 'vbbmbr0';
const TAPS = ['vbbma', 'vbbmb'] as const;
const MiB = 1 << 20;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

type Config = 'bridge' | 'vhost-on';
interface Hop {
  config: Config;
  hop: number;
  downtimeMs: number;
  totalMs: number;
  lostPings: number;
  firstReplyMs: number | null;
}

async function run(config: Config, hops: Hop[]): Promise<void> {
  const bridges: BridgeProcess[] = [];
  const live: { g: Guest; q: Qmp }[] = [];
  const sock = (side: number) => `/tmp/vbbm-${side}.sock`;
  try {
    if (config === 'bridge') {
      for (const [side, tap] of TAPS.entries()) {
        bridges.push(
          await BridgeProcess.start({ name: `bm-${side}`, args: ['--socket-path', sock(side), '--tap', tap] }),
        );
      }
    }
    const net = (side: number): GuestNet =>
      config === 'bridge'
        ? { kind: 'vhost-user', socketPath: sock(side) }
        : { kind: 'tap', ifname: TAPS[side], vhost: true };
    const start = async (name: string, side: number, incoming?: string) => {
      const qmp = `/tmp/vbbm-${name}.qmp`;
      const g = await Guest.boot({
        name: `bm-${name}`,
        net: net(side),
        memMiB: 256,
        mac: '52:54:00:08:00:02',
        ip: `${GUEST}/24`,
        peer: HOST,
        logFile: `${xchg}/guest-bm-${name}.log`,
        extraQemuArgs: ['-qmp', `unix:${qmp},server=on,wait=off`],
        ...(incoming ? { incoming: { uri: incoming } } : {}),
      });
      const vm = { g, q: await Qmp.connect(name, qmp) };
      live.push(vm);
      return vm;
    };
    let current = await start(`${config}-0`, 0);
    await current.g.untilReply(HOST);
    for (let hop = 1; hop <= ROUNDS; hop++) {
      const uri = `unix:/tmp/vbbm-${config}-${hop}.mig`;
      const next = await start(`${config}-${hop}`, hop % 2, uri);
      const ping = new PingWatch(GUEST);
      await sleep(1000);
      const r = await migrate(current.q, uri, { slowBytesPerS: 1024 * MiB, slowMs: 0, fastBytesPerS: 1024 * MiB });
      const resumed = await next.q.waitForEvent('RESUME', 30_000);
      current.q.close();
      await current.g.kill();
      const end = Date.now() + 10_000;
      while (!ping.after(resumed.at).length && Date.now() < end) await sleep(20);
      const first = ping.after(resumed.at)[0];
      await sleep(1000);
      const p = await ping.stop();
      const h: Hop = {
        config,
        hop,
        downtimeMs: r.downtimeMs,
        totalMs: r.totalTimeMs,
        lostPings: p.lost,
        firstReplyMs: first ? Math.round(first.at - resumed.at) : null,
      };
      hops.push(h);
      console.log(
        `${config} hop ${hop}: ${(h.totalMs / 1000).toFixed(1)} s, downtime ${h.downtimeMs} ms, ` +
          `${h.lostPings} of ${p.sent} pings lost, first reply ${h.firstReplyMs} ms after RESUME`,
      );
      fs.writeFileSync(OUT, JSON.stringify(hops, null, 1));
      current = next;
    }
  } finally {
    for (const v of live) {
      v.q.close();
      await v.g.kill();
    }
    for (const b of bridges) await b.stop();
  }
}

function summary(values: number[]): string {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return '-';
  const f = (v: number) => (v >= 100 ? v.toFixed(0) : v.toPrecision(3));
  return `${f(quantile(s, 0.5))} [${f(s[0])}-${f(s.at(-1)!)}]`;
}

hostBridge(
  BR,
  `${HOST}/24`,
  TAPS.map((name) => ({ name })),
);
const hops: Hop[] = [];
try {
  for (const c of ['bridge', 'vhost-on'] as const) await run(c, hops);
} finally {
  removeHostBridge(BR, [...TAPS]);
}
const rows: [string, (h: Hop) => number | null][] = [
  ['QEMU-reported downtime (ms, lower is better)', (h) => h.downtimeMs],
  ['50 ms pings lost across a hop (lower is better)', (h) => h.lostPings],
  ['first ping reply after RESUME (ms, lower is better)', (h) => h.firstReplyMs],
  ['migration time (s)', (h) => h.totalMs / 1000],
];
console.log(`\n| figure: median [min-max] of ${ROUNDS} hops | vhost-bridge | tap,vhost=on |\n|---|---:|---:|`);
for (const [label, get] of rows) {
  const of = (c: Config) =>
    summary(
      hops
        .filter((h) => h.config === c)
        .map(get)
        .filter((v): v is number => v !== null),
    );
  console.log(`| ${label} | ${of('bridge')} | ${of('vhost-on')} |`);
}
process.exit(0);
