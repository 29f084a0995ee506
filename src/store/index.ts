export { type FoundFormat, probeFormat, refuseReformat } from './format-probe.js';
export { ScanReader, type ScanReaderOptions, type SharedWindow } from './scan-reader.js';
export {
  alignUp,
  decodeSuperblock,
  encodeSuperblock,
  logOffset,
  MAX_PARAMS,
  readSuperblock,
  SUPERBLOCK_BYTES,
  SUPERBLOCK_SLOT,
  type Superblock,
  tableOffset,
} from './superblock.js';
export { checkSuperblocks } from './superblock-check.js';
export { SuperblockSlots } from './superblock-slots.js';
export { WindowReader } from './window-reader.js';
