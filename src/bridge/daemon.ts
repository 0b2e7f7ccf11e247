/**
 * The daemon of one port: set up the kernel side once (probe /dev/vhost-net, open the tap), then
 * serve front-ends one at a time on a vhost-user socket with one VhostUserSession on a
 * VhostNetDatapath (session state lives for one connection; the session resets itself when the
 * front-end leaves). Several ports in one process would be several such session + datapath pairs
 * (docs/architecture.md).
 *
 * Start-up problems (no /dev/vhost-net, no permission for the tap, socket path in use) throw
 * before anything is served, with one line that says what to do.
 */
import { describeBits } from '../bits.js';
import { log as defaultLog, type Logger, portLog } from '../log.js';
import type { MemoryLimit } from '../memtable/index.js';
import { closeAll } from '../sys/index.js';
import { BRIDGE_BITS, explainOffer, explainWithheld, offeredToFrontEnd, VhostNet } from '../vhost-kernel/index.js';
import { TraceWriter } from '../vhost-user/trace.js';
import type { PeerRule } from '../vhost-user/peer.js';
import { VhostUserClient, VhostUserServer } from '../vhost-user/transport.js';
import { FEATURE_NAMES } from '../virtio.js';
import { type HostSocket, openSocket, socketOffloads, type TapSpec } from './backends.js';
import { VhostUserSession } from './session.js';
import { busyPollText, type DeviceListener, type DeviceStatus, zeroCopyText } from './status.js';
import { KernelVhostNetProvider, type PairWorker, VhostNetDatapath } from './vhost-net-datapath.js';

/** How the bridge meets its front-end. */
export type TransportSpec =
  | {
      mode: 'server';
      path: string;
      socketMode?: number;
      uid?: number | null;
      gid?: number | null;
      peers?: PeerRule | null;
    }
  | { mode: 'client'; path: string; peers?: PeerRule | null }
  | { mode: 'fd'; fd: number; peers?: PeerRule | null };

export interface BridgeOptions {
  transport: TransportSpec;
  /**
   * The socket the rings are attached to (backends.ts): a tap (`create: false`: an existing, persistent one
   * only), open tap or macvtap fds, a macvtap by name, or a packet socket on an interface.
   */
  tap: TapSpec;
  /** VHOST_SET_VRING_BUSYLOOP_TIMEOUT on every ring, µs (--busy-poll-us; 0 or absent: off). */
  busyPollUs?: number;
  /** Open /dev/vhost-net fds given by a manager, one per queue pair (--vhost-fd). */
  vhostFds?: number[];
  queuePairs: number;
  /** Set the tap's MTU at start. */
  mtu?: number;
  /** Record every vhost-user message and reply to this file (msgpack trace). */
  record?: string;
  log?: Logger;
  /** The port's name in log lines and the status (default: the tap's name); the daemon names its ports. */
  port?: string;
  /** Gets every lifecycle event with the status after it, from the first ('ready') on (--events-fd). */
  onEvent?: DeviceListener;
  /** The cgroup v2 directory each session's vhost workers are moved into (VhostNetDatapathConfig.workerCgroup). */
  workerCgroup?: string;
  /** What a front-end may make this port map (memtable MemoryLimit); default: no limit of its own. */
  memoryLimit?: MemoryLimit;
  /**
   * Called when no other front-end will be served: the one of an inherited connected socket (`--fd`,
   * transport.ts) left.
   */
  onFinished?: () => void;
}

export class Bridge {
  /** The feature word offered to front-ends. */
  readonly offered: bigint;
  readonly session: VhostUserSession;
  private readonly transport: VhostUserServer | VhostUserClient;
  private readonly datapath: VhostNetDatapath;
  private closed = false;

