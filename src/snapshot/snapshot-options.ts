import type { SnapshotOptions } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/** Longest snapshot name, in UTF-8 bytes: it is stored with a one-byte length. */
export const MAX_NAME_BYTES = 255;

/**
 * Checks `snapshot()` options before anything changes.
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
