import { io, SECTOR } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/** What a copy job's map describes; a resumed job must match it exactly. */
export interface CopyGeometry {
  sourceSize: number;
  offset: number;
  length: number;
  destinationOffset: number;
  chunkSize: number;
}

/** "BSCM": blocksnap copy map. */
const MAGIC = 0x4d435342;
const VERSION = 1;
const HEADER = 64;

/**
 * The snapshot map of a copy job (seed 004, claim 46): which chunks of the
 * range are already in the destination. In memory a bitmap; with a map
 * store, also persisted there so a job resumes after a crash.
 *
 * On the map store: two slots, each a checksummed header (geometry,
 * generation, completion flag) and the bitmap. A commit writes the map to
 * one slot and flushes, then to the other and flushes, so once it resolves
 * both slots hold it; `load` takes the valid slot with the highest
 * generation. A power cut during a commit leaves the previous map in one
 * slot or the new one in the first; damage to one slot afterwards, or a
 * write the disk acknowledged and lost, leaves the map in the other. With
 * one slot per commit, losing the newest would roll the map back to bits
 * that call uncopied chunks whose source has since been written, and a
 * resume would copy the new data as the snapshot's (docs/ARCHITECTURE.md,
 * "Crash ordering").
 *
 * Ordering rule that makes a resumed copy exact: a chunk's bit reaches the
 * map store only after the destination holding its data was flushed — a
 * commit snapshots the bitmap, flushes the destination, then writes the
 * snapshot — and a foreground write over a chunk waits for a commit that
 * covers its bit, so the source never changes under a chunk the durable map
 * still calls uncopied.
 */
export class CopyMap {
  readonly geometry: CopyGeometry;
  readonly chunks: number;
  readonly #bits: Uint8Array;
  #copied = 0;
  readonly #store: BlockDevice | undefined;
  readonly #destination: Pick<BlockDevice, 'flush'>;
  #generation: number;
  #complete = false;
  /** The commit in progress, and the one queued behind it for callers that arrived during it. */
  #running: Promise<void> | undefined;
  #queued: Promise<void> | undefined;

  private constructor(
    geometry: CopyGeometry,
    destination: Pick<BlockDevice, 'flush'>,
    store: BlockDevice | undefined,
    bits: Uint8Array,
    generation: number,
  ) {
    this.geometry = geometry;
    this.chunks = chunkCount(geometry);
    this.#destination = destination;
    this.#store = store;
    this.#bits = bits;
    this.#generation = generation;
    for (let i = 0; i < this.chunks; i++) if (this.has(i)) this.#copied++;
  }

  /** Bytes a map store needs for `geometry`: two slots. */
  static storeBytes(geometry: CopyGeometry): number {
    return 2 * slotBytes(chunkCount(geometry));
  }

  /**
   * A new, empty map; with a store, its first generation is durable there
   * before this resolves, so a crash right after `start` is resumable.
   * @throws `EINVAL` if the store is read-only or too small.
   */
  static async create(
    geometry: CopyGeometry,
    destination: Pick<BlockDevice, 'flush'>,
    store: BlockDevice | undefined,
  ): Promise<CopyMap> {
    const chunks = chunkCount(geometry);
    if (store !== undefined) checkStore(store, chunks);
    const map = new CopyMap(geometry, destination, store, new Uint8Array(bitmapBytes(chunks)), 0);
    // Both slots, as every commit: a store reused from an earlier job may
    // hold its map, with a higher generation, in either.
    await map.#persist(map.#bits.slice(), false);
    return map;
  }

  /**
   * The map a store holds, checked against the geometry of the job resuming it.
   * @throws `ECORRUPT` if neither slot is valid, `EINVAL` if it describes
   *   another copy.
   */
  static async load(
    geometry: CopyGeometry,
    destination: BlockDevice,
    store: BlockDevice,
  ): Promise<CopyMap> {
    const chunks = chunkCount(geometry);
    checkStore(store, chunks);
    const size = slotBytes(chunks);
    const slots = await Promise.all(
      [0, 1].map(async (slot) =>
        decodeSlot(await io('map store read', store.read(slot * size, size))),
      ),
    );
    const best = slots
      .filter((s) => typeof s !== 'string')
      .sort((a, b) => b.generation - a.generation)[0];
    if (best === undefined) {
      throw new BlockDeviceError(
        'ECORRUPT',
        'map store holds no valid copy map (both slots fail their checks)',
      );
    }
    for (const key of Object.keys(geometry) as (keyof CopyGeometry)[]) {
      if (best.geometry[key] !== geometry[key]) {
        throw new BlockDeviceError(
          'EINVAL',
          `map store describes another copy: ${key} ${best.geometry[key]}, not ${geometry[key]}`,
        );
      }
    }
    const map = new CopyMap(geometry, destination, store, best.bits, best.generation);
    map.#complete = best.complete;
    return map;
  }

  /** Chunks already in the destination. */
  get copiedChunks(): number {
    return this.#copied;
  }

  /** Bytes of the range in chunks already in the destination (the last chunk may be short). */
  get copiedBytes(): number {
    const { length, chunkSize } = this.geometry;
    const short =
      this.chunks > 0 && this.has(this.chunks - 1) ? this.chunks * chunkSize - length : 0;
    return this.#copied * chunkSize - short;
  }

  /** Whether the map is kept on a store (so a job can be resumed from it). */
  get persistent(): boolean {
    return this.#store !== undefined;
  }

  /** Whether the durable map says the whole copy finished. */
  get complete(): boolean {
    return this.#complete;
  }

