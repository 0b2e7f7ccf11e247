/**
 * Replays a real QEMU 7.2 session (test/fixtures, recorded by test/tools/record-qemu-session: 2
 * queue pairs, mq=on, host_mtu; the guest brings eth0 up and powers off) through the dispatcher
 * into a session on the recording kernel (fake-kernel.ts), as a connection would deliver it.
 */
import { join } from 'node:path';
import type { PortListener, PortStatus } from '../../src/bridge/status.js';
import { captureLog } from '../log-capture.js';
import { FrontendReq } from '../../src/vhost-user/constants.js';
import { Dispatcher } from '../../src/vhost-user/dispatcher.js';
import { readTrace } from '../../src/vhost-user/trace.js';
import { FdFactory } from '../vhost-user/replay-fds.js';
import { fakePort } from './fake-kernel.js';

export const QEMU_SESSIONS = ['qemu72-session.msgpack', 'qemu72-session-mem-slots.msgpack'] as const;

const fixtures = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures');

export interface Replayed {
  port: ReturnType<typeof fakePort>;
  queuePairs: number;
  /** Warnings and errors logged during the replay. */
  warnings: string[];
  /** At the first GET_VRING_BASE (the guest powers off): the kernel's attach state per ring, and the status. */
  beforeStop: { attached: boolean[]; status: PortStatus } | null;
}

export function replayQemuSession(file: string, onEvent?: PortListener): Replayed {
  const { header, events } = readTrace(join(fixtures, file));
  const meta = header.meta as { features: string; queuePairs: number };
  const port = fakePort({ queuePairs: meta.queuePairs, offered: BigInt(meta.features), onEvent });
  const { session, vhostNet } = port;
  const out: Replayed = { port, queuePairs: meta.queuePairs, warnings: [], beforeStop: null };
  const factory = new FdFactory();
  const cap = captureLog('warn');
  try {
    let d: Dispatcher | null = null;
    for (const e of events) {
      if (e.e === 'connect') {
        d = new Dispatcher(session);
        session.connected();
      } else if (e.e === 'msg') {
        if (e.request === FrontendReq.GET_VRING_BASE && !out.beforeStop) {
          const attached = Array.from({ length: 2 * meta.queuePairs }, (_, q) => vhostNet.live(q >> 1).attached(q));
          out.beforeStop = { attached, status: session.status() };
        }
        const header = { request: e.request, flags: e.flags, size: e.size };
        d!.handle({ header, payload: e.payload, fds: factory.forMessage(e) });
      } else d!.disconnected();
    }
  } finally {
    cap.stop();
    factory.close();
  }
  out.warnings = cap.texts();
  return out;
}
