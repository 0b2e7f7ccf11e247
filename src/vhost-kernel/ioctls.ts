/**
 * Kernel ABI numbers of the vhost-net back end: the VHOST_* ioctls of /dev/vhost-net
 * (linux include/uapi/linux/vhost.h, vhost_types.h), the TUN* ioctls and flags of /dev/net/tun
 * (include/uapi/linux/if_tun.h) and the interface ioctls of a socket (include/uapi/linux/sockios.h,
 * include/uapi/linux/if.h).
 *
 * Request numbers are built with the _IOC encoders the headers use, from the size of the argument
 * the header names (a pointer's target, not the pointer). test/vhost-kernel/ioctls.test.ts checks
 * each against the literal value a C program including those headers prints.
 */
import { IO, IOR, IOW, IOWR } from '../sys/index.js';
import { VHOST_VRING_ADDR, VHOST_VRING_FILE, VHOST_VRING_STATE } from './structs.js';

/** `#define VHOST_VIRTIO 0xAF`: the ioctl type of every vhost device. */
const VHOST_VIRTIO = 0xaf;
const U64 = 8;
const INT = 4;

/** /dev/vhost-net requests. The struct named in the header is in the comment. */
export const VHOST = {
  /** __u64 out: the ring/device features vhost-net implements (VHOST_NET_FEATURES). */
  GET_FEATURES: IOR(VHOST_VIRTIO, 0x00, U64),
  /** __u64 in: EOPNOTSUPP for any bit GET_FEATURES did not offer. */
  SET_FEATURES: IOW(VHOST_VIRTIO, 0x00, U64),
  /** No argument: this process becomes the owner; its mm is the one ring addresses refer to. */
  SET_OWNER: IO(VHOST_VIRTIO, 0x01),
  /** No argument: detach, forget memory and rings; SET_OWNER may follow. */
  RESET_OWNER: IO(VHOST_VIRTIO, 0x02),
  /** struct vhost_memory (8-byte header; the kernel then reads nregions * 32 more bytes). */
  SET_MEM_TABLE: IOW(VHOST_VIRTIO, 0x03, 8),
  /** __u64 in: the address, in this process, of the dirty bitmap. */
  SET_LOG_BASE: IOW(VHOST_VIRTIO, 0x04, U64),
  /** struct vhost_vring_state {index, num}: ring size; EBUSY while a backend is attached. */
  SET_VRING_NUM: IOW(VHOST_VIRTIO, 0x10, VHOST_VRING_STATE.size),
  /** struct vhost_vring_addr. */
  SET_VRING_ADDR: IOW(VHOST_VIRTIO, 0x11, VHOST_VRING_ADDR.size),
  /** struct vhost_vring_state {index, num = next avail index}. */
  SET_VRING_BASE: IOW(VHOST_VIRTIO, 0x12, VHOST_VRING_STATE.size),
  /** struct vhost_vring_state: reads index, writes the last avail index into num. */
  GET_VRING_BASE: IOWR(VHOST_VIRTIO, 0x12, VHOST_VRING_STATE.size),
  /** struct vhost_vring_file {index, fd}: the eventfd the kernel polls for guest kicks. */
  SET_VRING_KICK: IOW(VHOST_VIRTIO, 0x20, VHOST_VRING_FILE.size),
  /** struct vhost_vring_file: the eventfd the kernel signals on used-ring updates. */
  SET_VRING_CALL: IOW(VHOST_VIRTIO, 0x21, VHOST_VRING_FILE.size),
  /** struct vhost_vring_file: the eventfd the kernel signals on a ring error (vq_err). */
  SET_VRING_ERR: IOW(VHOST_VIRTIO, 0x22, VHOST_VRING_FILE.size),
  /** struct vhost_vring_state {index, num = microseconds}: busy-poll the ring this long. */
  SET_VRING_BUSYLOOP_TIMEOUT: IOW(VHOST_VIRTIO, 0x23, VHOST_VRING_STATE.size),
  /** Declared _IOW in vhost.h although the kernel writes num back. */
  GET_VRING_BUSYLOOP_TIMEOUT: IOW(VHOST_VIRTIO, 0x24, VHOST_VRING_STATE.size),
  /** __u64 out. */
  GET_BACKEND_FEATURES: IOR(VHOST_VIRTIO, 0x26, U64),
  /** struct vhost_vring_file {index, fd = tap/packet socket fd, or -1 to detach}. */
  NET_SET_BACKEND: IOW(VHOST_VIRTIO, 0x30, VHOST_VRING_FILE.size),
} as const;

