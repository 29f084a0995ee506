import { io } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { type BlockDeviceError, wrapIO } from '../errors.js';

/**
 * Bytes an append's entries depend on — the store chunks they name — that
 * the group commit carrying the append writes before its frame.
 */
export interface CommitData {
  /** Where on the store. */
  offset: number;
  /** Handed to the store uncopied: the appender must leave it unchanged until the append settles. */
  bytes: Uint8Array;
}

/** A store's WRITE_OWNED, bound (`ownedWriter` in src/base). */
export type OwnedWriter = (offset: number, blocks: readonly Uint8Array[]) => Promise<void>;

/** A store's WRITE_NOW, bound (`immediateWriter` in src/base). */
export type ImmediateWriter = (offset: number, data: Uint8Array) => void;

/** The store's fast paths {@link writeCommitData} uses where it has them. */
export interface CommitWriters {
  owned: OwnedWriter | undefined;
  immediate: ImmediateWriter | undefined;
}

/**
 * Frames up to this size go down by the store's WRITE_NOW (a frame of a few
 * dozen entries is a sector or two); a larger one, which would hold the
 * event loop, takes a thread-pool round trip.
 */
const IMMEDIATE_FRAME_BYTES = 64 * 1024;

/**
 * A group's data up to this size goes down by the store's WRITE_NOW: on
 * this thread, it is in the OS's cache before the commit goes on, so the
 * frame and the flush follow at once instead of after a thread-pool queue
 * full of the previous group's origin writes (a first write's origin write
 * waits for that flush). A group of 32 first writes of 4 KiB is 128 KiB; a
 * larger group takes the round trip rather than hold the event loop.
 */
export const IMMEDIATE_DATA_BYTES = 256 * 1024;

/** One piece of data and the append (its index in the group) it belongs to. */
interface Piece {
  offset: number;
  bytes: Uint8Array;
  owner: number;
}

/** An append that may carry data; rejected here if its data does not all land. */
export interface AppendWithData {
  readonly data?: readonly CommitData[] | undefined;
  reject(err: unknown): void;
}

/**
 * Writes the data of one group commit's appends and answers those whose
 * data all landed, in order (at once when every write went by WRITE_NOW,
 * else a promise of them); each of the others is rejected with why.
 * Pieces are sorted by store offset and those that touch go down as one
 * store write, so the first writes of one group, whose chunks the allocator
 * took one after the other, cost one write together instead of one each:
 * by the store's WRITE_NOW when the group is small
 * ({@link IMMEDIATE_DATA_BYTES}), else one thread-pool round trip per run
 * (the store's vectored WRITE_OWNED where it has one, else their
 * concatenation) — docs/ARCHITECTURE.md, "Performance notes".
 *
 * A failed write fails only the appends with a piece in it: their entries
 * stay out of the frame, so no frame names a chunk that was not written,
 * and the log goes on (docs/ARCHITECTURE.md, "After an I/O error"). Nothing
 * here flushes: the commit's store flush, after the frame, makes the data
 * durable with it.
 */
export function writeCommitData<A extends AppendWithData>(
  store: BlockDevice,
  writers: CommitWriters,
  appends: readonly A[],
): A[] | Promise<A[]> {
  const pieces: Piece[] = [];
  let bytes = 0;
  for (let owner = 0; owner < appends.length; owner++) {
    for (const piece of appends[owner]!.data ?? []) {
      pieces.push({ offset: piece.offset, bytes: piece.bytes, owner });
      bytes += piece.bytes.length;
    }
  }
  pieces.sort((a, b) => a.offset - b.offset);
  const immediate = bytes <= IMMEDIATE_DATA_BYTES ? writers.immediate : undefined;
  const failed = new Map<number, BlockDeviceError>();
  const fail = (run: readonly Piece[], err: unknown): void => {
    const error = wrapIO('store write', err);
    for (const { owner } of run) if (!failed.has(owner)) failed.set(owner, error);
  };
  const writes: Promise<void>[] = [];
  for (let i = 0; i < pieces.length; ) {
    const run = [pieces[i]!];
    let end = pieces[i]!.offset + pieces[i]!.bytes.length;
    while (i + run.length < pieces.length && pieces[i + run.length]!.offset === end) {
      const next = pieces[i + run.length]!;
      run.push(next);
      end += next.bytes.length;
    }
    i += run.length;
    if (immediate !== undefined) {
      try {
        immediate(run[0]!.offset, joined(run, true));
      } catch (err) {
        fail(run, err);
      }
    } else {
      writes.push(writeRun(store, writers.owned, run).catch((err: unknown) => fail(run, err)));
    }
  }
  const landed = (): A[] =>
    appends.filter((append, i) => {
      const err = failed.get(i);
      if (err !== undefined) append.reject(err);
      return err === undefined;
    });
  return writes.length === 0 ? landed() : Promise.all(writes).then(landed);
}

/** One store write of pieces that lie back to back from `run[0].offset`. */
function writeRun(
  store: BlockDevice,
  writeOwned: OwnedWriter | undefined,
  run: readonly Piece[],
): Promise<void> {
  if (run.length > 1 && writeOwned !== undefined) {
    return writeOwned(
      run[0]!.offset,
      run.map((p) => p.bytes),
    );
  }
  return store.write(run[0]!.offset, joined(run));
}

/**
 * Where runs going down by WRITE_NOW are joined: that write, like every
 * `write` (docs/ARCHITECTURE.md, "Buffers: who owns what"), is done with
 * its bytes when it returns, so one buffer serves every commit instead of a
 * fresh one of up to {@link IMMEDIATE_DATA_BYTES} per group.
 */
let immediateScratch = new Uint8Array(0);

/**
 * The bytes of pieces that lie back to back, as one buffer (the piece itself
 * when alone); for a write that is done with them when it returns
 * (`immediate`), in the shared scratch buffer.
 */
function joined(run: readonly Piece[], immediate = false): Uint8Array {
  if (run.length === 1) return run[0]!.bytes;
  const at = run[0]!.offset;
  const last = run[run.length - 1]!;
  const length = last.offset + last.bytes.length - at;
  let whole: Uint8Array;
  if (immediate && length <= IMMEDIATE_DATA_BYTES) {
    if (immediateScratch.length < length) immediateScratch = new Uint8Array(IMMEDIATE_DATA_BYTES);
    whole = immediateScratch.subarray(0, length);
  } else {
    whole = new Uint8Array(length);
  }
  for (const p of run) whole.set(p.bytes, p.offset - at);
  return whole;
}

/**
 * Writes a log frame at `offset`: by the store's WRITE_NOW when it has one
 * and the frame is small ({@link IMMEDIATE_FRAME_BYTES}) — then it is in
 * the OS's cache when this returns, `undefined`, and the commit's flush
 * follows at once — else by `write`, whose promise this returns.
 * @throws `EIO` (thrown, or the promise rejects) if the store fails.
 */
export function writeFrame(
  store: BlockDevice,
  writers: CommitWriters,
  offset: number,
  frame: Uint8Array,
): Promise<void> | undefined {
  if (writers.immediate === undefined || frame.length > IMMEDIATE_FRAME_BYTES) {
    return io('store log write', store.write(offset, frame));
  }
  try {
    writers.immediate(offset, frame);
  } catch (err) {
    throw wrapIO('store log write', err);
  }
  return undefined;
}
