/** Stand-in fds for replaying recorded sessions (replay.test.ts here, and the bridge's replay test). */
import { expect } from 'chai';
import * as sys from '../../src/sys/index.js';
import { decodeLog, decodeMemoryTable, decodeSingleMemoryRegion } from '../../src/vhost-user/codec.js';
import { FrontendReq, requestName } from '../../src/vhost-user/constants.js';
import type { MemoryRegion } from '../../src/vhost-user/messages.js';
import type { TraceMessage } from '../../src/vhost-user/trace.js';
import { memfd } from '../../lab/frontend/frontend.js';

/** Stand-in fds for a recorded message: one memfd per RAM block (dup'd when resent), eventfds otherwise. */
export class FdFactory {
  private readonly blocks = new Map<string, number>();

  forMessage(m: TraceMessage): number[] {
    const ram = (r: MemoryRegion): number => {
      const key = `${r.gpa}:${r.size}:${r.qva}:${r.mmapOffset}`;
      let fd = this.blocks.get(key);
      if (fd === undefined) {
        fd = memfd(r.mmapOffset + r.size, 'guest-ram');
        this.blocks.set(key, fd);
      }
      return sys.dup(fd);
    };
    let fds: number[];
    switch (m.request) {
      case FrontendReq.SET_MEM_TABLE:
        fds = decodeMemoryTable(m.payload).regions.map(ram);
        break;
      case FrontendReq.ADD_MEM_REG:
        fds = [ram(decodeSingleMemoryRegion(m.payload).region)];
        break;
      case FrontendReq.SET_LOG_BASE: {
        const l = decodeLog(m.payload);
        fds = [memfd(l.offset + l.size, 'dirty-log')];
        break;
      }
      default:
        fds = Array.from({ length: m.fds }, () => sys.eventfd());
    }
    expect(fds.length, `${requestName(m.request)}: stand-in fds`).to.equal(m.fds);
    return fds;
  }

  close(): void {
    sys.closeAll(this.blocks.values());
    this.blocks.clear();
  }
}
