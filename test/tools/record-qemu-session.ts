/**
 * Record a real vhost-user session: listen with the vhost-user transport and the recording back
 * end of the tests, write a trace (src/vhost-user/trace.ts) of every message and reply, run the
 * VMM command given after `--` (it connects to --socket), and stop when it exits.
 *
 *   node dist/test/tools/record-qemu-session.js --socket PATH --record FILE \
 *     [--features HEX] [--protocol-features HEX] [--queues N] [--max-mem-slots N] \
 *     [--timeout SECONDS] [--vmm-log FILE] -- qemu-system-x86_64 ...
 *
 * test/tools/record-qemu-session builds the guest and the QEMU command line and calls this.
 * The back end is the recording one: guest memory is mapped (MemTable) and ring addresses are
 * translated, but no packet is moved; that is enough for the front-end to run its whole protocol.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { hex } from '../../src/format.js';
import { log, setLogLevel } from '../../src/log.js';
import { requestName } from '../../src/vhost-user/constants.js';
import { readTrace, TraceWriter, type TraceMessage } from '../../src/vhost-user/trace.js';
import { VhostUserServer } from '../../src/vhost-user/transport.js';
import { bridgeLike } from '../vhost-user/fixtures.js';
import { RecordingBackend } from '../vhost-user/recording-backend.js';

const dd = process.argv.indexOf('--');
if (dd < 0) throw new Error('usage: record-qemu-session --socket PATH --record FILE [options] -- VMM ARGS...');
const vmm = process.argv.slice(dd + 1);
const { values: o } = parseArgs({
  args: process.argv.slice(2, dd),
  options: {
    socket: { type: 'string' },
    record: { type: 'string' },
    features: { type: 'string' },
    'protocol-features': { type: 'string' },
    queues: { type: 'string', default: '2' },
    'max-mem-slots': { type: 'string', default: '8' },
    timeout: { type: 'string', default: '300' },
    'vmm-log': { type: 'string' },
    'log-level': { type: 'string', default: 'debug' },
  },
});
if (!o.socket || !o.record) throw new Error('--socket and --record are required');
setLogLevel(o['log-level']!);

const defaults = bridgeLike();
const config = {
  features: o.features ? BigInt(o.features) : defaults.features,
  protocolFeatures: o['protocol-features'] ? BigInt(o['protocol-features']) : defaults.protocolFeatures,
  queuePairs: Number(o.queues),
  maxMemSlots: Number(o['max-mem-slots']),
};
const backend = new RecordingBackend(config);
const trace = new TraceWriter(o.record, {
  backend: 'test/vhost-user/recording-backend.ts',
  features: hex(config.features),
  protocolFeatures: hex(config.protocolFeatures),
  queuePairs: config.queuePairs,
  maxMemSlots: config.maxMemSlots,
  vmm: vmm.join(' '),
});
const server = VhostUserServer.listen(o.socket, backend, { trace });

log.info(`starting: ${vmm.join(' ')}`);
const child = spawn(vmm[0], vmm.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
const out = o['vmm-log'] ? createWriteStream(o['vmm-log']) : process.stderr;
child.stdout.pipe(out, { end: false });
child.stderr.pipe(out, { end: false });
const timer = setTimeout(() => {
  log.error(`the VMM did not exit within ${o.timeout} s; killing it`);
  child.kill('SIGKILL');
}, Number(o.timeout) * 1000);

const status = await new Promise<number | string>((resolve) =>
  child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
);
clearTimeout(timer);
// The connection may still hold messages QEMU wrote just before exiting: let the loop drain them.
await new Promise((r) => setTimeout(r, 200));
server.close();
trace.close();

const { events } = readTrace(o.record);
const msgs = events.filter((e): e is TraceMessage => e.e === 'msg');
const counts = new Map<string, number>();
for (const m of msgs) counts.set(requestName(m.request), (counts.get(requestName(m.request)) ?? 0) + 1);
log.info(
  `VMM exited (${status}); ${msgs.length} messages in ${events.filter((e) => e.e === 'connect').length} ` +
    `connection(s), ` +
    `${msgs.filter((m) => m.result !== 'ok').length} not ok; ${statSync(o.record).size} bytes in ${o.record}`,
);
log.info([...counts].map(([k, v]) => `${k} x${v}`).join(', '));
process.exitCode = status === 0 && msgs.length > 0 && msgs.every((m) => m.result === 'ok') ? 0 : 1;
