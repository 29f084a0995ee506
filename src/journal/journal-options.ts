import { checkOptions } from '../base/index.js';
import type { BlockDevice, ProgressEvent } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/** Options for `JournalDevice.create` and `JournalDevice.open`. */
export interface JournalDeviceOptions {
  /**
   * Fraction of the journal in use, in (0, 1], at which a checkpoint starts
   * in the background after a write lands. At 1 a checkpoint runs only on
   * request or when a write finds the journal full (the write waits for it),
   * which keeps the longest `pointInTime` history. @default 0.75
   */
  checkpointAt?: number | undefined;
  /**
   * Most snapshots that may exist at once; sizes the snapshot catalog
   * reserved on the journal store at `create` (ignored by `open`).
   * `snapshot()` beyond it fails with `ENOSPC`. @default 64 if production is
   * snapshot-capable, else 0
   */
  maxSnapshots?: number | undefined;
  /**
   * `create` only: format the journal store even if it already holds a
   * blocksnap format (a journal, a COW store or a copy map), erasing it.
   * Without it `create` refuses such a store with `EBUSY` and changes
   * nothing. @default false
   */
  force?: boolean | undefined;
  /**
   * `open` only: repair what can be repaired without inventing data, instead
   * of failing `ECORRUPT` — a materialized snapshot whose production
   * snapshot was deleted behind the journal's back is dropped from the
   * journal (its content is gone). What was repaired is listed in
   * {@link JournalDevice.repairs}. @default false
   */
  repair?: boolean | undefined;
  /**
   * Called with `{ operation: 'replay', done, total }` in bytes of journal
   * while `open` replays the journal, before there is a device to listen
   * on. `total` is exact after a clean close; after a power cut it is the
   * ring's size (an upper bound) until the last event, which always comes
   * and has `done === total`. @default undefined
   */
  onProgress?: ((event: ProgressEvent) => void) | undefined;
}

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
  checkOptions(
    options,
    {
      checkpointAt: 'number',
      maxSnapshots: 'number',
      onProgress: 'function',
      force: 'boolean',
      repair: 'boolean',
    },
    'JournalDevice',
  );
  const checkpointAt = options.checkpointAt ?? 0.75;
  if (typeof checkpointAt !== 'number' || !(checkpointAt > 0 && checkpointAt <= 1)) {
    throw new BlockDeviceError('EINVAL', `checkpointAt ${String(checkpointAt)} is not in (0, 1]`);
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new BlockDeviceError('EINVAL', 'onProgress must be a function');
  }
  return { checkpointAt, onProgress: options.onProgress };
}

/**
 * The `maxSnapshots` a journal is created with: the option, or 64 over a
 * snapshot-capable production device and 0 over another.
 * @throws `EINVAL` unless an integer from 0 to 4096.
 */
export function catalogSize(options: JournalDeviceOptions, snapshotCapable: boolean): number {
  const maxSnapshots = options.maxSnapshots ?? (snapshotCapable ? 64 : 0);
  if (!Number.isSafeInteger(maxSnapshots) || maxSnapshots < 0 || maxSnapshots > 4096) {
    throw new BlockDeviceError(
      'EINVAL',
      `maxSnapshots ${String(maxSnapshots)} is not an integer from 0 to 4096`,
    );
  }
  return maxSnapshots;
}
