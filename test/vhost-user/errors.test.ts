/**
 * The one formatter of vhost-user failures (src/vhost-user/errors.ts judge): every kind words its
 * line the same way, names the request (or says it is unknown), and only a Refused or Failed
 * request on an ack row, asked for under REPLY_ACK, is NACKed.
 */
import { expect } from 'chai';
import { FrontendReq } from '../../src/vhost-user/constants.js';
import {
  asVhostUserError,
  BadHeader,
  Disconnected,
  Failed,
  judge,
  Malformed,
  Oversized,
  Refused,
  Truncated,
  WrongFds,
} from '../../src/vhost-user/errors.js';

describe('vhost-user failures: one formatter', () => {
  const NUM = FrontendReq.SET_VRING_NUM;

  it('NACKs a refusal or a failure of an ack row asked for under REPLY_ACK, and drops everything else', () => {
    const asked = { request: NUM, reply: 'ack' as const, ackAsked: true };
    expect(judge(new Refused('no'), asked)).to.deep.equal({
      nack: true,
      level: 'warn',
      subject: 'SET_VRING_NUM',
      line: 'SET_VRING_NUM: no (refused; NACK sent)',
    });
    expect(judge(new Failed('boom'), asked)).to.include({ nack: true, level: 'error' });
    for (const e of [new BadHeader('x'), new Malformed('x'), new WrongFds('x'), new Oversized('x'), new Truncated('x')])
      expect(judge(e, asked), e.kind).to.deep.include({
        nack: false,
        line: `SET_VRING_NUM: x (${e.kind}; dropping the connection)`,
      });
  });

  it('says why a refusal could not be told', () => {
    expect(judge(new Refused('no'), { request: NUM, reply: 'ack', ackAsked: false }).line).to.equal(
      'SET_VRING_NUM: no (refused, and the front-end asked for no reply; dropping the connection)',
    );
    expect(
      judge(new Refused('no'), { request: FrontendReq.GET_VRING_BASE, reply: 'vring-state', ackAsked: true }).line,
    ).to.equal('GET_VRING_BASE: no (refused, and the front-end expects a value; dropping the connection)');
  });

  it("names the error's own request first, then the caller's, else says it is unknown", () => {
    expect(judge(new Truncated('cut', FrontendReq.SET_MEM_TABLE), { request: null, ackAsked: false }).subject).to.equal(
      'SET_MEM_TABLE',
    );
    expect(judge(new WrongFds('many'), { request: null, ackAsked: false }).line).to.equal(
      'request unknown: many (wrong fds; dropping the connection)',
    );
    expect(judge(new Disconnected('poll error'), { request: null, ackAsked: false }).line).to.equal(
      'front-end socket: poll error (disconnected; dropping the connection)',
    );
  });

  it("takes a back end's own error as Failed, keeping its message", () => {
    const e = asVhostUserError(new Error('EBUSY'), NUM);
    expect(e).to.be.instanceOf(Failed).and.to.include({ message: 'EBUSY', request: NUM, name: 'Failed' });
    const r = new Refused('no');
    expect(asVhostUserError(r)).to.equal(r);
  });
});
