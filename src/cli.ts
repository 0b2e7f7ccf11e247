#!/usr/bin/env -S node --no-memory-reducer
/**
 * vhost-bridge's command line. Two modes of one binary:
 *  - one port per process (src/one-port.ts): `vhost-bridge --socket-path ... --tap ...`, QEMU's
 *    vhost-user.rst "Backend program conventions", for a manager that starts one per VM;
 *  - a host service (src/daemon/): `vhost-bridge serve --config FILE` serves many ports in one
 *    process, and `vhost-bridge ctl ...` asks it through its control socket.
 *
 * The shebang turns off V8's memory reducer: it runs a few full GCs some 10 s after each front-end's
 * set-up (0.2-0.45 s of CPU in the lab), the only CPU this daemon would otherwise spend while the
 * kernel moves the packets; for a heap of a few MB it saves next to nothing.
 */
const daemon = (s: string | undefined) => s === 'serve' || s === 'ctl';
// `vhost-bridge help` is the one-port mode's --help (it names the others); `help serve` is serve's.
if (process.argv[2] === 'help' && !daemon(process.argv[3])) process.argv.splice(2, process.argv.length - 2, '--help');
const sub = process.argv[2];
if (daemon(sub) || sub === 'help') await (await import('./daemon/main.js')).main(process.argv.slice(2));
else (await import('./one-port.js')).runOnePort(process.argv.slice(2), process.env);
