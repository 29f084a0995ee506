import type { SnapshotOptions } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/** Longest snapshot name, in UTF-8 bytes: it is stored with a one-byte length. */
export const MAX_NAME_BYTES = 255;

/**
 * Checks `snapshot()` options before anything changes. A name is stored as
 * its exact UTF-8 bytes (a leading U+FEFF included), so any name that is
 * well-formed UTF-16 comes back from `open` unchanged.
 * @throws `EINVAL` naming the bad option.
 */
export function checkSnapshotOptions(options: unknown): asserts options is SnapshotOptions {
  if (typeof options !== 'object' || options === null) {
    throw new BlockDeviceError(
      'EINVAL',
      `snapshot options must be an object, got ${String(options)}`,
    );
  }
  const { name, writable } = options as Record<string, unknown>;
  if (name !== undefined) {
    if (typeof name !== 'string') {
      throw new BlockDeviceError('EINVAL', `snapshot name must be a string, got ${typeof name}`);
    }
    // UTF-8 cannot hold a lone surrogate: stored, it would come back as
    // U+FFFD, another name. Refused rather than changed.
    if (/\p{Cs}/u.test(name)) {
      throw new BlockDeviceError(
        'EINVAL',
        'snapshot name holds a lone UTF-16 surrogate, which UTF-8 cannot store',
      );
    }
    if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) {
      throw new BlockDeviceError(
        'EINVAL',
        `snapshot name is longer than ${MAX_NAME_BYTES} UTF-8 bytes`,
      );
    }
  }
  if (writable !== undefined && typeof writable !== 'boolean') {
    throw new BlockDeviceError(
      'EINVAL',
      `snapshot option writable must be a boolean, got ${typeof writable}`,
    );
  }
}
