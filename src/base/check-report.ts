import type {
  CheckCounts,
  CheckOptions,
  CheckProblem,
  CheckReport,
  CheckStructure,
  Extent,
} from '../device.js';
import { BlockDeviceError } from '../errors.js';

/**
 * Collects what a device's `check()` walks and finds, and builds the
 * {@link CheckReport}; one per check, shared by every layer's walker so the
 * reports read alike.
 */
export class CheckReportBuilder {
  readonly counts: { -readonly [K in keyof CheckCounts]: number } = {
    superblocks: 0,
    tables: 0,
    frames: 0,
    records: 0,
    chunks: 0,
    bytes: 0,
  };
  readonly problems: CheckProblem[] = [];
  /** Cleared by a problem in metadata `open` needs; see {@link CheckReport.readable}. */
  reopens = true;
  skipped = 0;

  /** Records a problem; `fatal` says `open` could not read the store back past it. */
  problem(structure: CheckStructure, offset: number, message: string, fatal = false): void {
    this.problems.push({ structure, offset, message });
    if (fatal) this.reopens = false;
  }

  /** Counts bytes read from the store. */
  read(bytes: Uint8Array): Uint8Array {
    this.counts.bytes += bytes.length;
    return bytes;
  }

  build(
    live: Extent[],
    snapshots: { readonly id: string; readonly damaged: Extent[] }[],
  ): CheckReport {
    return {
      checked: { ...this.counts },
      problems: this.problems,
      readable: { reopens: this.reopens, live, snapshots },
      skipped: this.skipped,
    };
  }
}

/** Whether every byte is zero: a superblock or map slot never written, rather than a damaged one. */
export function isZeroed(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * Checks the options of a `check()` call before anything is read.
 * @throws `EINVAL` for an options value that is not an object, or a
 *   `verifyData` that is not a boolean, or an `onProgress` that is not a function.
 */
export function checkCheckOptions(options: unknown): CheckOptions {
  if (typeof options !== 'object' || options === null) {
    throw new BlockDeviceError('EINVAL', `check options must be an object, got ${String(options)}`);
  }
  const { verifyData, onProgress } = options as CheckOptions;
  if (verifyData !== undefined && typeof verifyData !== 'boolean') {
    throw new BlockDeviceError('EINVAL', `verifyData must be a boolean, got ${String(verifyData)}`);
  }
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    throw new BlockDeviceError('EINVAL', 'onProgress must be a function');
  }
  return options as CheckOptions;
}
