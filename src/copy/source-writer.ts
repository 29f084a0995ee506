import { ownedWriter } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { wrapIO } from '../errors.js';

/** Writes bytes the job owns to the source; rejects with `EIO` ('source write') on failure, never throws. */
export type SourceWriter = (offset: number, data: Uint8Array) => Promise<void>;

/**
 * How a copy job's foreground writes reach the source. Every write through
 * `job.device` already arrives as the job device's own private copy (its
 * `write` took one, as every device's does), and the engine never changes
 * it: it keeps it only to lay it over reads while the write is held. So it
 * is handed to the source's `WRITE_OWNED` where the source has one (the
 * library's FileDevice and COW devices), uncopied, instead of `write`,
 * which would copy the 4 KiB again: one private copy per write, as with no
 * job. Those copies are carved from shared slabs whose ArrayBuffers count
 * as external memory, and at tens of thousands of writes a second their
 * churn paced V8's garbage collections (docs/ARCHITECTURE.md, "Copy job
 * pacing"). A source without `WRITE_OWNED` gets `write`.
 */
export function sourceWriter(source: BlockDevice): SourceWriter {
  const writeOwned = ownedWriter(source);
  const wrap = (err: unknown): never => {
    throw wrapIO('source write', err);
  };
  // A device whose write throws instead of rejecting rejects here: callers
  // chain on the promise from inside I/O callbacks.
  if (writeOwned === undefined) {
    return (offset, data) => {
      try {
        return source.write(offset, data).catch(wrap);
      } catch (err) {
        return Promise.reject(wrapIO('source write', err));
      }
    };
  }
  return (offset, data) => {
    try {
      return writeOwned(offset, [data]).catch(wrap);
    } catch (err) {
      return Promise.reject(wrapIO('source write', err));
    }
  };
}