  private constructor(
    private readonly opts: BridgeOptions,
    private readonly tap: HostSocket,
    private readonly vhostNet: KernelVhostNetProvider,
    vhostNetFeatures: bigint,
    private readonly trace: TraceWriter | null,
    private readonly log: Logger,
  ) {
    const inputs = {
      kernel: vhostNetFeatures,
      tapOffloads: socketOffloads(tap),
      vnetHdr: tap.vnetHdr !== null,
      queuePairs: opts.queuePairs,
      bridgeBits: BRIDGE_BITS,
    };
    this.offered = offeredToFrontEnd(inputs);
    for (const b of explainOffer(inputs))
      log.debug(`offer bit ${b.bit} ${FEATURE_NAMES[b.bit] ?? ''} (${b.party}): ${b.why}`);
    for (const b of explainWithheld(inputs)) log.info(`offer bit ${b.bit} ${FEATURE_NAMES[b.bit] ?? ''}: ${b.why}`);
    // TEST ONLY, read here and nowhere else: docs/migration.md "The test-only switch".
    const withholdDirtyLog = process.env.VB_TEST_WITHHOLD_DIRTY_LOG === '1';
    if (withholdDirtyLog) log.warn('VB_TEST_WITHHOLD_DIRTY_LOG=1: the kernel gets no dirty log (test only)');
    const datapath = new VhostNetDatapath({
      queuePairs: opts.queuePairs,
      offered: this.offered,
      vhostNetFeatures,
      vhostNet,
      socket: tap,
      busyPollUs: opts.busyPollUs,
      workerCgroup: opts.workerCgroup,
      log,
      withholdDirtyLog,
    });
    this.datapath = datapath;
    this.session = new VhostUserSession({
      port: opts.port ?? tap.name,
      datapath,
      log,
      onEvent: opts.onEvent,
      memoryLimit: opts.memoryLimit,
    });
    const t = opts.transport;
    const topts = { log, trace: trace ?? undefined, peers: t.peers };
    this.transport =
      t.mode === 'server'
        ? VhostUserServer.listen(t.path, this.session, { ...topts, mode: t.socketMode, uid: t.uid, gid: t.gid })
        : t.mode === 'fd'
          ? VhostUserServer.fromFd(t.fd, this.session, topts)
          : VhostUserClient.connect(t.path, this.session, topts);
    this.transport.on('connection', () => this.session.connected());
    this.transport.on('refused', (r) => this.session.peerRefused(r.peer, r.rule));
    this.transport.on('finished', () => opts.onFinished?.());
    this.transport.on('disconnect', (why: string) =>
      log.info(`front-end gone (${why}); every ring stopped, memory unmapped, ${tap.name} kept`),
    );
    const dp = datapath.describe();
    log.info(
      `vhost-bridge ready: ${tap.kind} ${tap.name}, ${opts.queuePairs} queue pair(s), busy poll ` +
        `${busyPollText(dp.busyPollUs)}, vhost_net experimental_zcopytx ` +
        `${zeroCopyText(dp.zeroCopyTx)}, offering ${describeBits(this.offered, FEATURE_NAMES)}`,
    );
    this.session.ready();
  }

  /** Probe the kernel, open the tap, start serving. Throws one clear error if any of it fails. */
  static start(opts: BridgeOptions): Bridge {
    const log = opts.log ?? defaultLog;
    const pairs = opts.queuePairs;
    let adopted: VhostNet[] | null = null;
    let tap: HostSocket | null = null;
    let trace: TraceWriter | null = null;
    try {
      // The kernel: adopt the manager's fds, or check that /dev/vhost-net opens and read its features.
      let vhostNetFeatures: bigint;
      if (opts.vhostFds?.length) {
        if (opts.vhostFds.length !== pairs)
          throw new Error(
            `--vhost-fd: ${opts.vhostFds.length} fds for ${pairs} queue pair(s); give one per queue pair`,
          );
        adopted = [];
        for (const [p, fd] of opts.vhostFds.entries()) adopted.push(VhostNet.adopt(fd, p));
        vhostNetFeatures = adopted[0].getFeatures();
      } else {
        const probe = VhostNet.open(0);
        try {
          vhostNetFeatures = probe.getFeatures();
        } finally {
          probe.close();
        }
      }
      // The socket: it lives as long as the daemon, so the host side does not flap between sessions.
      tap = openSocket(opts.tap, pairs, opts.mtu);
      if (opts.record) trace = new TraceWriter(opts.record, { tool: 'vhost-bridge', queuePairs: pairs });
      // From here on every line names the port.
      const plog = portLog(log, opts.port ?? tap.name);
      return new Bridge(opts, tap, new KernelVhostNetProvider(adopted, plog), vhostNetFeatures, trace, plog);
    } catch (e) {
      trace?.close();
      tap?.close();
      if (adopted) for (const v of adopted) v.close();
      else if (opts.vhostFds) closeAll(opts.vhostFds);
      throw e;
    }
  }

  /**
   * Stop serving: the front-end is dropped (its rings stop, memory is unmapped), then the tap and adopted fds
   * are closed.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.transport.close();
    this.vhostNet.close();
    this.tap.close();
    this.trace?.close();
    this.log.info('vhost-bridge stopped');
  }

  /** A typed snapshot of the port (status.ts). */
  status(): DeviceStatus {
    return this.session.status();
  }

  /** Add a listener of lifecycle events; returns its removal. */
  onEvent(listener: DeviceListener): () => void {
    return this.session.onEvent(listener);
  }

  /** The vhost worker of each queue pair of the current session (VhostNetDatapath.workers). */
  workers(): PairWorker[] {
    return this.datapath.workers();
  }

  /** The connected front-end's socket (for SO_PEERCRED), or null. */
  get frontEndFd(): number | null {
    return this.transport.connection?.fd ?? null;
  }

  /** Drop the front-end (its rings stop, memory is unmapped); the port serves the next one (a client reconnects). */
  dropFrontEnd(why: string): void {
    this.transport.connection?.close(why);
  }

  /** The tap's name. */
  get tapName(): string {
    return this.tap.name;
  }

  /** The options it was started with. */
  get options(): Readonly<BridgeOptions> {
    return this.opts;
  }
}
