/**
 * Lab: the Tap class against the real tun driver (Linux 6.1 in L2): creation and attachment,
 * settings, offload probing, multi-queue, adoption of passed fds, and the refusals with advice.
 */
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { maskOf } from '../../src/bits.js';
import { VIRTIO_NET_F } from '../../src/virtio.js';
import { IFF, Tap, TAP_FLAGS, TUN, TUN_F, tapOffloadFlags } from '../../src/vhost-kernel/index.js';
import * as sys from '../../src/sys/index.js';
import { requireLab } from './lab.js';
import { kernelAtLeast } from '../../lab/host.js';
import { tapName, thrown } from './kernel-rig.js';

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
const exists = (name: string): boolean => spawnSync('ip', ['link', 'show', name]).status === 0;

describe('lab: Tap on the real tun driver', function () {
  this.timeout(120000);
  const cleanup: (() => void)[] = [];

  before(function () {
    requireLab(this);
  });

  afterEach(() => {
    for (const c of cleanup.splice(0).reverse()) {
      try {
        c();
      } catch {
        /* best effort */
      }
    }
  });

  /** A persistent tap made by ip(8), deleted after the test. */
  function persistent(name: string, extra: string[] = []): void {
    ip('tuntap', 'add', 'dev', name, 'mode', 'tap', ...extra);
    cleanup.push(() =>
      ip('tuntap', 'del', 'dev', name, 'mode', 'tap', ...(extra.includes('multi_queue') ? ['multi_queue'] : [])),
    );
  }

  const createsTap =
    'creates a tap with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, sets vnet header size, sndbuf, MTU and link up; it vanishes ' +
    'on close';
  it(createsTap, () => {
    const tap = Tap.open(tapName('t'));
    cleanup.push(() => tap.close());
    expect(tap.created).to.equal(true);
    expect(tap.flags & TAP_FLAGS).to.equal(TAP_FLAGS);
    expect(tap.flags & IFF.PERSIST).to.equal(0);
    tap.setVnetHdrSize(12);
    expect(tap.getVnetHdrSize()).to.equal(12);
    tap.setSndbuf();
    expect(tap.getSndbuf()).to.equal(0x7fffffff);
    tap.setMtu(9000);
    expect(tap.getMtu()).to.equal(9000);
    expect(tap.isUp()).to.equal(false);
    tap.setUp();
    expect(tap.isUp()).to.equal(true);
    tap.setUp(); // already up: no ioctl needed
    expect(ip('-d', 'link', 'show', tap.name)).to.match(
      /mtu 9000 .*state (UNKNOWN|UP|DOWN)[\s\S]*tun type tap pi off vnet_hdr on/,
    );
    tap.close();
    expect(tap.fds).to.deep.equal([]);
    expect(exists(tap.name), 'a non-persistent tap goes with its last fd').to.equal(false);
  });

  const probesOffloads =
    'probes the offloads the tap accepts and applies the negotiated ones; TSO without CSUM is refused with advice';
  it(probesOffloads, () => {
    const tap = Tap.open(tapName('o'));
    cleanup.push(() => tap.close());
    const probed = tap.probeOffloads();
    console.log(
      `      tap offloads accepted: 0x${probed.toString(16)} ` +
        `(kernel ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()})`,
    );
    const base = TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6 | TUN_F.TSO_ECN | TUN_F.UFO;
    expect(probed & base).to.equal(base);
    // docs/kernels.md: UDP segmentation offload (TUN_F_USO4/USO6) came with Linux 6.2.
    const uso = TUN_F.USO4 | TUN_F.USO6;
    expect(probed & uso, 'TUN_F_USO4|USO6 accepted').to.equal(kernelAtLeast(6, 2) ? uso : 0);
    const all = maskOf(
      VIRTIO_NET_F.GUEST_CSUM,
      VIRTIO_NET_F.GUEST_TSO4,
      VIRTIO_NET_F.GUEST_TSO6,
      VIRTIO_NET_F.GUEST_ECN,
      VIRTIO_NET_F.GUEST_UFO,
    );
    expect(tap.setOffload(tapOffloadFlags(all))).to.equal(base);
    expect(thrown(() => tap.setOffload(TUN_F.TSO4)).message).to.match(
      new RegExp(`^TUNSETOFFLOAD ${tap.name} 0x2: EINVAL: invalid argument: the tap refuses these offloads`),
    );
    expect(tap.setOffload(0)).to.equal(0);
  });

  it('multi-queue: one fd per queue pair, all on one tap with IFF_MULTI_QUEUE', () => {
    const tap = Tap.open(tapName('m'), { queuePairs: 3 });
    cleanup.push(() => tap.close());
    expect(tap.queuePairs).to.equal(3);
    expect(tap.multiQueue).to.equal(true);
    expect(new Set(tap.fds).size).to.equal(3);
    for (const fd of tap.fds) {
      const ifr = Buffer.alloc(40);
      sys.ioctlPtr(fd, TUN.GETIFF, ifr, 'TUNGETIFF');
      expect(ifr.toString('utf8', 0, ifr.indexOf(0))).to.equal(tap.name);
    }
    expect(ip('-d', 'link', 'show', tap.name)).to.match(/multi_queue/);
  });

  it('attaches to an existing persistent tap (create: false) and leaves it in place on close', () => {
    const name = tapName('p');
    persistent(name, ['vnet_hdr']);
    const tap = Tap.open(name, { create: false });
    expect(tap.created).to.equal(false);
    expect(tap.currentFlags() & IFF.PERSIST).to.equal(IFF.PERSIST);
    tap.close();
    expect(exists(name), 'a persistent tap stays').to.equal(true);
  });

  it('refuses with advice: no such tap, tap busy, multi_queue mismatch, not a tap, a bad name', () => {
    expect(thrown(() => Tap.open('vbnosuch0', { create: false })).message).to.match(
      new RegExp(
        /^tap vbnosuch0: ENODEV: no such device: no such tap: create it /.source +
          /\(ip tuntap add dev vbnosuch0 mode tap vnet_hdr user \$USER\)/.source,
      ),
    );

    const tap = Tap.open(tapName('b'));
    cleanup.push(() => tap.close());
    expect(thrown(() => Tap.open(tap.name)).message).to.equal(
      `TUNSETIFF ${tap.name}: EBUSY: device or resource busy: tap ${tap.name} is single-queue and another process ` +
        `(QEMU, another bridge) already holds it: stop that process or use another tap`,
    );

    const sq = tapName('s');
    persistent(sq, ['vnet_hdr']);
    expect(thrown(() => Tap.open(sq, { queuePairs: 2 })).message).to.match(
      new RegExp(
        `^TUNSETIFF ${sq}: EINVAL: invalid argument: ${sq} was created single-queue but several queue pairs need ` +
          `multi_queue: recreate it`,
      ),
    );
    const mq = tapName('q');
    persistent(mq, ['vnet_hdr', 'multi_queue']);
    expect(thrown(() => Tap.open(mq)).message).to.match(
      new RegExp(`^TUNSETIFF ${mq}: EINVAL: .*${mq} was created multi_queue but one queue pair opens it single-queue`),
    );

    const tun = tapName('u');
    ip('tuntap', 'add', 'dev', tun, 'mode', 'tun');
    cleanup.push(() => ip('tuntap', 'del', 'dev', tun, 'mode', 'tun'));
    expect(thrown(() => Tap.open(tun)).message).to.match(
      new RegExp(`^TUNSETIFF ${tun}: EINVAL: .*${tun} is a tun \\(layer 3\\) device, not a tap`),
    );
    expect(thrown(() => Tap.open('lo')).message).to.equal(
      'TUNSETIFF lo: EINVAL: invalid argument: lo exists and is not a tun/tap device: choose another name',
    );

    expect(thrown(() => Tap.open('a-name-far-too-long')).message).to.match(
      /^tap a-name-far-too-long: EINVAL: .*19 bytes; interface names have at most 15/,
    );
  });

  const adoptsFds =
    'adopts passed fds: learns the name, checks IFF_TAP|IFF_NO_PI|IFF_VNET_HDR; refuses other fds and leaves them open';
  it(adoptsFds, () => {
    const owner = Tap.open(tapName('a'), { queuePairs: 2 });
    cleanup.push(() => owner.close());
    // A manager would pass its own fds; dups stand in for them (the adopter takes and closes them).
    const passed = owner.fds.map((fd) => sys.dup(fd));
    const tap = Tap.adopt(passed);
    cleanup.push(() => tap.close());
    expect(tap.name).to.equal(owner.name);
    expect(tap.adopted).to.equal(true);
    expect(tap.multiQueue).to.equal(true);
    expect(tap.fds).to.deep.equal(passed);

    const efd = sys.eventfd();
    cleanup.push(() => sys.close(efd));
    expect(thrown(() => Tap.adopt([efd])).message).to.equal(
      `tap fd ${efd}: ENOTTY: inappropriate ioctl for device: fd ${efd} is an anonymous file (eventfd, epoll, ` +
        `memfd...), not a /dev/net/tun fd`,
    );

    const bare = sys.open('/dev/net/tun', sys.C.O_RDWR);
    cleanup.push(() => sys.close(bare));
    // errno 77 is EBADFD; libuv has no name for it, so src/sys prints E77.
    expect(thrown(() => Tap.adopt([bare])).message).to.match(
      new RegExp(
        /^TUNGETIFF \(tap fd \d+\): E(BADFD|77): file descriptor in bad state: /.source +
          /fd \d+ is \/dev\/net\/tun but not attached to an interface/.source,
      ),
    );
    expect(sys.isOpen(bare)).to.equal(true);

    // A tap fd without IFF_VNET_HDR (as a careless manager might open it).
    const plain = sys.open('/dev/net/tun', sys.C.O_RDWR);
    cleanup.push(() => sys.close(plain));
    const ifr = Buffer.alloc(40);
    const pname = tapName('n');
    ifr.write(pname);
    ifr.writeUInt16LE(IFF.TAP | IFF.NO_PI, 16);
    sys.ioctlPtr(plain, TUN.SETIFF, ifr, 'TUNSETIFF');
    expect(thrown(() => Tap.adopt([plain])).message).to.match(
      new RegExp(`^tap fd \\d+: EINVAL: .*${pname} was opened without IFF_VNET_HDR`),
    );
  });

  it('unprivileged: cannot create a tap (EPERM, with advice), but can attach to a persistent tap it owns', function () {
    const nobody = 65534;
    const owned = tapName('w');
    persistent(owned, ['vnet_hdr', 'user', String(nobody)]);
    // In the lab /dev/net/tun is 0600 (devtmpfs default); most distributions make it 0666.
    const mode = statSync('/dev/net/tun').mode & 0o777;
    chmodSync('/dev/net/tun', 0o666);
    cleanup.push(() => chmodSync('/dev/net/tun', mode));
    const mod = fileURLToPath(new URL('../../src/vhost-kernel/index.js', import.meta.url));
    const script = `
      const { Tap } = await import(${JSON.stringify(mod)});
      try { Tap.open('vbnotmine0'); console.log('created?!'); } catch (e) { console.log(e.message); }
      const t = Tap.open(${JSON.stringify(owned)}, { create: false });
      console.log('attached ' + t.name + ' created=' + t.created);
      t.close();`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      uid: nobody,
      gid: nobody,
      encoding: 'utf8',
      cwd: '/',
    });
    expect(r.stderr).to.equal('');
    const [refused, attached] = r.stdout.trim().split('\n');
    expect(refused).to.match(
      new RegExp(
        /^TUNSETIFF vbnotmine0: EPERM: operation not permitted: creating a tap needs CAP_NET_ADMIN: run as root, /
          .source +
          /or create a persistent tap owned by this user /.source +
          /\(ip tuntap add dev vbnotmine0 mode tap vnet_hdr user \$USER\)/.source,
      ),
    );
    expect(attached).to.equal(`attached ${owned} created=false`);
  });
});
