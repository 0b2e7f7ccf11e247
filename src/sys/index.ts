/**
 * The system layer: every libc call the bridge makes, typed, each failure a SysError naming the call.
 * This directory is the only place that uses koffi.
 */
export { E, SysError, errnoName } from './errors.js';
export { C, cLayout } from './libc.js';
export * from './fd.js';
export * from './mman.js';
export * from './ioctl.js';
export * from './socket.js';
export * from './poll.js';
export * from './cred.js';
