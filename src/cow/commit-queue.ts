import type { CommitData } from './commit-writes.js';
import { type EntryCodec, MAX_FRAME } from './log-format.js';

/** What waits in the metadata log's queue: an append, or a request to attest. */
export interface Pending<E> {
  entries: E[];
  /** Store writes the entries name, written by the commit before the frame. */
  data?: readonly CommitData[] | undefined;
  /** Not an append: write the attestation superblock (`MetadataLog.attest`). */
  attest?: true;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Takes the appends at the head of `queue` up to about one frame's worth
 * (at least one), stopping at an attestation, which the pump runs between
 * commits.
 */
export function takeBatch<E>(queue: Pending<E>[], codec: EntryCodec<E>): Pending<E>[] {
  let bytes = 0;
  let n = 0;
  while (n < queue.length && !queue[n]!.attest) {
    const size = queue[n]!.entries.reduce((s, e) => s + codec.size(e), 0);
    if (n > 0 && bytes + size > MAX_FRAME) break;
    bytes += size;
    n++;
  }
  return queue.splice(0, n);
}

/** Resolves every append of `batch`; answers an empty batch. */
export function resolveAll<E>(batch: Pending<E>[]): Pending<E>[] {
  for (const p of batch) p.resolve();
  return [];
}
