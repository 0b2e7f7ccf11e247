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
import { closeAll } from '../sys/index.js';
import { BRIDGE_BITS, explainOffer, offeredToFrontEnd, Tap, VhostNet } from '../vhost-kernel/index.js';
import { TraceWriter } from '../vhost-user/trace.js';
import { VhostUserClient, VhostUserServer } from '../vhost-user/transport.js';
import { FEATURE_NAMES } from '../virtio.js';
import { VhostUserSession } from './session.js';
import type { DeviceListener, DeviceStatus } from './status.js';
import { KernelVhostNetProvider, VhostNetDatapath } from './vhost-net-datapath.js';

/** How the bridge meets its front-end. */
export type TransportSpec =
  | { mode: 'server'; path: string; socketMode?: number; uid?: number | null; gid?: number | null }
  | { mode: 'client'; path: string }
  | { mode: 'fd'; fd: number };

/** Which tap the rings are attached to; `create: false` attaches to an existing (persistent) tap only. */
export type TapSpec = { name: string; create?: boolean } | { fds: number[] };

export interface BridgeOptions {
  transport: TransportSpec;
  tap: TapSpec;
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
  private closed = false;

  private constructor(
    private readonly opts: BridgeOptions,
    private readonly tap: Tap,
    private readonly vhostNet: KernelVhostNetProvider,
    vhostNetFeatures: bigint,
    private readonly trace: TraceWriter | null,
    private readonly log: Logger,
  ) {
    const tapOffloads = tap.probeOffloads();
    const inputs = { kernel: vhostNetFeatures, tapOffloads, queuePairs: opts.queuePairs, bridgeBits: BRIDGE_BITS };
    this.offered = offeredToFrontEnd(inputs);
    for (const b of explainOffer(inputs))
      log.debug(`offer bit ${b.bit} ${FEATURE_NAMES[b.bit] ?? ''} (${b.party}): ${b.why}`);
    const datapath = new VhostNetDatapath({
      queuePairs: opts.queuePairs,
      offered: this.offered,
      vhostNetFeatures,
      vhostNet,
      tap,
      log,
    });
    this.session = new VhostUserSession({ port: opts.port ?? tap.name, datapath, log, onEvent: opts.onEvent });
    const t = opts.transport;
    const topts = { log, trace: trace ?? undefined };
    this.transport =
      t.mode === 'server'
        ? VhostUserServer.listen(t.path, this.session, { ...topts, mode: t.socketMode, uid: t.uid, gid: t.gid })
        : t.mode === 'fd'
          ? VhostUserServer.fromFd(t.fd, this.session, topts)
          : VhostUserClient.connect(t.path, this.session, topts);
    this.transport.on('connection', () => this.session.connected());
    this.transport.on('finished', () => opts.onFinished?.());
    this.transport.on('disconnect', (why: string) =>
      log.info(`front-end gone (${why}); every ring stopped, memory unmapped, ${tap.name} kept`),
    );
    log.info(
      `vhost-bridge ready: tap ${tap.name}, ${opts.queuePairs} queue pair(s), offering ` +
        `${describeBits(this.offered, FEATURE_NAMES)}`,
    );
    this.session.ready();
  }

  /** Probe the kernel, open the tap, start serving. Throws one clear error if any of it fails. */
  static start(opts: BridgeOptions): Bridge {
    const log = opts.log ?? defaultLog;
    const pairs = opts.queuePairs;
    let adopted: VhostNet[] | null = null;
    let tap: Tap | null = null;
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
      // The tap: it lives as long as the daemon, so the host side does not flap between sessions.
      if ('fds' in opts.tap) {
        if (opts.tap.fds.length !== pairs)
          throw new Error(`--tap-fd: ${opts.tap.fds.length} fds for ${pairs} queue pair(s); give one per queue pair`);
        tap = Tap.adopt(opts.tap.fds);
      } else {
        tap = Tap.open(opts.tap.name, { queuePairs: pairs, create: opts.tap.create });
      }
      tap.setSndbuf();
      if (opts.mtu !== undefined) tap.setMtu(opts.mtu);
      tap.setUp();
      for (let p = 1; p < pairs; p++) tap.setQueueEnabled(p, false); // attached when the guest enables the pair
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
