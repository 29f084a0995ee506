import type { BlockDevice, ProgressEvent } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { JournalDeviceOptions } from './journal-device.js';

/** Checks that production and journal are two distinct, writable BlockDevices; `EINVAL` otherwise. */
export function checkJournalDevices(production: BlockDevice, journal: BlockDevice): void {
  for (const [what, dev] of [
    ['production', production],
    ['journal', journal],
  ] as const) {
    const d = dev as unknown as Record<string, unknown> | null;
    if (
      typeof d !== 'object' ||
      d === null ||
      typeof d.read !== 'function' ||
      typeof d.write !== 'function' ||
      typeof d.flush !== 'function' ||
      typeof d.close !== 'function' ||
      typeof d.size !== 'number' ||
      typeof d.blockSize !== 'number'
    ) {
      throw new BlockDeviceError('EINVAL', `${what} is not a BlockDevice`);
    }
  }
  if (production === journal) {
    throw new BlockDeviceError('EINVAL', 'production and journal must be different devices');
  }
  if (journal.readOnly) throw new BlockDeviceError('EINVAL', 'journal is read-only');
  if (production.readOnly) {
    throw new BlockDeviceError('EINVAL', 'production is read-only: checkpoints write to it');
  }
}

/** Checks {@link JournalDeviceOptions} and fills in the defaults; `EINVAL` otherwise. */
export function parseJournalOptions(options: JournalDeviceOptions): {
  checkpointAt: number;
  onProgress: ((event: ProgressEvent) => void) | undefined;
} {
  if (typeof options !== 'object' || options === null) {
    throw new BlockDeviceError('EINVAL', `options must be an object, got ${String(options)}`);
  }
  const checkpointAt = options.checkpointAt ?? 0.75;
  if (typeof checkpointAt !== 'number' || !(checkpointAt > 0 && checkpointAt <= 1)) {
    throw new BlockDeviceError('EINVAL', `checkpointAt ${String(checkpointAt)} is not in (0, 1]`);
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new BlockDeviceError('EINVAL', 'onProgress must be a function');
  }
  return { checkpointAt, onProgress: options.onProgress };
}
