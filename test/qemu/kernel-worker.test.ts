/**
 * Lab: the vhost worker on the kernel L2 runs (scripts/lab/run --kernel; docs/kernels.md). Which
 * model SET_OWNER starts (a kthread before 6.4, a thread of the owner from 6.4), and the worker
 * ioctls of include/uapi/linux/vhost.h that a newer kernel may offer on /dev/vhost-net:
 * VHOST_GET/SET_FORK_FROM_OWNER (the 2025 kthread-mode series, CONFIG_VHOST_ENABLE_FORK_OWNER_CONTROL)
 * and VHOST_NEW_WORKER / VHOST_GET_VRING_WORKER (6.5, wired up by vhost-scsi only). The bridge uses
 * none of them; these tests show what a kernel offers and pin each kernel's answer.
 *
 * The raw ioctls go through src/sys, on the fd of the project's own VhostNet.
 */
import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { IOR, IOW, IOWR, ioctlPtr, SysError } from '../../src/sys/index.js';
import { VhostNet } from '../../src/vhost-kernel/index.js';
import { defaultWorkerKind, kernelAtLeast, vhostWorkers, type VhostWorker } from '../../lab/host.js';
import { requireLab } from './lab.js';

const VHOST_VIRTIO = 0xaf;
/** vhost.h: fork_owner values. */
const FORK_OWNER = { KTHREAD: 0, TASK: 1 } as const;
/** vhost.h (6.17, and the stable kernels it went to): __u8 in, before VHOST_SET_OWNER. */
const VHOST_SET_FORK_FROM_OWNER = IOW(VHOST_VIRTIO, 0x84, 1);
/** vhost.h: __u8 out. */
const VHOST_GET_FORK_FROM_OWNER = IOR(VHOST_VIRTIO, 0x85, 1);
/** vhost.h (6.5): struct vhost_worker_state { unsigned int worker_id; } out. */
const VHOST_NEW_WORKER = IOR(VHOST_VIRTIO, 0x08, 4);
/** vhost.h (6.5): struct vhost_vring_worker { unsigned int index; unsigned int worker_id; }. */
const VHOST_GET_VRING_WORKER = IOWR(VHOST_VIRTIO, 0x16, 8);
/** The vhost module's parameter that exists exactly when the kernel has the fork-owner control. */
const FORK_PARAM = '/sys/module/vhost/parameters/fork_from_owner_default';

function errnoOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof SysError) return e.code;
    throw e;
  }
  return 'ok';
}

/** The workers of this process that were not there before (other tests' workers are gone or excluded). */
function newWorkers(before: readonly VhostWorker[]): VhostWorker[] {
  return vhostWorkers(process.pid).filter((w) => !before.some((b) => b.pid === w.pid));
}

