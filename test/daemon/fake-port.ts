/**
 * Ports for the daemon's unit tests: the real vhost-user transport and bridge device, on the
 * recording fake kernel of test/bridge (vhost-net fds and a tap that journal every call), so many
 * ports with synthetic front-ends run on a machine without /dev/vhost-net.
 */
import { VhostUserSession } from '../../src/bridge/session.js';
import { VhostNetDatapath } from '../../src/bridge/vhost-net-datapath.js';
import type { PortSpec } from '../../src/daemon/config.js';
import { type OpenContext, type PortOpener, type PortUnit, transportOf } from '../../src/daemon/port.js';
import { portLog } from '../../src/log.js';
import { VhostUserClient, VhostUserServer } from '../../src/vhost-user/transport.js';
import { type Call, FakeTap, FakeVhostNetProvider, LAB_KERNEL_FEATURES } from '../bridge/fake-kernel.js';
import { NET_FEATURES } from '../vhost-user/fixtures.js';

/** One fake port: its kernel journal and the device, for assertions. */
export interface FakePort {
  spec: PortSpec;
  journal: Call[];
  source: FakeVhostNetProvider;
  session: VhostUserSession;
  unit: PortUnit;
  closed: boolean;
}

export interface FakeKernel {
  opener: PortOpener;
  /** Every port opened, in order (a restarted port appears again). */
  opened: FakePort[];
  /** The live port of a name. */
  live(name: string): FakePort;
  /** Ports whose start throws (as a missing tap would), by name. */
  failing: Set<string>;
}

export function fakeKernel(): FakeKernel {
  const opened: FakePort[] = [];
  const failing = new Set<string>();
  const opener: PortOpener = (spec: PortSpec, ctx: OpenContext) => {
    if (failing.has(spec.name)) throw new Error(`tap ${spec.tap}: ENODEV: no such tap (test)`);
    const journal: Call[] = [];
    const source = new FakeVhostNetProvider(journal);
    const tap = new FakeTap(journal);
    Object.defineProperty(tap, 'name', { value: spec.tap });
    const log = portLog(ctx.log, spec.name);
    const datapath = new VhostNetDatapath({
      queuePairs: spec.queues,
      offered: NET_FEATURES,
      vhostNetFeatures: LAB_KERNEL_FEATURES,
      vhostNet: source,
      socket: tap,
      maxMemSlots: 64,
      log,
    });
    const memoryLimit = { bytes: spec.maxMemory, regions: spec.maxRegions };
    const device = new VhostUserSession({ port: spec.name, datapath, log, memoryLimit });
    const t = transportOf(spec, ctx.listenFd);
    const opts = { log, peers: t.peers };
    const transport =
      t.mode === 'server'
        ? VhostUserServer.listen(t.path, device, { ...opts, mode: t.socketMode, uid: t.uid, gid: t.gid })
        : t.mode === 'fd'
          ? VhostUserServer.fromFd(t.fd, device, opts)
          : VhostUserClient.connect(t.path, device, { ...opts, retryInitialMs: 10, retryMaxMs: 50 });
    transport.on('connection', () => device.connected());
    transport.on('refused', (r) => device.peerRefused(r.peer, r.rule));
    const port: FakePort = {
      spec,
      journal,
      source,
      session: device,
      closed: false,
      unit: {
        tapName: spec.tap,
        status: () => device.status(),
        frontEndFd: () => transport.connection?.fd ?? null,
        workers: () => datapath.workers(),
        dropFrontEnd: (why) => transport.connection?.close(why),
        close: () => {
          port.closed = true;
          transport.close();
        },
      },
    };
    opened.push(port);
    return port.unit;
  };
  return {
    opener,
    opened,
    failing,
    live: (name) => {
      const p = opened.filter((x) => x.spec.name === name && !x.closed).at(-1);
      if (!p) throw new Error(`no live port ${name}`);
      return p;
    },
  };
}

/** Rings attached on the fake kernel: [pair, ring] of every VHOST_NET_SET_BACKEND with a tap fd not yet undone. */
export function attachedRings(p: FakePort): number[] {
  return p.source.devices
    .filter((d) => !d.closed)
    .flatMap((d) => [0, 1].map((i) => 2 * d.pair + i).filter((r) => d.attached(r)));
}
