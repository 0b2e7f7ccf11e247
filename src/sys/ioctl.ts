/**
 * ioctl(2) in its two argument forms, and the _IOC number encoding of <asm-generic/ioctl.h>.
 * Each failure names the request (for example `VHOST_SET_VRING_NUM (ring 1): EBUSY: device or resource busy`).
 */
import { raw, type Ptr } from './libc.js';
import { check } from './errors.js';

/** ioctl with a pointer argument (a struct in a Buffer, an out-parameter, or NULL). */
export function ioctlPtr(fd: number, request: number, arg: Ptr, name: string): number {
  return check(raw.ioctlPtr(fd, request, arg), name);
}

/** ioctl with an integer argument passed by value (TUNSETOFFLOAD, TUNSETPERSIST, VHOST_SET_OWNER's 0). */
export function ioctlInt(fd: number, request: number, arg: number | bigint, name: string): number {
  return check(raw.ioctlInt(fd, request, arg), name);
}

const IOC_NONE = 0,
  IOC_WRITE = 1,
  IOC_READ = 2;
const ioc = (dir: number, type: number, nr: number, size: number): number =>
  ((dir << 30) >>> 0) + (size << 16) + (type << 8) + nr;

/** _IO(type, nr): no argument. */
export const IO = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);
/** _IOR(type, nr, size): the kernel writes `size` bytes. */
export const IOR = (type: number, nr: number, size: number): number => ioc(IOC_READ, type, nr, size);
/** _IOW(type, nr, size): the kernel reads `size` bytes. */
export const IOW = (type: number, nr: number, size: number): number => ioc(IOC_WRITE, type, nr, size);
/** _IOWR(type, nr, size): both. */
export const IOWR = (type: number, nr: number, size: number): number => ioc(IOC_READ | IOC_WRITE, type, nr, size);
