import { io, readInto, SECTOR } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import type { ScanReader } from '../store/index.js';
import {
  headerBytes,
  JOURNAL_FRAME_MAGIC,
  type JournalSuper,
  RING_START,
} from './journal-format.js';
import { decodeFrameHeader } from './journal-frame.js';
import type { ReplayCursor } from './replay-ahead.js';

/*
 * The search for a frame header attesting a damaged record after a power
 * cut (journal-scan.ts, the recovery rule): an intact header of this epoch
 * anywhere in the free ring whose `durableSeq` reaches the record.
 * docs/ARCHITECTURE.md, Performance notes: replay.
 */

/** Free-ring bytes {@link findAttestation} takes at once, as one view. */
const SCAN_SPAN = 256 << 10;
/** Bytes of one read of the {@link BackwardAttestationScan}. */
const CHUNK = 4 << 20;

/**
 * Looks at every sector of the `length` ring bytes from `pos` (wrapping) for
 * an intact frame header whose `durableSeq` reaches `seq`; returns its store
 * offset. Takes the ring in spans, with one DataView a span, so a sector
 * that holds no header (nearly all of them) costs two loads and no object.
 */
export async function findAttestation(
  reader: ScanReader,
  sb: JournalSuper,
  pos: number,
  length: number,
  seq: number,
): Promise<number | undefined> {
  const c = sb.capacity;
  let k = 0;
  scan: while (k < length) {
    const p = (pos + k) % c;
    const n = Math.min(SCAN_SPAN, length - k, c - p);
    const span = reader.cached(RING_START + p, n) ?? (await reader.read(RING_START + p, n));
    const view = new DataView(span.buffer, span.byteOffset, span.byteLength);
    for (let s = 0; s < n; s += SECTOR) {
      if (
        view.getUint32(s, true) !== JOURNAL_FRAME_MAGIC ||
        view.getUint32(s + 4, true) !== sb.epoch
      )
        continue;
      const count = view.getUint32(s + 12, true);
      const bytes = headerBytes(count);
      if (p + s + bytes > c) continue;
      if (s + bytes <= n) {
        const header = decodeFrameHeader(span.subarray(s, s + bytes), sb);
        if (typeof header !== 'string' && header.durableSeq >= seq) return RING_START + p + s;
        continue;
      }
      // The header runs past this span: read it whole (which may move the
      // reader's window), then go on with a new span after its first sector.
      const header = decodeFrameHeader(await reader.read(RING_START + p + s, bytes), sb);
      if (typeof header !== 'string' && header.durableSeq >= seq) return RING_START + p + s;
      k += s + SECTOR;
      continue scan;
    }
    k += n;
  }
  return undefined;
}

/**
 * The free-ring search, started at open alongside replay so that after a
 * power cut the ring is read once, not the used part and then the free part
 * one after the other: it reads backwards from the end of the ring's lap
 * (the head, one lap on) towards replay's cursor, on the thread pool, while
 * replay goes forwards, and stops where the two meet or, once replay has
 * stopped, at its tail. It cannot know yet which record will be the damaged
 * one, so it keeps, for the headers it passes, the highest `durableSeq`
 * found at or above each position; {@link proof} then looks only at
 * positions from the tail on, so a header in what turns out to be the used
 * ring (a frame replay took, or bytes in a record's data that look like
 * one) proves nothing, as with {@link findAttestation}.
 */
export class BackwardAttestationScan {
  readonly #store: BlockDevice;
  readonly #sb: JournalSuper;
  readonly #cursor: ReplayCursor;
  /** Absolute position just past the ring the scan covers: the superblock's head, one lap on. */
  readonly top: number;
  /** Everything in `[low, top)` has been looked at. */
  #low: number;
  /** Headers that raised the highest `durableSeq` seen: positions falling, `durableSeq`s rising. */
  readonly #at: number[] = [];
  readonly #durable: number[] = [];
  #stopped = false;
  readonly #done: Promise<void>;