describe(`lab: the vhost worker on this kernel (docs/kernels.md)`, function () {
  this.timeout(60000);
  const open: VhostNet[] = [];

  before(function () {
    requireLab(this);
    console.log(
      `      kernel ${release()}; default worker model ${defaultWorkerKind()}; ` +
        `fork_from_owner_default: ${existsSync(FORK_PARAM) ? readFileSync(FORK_PARAM, 'utf8').trim() : 'absent'}`,
    );
  });

  afterEach(() => {
    for (const vn of open.splice(0)) vn.close();
  });

  function openVhost(): VhostNet {
    const vn = VhostNet.open(0);
    open.push(vn);
    return vn;
  }

  it(
    'SET_OWNER starts one worker vhost-<pid>: a kthread before 6.4, a thread of the owner from 6.4; ' + 'close ends it',
    () => {
      const before = vhostWorkers(process.pid);
      const vn = openVhost();
      expect(newWorkers(before), 'no worker before SET_OWNER').to.deep.equal([]);
      vn.setOwner();
      const ws = newWorkers(before);
      console.log(`      worker: ${ws.map((w) => `${w.comm} pid ${w.pid} (${w.kind})`).join(', ')}`);
      expect(ws.map((w) => w.comm)).to.deep.equal([`vhost-${process.pid}`]);
      if (kernelAtLeast(6, 4)) {
        expect(ws[0].kind, 'a thread of the owner (its CPU, cgroup and /proc/PID/task)').to.equal('thread');
      } else {
        expect(ws[0].kind, 'a kernel thread of its own').to.equal('kthread');
      }
      open.splice(open.indexOf(vn), 1);
      vn.close();
      expect(newWorkers(before), 'the worker is gone once the fd is closed').to.deep.equal([]);
    },
  );

  it(
    'VHOST_GET/SET_FORK_FROM_OWNER: offered exactly when the vhost module has fork_from_owner_default; ' +
      'kthread mode set before SET_OWNER gives a kthread worker',
    () => {
      const control = existsSync(FORK_PARAM);
      const vn = openVhost();
      const out = Buffer.alloc(1, 0xff);
      const get = errnoOf(() => ioctlPtr(vn.fd, VHOST_GET_FORK_FROM_OWNER, out, 'VHOST_GET_FORK_FROM_OWNER'));
      console.log(`      VHOST_GET_FORK_FROM_OWNER: ${get}${get === 'ok' ? ` (${out[0]})` : ''}`);
      if (!kernelAtLeast(6, 4)) expect(control, 'a kthread-only kernel has nothing to choose').to.equal(false);
      if (!control) {
        // vhost.c vhost_dev_ioctl checks the owner before it looks at a request it does not know:
        // EPERM without an owner. With one, the request falls through to vhost_vring_ioctl, which
        // reads a ring index from the argument first (ENOBUFS if it is >= 2: the 6.1 lab saw that
        // with a 1-byte argument), then ENOTTY. A zeroed 4-byte argument makes the answer ENOTTY.
        expect(get).to.equal('EPERM');
        vn.setOwner();
        const owned = errnoOf(() =>
          ioctlPtr(vn.fd, VHOST_GET_FORK_FROM_OWNER, Buffer.alloc(4), 'VHOST_GET_FORK_FROM_OWNER'),
        );
        const set = errnoOf(() =>
          ioctlPtr(vn.fd, VHOST_SET_FORK_FROM_OWNER, Buffer.alloc(4, FORK_OWNER.KTHREAD), 'VHOST_SET_FORK_FROM_OWNER'),
        );
        console.log(`      after SET_OWNER: GET ${owned}, SET ${set}`);
        expect([owned, set]).to.deep.equal(['ENOTTY', 'ENOTTY']);
        return;
      }
      const dflt = readFileSync(FORK_PARAM, 'utf8').trim() === 'Y' ? FORK_OWNER.TASK : FORK_OWNER.KTHREAD;
      expect(get).to.equal('ok');
      expect(out[0], 'the mode of a new fd is the module default').to.equal(dflt);
      // Choose the kthread model for this fd, then SET_OWNER: its worker is a kthread again.
      const before = vhostWorkers(process.pid);
      ioctlPtr(vn.fd, VHOST_SET_FORK_FROM_OWNER, Buffer.from([FORK_OWNER.KTHREAD]), 'VHOST_SET_FORK_FROM_OWNER');
      ioctlPtr(vn.fd, VHOST_GET_FORK_FROM_OWNER, out, 'VHOST_GET_FORK_FROM_OWNER');
      expect(out[0]).to.equal(FORK_OWNER.KTHREAD);
      vn.setOwner();
      const ws = newWorkers(before);
      const seen = ws.map((w) => `${w.comm} (${w.kind})`).join(', ');
      console.log(`      after SET_FORK_FROM_OWNER(KTHREAD) + SET_OWNER: ${seen}`);
      expect(ws.map((w) => [w.comm, w.kind])).to.deep.equal([[`vhost-${process.pid}`, 'kthread']]);
      // The mode is fixed once the device has an owner.
      const late = errnoOf(() =>
        ioctlPtr(vn.fd, VHOST_SET_FORK_FROM_OWNER, Buffer.from([FORK_OWNER.TASK]), 'VHOST_SET_FORK_FROM_OWNER'),
      );
      console.log(`      VHOST_SET_FORK_FROM_OWNER after SET_OWNER: ${late}`);
      expect(late).to.not.equal('ok');
    },
  );

  it('VHOST_NEW_WORKER and VHOST_GET_VRING_WORKER: ENOTTY on /dev/vhost-net (only vhost-scsi wires them up)', () => {
    const vn = openVhost();
    vn.setOwner();
    const state = Buffer.alloc(4);
    const ring = Buffer.alloc(8);
    const created = errnoOf(() => ioctlPtr(vn.fd, VHOST_NEW_WORKER, state, 'VHOST_NEW_WORKER'));
    const got = errnoOf(() => ioctlPtr(vn.fd, VHOST_GET_VRING_WORKER, ring, 'VHOST_GET_VRING_WORKER'));
    console.log(`      VHOST_NEW_WORKER: ${created}; VHOST_GET_VRING_WORKER: ${got}`);
    expect([created, got]).to.deep.equal(['ENOTTY', 'ENOTTY']);
  });
});
