/**
 * The vhost-user protocol layer (QEMU docs/interop/vhost-user.rst), as the CLI and the bridge use it:
 * transports that serve one front-end at a time, the back-end interface they call, the errors a
 * back end throws, and the trace writer behind `--record`.
 */
export { VhostUserServer, VhostUserClient, type ServerOptions, type ClientOptions, type TransportOptions } from './transport.js';
export { Connection } from './connection.js';
export { Dispatcher, type Outcome } from './dispatcher.js';
export type { VhostUserBackend } from './handler.js';
export { Malformed, Refused, Disconnected } from './errors.js';
export { TraceWriter, readTrace, type TraceEvent, type TraceHeader } from './trace.js';
export { FrontendReq, BackendReq, PROTOCOL_F, PROTOCOL_FEATURE_NAMES, HEADER_FLAGS, LIMITS, requestName } from './constants.js';
export { REQUESTS } from './requests.js';
export type { LogArea, MemoryRegion, VringAddr, VringFileRef, VringState } from './messages.js';
