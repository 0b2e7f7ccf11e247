/**
 * The structs src/sys and src/vhost-kernel write by hand, declared as C declares them and laid out
 * by koffi's C rules (src/sys cLayout), for the layout tests to hold the hand-written offsets
 * against (test/sys/sys.test.ts, test/vhost-kernel/structs.test.ts).
 */
import { cLayout } from '../src/sys/index.js';

/** struct msghdr, struct cmsghdr and struct iovec (sys/socket.h, LP64). */
export const socketLayouts = {
  msghdr: () =>
    cLayout({
      name: 'void *',
      namelen: 'uint32_t',
      iov: 'void *',
      iovlen: 'size_t',
      control: 'void *',
      controllen: 'size_t',
      flags: 'int',
    }),
  cmsghdr: () => cLayout({ len: 'size_t', level: 'int', type: 'int' }),
  iovec: () => cLayout({ base: 'void *', len: 'size_t' }),
};

/** The vhost and interface structs (linux/vhost_types.h, linux/if.h). */
export const kernelLayouts = {
  vringState: () => cLayout({ index: 'unsigned int', num: 'unsigned int' }),
  vringFile: () => cLayout({ index: 'unsigned int', fd: 'int' }),
  vringAddr: () =>
    cLayout({
      index: 'unsigned int',
      flags: 'unsigned int',
      desc: 'uint64_t',
      used: 'uint64_t',
      avail: 'uint64_t',
      log: 'uint64_t',
    }),
  /** struct ifreq with its largest union member, struct ifmap, in place of the union. */
  ifreq: () =>
    cLayout({
      name: 'char[16]',
      mem_start: 'unsigned long',
      mem_end: 'unsigned long',
      base_addr: 'unsigned short',
      irq: 'unsigned char',
      dma: 'unsigned char',
      port: 'unsigned char',
    }),
};
