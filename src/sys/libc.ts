/**
 * The raw libc bindings: the one place where koffi loads libc and declares prototypes.
 *
 * Nothing outside src/sys imports this file. Callers use the typed wrappers in fd.ts, mman.ts,
 * ioctl.ts, socket.ts and poll.ts, which turn `-1` into a {@link SysError} naming the call.
 *
 * Targets Linux LP64 (x86-64 and aarch64): `long`, `size_t` and pointers are 64 bits, which the
 * fixed-arity ioctl/fcntl aliases below rely on (variadic int/pointer arguments travel in the same
 * registers as fixed ones there).
 */
import koffi from 'koffi';

const lib = koffi.load('libc.so.6');

// koffi has no ssize_t/off_t/socklen_t; type names are process-global, so they are declared once here.
koffi.alias('ssize_t', 'intptr_t');
koffi.alias('off_t', 'int64_t');
koffi.alias('socklen_t', 'uint32_t');
koffi.alias('mode_t', 'uint32_t');

/** A pointer-typed argument: a Buffer/TypedArray (its own bytes are passed), a raw address, or NULL. */
export type Ptr = Buffer | ArrayBufferView | bigint | null;

type Fn<A extends unknown[], R> = (...args: A) => R;
const fn = <A extends unknown[], R>(decl: string): Fn<A, R> => lib.func(decl) as unknown as Fn<A, R>;
const fixed = <A extends unknown[], R>(name: string, ret: string, args: string[]): Fn<A, R> =>
  lib.func(name, ret, args) as unknown as Fn<A, R>;

