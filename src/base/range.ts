import { BlockDeviceError } from '../errors.js';

/** The largest block size a device may have (1 MiB). */
export const MAX_BLOCK_SIZE = 1 << 20;
/**
 * The unit a disk writes atomically: a power cut tears a write at sector
 * boundaries, never inside one. Every on-store format here pads its records to it.
 */
export const SECTOR = 512;
/** The smallest block size a device may have (one sector). */
export const MIN_BLOCK_SIZE = SECTOR;

/**
 * Checks that `blockSize` is a power of two in [512, 1 MiB] and `size` a
 * non-negative multiple of it, safe as an integer. `what` names the device in
 * the message.
 */
export function checkGeometry(what: string, size: unknown, blockSize: unknown): void {
  if (typeof blockSize !== 'number' || typeof size !== 'number') {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: size and blockSize must be numbers, got ${typeof size} and ${typeof blockSize}`,
    );
  }
  if (
    !Number.isInteger(blockSize) ||
    blockSize < MIN_BLOCK_SIZE ||
    blockSize > MAX_BLOCK_SIZE ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: blockSize ${blockSize} is not a power of two from 512 to 1 MiB`,
    );
  }
  if (!Number.isSafeInteger(size) || size < 0 || size % blockSize !== 0) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: size ${size} is not a non-negative multiple of blockSize ${blockSize}`,
    );
  }
}

/**
 * Checks a byte range `[offset, offset + length)` against a device of `size`
 * bytes: wrong types are `EINVAL`; negative, fractional, NaN, infinite or
 * past-the-end values are `ERANGE`. `what`, if given, names the range in
 * the message.
 */
export function checkRange(size: number, offset: unknown, length: unknown, what?: string): void {
  const at = what === undefined ? '' : `${what}: `;
  if (typeof offset !== 'number') {
    throw new BlockDeviceError('EINVAL', `${at}offset must be a number, got ${typeof offset}`);
  }
  if (typeof length !== 'number') {
    throw new BlockDeviceError('EINVAL', `${at}length must be a number, got ${typeof length}`);
  }
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new BlockDeviceError('ERANGE', `${at}offset ${offset} is not a non-negative integer`);
  }
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new BlockDeviceError('ERANGE', `${at}length ${length} is not a non-negative integer`);
  }
  if (offset + length > size) {
    throw new BlockDeviceError(
      'ERANGE',
      `${at}range [${offset}, ${offset + length}) ends past the device size ${size}`,
    );
  }
}

/** Whether `value` is a Uint8Array (a Buffer counts: it is one). */
export function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}
