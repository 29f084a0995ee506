import { randomInt } from 'node:crypto';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { checksum } from './metadata-codec.js';

/** How a layer encodes its metadata entries. */
export interface EntryCodec<E> {
  /** Encoded size of one entry in bytes. */
  size(entry: E): number;
  /** Encodes entries back to back at `pos`; returns the end. */
  encode(entries: readonly E[], out: Uint8Array, pos: number): number;
  /** Decodes `count` entries (checksum already verified); `ECORRUPT` naming `where` if malformed. */
  decode(bytes: Uint8Array, count: number, where: string): E[];
}

/** Where the log keeps things on the store; fixed at format time. */
export interface LogLayout {
  /** Bytes reserved for each of the two checkpoint tables. */
  tableCapacity: number;
  /** Bytes reserved for the append-only log. */
  logCapacity: number;
}

/** What `MetadataLog.open` recovered. */
export interface RecoveredLog<E> {
  log: MetadataLog<E>;
  /** The owner's parameters given at format time. */
  params: Uint8Array;
  /** Every durable entry, checkpoint table first, then the log in order. */
  entries: E[];
}

const SUPERBLOCK_SLOT = 4096;
const SUPERBLOCK_BYTES = 512;
const SECTOR = 512;
const MAGIC = 0x4b4e5342; // "BSNK" little-endian
const FRAME_MAGIC = 0x474c5342; // "BSLG"
const FORMAT_VERSION = 1;
const FRAME_HEADER = 32;
const MAX_PARAMS = 256;
/** A frame larger than this is split; keeps one commit's I/O bounded. */
const MAX_FRAME = 1 << 20;

interface Superblock {
  kind: number;
  generation: number;
  tableCapacity: number;
  logCapacity: number;
  active: number;
  tableBytes: number;
  tableCount: number;
  tableCrc: number;
  epoch: number;
  params: Uint8Array;
}

