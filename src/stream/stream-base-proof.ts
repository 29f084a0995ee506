import { forEachConcurrently } from '../base/index.js';
import { checksum, fletcher4 } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { hex32, type StreamHeader, sameBytes } from './stream-format.js';
import { hexBytes } from './stream-frames.js';
import type { Manifest } from './stream-manifest.js';

/*
 * The base proof of an incremental stream (docs/stream-format.md, "How the
 * base proof works"): before `applyStream` writes anything, the target's
 * content of every extent the manifest lists must be the base's or the new
 * content's.
 */

/** Manifest extents of the target read at once. */
const READS_IN_FLIGHT = 4;

/** What the target holds on an extent: the base, to be written. */
export const HOLDS_BASE = 0;
/** What the target holds on an extent: the new content already (an earlier apply got that far). */
export const HOLDS_NEW = 1;

/** Wraps a failure of the target so it is told apart from a damaged stream. */
export function targetError(what: string, err: unknown): BlockDeviceError {
  const detail = err instanceof Error ? err.message : String(err);
  const code = BlockDeviceError.is(err) ? err.code : 'EIO';
  return new BlockDeviceError(code, `target ${what} failed: ${detail}`, { cause: err });
}

/**
 * Reads the target's content of every manifest extent and classifies it,
 * entry by entry: {@link HOLDS_BASE} or {@link HOLDS_NEW}. Anything else
 * means the target is not at the stream's base: refused before any write.
 * An extent the base snapshot does not hold has no base to prove: it is
 * written whatever the target holds there (classed as the base).
 * @throws `EINVAL` naming the first extent found at neither; the target's errors.
 */
export async function proveBase(
  target: BlockDevice,
  manifest: Manifest,
  header: StreamHeader,
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  const holds = new Uint8Array(manifest.count);
  await forEachConcurrently(manifest.count, READS_IN_FLIGHT, signal, async (i) => {
    if (!manifest.baseHeld(i)) return;
    const offset = manifest.offset(i);
    const length = manifest.length(i);
    let content: Uint8Array;
    try {
      content = await target.read(offset, length);
    } catch (err) {
      throw targetError('read', err);
    }
    const sum = fletcher4(content);
    if (sameBytes(sum, manifest.newSum(i))) {
      holds[i] = HOLDS_NEW;
      return;
    }
    const crc = checksum(content);
    if (crc === manifest.baseCrc(i)) holds[i] = HOLDS_BASE;
    else {
      throw new BlockDeviceError(
        'EINVAL',
        `target does not hold the stream's base (snapshot ${header.from}): its content at [${offset}, ${offset + length}) has CRC ${hex32(crc)} where the base's is ${hex32(manifest.baseCrc(i))}, and Fletcher-4 ${hexBytes(sum)} where the new content's is ${hexBytes(manifest.newSum(i))}`,
      );
    }
  });
  return holds;
}
