/**
 * PortParts on the recording kernel of test/bridge (fake-kernel.ts): the vhost-net fds of each
 * session and the backend socket journal every call, so that the real {@link Port} (transport,
 * session, datapath) runs on a machine without /dev/vhost-net. Traces are real files.
 */
import { VhostNetDatapath } from '../../src/bridge/vhost-net-datapath.js';
import type { Logger } from '../../src/log.js';
import type { HeldBackendSocket } from '../../src/port/backend-socket.js';
import { kernelParts, type PortParts } from '../../src/port/parts.js';
import type { BackendSocketSpec } from '../../src/port/spec.js';
import {
  type Call,
  FakePacketSocket,
  FakeTap,
  FakeVhostNetProvider,
  LAB_KERNEL_FEATURES,
} from '../bridge/fake-kernel.js';

/** A recording socket the port holds: it names the interface of the spec, and knows whether the port closed it. */
export type HeldFakeSocket = (FakeTap | FakePacketSocket) & HeldBackendSocket & { closed: boolean };

/** What a test reads back of the parts a port was built on. */
export interface RecordingKernel {
  parts: PortParts;
  /** Every call to the vhost-net fds and the backend socket, in order. */
  journal: Call[];
  vhostNet: FakeVhostNetProvider;
  /** The backend socket the port opened, or null before it did. */
  socket: HeldFakeSocket | null;
  /** The spec the port opened it from. */
  socketSpec: BackendSocketSpec | null;
}

/** The interface a spec names (a tap by fds is the fake tap's own name). */
function interfaceOf(spec: BackendSocketSpec): string | null {
  return 'tap' in spec ? spec.tap : 'macvtap' in spec ? spec.macvtap : 'packet' in spec ? spec.packet : null;
}

/**
 * Parts whose kernel is the recording one; `failSocket`, if given, is what opening the backend
 * socket throws (as a missing tap would).
 */
export function recordingKernel(log: Logger, o: { failSocket?: Error } = {}): RecordingKernel {
  const journal: Call[] = [];
  const vhostNet = new FakeVhostNetProvider(journal);
  const k: RecordingKernel = {
    journal,
    vhostNet,
    socket: null,
    socketSpec: null,
    parts: {
      openVhostNet: () => ({ features: LAB_KERNEL_FEATURES, provider: () => vhostNet, close() {} }),
      openBackendSocket: (spec, pairs, mtu) => {
        if (o.failSocket) throw o.failSocket;
        const s = ('packet' in spec ? new FakePacketSocket(journal) : new FakeTap(journal)) as HeldFakeSocket;
        const name = interfaceOf(spec);
        if (name !== null) Object.defineProperty(s, 'name', { value: name });
        s.closed = false;
        s.close = () => {
          s.closed = true;
        };
        if (mtu !== undefined) s.setMtu(mtu);
        for (let p = 1; p < pairs; p++) s.setQueueEnabled(p, false);
        k.socket = s;
        k.socketSpec = spec;
        return { socket: s, offloads: 0 };
      },
      openTrace: kernelParts(log).openTrace,
      // The test machine's vhost module may be absent: GET_MAX_MEM_SLOTS answers the lab's default.
      datapath: (cfg) => new VhostNetDatapath({ ...cfg, maxMemSlots: 64 }),
      log,
    },
  };
  return k;
}
