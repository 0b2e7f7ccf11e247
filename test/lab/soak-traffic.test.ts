/**
 * The soak's traffic checks (lab/soak/traffic.ts, docs/soak.md "Traffic"), without the lab: a transfer
 * is ok only whole and unchanged, a UDP burst counts every line, and L2's sink tells guests apart by
 * address (here over loopback, with real sockets).
 */
import { createHash } from 'node:crypto';
import * as dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import { expect } from 'chai';
import {
  BURST_LINES,
  BurstLedger,
  guestCommand,
  STREAM_BYTES,
  TCP_PORT,
  TrafficSink,
  TransferCheck,
  UDP_PORT,
} from '../../lab/soak/traffic.js';

const payload = readFileSync('/bin/busybox').subarray(0, STREAM_BYTES);
const hash = createHash('sha256').update(payload).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('soak traffic: a checked TCP transfer', () => {
  it('is ok only when exactly the expected bytes arrive, in any chunking', () => {
    const c = new TransferCheck(hash);
    expect(c.add(payload.subarray(0, 1000))).to.equal(null);
    expect(c.add(payload.subarray(1000))).to.equal('ok');
    expect(c.closed()).to.equal('ok');
  });

  it('is corrupt when one byte differs or more bytes come, cut when it closes early', () => {
    const bad = Buffer.from(payload);
    bad[STREAM_BYTES - 1] ^= 1;
    expect(new TransferCheck(hash).add(bad)).to.equal('corrupt');
    const more = new TransferCheck(hash);
    expect(more.add(Buffer.concat([payload, Buffer.from([0])]))).to.equal('corrupt');
    const cut = new TransferCheck(hash);
    cut.add(payload.subarray(0, 5000));
    expect(cut.closed()).to.equal('cut');
    expect(cut.bytes).to.equal(5000);
  });
});

describe('soak traffic: UDP bursts', () => {
  const line = (tok: string, b: number, l: number): string => `<13>Dec  1 03:40:00 vbsoak: ${tok} ${b} ${l}`;

  it('counts the lines missing from the bursts strictly inside a window, per token', () => {
    const l = new BurstLedger();
    expect(l.add('<13>Dec  1 03:40:00 kernel: something else')).to.equal(false);
    for (let b = 1; b <= 5; b++)
      for (let j = 1; j <= BURST_LINES; j++) if (!(b === 3 && j > BURST_LINES - 7)) l.add(line('g0.1', b, j));
    expect(l.token).to.equal('g0.1');
    expect(l.newest()).to.equal(5);
    // bursts 2, 3, 4: burst 3 lost its last 7 lines
    expect(l.check('g0.1', 1, 5)).to.deep.equal({ sent: 3 * BURST_LINES, lost: 7 });
    expect(l.check('g0.1', 3, 5)).to.deep.equal({ sent: BURST_LINES, lost: 0 });
    // a burst never seen misses all its lines; a new token starts afresh
    l.add(line('g0.2', 1, 1));
    l.add(line('g0.2', 3, 1));
    expect(l.token).to.equal('g0.2');
    expect(l.check('g0.2', 1, 3)).to.deep.equal({ sent: BURST_LINES, lost: BURST_LINES });
  });

  it('can check a burst once all its lines came, or once a later burst started', () => {
    const l = new BurstLedger();
    expect(l.checkableBefore()).to.equal(0);
    for (let j = 1; j <= BURST_LINES - 1; j++) l.add(line('g2.1', 1, j));
    expect(l.checkableBefore()).to.equal(1); // burst 1 may still be arriving
    l.add(line('g2.1', 1, BURST_LINES));
    expect(l.checkableBefore()).to.equal(2); // whole: known at once
    for (let j = 2; j <= BURST_LINES; j++) l.add(line('g2.1', 2, j)); // line 1 lost
    expect(l.checkableBefore('g2.1')).to.equal(2); // lossy or late: not known until burst 3 starts
    l.add(line('g2.1', 3, 1));
    expect(l.checkableBefore('g2.1')).to.equal(3);
    expect(l.check('g2.1', 0, l.checkableBefore())).to.deep.equal({ sent: 2 * BURST_LINES, lost: 1 });
  });

  it("tells which burst first arrived after a moment (a target's fault is forgiven up to there)", () => {
    const l = new BurstLedger();
    l.add(line('g1.1', 4, 1), 1000);
    l.add(line('g1.1', 4, 2), 1500); // a later line of the same burst: the first one's time counts
    l.add(line('g1.1', 6, 1), 5000); // burst 5 lost during the fault, never arrived
    l.add(line('g1.1', 7, 1), 8000);
    expect(l.firstArrivedAfter('g1.1', 1200)).to.equal(6);
    expect(l.firstArrivedAfter('g1.1', 5001)).to.equal(7);
    expect(l.firstArrivedAfter('g1.1', 9000)).to.equal(undefined);
    expect(l.firstArrivedAfter('g9.1', 0)).to.equal(undefined);
  });

  it("the guest's command is one printable line naming L2's address, the ports and the token", () => {
    const cmd = guestCommand('10.0.40.1', 'g0.3');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the guest's console takes one printable line
    expect(cmd).to.not.match(/[\x00-\x1f\x7f]/);
    expect(cmd).to.contain(`syslogd -R 10.0.40.1:${UDP_PORT}`);
    expect(cmd).to.contain(`nc 10.0.40.1 ${TCP_PORT}`);
    expect(cmd).to.contain(`head -c ${STREAM_BYTES} /bin/busybox`);
    expect(cmd).to.contain('echo "g0.3 $i $j"');
  });
});

describe("soak traffic: L2's sink, over loopback", () => {
  it('checks each connection as one transfer and counts datagrams by sender address', async () => {
    const sink = await TrafficSink.open(new Map([['127.0.0.1', 'g0']]));
    try {
      const send = (data: Buffer, close: boolean): Promise<void> =>
        new Promise((res) => {
          const s = net.createConnection(TCP_PORT, '127.0.0.1', () => {
            s.write(data);
            if (close) s.end();
          });
          s.on('close', () => res());
          s.on('error', () => res());
          s.resume();
        });
      await send(payload, false); // whole: the sink closes it
      const bad = Buffer.from(payload);
      bad[7] ^= 0xff;
      await send(bad, false);
      await send(payload.subarray(0, 1234), true); // cut by the sender
      await sleep(100);
      expect(sink.transfers.map((t) => [t.guest, t.outcome, t.bytes])).to.deep.equal([
        ['g0', 'ok', STREAM_BYTES],
        ['g0', 'corrupt', STREAM_BYTES],
        ['g0', 'cut', 1234],
      ]);
      expect(sink.quietFor('g0')).to.be.below(1000);

      const u = dgram.createSocket('udp4');
      for (let j = 1; j <= 3; j++) u.send(`<13>Dec 1 vbsoak: g0.1 1 ${j}`, UDP_PORT, '127.0.0.1');
      await sleep(200);
      u.close();
      expect(sink.bursts.get('g0')?.newest('g0.1')).to.equal(1);
      expect(sink.bursts.get('g0')?.check('g0.1', 0, 2).lost).to.equal(BURST_LINES - 3);
    } finally {
      sink.close();
    }
  });
});