  /** Whether chunk `i` is in the destination (in memory; durable once a later commit resolves). */
  has(i: number): boolean {
    return (this.#bits[i >>> 3]! & (1 << (i & 7))) !== 0;
  }

  /** Marks chunk `i` copied, once its destination write has completed. */
  set(i: number): void {
    if (this.has(i)) return;
    this.#bits[i >>> 3]! |= 1 << (i & 7);
    this.#copied++;
  }

  /**
   * Makes every bit set before this call durable (group commit: callers
   * arriving while a commit runs share the next one). Without a store, only
   * orders nothing and resolves.
   */
  commit(): Promise<void> {
    if (this.#store === undefined) return Promise.resolve();
    if (this.#running === undefined) {
      this.#running = this.#commitNow(false).finally(() => {
        this.#running = undefined;
      });
      return this.#running;
    }
    this.#queued ??= this.#running.then(
      () => this.#afterRunning(),
      () => this.#afterRunning(),
    );
    return this.#queued;
  }

  /**
   * Runs `fn` between two commits, with the map store (which a map that
   * {@link persistent} has) and the generation the last commit wrote there:
   * commits arriving meanwhile wait for it, so the map store holds exactly
   * what that commit left while `fn` reads it. For `check()`: `fn` must not
   * commit.
   */
  async betweenCommits<T>(fn: (store: BlockDevice, generation: number) => Promise<T>): Promise<T> {
    while (this.#running !== undefined || this.#queued !== undefined) {
      await (this.#queued ?? this.#running)!.catch(() => {});
    }
    const run = fn(this.#store!, this.#generation);
    this.#running = run.then(
      () => {
        this.#running = undefined;
      },
      () => {
        this.#running = undefined;
      },
    );
    return run;
  }

  /** Records that the whole copy finished, durably; a later resume then does nothing. */
  async finish(): Promise<void> {
    if (this.#store === undefined) return;
    while (this.#running !== undefined || this.#queued !== undefined) {
      await (this.#queued ?? this.#running)!.catch(() => {});
    }
    await this.#commitNow(true);
    this.#complete = true;
  }

  #afterRunning(): Promise<void> {
    this.#queued = undefined;
    return this.commit();
  }

  async #commitNow(complete: boolean): Promise<void> {
    // The bits are taken before the destination flush, so every bit written
    // below names data that flush made durable.
    const bits = this.#bits.slice();
    await io('destination flush', this.#destination.flush());
    await this.#persist(bits, complete);
  }

  /**
   * Writes the map to both slots in turn, each durable before the next is
   * written, so a torn write never leaves both slots invalid and a completed
   * commit is in both.
   */
  async #persist(bits: Uint8Array, complete: boolean): Promise<void> {
    const store = this.#store;
    if (store === undefined) return;
    const size = slotBytes(this.chunks);
    for (let copy = 0; copy < 2; copy++) {
      const generation = this.#generation + 1;
      const slot = encodeSlot(this.geometry, generation, complete, bits, size);
      await io('map store write', store.write((generation % 2) * size, slot));
      await io('map store flush', store.flush());
      this.#generation = generation;
    }
  }
}

export function chunkCount(g: CopyGeometry): number {
  return Math.ceil(g.length / g.chunkSize);
}

function bitmapBytes(chunks: number): number {
  return Math.ceil(chunks / 8);
}

export function slotBytes(chunks: number): number {
  return Math.ceil((HEADER + bitmapBytes(chunks)) / SECTOR) * SECTOR;
}

function checkStore(store: BlockDevice, chunks: number): void {
  if (store.readOnly) throw new BlockDeviceError('EINVAL', 'mapStore is read-only');
  if (store.size < 2 * slotBytes(chunks)) {
    throw new BlockDeviceError(
      'EINVAL',
      `mapStore of ${store.size} bytes is too small: the map of ${chunks} chunks needs ${2 * slotBytes(chunks)}`,
    );
  }
}

function encodeSlot(
  g: CopyGeometry,
  generation: number,
  complete: boolean,
  bits: Uint8Array,
  size: number,
): Uint8Array {
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint16(4, VERSION, true);
  view.setUint16(6, complete ? 1 : 0, true);
  view.setFloat64(8, generation, true);
  view.setFloat64(16, g.sourceSize, true);
  view.setFloat64(24, g.offset, true);
  view.setFloat64(32, g.length, true);
  view.setFloat64(40, g.destinationOffset, true);
  view.setUint32(48, g.chunkSize, true);
  view.setUint32(52, bits.length, true);
  out.set(bits, HEADER);
  // The checksum covers the header (its own field zero) and the bitmap.
  view.setUint32(60, checksum(out.subarray(0, HEADER + bits.length)), true);
  return out;
}

/** What a valid map slot holds. */
export interface MapSlot {
  geometry: CopyGeometry;
  generation: number;
  complete: boolean;
  bits: Uint8Array;
}

/** Decodes and checks one map slot; says why it is not a valid one otherwise. */
export function decodeSlot(bytes: Uint8Array): MapSlot | string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== MAGIC) return 'no copy map magic';
  if (view.getUint16(4, true) !== VERSION) return `version ${view.getUint16(4, true)}`;
  const length = view.getUint32(52, true);
  if (HEADER + length > bytes.length) return `a bitmap of ${length} bytes past the slot`;
  const stored = view.getUint32(60, true);
  const copy = bytes.slice(0, HEADER + length);
  new DataView(copy.buffer).setUint32(60, 0, true);
  if (checksum(copy) !== stored) return 'fails its checksum';
  return {
    geometry: {
      sourceSize: view.getFloat64(16, true),
      offset: view.getFloat64(24, true),
      length: view.getFloat64(32, true),
      destinationOffset: view.getFloat64(40, true),
      chunkSize: view.getUint32(48, true),
    },
    generation: view.getFloat64(8, true),
    complete: view.getUint16(6, true) === 1,
    bits: copy.slice(HEADER),
  };
}