  /** Starts scanning down from `sb.headAbs + capacity` towards `cursor.abs`, which replay moves. */
  constructor(store: BlockDevice, sb: JournalSuper, cursor: ReplayCursor) {
    this.#store = store;
    this.#sb = sb;
    this.#cursor = cursor;
    this.top = sb.headAbs + sb.capacity;
    this.#low = this.top;
    this.#done = this.#run();
    // Judged by `finish`; a scan abandoned with replay must not be an unhandled rejection.
    this.#done.catch(() => {});
  }

  /**
   * Waits until the scan has covered everything from replay's cursor (where
   * replay stopped) to {@link top}.
   * @throws `EIO` if a read of the scan failed.
   */
  finish(): Promise<void> {
    return this.#done;
  }

  /** Stops the scan (replay failed) and waits for its reads to settle, ignoring how. */
  async abandon(): Promise<void> {
    this.#stopped = true;
    await this.#done.catch(() => {});
  }

  /**
   * Store offset of a header at or past absolute position `tailAbs` whose
   * `durableSeq` reaches `seq`, or undefined. Only after {@link finish}.
   */
  proof(tailAbs: number, seq: number): number | undefined {
    // The last entry at or past the tail holds the highest durableSeq there.
    let i = -1;
    while (i + 1 < this.#at.length && this.#at[i + 1]! >= tailAbs) i++;
    if (i < 0 || this.#durable[i]! < seq) return undefined;
    return RING_START + (this.#at[i]! % this.#sb.capacity);
  }

  async #run(): Promise<void> {
    const c = this.#sb.capacity;
    const buffers = [new Uint8Array(Math.min(CHUNK, c)), new Uint8Array(Math.min(CHUNK, c))];
    // One read ahead of the chunk being looked at, so the pool is never idle for it.
    let next = this.#readBelow(this.#low, buffers[0]!);
    let turn = 1;
    while (next !== undefined) {
      const { low, n, read } = next;
      const bytes = await read;
      next = this.#stopped ? undefined : this.#readBelow(low, buffers[turn]!);
      turn ^= 1;
      await this.#look(bytes, low, n);
      this.#low = low;
    }
  }

  /** Starts the read of the chunk just below `high`, down to no further than replay's cursor; undefined when none is left. */
  #readBelow(
    high: number,
    buffer: Uint8Array,
  ): { low: number; n: number; read: Promise<Uint8Array> } | undefined {
    const c = this.#sb.capacity;
    // Never across the ring's end: a chunk is one store read.
    const ringHigh = ((high - 1) % c) + 1;
    const n = Math.min(CHUNK, ringHigh, high - this.#cursor.abs);
    if (n <= 0) return undefined;
    const at = RING_START + ringHigh - n;
    return {
      low: high - n,
      n,
      read: io('journal scan', readInto(this.#store, at, buffer.subarray(0, n))),
    };
  }

  /** Looks at the `n` bytes of ring from absolute position `low`, last sector first, so positions are met falling. */
  async #look(bytes: Uint8Array, low: number, n: number): Promise<void> {
    const sb = this.#sb;
    const c = sb.capacity;
    const view = new DataView(bytes.buffer, bytes.byteOffset, n);
    for (let s = n - SECTOR; s >= 0; s -= SECTOR) {
      if (
        view.getUint32(s, true) !== JOURNAL_FRAME_MAGIC ||
        view.getUint32(s + 4, true) !== sb.epoch
      )
        continue;
      const p = (low + s) % c;
      const count = view.getUint32(s + 12, true);
      const length = headerBytes(count);
      if (p + length > c) continue;
      // A header running past this chunk is read whole (its end was in the chunk before).
      const header = decodeFrameHeader(
        s + length <= n
          ? bytes.subarray(s, s + length)
          : await io('journal scan', this.#store.read(RING_START + p, length)),
        sb,
      );
      if (typeof header === 'string') continue;
      // No record this replay can stop at is older than the head: a lower
      // durableSeq attests nothing, so only a new highest is kept.
      const highest = this.#durable.length > 0 ? this.#durable[this.#durable.length - 1]! : 0;
      if (header.durableSeq >= sb.headSeq && header.durableSeq > highest) {
        this.#at.push(low + s);
        this.#durable.push(header.durableSeq);
      }
    }
  }
}
