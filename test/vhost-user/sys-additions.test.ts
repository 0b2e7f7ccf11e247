/** What src/vhost-user needs from src/sys beyond the lead's tests: MSG_CTRUNC still reports the bytes that arrived. */
import { expect } from 'chai';
import * as sys from '../../src/sys/index.js';
import { openFdCount } from '../fdcount.js';
import { readable } from './frontend.js';

describe('sys additions for vhost-user', () => {
  it('ControlTruncatedError carries the data bytes that arrived with the truncated fds (to name the message)', async () => {
    const before = openFdCount();
    const [a, b] = sys.socketPair();
    const efds = [sys.eventfd(), sys.eventfd(), sys.eventfd()];
    new sys.MsgIo(16).send(a, Buffer.from('hello'), efds);
    await readable(b);
    const rx = new sys.MsgIo(16, 1);
    let err: unknown;
    try {
      rx.recv(b);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(sys.ControlTruncatedError);
    expect((err as sys.ControlTruncatedError).n).to.equal(5);
    expect(rx.data.toString('latin1', 0, 5)).to.equal('hello');
    sys.closeAll([...efds, a, b]);
    expect(openFdCount()).to.equal(before);
  });
});
