export { AbstractBlockDevice, inFlightCounter } from './abstract-device.js';
export { AccessGate } from './access-gate.js';
export { allocateBuffer, readResultBuffer } from './buffer-pool.js';
export { CheckReportBuilder, checkCheckOptions, isZeroed } from './check-report.js';
export type { InFlightCounter } from './in-flight.js';
export { IntegerKeyTable } from './integer-key-table.js';
export { type BytesLender, bytesLender, LEND_READ, type LentBytes } from './lent-read.js';
export { LockTable, type Release } from './lock-table.js';
export { io } from './lower-io.js';
export { checkOptions, type OptionType } from './options.js';
export {
  type CallbackReader,
  callbackReader,
  callbackReaderOrRead,
  immediateWriter,
  ownedWriter,
  READ_CALLBACK,
  type ReadDone,
  readByCallback,
  readerInto,
  readInto,
  WRITE_NOW,
  WRITE_OWNED,
} from './owned-io.js';
export {
  CLAIM,
  type Claimable,
  claimDevice,
  claimDevices,
  type DeviceClaim,
  type OwnedDevice,
  withClaimed,
} from './ownership.js';
export {
  checkGeometry,
  checkRange,
  isBytes,
  MAX_BLOCK_SIZE,
  MIN_BLOCK_SIZE,
  SECTOR,
} from './range.js';
export {
  checkStackedOver,
  checkStackIdentity,
  describeIdentity,
  LayerKind,
  newLayerId,
  STACK_IDENTITY,
  type StackIdentity,
  stackIdentityOf,
} from './stack-identity.js';
export { forEachConcurrently } from './task-pool.js';
export { type EventMap, type TypedEmitter, TypedEventEmitter } from './typed-emitter.js';
