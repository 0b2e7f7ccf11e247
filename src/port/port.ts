/**
 * A port: one vhost-user socket served on one backend socket. The kernel side is set up once
 * (vhost-net probed or adopted, the backend socket opened), then front-ends are served one at a
 * time by one PortBackEnd on a VhostNetDatapath (src/bridge/session.ts: a Session per connection,
 * made when the front-end connects and dropped when it leaves). One-port mode runs one Port per process;
 * the daemon holds several (docs/architecture.md).
 *
 * A Port is built from a {@link PortSpec} and {@link PortParts}: the real kernel (kernelParts) or a
 * recording fake in unit tests. Start-up problems (no /dev/vhost-net, no permission for the tap,
 * socket path in use) throw before anything is served, with one line that says what to do.
 */
import { describeBits } from '../bits.js';
import { type Logger, portLog } from '../log.js';
import { BRIDGE_BITS, explainOffer, explainWithheld, offeredToFrontEnd } from '../vhost-kernel/index.js';
import type { TraceWriter } from '../vhost-user/trace.js';
import { VhostUserClient, VhostUserServer } from '../vhost-user/transport.js';
import { FEATURE_NAMES } from '../virtio.js';
import { PortBackEnd } from '../bridge/session.js';
import { busyPollText, type PortListener, type PortStatus, zeroCopyText } from '../bridge/status.js';
import type { PairWorker, VhostNetDatapath } from '../bridge/vhost-net-datapath.js';
import type { HeldBackendSocket } from './backend-socket.js';
import type { PortParts, PortVhostNet } from './parts.js';
import type { PortSpec } from './spec.js';

/** What the starter of a port is told, from the first event ('ready') on. */
export interface PortHooks {
  /** Every lifecycle event with the status after it (--events-fd). */
  onEvent?: PortListener;
  /**
   * No other front-end will be served: the one of an inherited connected socket (`--fd`,
   * transport.ts) left.
   */
  onFinished?: () => void;
}

export class Port {
  /** The feature word offered to front-ends. */
  readonly offered: bigint;
  readonly session: PortBackEnd;
  private readonly transport: VhostUserServer | VhostUserClient;
  private readonly datapath: VhostNetDatapath;
  private readonly log: Logger;
  private closed = false;

  private constructor(
    readonly spec: Readonly<PortSpec>,
    private readonly socket: HeldBackendSocket,
    offloads: number,
    private readonly vhostNet: PortVhostNet,
    private readonly trace: TraceWriter | null,
    parts: PortParts,
    hooks: PortHooks,
  ) {
    // From here on every line names the port.
    const log = portLog(parts.log, spec.name ?? socket.name);
    this.log = log;
    const inputs = {
      kernel: vhostNet.features,
      tapOffloads: offloads,
      vnetHdr: socket.vnetHdr !== null,
      queuePairs: spec.queuePairs,
      bridgeBits: BRIDGE_BITS,
    };
    this.offered = offeredToFrontEnd(inputs);
    for (const b of explainOffer(inputs))
      log.debug(`offer bit ${b.bit} ${FEATURE_NAMES[b.bit] ?? ''} (${b.party}): ${b.why}`);
    for (const b of explainWithheld(inputs)) log.info(`offer bit ${b.bit} ${FEATURE_NAMES[b.bit] ?? ''}: ${b.why}`);
    const datapath = parts.datapath({
      queuePairs: spec.queuePairs,
      offered: this.offered,
      vhostNetFeatures: vhostNet.features,
      vhostNet: vhostNet.provider(log),
      socket,
      busyPollUs: spec.busyPollUs,
      workerCgroup: spec.workerCgroup,
      log,
    });
    this.datapath = datapath;
    this.session = new PortBackEnd({
      port: spec.name ?? socket.name,
      datapath,
      log,
      onEvent: hooks.onEvent,
      memoryLimit: spec.memoryLimit,
    });
    const t = spec.transport;
    const topts = { log, trace: trace ?? undefined, peers: t.peers };
    this.transport =
      t.mode === 'server'
        ? VhostUserServer.listen(t.path, this.session, { ...topts, mode: t.socketMode, uid: t.uid, gid: t.gid })
        : t.mode === 'fd'
          ? VhostUserServer.fromFd(t.fd, this.session, topts)
          : VhostUserClient.connect(t.path, this.session, topts);
    this.transport.on('connection', () => this.session.connected());
    this.transport.on('refused', (r) => this.session.peerRefused(r.peer, r.rule));
    this.transport.on('finished', () => hooks.onFinished?.());
    this.transport.on('disconnect', (why: string) =>
      log.info(`front-end gone (${why}); every ring stopped, memory unmapped, ${socket.name} kept`),
    );
    const dp = datapath.describe();
    log.info(
      `vhost-bridge ready: ${socket.kind} ${socket.name}, ${spec.queuePairs} queue pair(s), busy poll ` +
        `${busyPollText(dp.busyPollUs)}, vhost_net experimental_zcopytx ` +
        `${zeroCopyText(dp.zeroCopyTx)}, offering ${describeBits(this.offered, FEATURE_NAMES)}`,
    );
    this.session.ready();
  }

  /** Probe the kernel, open the backend socket, start serving. Throws one clear error if any of it fails. */
  static start(spec: PortSpec, parts: PortParts, hooks: PortHooks = {}): Port {
    const pairs = spec.queuePairs;
    // The kernel: adopt the manager's fds, or check that /dev/vhost-net opens and read its features.
    const vhostNet = parts.openVhostNet(spec.vhostFds, pairs);
    let socket: HeldBackendSocket | null = null;
    let trace: TraceWriter | null = null;
    try {
      // The backend socket lives as long as the port, so the host side does not flap between sessions.
      const opened = parts.openBackendSocket(spec.backendSocket, pairs, spec.mtu);
      socket = opened.socket;
      if (spec.record) trace = parts.openTrace(spec.record, pairs);
      return new Port(spec, opened.socket, opened.offloads, vhostNet, trace, parts, hooks);
    } catch (e) {
      trace?.close();
      socket?.close();
      vhostNet.close();
      throw e;
    }
  }

  /**
   * Stop serving: the front-end is dropped (its rings stop, memory is unmapped; a server's socket
   * file is removed), then the backend socket and adopted fds are closed.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.transport.close();
    this.vhostNet.close();
    this.socket.close();
    this.trace?.close();
    this.log.info('vhost-bridge stopped');
  }

  /** A typed snapshot of the port (status.ts). */
  status(): PortStatus {
    return this.session.status();
  }

  /** Add a listener of lifecycle events; returns its removal. */
  onEvent(listener: PortListener): () => void {
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

  /** The interface of the backend socket (the tap, the macvtap, or the packet socket's), as the kernel names it. */
  get interfaceName(): string {
    return this.socket.name;
  }
}
