/**
 * What a {@link Port} is built on besides its spec: the kernel's vhost-net, the backend socket, the
 * trace writer and the log. {@link kernelParts} gives the real ones; unit tests give a Port a
 * recording fake kernel (test/port/fake-parts.ts), so the Port class they exercise is the one
 * that runs.
 */
import { log as defaultLog, type Logger } from '../log.js';
import { closeAll } from '../sys/index.js';
import { VhostNet } from '../vhost-kernel/index.js';
import { TraceWriter } from '../vhost-user/trace.js';
import {
  KernelVhostNetProvider,
  VhostNetDatapath,
  type VhostNetDatapathConfig,
  type VhostNetProvider,
} from '../bridge/vhost-net-datapath.js';
import { type OpenedBackendSocket, openBackendSocket } from './backend-socket.js';
import type { BackendSocketSpec } from './spec.js';

/** A port's vhost-net: what the kernel offers, and where each session's fds come from. */
export interface PortVhostNet {
  /** VHOST_GET_FEATURES. */
  readonly features: bigint;
  /** The provider of each session's fds (VhostNetDatapathConfig.vhostNet); its lines name the port (`log`). */
  provider(log: Logger): VhostNetProvider;
  /** The port ends: close the fds it holds across sessions (adopted ones). */
  close(): void;
}

export interface PortParts {
  /**
   * The kernel's vhost-net for `pairs` queue pairs: adopt a manager's `fds` (one per queue pair), or
   * check that /dev/vhost-net opens and read its features. Owns `fds` from the call on (closes them if it throws).
   */
  openVhostNet(fds: number[] | undefined, pairs: number): PortVhostNet;
  /** Open and set up the backend socket (backend-socket.ts). */
  openBackendSocket(spec: BackendSocketSpec, pairs: number, mtu?: number): OpenedBackendSocket;
  /** The recorder of every vhost-user message (`record`, vhost-user/trace.ts). */
  openTrace(path: string, pairs: number): TraceWriter;
  /** The datapath of the port's sessions, from the config the port computed. */
  datapath(cfg: VhostNetDatapathConfig): VhostNetDatapath;
  /** Where the port logs; it names itself in every line (log.ts portLog). */
  log: Logger;
}

/** Adopt the manager's vhost-net fds, or check that /dev/vhost-net opens: the real {@link PortParts.openVhostNet}. */
function openKernelVhostNet(fds: number[] | undefined, pairs: number): PortVhostNet {
  if (!fds?.length) {
    const probe = VhostNet.open(0);
    let features: bigint;
    try {
      features = probe.getFeatures();
    } finally {
      probe.close();
    }
    return { features, provider: (log) => new KernelVhostNetProvider(null, log), close() {} };
  }
  const adopted: VhostNet[] = [];
  try {
    if (fds.length !== pairs)
      throw new Error(`--vhost-fd: ${fds.length} fds for ${pairs} queue pair(s); give one per queue pair`);
    for (const [p, fd] of fds.entries()) adopted.push(VhostNet.adopt(fd, p));
    const features = adopted[0].getFeatures();
    let provider: KernelVhostNetProvider | null = null;
    return {
      features,
      provider: (log) => {
        provider = new KernelVhostNetProvider(adopted, log);
        return provider;
      },
      close: () => {
        if (provider) provider.close();
        else for (const v of adopted) v.close();
      },
    };
  } catch (e) {
    for (const v of adopted) v.close();
    closeAll(fds.slice(adopted.length));
    throw e;
  }
}

/** The real kernel: /dev/vhost-net (or a manager's fds), a tap, macvtap or packet socket, trace files. */
export function kernelParts(log: Logger = defaultLog): PortParts {
  return {
    openVhostNet: openKernelVhostNet,
    openBackendSocket,
    openTrace: (path, pairs) => new TraceWriter(path, { tool: 'vhost-bridge', queuePairs: pairs }),
    datapath: (cfg) => new VhostNetDatapath(cfg),
    log,
  };
}
