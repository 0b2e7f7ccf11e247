/**
 * The kernel ABI numbers of src/vhost-kernel/ioctls.ts, built with the _IOC encoders, against the
 * literal values a C program prints from the real headers (linux/vhost.h, linux/if_tun.h,
 * linux/sockios.h). Each can be worked out by hand from include/uapi/asm-generic/ioctl.h:
 * dir << 30 | size << 16 | type << 8 | nr.
 */
import { expect } from 'chai';
import { IFF, NETDEV_IFF, SIOC, TUN, TUN_F, VHOST, VHOST_VRING_F } from '../../src/vhost-kernel/ioctls.js';

describe('vhost-kernel: ioctl numbers', () => {
  const vhost: [keyof typeof VHOST, number][] = [
    ['GET_FEATURES', 0x8008af00],
    ['SET_FEATURES', 0x4008af00],
    ['SET_OWNER', 0xaf01],
    ['RESET_OWNER', 0xaf02],
    ['SET_MEM_TABLE', 0x4008af03],
    ['SET_LOG_BASE', 0x4008af04],
    ['SET_VRING_NUM', 0x4008af10],
    ['SET_VRING_ADDR', 0x4028af11],
    ['SET_VRING_BASE', 0x4008af12],
    ['GET_VRING_BASE', 0xc008af12],
    ['SET_VRING_KICK', 0x4008af20],
    ['SET_VRING_CALL', 0x4008af21],
    ['SET_VRING_ERR', 0x4008af22],
    ['SET_VRING_BUSYLOOP_TIMEOUT', 0x4008af23],
    ['GET_VRING_BUSYLOOP_TIMEOUT', 0x4008af24],
    ['GET_BACKEND_FEATURES', 0x8008af26],
    ['NET_SET_BACKEND', 0x4008af30],
  ];
  for (const [name, value] of vhost) {
    it(`VHOST_${name} = 0x${value.toString(16)}`, () => expect(VHOST[name]).to.equal(value));
  }
  it('covers every VHOST_* request it defines', () =>
    expect(Object.keys(VHOST).sort()).to.deep.equal(vhost.map(([n]) => n).sort()));

  const tun: [keyof typeof TUN, number][] = [
    ['SETIFF', 0x400454ca],
    ['SETPERSIST', 0x400454cb],
    ['GETFEATURES', 0x800454cf],
    ['SETOFFLOAD', 0x400454d0],
    ['GETIFF', 0x800454d2],
    ['GETSNDBUF', 0x800454d3],
    ['SETSNDBUF', 0x400454d4],
    ['GETVNETHDRSZ', 0x800454d7],
    ['SETVNETHDRSZ', 0x400454d8],
    ['SETQUEUE', 0x400454d9],
  ];
  for (const [name, value] of tun) {
    it(`TUN${name} = 0x${value.toString(16)}`, () => expect(TUN[name]).to.equal(value));
  }
  it('covers every TUN* request it defines', () =>
    expect(Object.keys(TUN).sort()).to.deep.equal(tun.map(([n]) => n).sort()));

  it('TUNSETIFF flags and TUN_F offloads are the if_tun.h values', () => {
    expect(IFF).to.deep.equal({
      TUN: 0x1,
      TAP: 0x2,
      TYPE_MASK: 0xf,
      MULTI_QUEUE: 0x100,
      ATTACH_QUEUE: 0x200,
      DETACH_QUEUE: 0x400,
      PERSIST: 0x800,
      NO_PI: 0x1000,
      ONE_QUEUE: 0x2000,
      VNET_HDR: 0x4000,
      TUN_EXCL: 0x8000,
    });
    expect(IFF.TAP | IFF.NO_PI | IFF.VNET_HDR).to.equal(0x5002); // the flags of a tap the bridge creates
    expect(TUN_F).to.deep.equal({ CSUM: 0x1, TSO4: 0x2, TSO6: 0x4, TSO_ECN: 0x8, UFO: 0x10, USO4: 0x20, USO6: 0x40 });
  });

  it('socket interface ioctls are the sockios.h values, and VHOST_VRING_F_LOG is bit 0', () => {
    expect(SIOC).to.deep.equal({ GIFFLAGS: 0x8913, SIFFLAGS: 0x8914, GIFMTU: 0x8921, SIFMTU: 0x8922 });
    expect(NETDEV_IFF.UP).to.equal(1);
    expect(VHOST_VRING_F.LOG).to.equal(0);
  });
});
