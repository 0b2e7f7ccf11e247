/**
 * The kernel structs the vhost-net back end passes by pointer, as byte layouts plus encoders
 * (linux include/uapi/linux/vhost_types.h; include/uapi/linux/if.h for struct ifreq).
 *
 * Offsets are written out, and test/vhost-kernel/structs.test.ts checks each against the layout
 * C gives the same declaration (koffi's C alignment rules, test/c-layouts.ts), the way rust-vmm's
 * vhost_binding.rs has a layout test per struct. Each layout is named after its C struct
 * (VHOST_VRING_FILE is struct vhost_vring_file). struct vhost_memory is src/memtable's.
 */
/** struct vhost_vring_state { unsigned int index; unsigned int num; }. */
export const VHOST_VRING_STATE = { size: 8, index: 0, num: 4 } as const;

/** struct vhost_vring_file { unsigned int index; int fd; }: fd -1 unbinds. */
export const VHOST_VRING_FILE = { size: 8, index: 0, fd: 4 } as const;

/**
 * struct vhost_vring_addr { u32 index; u32 flags; u64 desc_user_addr; u64 used_user_addr;
 * u64 avail_user_addr; u64 log_guest_addr; }. Note the order: used before avail.
 */
export const VHOST_VRING_ADDR = { size: 40, index: 0, flags: 4, desc: 8, used: 16, avail: 24, log: 32 } as const;

/**
 * struct ifreq: `char ifr_name[IFNAMSIZ]` then a union whose largest member, struct ifmap, makes
 * it 24 bytes (40 in all). ifr_flags (short), ifr_mtu (int) and ifr_ifindex all sit at 16.
 */
export const IFREQ = { size: 40, name: 0, nameSize: 16, flags: 16, mtu: 16 } as const;

/**
 * The ring addresses the KERNEL gets: desc/avail/used are addresses in this process (the bridge's
 * mapping of guest memory, translated by src/memtable); log is the guest-PHYSICAL address of the
 * used ring, which the kernel uses to find the bitmap bit (vhost.h: "Log writes to used structure,
 * at offset calculated from specified address").
 */
export interface KernelVringAddr {
  /** Bit numbers of VHOST_VRING_F (only LOG = 0 exists). */
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

/** struct vhost_vring_state. */
export function vringState(index: number, num: number): Buffer {
  const b = Buffer.alloc(VHOST_VRING_STATE.size);
  b.writeUInt32LE(index, VHOST_VRING_STATE.index);
  b.writeUInt32LE(num, VHOST_VRING_STATE.num);
  return b;
}

/** struct vhost_vring_file; `fd` -1 unbinds. */
export function vringFile(index: number, fd: number): Buffer {
  const b = Buffer.alloc(VHOST_VRING_FILE.size);
  b.writeUInt32LE(index, VHOST_VRING_FILE.index);
  b.writeInt32LE(fd, VHOST_VRING_FILE.fd);
  return b;
}

/** struct vhost_vring_addr. */
export function vringAddr(index: number, a: KernelVringAddr): Buffer {
  const b = Buffer.alloc(VHOST_VRING_ADDR.size);
  b.writeUInt32LE(index, VHOST_VRING_ADDR.index);
  b.writeUInt32LE(a.flags, VHOST_VRING_ADDR.flags);
  b.writeBigUInt64LE(a.desc, VHOST_VRING_ADDR.desc);
  b.writeBigUInt64LE(a.used, VHOST_VRING_ADDR.used);
  b.writeBigUInt64LE(a.avail, VHOST_VRING_ADDR.avail);
  b.writeBigUInt64LE(a.log, VHOST_VRING_ADDR.log);
  return b;
}

/** A __u64 argument (features, log base). */
export function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

/** An `int` argument passed by pointer (TUNSETVNETHDRSZ, TUNSETSNDBUF). */
export function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return b;
}

/**
 * struct ifreq with `name` (at most 15 bytes, NUL-terminated) and, optionally, the short flags or
 * the int MTU of the union. The name is checked by the caller ({@link checkIfName}).
 */
export function ifreq(name: string, u: { flags?: number; mtu?: number } = {}): Buffer {
  const b = Buffer.alloc(IFREQ.size);
  b.write(name, IFREQ.name, IFREQ.nameSize - 1, 'utf8');
  if (u.flags !== undefined) b.writeUInt16LE(u.flags & 0xffff, IFREQ.flags);
  if (u.mtu !== undefined) b.writeInt32LE(u.mtu, IFREQ.mtu);
  return b;
}

/** The interface name in an ifreq (up to the first NUL). */
export function ifreqName(b: Buffer): string {
  const end = b.indexOf(0, IFREQ.name);
  return b.toString('utf8', IFREQ.name, end < 0 || end > IFREQ.nameSize ? IFREQ.nameSize : end);
}

/** ifr_flags of an ifreq, as an unsigned 16-bit value (IFF_TUN_EXCL is 0x8000). */
export const ifreqFlags = (b: Buffer): number => b.readUInt16LE(IFREQ.flags);

/** ifr_mtu of an ifreq. */
export const ifreqMtu = (b: Buffer): number => b.readInt32LE(IFREQ.mtu);

/**
 * Why `name` cannot be an interface name, or null if it can: 1 to 15 bytes (IFNAMSIZ - 1), no '/',
 * no whitespace, not "." or ".." (the kernel's dev_valid_name). `%d` is allowed: TUNSETIFF replaces
 * it with the first free number.
 */
export function checkIfName(name: string): string | null {
  const n = Buffer.byteLength(name);
  if (n === 0) return 'the name is empty';
  if (n > IFREQ.nameSize - 1) return `"${name}" is ${n} bytes; interface names have at most ${IFREQ.nameSize - 1}`;
  if (name === '.' || name === '..' || /[/:\s]/.test(name))
    return `"${name}" is not a valid interface name (no '/', ':' or spaces)`;
  return null;
}
