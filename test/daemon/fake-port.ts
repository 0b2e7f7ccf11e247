/**
 * The daemon's unit tests on the recording fake kernel: every port the daemon starts is the real
 * {@link Port} (transport, session, datapath) built on test/port's recording parts, so many ports
 * with synthetic front-ends run on a machine without /dev/vhost-net.
 */
import type { PortConfig } from '../../src/daemon/config.js';
import type { PartsFor } from '../../src/daemon/manager.js';
import type { Call, FakeVhostNetProvider } from '../bridge/fake-kernel.js';
import { recordingKernel, type RecordingKernel } from '../port/fake-parts.js';

/** One start of a port: its configuration and the recording kernel it runs on, for assertions. */
export interface FakePort {
  config: PortConfig;
  kernel: RecordingKernel;
  journal: Call[];
  source: FakeVhostNetProvider;
  /** The port closed its backend socket: it was stopped. */
  readonly closed: boolean;
}

export interface FakeKernel {
  partsFor: PartsFor;
  /** Every port started, in order (a restarted port appears again). */
  opened: FakePort[];
  /** The live port of a name. */
  live(name: string): FakePort;
  /** Ports whose start throws (as a missing tap would), by name. */
  failing: Set<string>;
}

export function fakeKernel(): FakeKernel {
  const opened: FakePort[] = [];
  const failing = new Set<string>();
  const partsFor: PartsFor = (config, log) => {
    const failSocket = failing.has(config.name)
      ? new Error(`tap ${config.tap}: ENODEV: no such tap (test)`)
      : undefined;
    const kernel = recordingKernel(log, { failSocket });
    if (!failSocket)
      opened.push({
        config,
        kernel,
        journal: kernel.journal,
        source: kernel.vhostNet,
        get closed() {
          return kernel.socket?.closed ?? false;
        },
      });
    return kernel.parts;
  };
  return {
    partsFor,
    opened,
    failing,
    live: (name) => {
      const p = opened.filter((x) => x.config.name === name && x.kernel.socket && !x.closed).at(-1);
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