/** Typed prototypes. Every function returns -1 (or MAP_FAILED) and sets errno on failure. */
export const raw = {
  open: fn<[path: string, flags: number, mode: number], number>('int open(const char *path, int flags, mode_t mode)'),
  close: fn<[fd: number], number>('int close(int fd)'),
  read: fn<[fd: number, buf: Ptr, n: number], number>('ssize_t read(int fd, void *buf, size_t n)'),
  write: fn<[fd: number, buf: Ptr, n: number], number>('ssize_t write(int fd, const void *buf, size_t n)'),
  fcntl: fixed<[fd: number, cmd: number, arg: number], number>('fcntl', 'int', ['int', 'int', 'long']),
  eventfd: fn<[initval: number, flags: number], number>('int eventfd(unsigned int initval, int flags)'),
  memfd_create: fn<[name: string, flags: number], number>('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: fn<[fd: number, len: bigint | number], number>('int ftruncate(int fd, off_t len)'),
  fstat: fn<[fd: number, st: Ptr], number>('int fstat(int fd, void *st)'),
  unlink: fn<[path: string], number>('int unlink(const char *path)'),
  chmod: fn<[path: string, mode: number], number>('int chmod(const char *path, mode_t mode)'),
  chown: fn<[path: string, uid: number, gid: number], number>('int chown(const char *path, int uid, int gid)'),
  pipe2: fn<[fds: Int32Array, flags: number], number>('int pipe2(_Out_ int *fds, int flags)'),
  mmap: fn<
    [addr: Ptr, len: bigint | number, prot: number, flags: number, fd: number, off: bigint | number],
    bigint | null
  >('void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)'),
  munmap: fn<[addr: bigint, len: bigint | number], number>('int munmap(void *addr, size_t len)'),
  ioctlPtr: fixed<[fd: number, req: number, arg: Ptr], number>('ioctl', 'int', ['int', 'unsigned long', 'void *']),
  ioctlInt: fixed<[fd: number, req: number, arg: number | bigint], number>('ioctl', 'int', [
    'int',
    'unsigned long',
    'unsigned long',
  ]),
  socket: fn<[domain: number, type: number, protocol: number], number>(
    'int socket(int domain, int type, int protocol)',
  ),
  socketpair: fn<[domain: number, type: number, protocol: number, sv: Int32Array], number>(
    'int socketpair(int domain, int type, int protocol, _Out_ int *sv)',
  ),
  bind: fn<[fd: number, addr: Ptr, len: number], number>('int bind(int fd, const void *addr, socklen_t len)'),
  connect: fn<[fd: number, addr: Ptr, len: number], number>('int connect(int fd, const void *addr, socklen_t len)'),
  listen: fn<[fd: number, backlog: number], number>('int listen(int fd, int backlog)'),
  accept4: fn<[fd: number, addr: Ptr, addrlen: Ptr, flags: number], number>(
    'int accept4(int fd, void *addr, void *addrlen, int flags)',
  ),
  recvmsg: fn<[fd: number, msg: Ptr, flags: number], number>('ssize_t recvmsg(int fd, void *msg, int flags)'),
  sendmsg: fn<[fd: number, msg: Ptr, flags: number], number>('ssize_t sendmsg(int fd, const void *msg, int flags)'),
  recv: fn<[fd: number, buf: Ptr, n: number, flags: number], number>(
    'ssize_t recv(int fd, void *buf, size_t n, int flags)',
  ),
  send: fn<[fd: number, buf: Ptr, n: number, flags: number], number>(
    'ssize_t send(int fd, const void *buf, size_t n, int flags)',
  ),
  setsockopt: fn<[fd: number, level: number, name: number, val: Ptr, len: number], number>(
    'int setsockopt(int fd, int level, int name, const void *val, socklen_t len)',
  ),
  getsockopt: fn<[fd: number, level: number, name: number, val: Ptr, len: Uint32Array], number>(
    'int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ socklen_t *len)',
  ),
  setuid: fn<[uid: number], number>('int setuid(uint32_t uid)'),
  setgid: fn<[gid: number], number>('int setgid(uint32_t gid)'),
  setgroups: fn<[n: number, list: Uint32Array], number>('int setgroups(size_t n, const uint32_t *list)'),
  if_nametoindex: fn<[name: string], number>('unsigned int if_nametoindex(const char *name)'),
  strerror: fn<[errnum: number], string>('const char *strerror(int errnum)'),
};

/** errno of the calling thread; read it right after the failing call (koffi returns the live value). */
export const errno = (): number => koffi.errno();

/** The address of a Buffer's bytes (for structs such as msghdr that hold pointers). */
export const addressOf = (buf: Buffer): bigint => koffi.address(buf);

/** An ArrayBuffer over raw memory (no copy). Touching it after munmap is a SIGSEGV. At most 4 GiB. */
export const viewOf = (addr: bigint, len: number): ArrayBuffer => koffi.view(addr, len);

/** Layout of C structs as libc/kernel see them, computed by koffi's C alignment rules (for layout tests). */
export function cLayout(def: Record<string, string>): { size: number; offsets: Record<string, number> } {
  const t = koffi.struct(def);
  const offsets: Record<string, number> = {};
  for (const k of Object.keys(def)) offsets[k] = koffi.offsetof(t, k);
  return { size: koffi.sizeof(t), offsets };
}

/** Linux constants used by the wrappers (x86-64 / aarch64 generic values). */
export const C = {
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  F_GETFD: 1,
  F_SETFD: 2,
  F_GETFL: 3,
  F_SETFL: 4,
  FD_CLOEXEC: 1,
  F_DUPFD_CLOEXEC: 1030,
  EFD_SEMAPHORE: 1,
  EFD_NONBLOCK: 0o4000,
  EFD_CLOEXEC: 0o2000000,
  MFD_CLOEXEC: 1,
  MFD_ALLOW_SEALING: 2,
  PROT_NONE: 0,
  PROT_READ: 1,
  PROT_WRITE: 2,
  MAP_SHARED: 1,
  MAP_PRIVATE: 2,
  MAP_ANONYMOUS: 0x20,
  AF_UNIX: 1,
  AF_PACKET: 17,
  SOCK_STREAM: 1,
  SOCK_DGRAM: 2,
  SOCK_RAW: 3,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SCM_RIGHTS: 1,
  SO_SNDBUF: 7,
  SO_RCVBUF: 8,
  SO_PEERCRED: 17,
  SO_ACCEPTCONN: 30,
  MSG_CTRUNC: 0x8,
  MSG_TRUNC: 0x20,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  MSG_CMSG_CLOEXEC: 0x40000000,
  S_IFMT: 0o170000,
  S_IFREG: 0o100000,
  S_IFSOCK: 0o140000,
  S_IFCHR: 0o20000,
  S_IFIFO: 0o10000,
} as const;
