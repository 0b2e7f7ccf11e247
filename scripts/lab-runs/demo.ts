/**
 * The demo, inside L2 (started by scripts/demo.ts through lab/job.ts): a guest boots on
 * vhost-bridge, brings its link up, pings and runs iperf3; the same guest then runs the same
 * iperf3 on QEMU's own tap,vhost=on, and a one-screen summary compares them.
 */
import type { Guest, IperfResult } from '../../lab/guest.js';
import { HOST_IP, withConfigRetried } from '../../lab/configs.js';
import { jobOptions } from '../../lab/job.js';

/** What scripts/demo.ts asks of the demo in L2: seconds per iperf3 test. */
export interface DemoJob {
  seconds: number;
}
const SECONDS = jobOptions<DemoJob>({ seconds: 5 }).seconds;
const t0 = Date.now();
const stamp = (): string => `[${((Date.now() - t0) / 1000).toFixed(0).padStart(3)} s]`;
const say = (m: string): void => console.log(`${stamp()} ${m}`);
const mbit = (r: IperfResult): string => `${(r.bitsPerSecond / 1e6).toFixed(0)} Mbit/s`;

interface Result {
  tx: IperfResult;
  rx: IperfResult;
  firstPingMs: number;
}

const summary: { negotiated?: string; offered?: string; queues?: string; setup?: string } = {};

/**
 * What a user wants to know of the guest's interface: administratively up, carrier, address, MTU
 * (IFF_UP from the interface flags; operstate can lag behind the link watch right after boot).
 */
async function linkState(guest: Guest): Promise<string> {
  const r = await guest.exec(
    'cd /sys/class/net/eth0 && echo "$(cat flags) $(cat carrier) $(cat mtu)"; ' +
      "ip -4 -o addr show eth0 | awk '{print $4}'",
  );
  const [flags, carrier, mtu, addr] = r.output.trim().split(/\s+/);
  const up = (Number(flags) & 1) === 1;
  return (
    `link ${up ? 'up' : 'DOWN'}, carrier ${carrier === '1' ? 'on' : 'OFF'}, ${addr ?? 'no IPv4 address'}, mtu ` +
    `${mtu}`
  );
}

/** The demo's one retry (lab/retry.ts): a guest fault of the nested lab, not of the bridge. */
const retried = (fault: string): void =>
  say(`the guest faulted (${fault.slice(0, 100)}): a fault of the nested lab (docs/lab.md); once more from the start`);

async function main(): Promise<void> {
  say('1/2 vhost-bridge: starting the bridge on tap vbbench0, then QEMU with -netdev vhost-user');
  const bridge = await withConfigRetried(
    'bridge',
    {
      tag: 'demo-bridge',
      // Log lines are for people: the demo shows the lifecycle ones as they come; what it reports
      // (features, queue pairs, set-up time) comes from the bridge's typed status.
      onBridgeLine: (l) => {
        const text = l.replace(/^\S+ (INFO|WARN|ERROR|DEBUG) /, '');
        if (/ready|connected|SET_FEATURES|ADD_MEM_REG|SET_MEM_TABLE|attached|gone/.test(text)) {
          console.log(`         bridge | ${text.slice(0, 150)}`);
        }
      },
    },
    async ({ guest, bridge: b, firstPingMs }): Promise<Result> => {
      say(
        `guest up: QEMU start to first ping reply ${(firstPingMs / 1000).toFixed(1)} s (QEMU pid ${guest.pid}, ` +
          `bridge pid ${b!.pid})`,
      );
      say(`guest eth0: ${await linkState(guest)}`);
      const p = await guest.ping(HOST_IP, { count: 5 });
      say(
        `guest ping ${HOST_IP}: ${p.received}/${p.transmitted} replies, rtt ms ` +
          `${p.rttMs.map((x) => x.toFixed(1)).join(' ')}`,
      );
      const tx = await guest.iperf3({ seconds: SECONDS });
      say(`iperf3 guest -> host: ${(tx.bytes / 1e6).toFixed(0)} MB, ${mbit(tx)}`);
      const rx = await guest.iperf3({ seconds: SECONDS, reverse: true });
      say(`iperf3 host -> guest: ${(rx.bytes / 1e6).toFixed(0)} MB, ${mbit(rx)}`);
      const fds = b!.fdTargets().filter((t) => t === '/dev/vhost-net').length;
      say(`the bridge holds ${fds} /dev/vhost-net fd(s); its vhost-${b!.pid} kernel worker moved the packets`);
      const st = b!.status();
      const { connected, featuresSet, allRingsRunning } = st.times;
      summary.offered = st.features.offeredNames.join(' ');
      summary.negotiated = st.features.negotiatedNames.join(' ');
      summary.queues = String(st.rings.length / 2);
      if (connected !== null && featuresSet !== null && allRingsRunning !== null) {
        summary.setup =
          `${allRingsRunning - connected} ms from connect (guest boot included), ` +
          `${allRingsRunning - featuresSet} ms from the driver's SET_FEATURES`;
      }
      return { tx, rx, firstPingMs };
    },
    retried,
  );

  say('2/2 reference: the same guest on QEMU -netdev tap,vhost=on');
  const ref = await withConfigRetried(
    'vhost-on',
    { tag: 'demo-vhost-on' },
    async ({ guest, firstPingMs }): Promise<Result> => {
      const tx = await guest.iperf3({ seconds: SECONDS });
      say(`iperf3 guest -> host: ${mbit(tx)}`);
      const rx = await guest.iperf3({ seconds: SECONDS, reverse: true });
      say(`iperf3 host -> guest: ${mbit(rx)}`);
      return { tx, rx, firstPingMs };
    },
    retried,
  );

  const row = (label: string, a: string, b: string, ratio = ''): string =>
    `  ${label.padEnd(30)} ${a.padStart(14)} ${b.padStart(14)} ${ratio.padStart(8)}`;
  const ratio = (a: number, b: number): string => (b > 0 ? (a / b).toFixed(2) : '-');
  console.log('\n===================================== vhost-bridge demo =====================================');
  console.log(`  offered to QEMU : ${summary.offered ?? '?'}`);
  console.log(`  negotiated      : ${summary.negotiated ?? '?'}`);
  console.log(`  queue pairs     : ${summary.queues ?? '?'}`);
  console.log(`  ring set-up     : last ring attached ${summary.setup ?? '?'}`);
  console.log('');
  console.log(row('', 'vhost-bridge', 'tap,vhost=on', 'ratio'));
  console.log(
    row(
      `TCP guest -> host (${SECONDS} s)`,
      mbit(bridge.tx),
      mbit(ref.tx),
      ratio(bridge.tx.bitsPerSecond, ref.tx.bitsPerSecond),
    ),
  );
  console.log(
    row(
      `TCP host -> guest (${SECONDS} s)`,
      mbit(bridge.rx),
      mbit(ref.rx),
      ratio(bridge.rx.bitsPerSecond, ref.rx.bitsPerSecond),
    ),
  );
  console.log(
    row(
      'QEMU start to first ping',
      `${(bridge.firstPingMs / 1000).toFixed(1)} s`,
      `${(ref.firstPingMs / 1000).toFixed(1)} s`,
    ),
  );
  console.log('\n  One run on a noisy nested lab (TCG L2, nested-KVM L3): figures vary by +-50% between runs.');
  console.log('  npm run bench compares them properly (interleaved rounds, medians, min-max).');
  console.log('=============================================================================================');
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    console.error(`demo failed: ${e.message}`);
    process.exit(1);
  },
);
