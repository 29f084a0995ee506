import { io, SECTOR } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { logOffset, type Superblock } from '../store/index.js';
import type { EntryCodec } from './log-format.js';
import { scanLog } from './log-format.js';

/**
 * Why the data named by the last frame fails, and, when the owner can tell,
 * why that frame must have been durable all the same (then it is damage).
 */
export interface LastFrameFailure {
  failure: string;
  /** Evidence the frame was durable (e.g. the origin overwritten after it); absent if none. */
  durableBecause?: string | undefined;
}

/** Asks the owner about the data the last intact frame names. */
export type VerifyLastFrame<E> = (
  entries: E[],
  params: Uint8Array,
) => Promise<LastFrameFailure | string | undefined>;

/**
 * Reads the log's frames back into `entries` up to its torn tail, if it has
 * one, and says where the next frame goes.
 *
 * The torn-tail rule: after a power cut only the last frame can be
 * incomplete (each is durable before the next is written), and a frame
 * whose data fails (`verifyLast`) never had its commit acknowledged, so it
 * is dropped and its header erased — unless it is known durable: counted by
 * the superblock (a clean close's `closedFrames`, a flush's
 * `attestedFrames`), or `verifyLast` gives evidence. Then it is damage, and
 * so is a counted frame that is missing or fails its checksum.
 * @throws `ECORRUPT` naming the frame, its store offset and why it was durable.
 */
export async function recoverFrames<E>(
  store: BlockDevice,
  sb: Superblock,
  codec: EntryCodec<E>,
  verifyLast: VerifyLastFrame<E>,
  entries: E[],
): Promise<{ tail: number; seq: number }> {
  const frames = await scanLog(store, sb, codec);
  // Frames known durable. Only frames past them can be a torn tail. More
  // frames than a clean-close mark counts means a writer that did not know
  // the mark appended after it (an older version of this library): its
  // last frame may be torn, but the frames the mark counts were durable.
  const durable = sb.closedFrames ?? sb.attestedFrames ?? 0;
  const because =
    sb.closedFrames !== undefined
      ? `the store was closed cleanly with ${sb.closedFrames} log frames`
      : `a flush attested ${durable} log frames`;
  let tail = logOffset(sb);
  let seq = 0;
  for (let i = 0; i < frames.length; i++) {
    const frame = frames[i]!;
    const verdict =
      i === frames.length - 1 ? await verifyLast(frame.entries, sb.params) : undefined;
    if (verdict !== undefined) {
      const { failure, durableBecause } =
        typeof verdict === 'string' ? { failure: verdict, durableBecause: undefined } : verdict;
      const proof = i < durable ? because : durableBecause;
      if (proof !== undefined) {
        throw new BlockDeviceError(
          'ECORRUPT',
          `log frame ${i} at store offset ${frame.offset} names data that fails (${failure}), but it was durable: ${proof}`,
        );
      }
      // Its data never became durable, so nothing in it was acknowledged.
      // Erase the header so a later open cannot revive it once the data
      // chunks it names have been reused.
      await io('store erase frame', store.write(frame.offset, new Uint8Array(SECTOR)));
      await io('store erase frame', store.flush());
      break;
    }
    entries.push(...frame.entries);
    tail = frame.offset + frame.size;
    seq = i + 1;
  }
  if (frames.length < durable) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `${because}, but log frame ${frames.length} at store offset ${tail} is missing or fails its checksum`,
    );
  }
  return { tail, seq };
}