/** Flag bit NUMBERS of struct vhost_vring_addr.flags. */
export const VHOST_VRING_F = {
  /** log_guest_addr is valid: log writes to this ring's used structure (dirty log). */
  LOG: 0,
} as const;

/** `#define TUNSETIFF _IOW('T', 202, int)`: all TUN ioctls have type 'T'. */
const T = 0x54;

/**
 * /dev/net/tun requests. The header declares most of them with `int` whatever they really take:
 * TUNSETIFF/TUNGETIFF/TUNSETQUEUE take a struct ifreq pointer, TUNSETVNETHDRSZ and TUNSETSNDBUF an
 * `int *`, TUNSETOFFLOAD and TUNSETPERSIST the value itself (drivers/net/tun.c __tun_chr_ioctl).
 */
export const TUN = {
  /** struct ifreq *: name + IFF_* flags; creates the device or attaches this fd to it. */
  SETIFF: IOW(T, 202, INT),
  /** value: 1 persistent, 0 not. */
  SETPERSIST: IOW(T, 203, INT),
  /** unsigned int * out: the IFF_* flags this kernel supports. */
  GETFEATURES: IOR(T, 207, INT),
  /** value: TUN_F_* offloads the reader (here: vhost-net's RX path) accepts. */
  SETOFFLOAD: IOW(T, 208, INT),
  /** struct ifreq * out: name and IFF_* flags of the attached device. */
  GETIFF: IOR(T, 210, INT),
  /** int * out. */
  GETSNDBUF: IOR(T, 211, INT),
  /** int * in. */
  SETSNDBUF: IOW(T, 212, INT),
  /** int * out. */
  GETVNETHDRSZ: IOR(T, 215, INT),
  /** int * in: 10, 12 or 20 (virtio_net_hdr, _mrg_rxbuf, _hash). */
  SETVNETHDRSZ: IOW(T, 216, INT),
  /** struct ifreq * with IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE. */
  SETQUEUE: IOW(T, 217, INT),
} as const;

/** TUNSETIFF flags (ifr_flags, a short). */
export const IFF = {
  TUN: 0x0001,
  TAP: 0x0002,
  /** Mask of the device type bits (TUN_TYPE_MASK). */
  TYPE_MASK: 0x000f,
  MULTI_QUEUE: 0x0100,
  ATTACH_QUEUE: 0x0200,
  DETACH_QUEUE: 0x0400,
  /** Read-only: reported by TUNGETIFF for a persistent device. */
  PERSIST: 0x0800,
  NO_PI: 0x1000,
  ONE_QUEUE: 0x2000,
  VNET_HDR: 0x4000,
  TUN_EXCL: 0x8000,
} as const;

/** TUNSETOFFLOAD bits (masks, as the ioctl takes them). USO4/USO6 exist from Linux 6.2. */
export const TUN_F = {
  CSUM: 0x01,
  TSO4: 0x02,
  TSO6: 0x04,
  TSO_ECN: 0x08,
  UFO: 0x10,
  USO4: 0x20,
  USO6: 0x40,
} as const;

/** Interface ioctls on any socket (include/uapi/linux/sockios.h): plain numbers, not _IOC-encoded. */
export const SIOC = {
  GIFFLAGS: 0x8913,
  SIFFLAGS: 0x8914,
  GIFMTU: 0x8921,
  SIFMTU: 0x8922,
} as const;

/** Interface flags of SIOCGIFFLAGS (include/uapi/linux/if.h). */
export const NETDEV_IFF = {
  UP: 0x1,
  RUNNING: 0x40,
} as const;
