/**
 * Layout tests for every kernel struct the vhost-kernel layer encodes (as rust-vmm's
 * vhost_binding.rs has one per struct): the offsets written in structs.ts against the layout C
 * gives the same declaration (koffi's C alignment rules), and golden bytes for the encoders.
 */
import { expect } from 'chai';
import {
  checkIfName,
  IFREQ,
  ifreq,
  ifreqFlags,
  ifreqMtu,
  ifreqName,
  int32,
  u64,
  VHOST_VRING_ADDR,
  VHOST_VRING_FILE,
  VHOST_VRING_STATE,
  vringAddr,
  vringFile,
  vringState,
} from '../../src/vhost-kernel/structs.js';
import { kernelLayouts } from '../c-layouts.js';

describe('vhost-kernel: struct layouts', () => {
  it('struct vhost_vring_state: 8 bytes, index 0, num 4', () => {
    const c = kernelLayouts.vringState();
    expect(c.size).to.equal(VHOST_VRING_STATE.size).and.equal(8);
    expect(c.offsets).to.deep.equal({ index: VHOST_VRING_STATE.index, num: VHOST_VRING_STATE.num });
  });

  it('struct vhost_vring_file: 8 bytes, index 0, fd 4', () => {
    const c = kernelLayouts.vringFile();
    expect(c.size).to.equal(VHOST_VRING_FILE.size).and.equal(8);
    expect(c.offsets).to.deep.equal({ index: VHOST_VRING_FILE.index, fd: VHOST_VRING_FILE.fd });
  });

  it('struct vhost_vring_addr: 40 bytes, desc 8, used 16, avail 24, log 32', () => {
    const c = kernelLayouts.vringAddr();
    expect(c.size).to.equal(VHOST_VRING_ADDR.size).and.equal(40);
    expect(c.offsets).to.deep.equal({
      index: VHOST_VRING_ADDR.index,
      flags: VHOST_VRING_ADDR.flags,
      desc: VHOST_VRING_ADDR.desc,
      used: VHOST_VRING_ADDR.used,
      avail: VHOST_VRING_ADDR.avail,
      log: VHOST_VRING_ADDR.log,
    });
  });

  it('struct ifreq: 40 bytes, the union (flags, mtu) at 16', () => {
    const c = kernelLayouts.ifreq();
    expect(c.size).to.equal(IFREQ.size).and.equal(40);
    expect(c.offsets.name).to.equal(IFREQ.name);
    expect(c.offsets.mem_start).to.equal(IFREQ.flags).and.equal(IFREQ.mtu).and.equal(IFREQ.nameSize);
  });
});

describe('vhost-kernel: struct encoders', () => {
  it('vringState, vringFile (fd -1 is 0xffffffff), u64, int32', () => {
    expect(vringState(1, 256).toString('hex')).to.equal('01000000' + '00010000');
    expect(vringFile(0, -1).toString('hex')).to.equal('00000000' + 'ffffffff');
    expect(vringFile(1, 7).toString('hex')).to.equal('01000000' + '07000000');
    expect(u64(0x33d008000n).toString('hex')).to.equal('0080003d03000000');
    expect(int32(12).toString('hex')).to.equal('0c000000');
  });

  it('vringAddr puts used before avail, as struct vhost_vring_addr does', () => {
    const b = vringAddr(1, { flags: 1, desc: 0x1000n, used: 0x3000n, avail: 0x2000n, log: 0x7f00003000n });
    expect(b.length).to.equal(40);
    expect(b.readUInt32LE(0)).to.equal(1);
    expect(b.readUInt32LE(4)).to.equal(1);
    expect(b.readBigUInt64LE(8)).to.equal(0x1000n);
    expect(b.readBigUInt64LE(16)).to.equal(0x3000n);
    expect(b.readBigUInt64LE(24)).to.equal(0x2000n);
    expect(b.readBigUInt64LE(32)).to.equal(0x7f00003000n);
  });

  it('ifreq: NUL-terminated name, flags as an unsigned short, mtu as an int; read back', () => {
    const b = ifreq('tap0', { flags: 0x5102 });
    expect(b.length).to.equal(40);
    expect(b.subarray(0, 5).toString('hex')).to.equal('7461703000');
    expect(ifreqName(b)).to.equal('tap0');
    expect(ifreqFlags(b)).to.equal(0x5102);
    expect(ifreqFlags(ifreq('x', { flags: 0x8000 }))).to.equal(0x8000);
    expect(ifreqMtu(ifreq('x', { mtu: 9000 }))).to.equal(9000);
    expect(ifreqName(ifreq('fifteen-bytes-x'))).to.equal('fifteen-bytes-x');
    expect(ifreq('fifteen-bytes-x')[15]).to.equal(0);
  });

  it('checkIfName: 1 to 15 bytes, no slash, colon or space; %d allowed', () => {
    expect(checkIfName('tap0')).to.equal(null);
    expect(checkIfName('vb%d')).to.equal(null);
    expect(checkIfName('fifteen-bytes-x')).to.equal(null);
    expect(checkIfName('')).to.equal('the name is empty');
    expect(checkIfName('sixteen-bytes-xx')).to.equal('"sixteen-bytes-xx" is 16 bytes; interface names have at most 15');
    for (const bad of ['a/b', 'a b', 'a:b', '.', '..'])
      expect(checkIfName(bad)).to.match(/is not a valid interface name/);
  });
});
