import { checkOptions, checkRange, type OptionType } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { CopyGeometry } from './copy-map.js';
import { checkRate } from './copy-pacer.js';
import type { SnapshotCopyJobOptions } from './snapshot-copy-job.js';

/*
 * Checks SnapshotCopyJob's options before anything is read or written:
 * every option's type, then what they say together.
 */

const DEFAULT_CHUNK = 64 * 1024;
const MAX_CHUNK = 64 * 1024 * 1024;

/** The type each option must have when given (the devices are checked further below). */
const OPTION_TYPES: Record<keyof SnapshotCopyJobOptions, OptionType> = {
  source: 'object',
  destination: 'object',
  offset: 'number',
  length: 'number',
  destinationOffset: 'number',
  chunkSize: 'number',
  conflictPolicy: 'string',
  mapStore: 'object',
  force: 'boolean',
  signal: 'signal',
  rate: 'number',
};

/**
 * What a write into a part of the copy range not yet copied does: copy that
 * part first, or wait in a FIFO queue for the copier.
 */
export type CopyConflictPolicy = 'copy-first' | 'queue';

/** Whether `destination` is a web WritableStream rather than a BlockDevice. */
export function isStream(destination: unknown): destination is WritableStream<Uint8Array> {
  return (
    typeof destination === 'object' &&
    destination !== null &&
    typeof (destination as WritableStream).getWriter === 'function'
  );
}

/** The conflict policy the options ask for. @throws `EINVAL`. */
export function policyOf(options: SnapshotCopyJobOptions): CopyConflictPolicy {
  const policy = options.conflictPolicy ?? 'copy-first';
  if (policy !== 'copy-first' && policy !== 'queue') {
    throw new BlockDeviceError(
      'EINVAL',
      `conflictPolicy must be 'copy-first' or 'queue', got ${String(policy)}`,
    );
  }
  return policy;
}

/** Validates the options that fix what is copied where. */
export function geometryOf(options: SnapshotCopyJobOptions): CopyGeometry {
  checkOptions(options, OPTION_TYPES, 'SnapshotCopyJob');
  const { source, destination } = options;
  const stream = isStream(destination);
  for (const [what, dev] of [
    ['source', source],
    ['destination', stream ? undefined : destination],
    ['mapStore', options.mapStore],
  ] as const) {
    // Only a map store may be left out; a stream destination is checked elsewhere.
    if ((what === 'mapStore' && dev === undefined) || (what === 'destination' && stream)) continue;
    if (
      typeof dev !== 'object' ||
      dev === null ||
      typeof (dev as BlockDevice).read !== 'function'
    ) {
      throw new BlockDeviceError('EINVAL', `${what} is not a BlockDevice or a WritableStream`);
    }
  }
  if (!stream && destination.readOnly) {
    throw new BlockDeviceError('EINVAL', 'destination is read-only');
  }
  const offset = options.offset ?? 0;
  checkRange(source.size, offset, 0, 'source range');
  const length = options.length ?? source.size - offset;
  checkRange(source.size, offset, length, 'source range');
  const destinationOffset = options.destinationOffset ?? 0;
  // A stream has no size of its own: the target it is applied to will.
  const destinationSize = stream ? Number.MAX_SAFE_INTEGER : destination.size;
  checkRange(destinationSize, destinationOffset, length, 'destination range');
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
  if (
    !Number.isInteger(chunkSize) ||
    chunkSize < 512 ||
    chunkSize > MAX_CHUNK ||
    (chunkSize & (chunkSize - 1)) !== 0
  ) {
    throw new BlockDeviceError(
      'EINVAL',
      `chunkSize ${chunkSize} is not a power of two from 512 to 64 MiB`,
    );
  }
  if (options.rate !== undefined) checkRate(options.rate, 'rate');
  return { sourceSize: source.size, offset, length, destinationOffset, chunkSize };
}