interface Pending<E> {
  entries: E[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Crash-safe metadata on a store device: two superblock slots, two checkpoint
 * tables and an append-only log of checksummed frames, with group commit.
 *
 * Ordering rules, which recovery relies on:
 * - A frame is written only after every earlier frame is durable, so after a
 *   power cut at most the last valid frame can be incomplete; a damaged frame
 *   followed by an intact one is corruption (`ECORRUPT`), not a torn tail.
 * - A checkpoint writes the inactive table, makes it durable, and only then
 *   switches the superblock (alternating slots, highest valid generation
 *   wins) to it and to a new log epoch; until that superblock is durable the
 *   old table and old log are untouched, so a power cut leaves old or new.
 * - Entries are handed to `onDurable` only once durable, in log order — the
 *   same order replay applies them in.
 */
export class MetadataLog<E> {
  readonly #store: BlockDevice;
  readonly #codec: EntryCodec<E>;
  readonly #checkpointEntries: () => E[];
  readonly #onDurable: (entries: E[]) => void;
  #sb: Superblock;
  #tail: number;
  #seq: number;
  #queue: Pending<E>[] = [];
  #pumping: Promise<void> | undefined;
  #failed: BlockDeviceError | undefined;

  private constructor(
    store: BlockDevice,
    codec: EntryCodec<E>,
    sb: Superblock,
    tail: number,
    seq: number,
    checkpointEntries: () => E[],
    onDurable: (entries: E[]) => void,
  ) {
    this.#store = store;
    this.#codec = codec;
    this.#sb = sb;
    this.#tail = tail;
    this.#seq = seq;
    this.#checkpointEntries = checkpointEntries;
    this.#onDurable = onDurable;
  }

  /** Bytes at the start of the store the log occupies; the owner's data follows. */
  static reservedBytes(layout: LogLayout): number {
    return 2 * SUPERBLOCK_SLOT + 2 * layout.tableCapacity + layout.logCapacity;
  }

  /**
   * Formats `store`: an initial table holding `initial`, an empty log, and the
   * owner's `params`. Resolves only once the format is durable.
   */
  static async format<E>(
    store: BlockDevice,
    kind: number,
    layout: LogLayout,
    params: Uint8Array,
    codec: EntryCodec<E>,
    initial: E[],
  ): Promise<void> {
    if (params.length > MAX_PARAMS) throw new Error('metadata params too large');
    const table = encodeTable(codec, initial, layout.tableCapacity);
    const sb: Superblock = {
      kind,
      generation: 1,
      tableCapacity: layout.tableCapacity,
      logCapacity: layout.logCapacity,
      active: 0,
      tableBytes: table.length,
      tableCount: initial.length,
      tableCrc: checksum(table),
      // A random epoch, so frames left on a reused store by an earlier format never replay.
      epoch: randomInt(1, 0xffffffff),
      params,
    };
    await io('format table', store.write(tableOffset(sb, 0), table));
    // Invalidate the first log sector and the second superblock slot: stale
    // contents from an earlier format must never be mistaken for ours.
    await io('format log', store.write(logOffset(sb), new Uint8Array(SECTOR)));
    await io('format superblock', store.write(SUPERBLOCK_SLOT, new Uint8Array(SUPERBLOCK_BYTES)));
    await io('format flush', store.flush());
    await io('format superblock', store.write(0, encodeSuperblock(sb)));
    await io('format flush', store.flush());
  }

  /**
   * Reads the metadata back: the newest valid superblock, its table, then the
   * log up to its torn tail. `verifyLast` is asked about the last intact frame
   * (whose data may not have reached the disk before a power cut); if it
   * answers false, that frame is dropped and its header erased, as it was
   * never acknowledged.
   * @throws `ECORRUPT` naming the damaged structure and its store offset.
   */
  static async open<E>(
    store: BlockDevice,
    kind: number,
    codec: EntryCodec<E>,
    verifyLast: (entries: E[], params: Uint8Array) => Promise<boolean>,
    checkpointEntries: () => E[],
    onDurable: (entries: E[]) => void,
  ): Promise<RecoveredLog<E>> {
    const sb = await readSuperblock(store, kind);
    const tableAt = tableOffset(sb, sb.active);
    const table = await io('read table', store.read(tableAt, sb.tableBytes));
    if (checksum(table) !== sb.tableCrc) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `metadata table ${sb.active} at store offset ${tableAt} fails its checksum`,
      );
    }
    const entries = codec.decode(table, sb.tableCount, `metadata table at ${tableAt}`);

    const frames = await scanLog(store, sb, codec);
    let tail = logOffset(sb);
    let seq = 0;
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i]!;
      if (i === frames.length - 1 && !(await verifyLast(frame.entries, sb.params))) {
        // Its data never became durable, so nothing in it was acknowledged.
        // Erase the header so a later open cannot revive it once the data
        // chunks it names have been reused.
        await io('erase frame', store.write(frame.offset, new Uint8Array(SECTOR)));
        await io('erase frame', store.flush());
        break;
      }
      entries.push(...frame.entries);
      tail = frame.offset + frame.size;
      seq = i + 1;
    }
    const log = new MetadataLog(store, codec, sb, tail, seq, checkpointEntries, onDurable);
    return { log, params: sb.params, entries };
  }

  /**
   * Appends entries in one group commit with whatever else is waiting;
   * resolves once they are durable and handed to `onDurable`.
   * @throws `EIO` if the store failed (the log then refuses all appends:
   *   reopen to recover), `ENOSPC` if a checkpoint cannot fit.
   */
  append(entries: E[]): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => {
      this.#queue.push({ entries, resolve, reject });
      if (this.#pumping === undefined) this.#pumping = this.#pump();
    });
  }

  /** Whether a store failure has made the log refuse appends (until reopened). */
  get failed(): boolean {
    return this.#failed !== undefined;
  }

  /** Resolves once nothing is queued or in flight. */
  async idle(): Promise<void> {
    while (this.#pumping !== undefined) await this.#pumping;
  }

  /** Writes a checkpoint now (the whole state into the inactive table, new log epoch). */
  async checkpoint(): Promise<void> {
    await this.idle();
    await this.#checkpoint();
  }

  async #pump(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#takeBatch();
        try {
          await this.#commit(batch.flatMap((p) => p.entries));
        } catch (err) {
          this.#failed = BlockDeviceError.is(err) ? err : wrapIO('metadata commit', err);
          for (const p of batch) p.reject(this.#failed);
          for (const p of this.#queue.splice(0)) p.reject(this.#failed);
          return;
        }
        for (const p of batch) p.resolve();
      }
    } finally {
      this.#pumping = undefined;
    }
  }

  /** Takes queued appends up to about one frame's worth (at least one). */
  #takeBatch(): Pending<E>[] {
    let bytes = 0;
    let n = 0;
    while (n < this.#queue.length) {
      const size = this.#queue[n]!.entries.reduce((s, e) => s + this.#codec.size(e), 0);
      if (n > 0 && bytes + size > MAX_FRAME) break;
      bytes += size;
      n++;
    }
    return this.#queue.splice(0, n);
  }

  async #commit(entries: E[]): Promise<void> {
    // Split into frames that fit; each is durable before the next is written.
    let start = 0;
    while (start < entries.length) {
      const limit = Math.min(MAX_FRAME, this.#sb.logCapacity) - FRAME_HEADER;
      let bytes = 0;
      let end = start;
      while (end < entries.length) {
        const size = this.#codec.size(entries[end]!);
        if (bytes + size > limit) break;
        bytes += size;
        end++;
      }
      if (end === start) throw new BlockDeviceError('ENOSPC', 'metadata entry larger than the log');
      const frameEntries = entries.slice(start, end);
      const size = alignUp(FRAME_HEADER + bytes, SECTOR);
      if (this.#tail + size > logOffset(this.#sb) + this.#sb.logCapacity) {
        await this.#checkpoint();
      }
      const frame = new Uint8Array(size);
      const view = new DataView(frame.buffer);
      view.setUint32(0, FRAME_MAGIC, true);
      view.setUint32(4, this.#sb.epoch, true);
      view.setUint32(8, this.#seq, true);
      view.setUint32(12, frameEntries.length, true);
      view.setUint32(16, bytes, true);
      this.#codec.encode(frameEntries, frame, FRAME_HEADER);
      view.setUint32(20, frameChecksum(frame, bytes), true);
      await io('log write', this.#store.write(this.#tail, frame));
      await io('log flush', this.#store.flush());
      this.#tail += size;
      this.#seq++;
      this.#onDurable(frameEntries);
      start = end;
    }
  }

  async #checkpoint(): Promise<void> {
    const entries = this.#checkpointEntries();
    const table = encodeTable(this.#codec, entries, this.#sb.tableCapacity);
    const active = 1 - this.#sb.active;
    const next: Superblock = {
      ...this.#sb,
      generation: this.#sb.generation + 1,
      active,
      tableBytes: table.length,
      tableCount: entries.length,
      tableCrc: checksum(table),
      epoch: (this.#sb.epoch % 0xfffffffe) + 1,
    };
    await io('checkpoint table', this.#store.write(tableOffset(next, active), table));
    await io('checkpoint flush', this.#store.flush());
    const slot = (next.generation % 2) * SUPERBLOCK_SLOT;
    await io('checkpoint superblock', this.#store.write(slot, encodeSuperblock(next)));
    await io('checkpoint flush', this.#store.flush());
    this.#sb = next;
    this.#tail = logOffset(next);
    this.#seq = 0;
  }
}

function tableOffset(sb: { tableCapacity: number }, which: number): number {
  return 2 * SUPERBLOCK_SLOT + which * sb.tableCapacity;
}

function logOffset(sb: { tableCapacity: number }): number {
  return 2 * SUPERBLOCK_SLOT + 2 * sb.tableCapacity;
}

function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

function frameChecksum(frame: Uint8Array, bytes: number): number {
  // Covers the header up to the checksum field, then the entries.
  return checksum(
    frame.subarray(FRAME_HEADER, FRAME_HEADER + bytes),
    checksum(frame.subarray(0, 20)),
  );
}

function encodeTable<E>(codec: EntryCodec<E>, entries: readonly E[], capacity: number): Uint8Array {
  const size = entries.reduce((s, e) => s + codec.size(e), 0);
  if (size > capacity) {
    throw new BlockDeviceError('ENOSPC', `metadata table needs ${size} bytes, has ${capacity}`);
  }
  const out = new Uint8Array(size);
  codec.encode(entries, out, 0);
  return out;
}

function encodeSuperblock(sb: Superblock): Uint8Array {
  const out = new Uint8Array(SUPERBLOCK_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint32(4, FORMAT_VERSION, true);
  view.setUint32(8, sb.kind, true);
  view.setFloat64(12, sb.generation, true);
  view.setFloat64(20, sb.tableCapacity, true);
  view.setFloat64(28, sb.logCapacity, true);
  view.setUint8(36, sb.active);
  view.setUint32(40, sb.tableBytes, true);
  view.setUint32(44, sb.tableCount, true);
  view.setUint32(48, sb.tableCrc, true);
  view.setUint32(52, sb.epoch, true);
  view.setUint16(56, sb.params.length, true);
  out.set(sb.params, 64);
  view.setUint32(SUPERBLOCK_BYTES - 4, checksum(out.subarray(0, SUPERBLOCK_BYTES - 4)), true);
  return out;
}

function decodeSuperblock(bytes: Uint8Array): Superblock | string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== MAGIC) return 'no blocksnap magic';
  const crc = view.getUint32(SUPERBLOCK_BYTES - 4, true);
  if (checksum(bytes.subarray(0, SUPERBLOCK_BYTES - 4)) !== crc) return 'checksum mismatch';
  const version = view.getUint32(4, true);
  if (version !== FORMAT_VERSION)
    return `format version ${version}, this library reads ${FORMAT_VERSION}`;
  const paramsLength = view.getUint16(56, true);
  if (paramsLength > MAX_PARAMS) return 'params length out of range';
  return {
    kind: view.getUint32(8, true),
    generation: view.getFloat64(12, true),
    tableCapacity: view.getFloat64(20, true),
    logCapacity: view.getFloat64(28, true),
    active: view.getUint8(36),
    tableBytes: view.getUint32(40, true),
    tableCount: view.getUint32(44, true),
    tableCrc: view.getUint32(48, true),
    epoch: view.getUint32(52, true),
    params: bytes.slice(64, 64 + paramsLength),
  };
}

async function readSuperblock(store: BlockDevice, kind: number): Promise<Superblock> {
  if (store.size < 2 * SUPERBLOCK_SLOT) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `store of ${store.size} bytes is too small to hold metadata`,
    );
  }
  const both = await io('read superblocks', store.read(0, 2 * SUPERBLOCK_SLOT));
  const slots = [0, 1].map((i) =>
    decodeSuperblock(both.subarray(i * SUPERBLOCK_SLOT, i * SUPERBLOCK_SLOT + SUPERBLOCK_BYTES)),
  );
  const valid = slots.filter((s): s is Superblock => typeof s !== 'string');
  if (valid.length === 0) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `no valid superblock at store offsets 0 (${slots[0]}) or ${SUPERBLOCK_SLOT} (${slots[1]})`,
    );
  }
  const sb = valid.reduce((a, b) => (b.generation > a.generation ? b : a));
  if (sb.kind !== kind) {
    throw new BlockDeviceError(
      'EINVAL',
      `store holds a different kind of device (0x${sb.kind.toString(16)}, expected 0x${kind.toString(16)})`,
    );
  }
  if (
    logOffset(sb) + sb.logCapacity > store.size ||
    sb.active > 1 ||
    sb.tableBytes > sb.tableCapacity
  ) {
    throw new BlockDeviceError('ECORRUPT', 'superblock layout does not fit the store');
  }
  return sb;
}

interface ScannedFrame<E> {
  offset: number;
  size: number;
  entries: E[];
}

/**
 * Reads frames of the current epoch from the start of the log until the
 * first one that is missing or damaged. If an intact frame with a later
 * sequence number follows it, the damage is in a frame a flush had already
 * made durable: `ECORRUPT`.
 */
async function scanLog<E>(
  store: BlockDevice,
  sb: Superblock,
  codec: EntryCodec<E>,
): Promise<ScannedFrame<E>[]> {
  const start = logOffset(sb);
  const end = start + sb.logCapacity;
  const reader = new WindowReader(store, start, end);
  const frames: ScannedFrame<E>[] = [];
  let pos = start;
  while (pos + FRAME_HEADER <= end) {
    const frame = await readFrame(reader, pos, sb.epoch, frames.length, end);
    if (frame === undefined) break;
    const entries = codec.decode(
      frame.payload,
      frame.count,
      `log frame ${frames.length} at store offset ${pos}`,
    );
    frames.push({ offset: pos, size: frame.size, entries });
    pos += frame.size;
  }
  for (let probe = pos + SECTOR; probe + FRAME_HEADER <= end; probe += SECTOR) {
    const head = await reader.read(probe, FRAME_HEADER);
    const view = new DataView(head.buffer, head.byteOffset, FRAME_HEADER);
    if (view.getUint32(0, true) !== FRAME_MAGIC || view.getUint32(4, true) !== sb.epoch) continue;
    const seq = view.getUint32(8, true);
    if (seq <= frames.length) continue;
    if ((await readFrame(reader, probe, sb.epoch, seq, end)) !== undefined) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `log frame ${frames.length} at store offset ${pos} is damaged, but frame ${seq} at ${probe} after it is intact`,
      );
    }
  }
  return frames;
}

async function readFrame(
  reader: WindowReader,
  pos: number,
  epoch: number,
  seq: number,
  end: number,
): Promise<{ size: number; count: number; payload: Uint8Array } | undefined> {
  const head = await reader.read(pos, FRAME_HEADER);
  const view = new DataView(head.buffer, head.byteOffset, FRAME_HEADER);
  if (view.getUint32(0, true) !== FRAME_MAGIC) return undefined;
  if (view.getUint32(4, true) !== epoch || view.getUint32(8, true) !== seq) return undefined;
  const count = view.getUint32(12, true);
  const bytes = view.getUint32(16, true);
  const size = alignUp(FRAME_HEADER + bytes, SECTOR);
  if (pos + size > end) return undefined;
  const frame = await reader.read(pos, FRAME_HEADER + bytes);
  if (frameChecksum(frame, bytes) !== view.getUint32(20, true)) return undefined;
  return { size, count, payload: frame.slice(FRAME_HEADER) };
}

/** Sequential reads of a region through a 1 MiB window, so replay is a few large I/Os. */
class WindowReader {
  static readonly WINDOW = 1 << 20;
  #start = 0;
  #data: Uint8Array = new Uint8Array(0);

  constructor(
    private readonly store: BlockDevice,
    private readonly begin: number,
    private readonly end: number,
  ) {}

  async read(pos: number, length: number): Promise<Uint8Array> {
    if (pos < this.#start || pos + length > this.#start + this.#data.length) {
      const from = Math.max(this.begin, pos);
      const to = Math.min(this.end, Math.max(pos + length, from + WindowReader.WINDOW));
      this.#data = await io('read log', this.store.read(from, to - from));
      this.#start = from;
    }
    return this.#data.subarray(pos - this.#start, pos - this.#start + length);
  }
}

async function io<T>(what: string, op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (err) {
    throw wrapIO(`store ${what}`, err);
  }
}
