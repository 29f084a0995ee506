export { CrcBatch, CrcWorkers } from './crc-workers.js';
export { checksum } from './crc32.js';
export { crc32Combine } from './crc32-combine.js';
export { FLETCHER4_BYTES, fletcher4 } from './fletcher4.js';
