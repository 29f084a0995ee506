export { type ConnectionTarget, NbdClientConnection } from './nbd-client-connection.js';
export { NbdServerError } from './nbd-client-errors.js';
export type { HandshakeTls, NegotiatedExport } from './nbd-client-handshake.js';
export { type NbdAddress, parseNbdUrl } from './nbd-client-url.js';
export * from './protocol.js';
