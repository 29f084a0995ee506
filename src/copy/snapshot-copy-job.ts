import {
  AbstractBlockDevice,
  io,
  ownedWriter,
  TypedEventEmitter,
  withClaimed,
} from '../base/index.js';
import type { BlockDevice, CheckReport } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { refuseReformat } from '../store/index.js';
import { CopyEngine } from './copy-engine.js';
import { type CopyGeometry, CopyMap } from './copy-map.js';
import { checkMapStore } from './copy-map-check.js';
import { type CopyConflictPolicy, geometryOf, isStream, policyOf } from './copy-options.js';
import { CopyPacer, checkRate, REAL_CLOCK } from './copy-pacer.js';
import type { CopySink } from './copy-sink.js';
import { StreamCopySink } from './copy-stream-sink.js';

export type { CopyConflictPolicy } from './copy-options.js';

/** Options for {@link SnapshotCopyJob.start}. */
export interface SnapshotCopyJobOptions {
  /** The device to copy from; the application's I/O goes through `job.device` while the job runs. */
  source: BlockDevice;
  /**
   * Where the copy goes: source byte `offset + k` lands at `destinationOffset + k`
   * of a device — or, given a web `WritableStream`, a full stream of the
   * verified format (docs/stream-format.md) that `applyStream` writes to any
   * device of `destinationOffset + length` bytes. A stream destination needs
   * `destinationOffset` and `length` in whole 512-byte sectors, takes no
   * `mapStore`, and is closed (or, if the job fails, errored) when it ends;
   * chunks copied ahead of their turn by copy-first wait in memory.
   */
  destination: BlockDevice | WritableStream<Uint8Array>;
  /** First source byte of the range. @default 0 */
  offset?: number | undefined;
  /** Bytes in the range. @default the rest of the source from `offset` */
  length?: number | undefined;
  /** Where in the destination the range lands. @default 0 */
  destinationOffset?: number | undefined;
  /**
   * Size of the blocks written to the destination, and the unit
   * the snapshot map tracks: a power of two from 512 bytes to 64 MiB.
   * @default 65536
   */
  chunkSize?: number | undefined;
  /**
   * What a write into a part of the range not yet copied does: `'copy-first'`
   * preserves that part's old bytes, then writes; `'queue'` holds the write
   * in a FIFO until they are preserved (overlapping writes leave in arrival
   * order), and the copier takes first the parts held writes wait for.
   * Either way the write reaches the source only after the old bytes it
   * overwrites are out of its way: with a `mapStore`, its chunks are in the
   * destination and durably in the map; without one, the old bytes are
   * saved in memory (up to 64 MiB held; else the chunks are copied first)
   * or read by a copy, and reach the destination with the chunk's copy
   * (nothing durable needs them first).
   * @default 'copy-first'
   */
  conflictPolicy?: CopyConflictPolicy | undefined;
  /**
   * Where the snapshot map is kept, checksummed, so
   * {@link SnapshotCopyJob.resume} can finish the copy after a crash.
   * Needs {@link SnapshotCopyJob.mapStoreBytes} bytes. @default in memory only
   */
  mapStore?: BlockDevice | undefined;
  /**
   * `start` only: use `mapStore` even if it holds a COW store or a journal,
   * erasing it. Without it `start` refuses such a map store with `EBUSY`
   * and changes nothing (an earlier job's map is overwritten either way).
   * @default false
   */
  force?: boolean | undefined;
  /** Aborts the job: the copier stops, every queued write is applied, `done` rejects. */
  signal?: AbortSignal | undefined;
  /**
   * The most bytes per second the background copier moves; 0 or undefined:
   * unlimited. Guarantee: by any time `t` seconds after the rate was set the
   * copier has started at most `rate × t` bytes plus one run (at most 100 ms
   * of bytes at the rate, or one chunk). Copies made for the application —
   * copy-first, and the chunks a queued write waits for — are never held
   * back (they are its latency) but count toward the budget. Change it while
   * the job runs with {@link SnapshotCopyJob.setRate}. @default 0
   */
  rate?: number | undefined;
}

/** Options for {@link SnapshotCopyJob.resume}: the same range and chunk size as at `start`, and its map store. */
export interface SnapshotCopyJobResumeOptions extends SnapshotCopyJobOptions {
  destination: BlockDevice;
  mapStore: BlockDevice;
}

/** Payload of the `progress` event, and {@link SnapshotCopyJob.progress}. */
export interface CopyProgress {
  /** Bytes of the range in the destination (with their map entries, when there is a map store). */
  readonly copiedBytes: number;
  /** Bytes in the range. */
  readonly totalBytes: number;
  /** Bytes the background copier copied. */
  readonly copierBytes: number;
  /** Bytes copied ahead of foreground writes (copy-first). */
  readonly copyFirstBytes: number;
  /** Foreground writes waiting in the queue now. */
  readonly queuedWrites: number;
}

/** What {@link SnapshotCopyJob.done} resolves with. */
export interface CopyReport {
  /** Bytes in the range: all in the destination now. */
  readonly totalBytes: number;
  /** Bytes the background copier copied. */
  readonly copierBytes: number;
  /** Bytes copied ahead of foreground writes (copy-first). */
  readonly copyFirstBytes: number;
  /** Bytes a previous run had already copied (resume). */
  readonly resumedBytes: number;
  /** Foreground writes that waited in the queue, over the whole job. */
  readonly queuedWrites: number;
  /** Milliseconds from start (or resume) to the end. */
  readonly durationMs: number;
}

/** The typed events of a copy job. */
export type SnapshotCopyJobEvents = {
  /** More of the range reached the destination, or a write was queued. */
  progress: (progress: CopyProgress) => void;
};

/**
 * A point-in-time copy of a byte range of a device, made in the background
 * while the device stays in use: the range is snapshotted at
 * `start()`, the application routes its I/O through {@link SnapshotCopyJob.device},
 * and writes into parts not yet copied either copy them first or wait in a
 * FIFO queue, so the destination ends up equal to the range as it was at
 * `start()`, bit for bit, while the source gets every write.
 *
 * Guarantees: writes outside the range, and into parts already copied, pass
 * straight through; reads always return the newest data, queued writes
 * included. With a `mapStore`, a chunk is marked copied only after the
 * destination holding it is durable, and no source write lands on a chunk
 * the durable map calls uncopied, so {@link SnapshotCopyJob.resume} after a
 * crash still ends with an exact copy (provided the source was written only
 * through `job.device`). Aborting stops the copier, applies every queued
 * write in order and rejects `done`; a failing device below fails the job
 * (`done` rejects with `EIO`). Without a `mapStore` it never fails the
 * application's writes: they pass through from then on. With one the job
 * stays resumable: a write into a part not yet copied still copies it first,
 * and fails with `EIO` (the failed copy as `cause`) if that copy fails, as do
 * writes queued for a copy that failed; {@link SnapshotCopyJob.resume}
 * then finishes the exact copy. After the job ends, `job.device` is a plain
 * pass-through.
 */
export class SnapshotCopyJob extends TypedEventEmitter<SnapshotCopyJobEvents> {
  /** The source as the application must use it while the job runs; it owns the source (its `close()` closes it). */
  readonly device: BlockDevice;
  /**
   * Resolves when the destination holds the whole range; rejects on abort
   * (the signal's reason), on failure (`EIO`), or with `ECLOSED` if
   * `job.device` is closed before the copy finished.
   */
  readonly done: Promise<CopyReport>;
  readonly #engine: CopyEngine;
  readonly #map: CopyMap;
  readonly #geometry: CopyGeometry;
  readonly #stream: StreamCopySink | undefined;
  readonly #pacer: CopyPacer;

  private constructor(
    source: BlockDevice,
    destination: BlockDevice | StreamCopySink,
    map: CopyMap,
    policy: CopyConflictPolicy,
    options: Pick<SnapshotCopyJobOptions, 'signal' | 'rate'>,
  ) {
    super();
    this.#pacer = new CopyPacer(REAL_CLOCK, map.geometry.chunkSize, options.rate ?? 0);
    this.#map = map;
    this.#geometry = map.geometry;
    const { destinationOffset } = map.geometry;
    let sink: CopySink;
    if (destination instanceof StreamCopySink) {
      this.#stream = destination;
      sink = destination;
    } else {
      const writeOwned = ownedWriter(destination);
      sink = {
        write: (at, data) =>
          io('destination write', destination.write(destinationOffset + at, data)),
      };
      if (writeOwned !== undefined) {
        sink.writeBlocks = (at, chunks) =>
          io('destination write', writeOwned(destinationOffset + at, chunks));
      }
    }
    this.#engine = new CopyEngine(source, sink, map, policy, this.#pacer, () =>
      this.emit('progress', this.progress),
    );
    this.device = new CopyJobDevice(source, this.#engine);
    this.done = this.#run(options.signal);
    // `done` is for whoever awaits it; an abort nobody awaits must not crash the process.
    this.done.catch(() => {});
  }

  /** Bytes a map store needs for a job with these options. @throws `EINVAL`, `ERANGE` as `start` does. */
  static mapStoreBytes(options: SnapshotCopyJobOptions): number {
    return CopyMap.storeBytes(geometryOf(options));
  }

  /**
   * Snapshots the range and starts copying it in the background; resolves
   * with the job once its map (on `mapStore`, durably) is ready, without
   * waiting for the copy.
   * @throws `EINVAL` for bad options (a read-only destination, a chunk size
   *   that is not a power of two, a map store too small), `ERANGE` for a range
   *   outside the source or the destination, `EBUSY` for a map store that
   *   holds a COW store or a journal (see `force`).
   */
  static async start(options: SnapshotCopyJobOptions): Promise<SnapshotCopyJob> {
    const geometry = geometryOf(options);
    const policy = policyOf(options);
    const { destination } = options;
    if (isStream(destination) && options.mapStore !== undefined) {
      throw new BlockDeviceError('EINVAL', 'a stream destination cannot be resumed: no mapStore');
    }
    // The job owns the source until `job.device` closes it: a write around
    // the job would miss the copy (docs/ARCHITECTURE.md, "Layers").
    return withClaimed([options.source] as const, 'SnapshotCopyJob', async ([source]) => {
      if (isStream(destination)) {
        const sink = await StreamCopySink.open(destination, geometry, source.blockSize);
        const map = await CopyMap.create(geometry, NO_FLUSH, undefined);
        return new SnapshotCopyJob(source, sink, map, policy, options);
      }
      if (options.mapStore !== undefined) {
        await refuseReformat(options.mapStore, 'mapStore', options.force, 'copy map');
      }
      const map = await CopyMap.create(geometry, destination, options.mapStore);
      return new SnapshotCopyJob(source, destination, map, policy, options);
    });
  }

  /**
   * Continues a job that a crash or restart interrupted, from the map on
   * `mapStore`: chunks it records are not copied again. The source must not
   * have been written except through the old job's `device`.
   * @throws `ECORRUPT` if the map store holds no valid map, `EINVAL` if it
   *   describes another range or chunk size, and what `start` throws.
   */
  static async resume(options: SnapshotCopyJobResumeOptions): Promise<SnapshotCopyJob> {
    const geometry = geometryOf(options);
    const policy = policyOf(options);
    if (isStream(options.destination)) {
      throw new BlockDeviceError('EINVAL', 'a stream destination cannot be resumed');
    }
    if (options.mapStore === undefined) {
      throw new BlockDeviceError('EINVAL', 'resume needs the mapStore the job was started with');
    }
    const { destination, mapStore } = options;
    return withClaimed([options.source] as const, 'SnapshotCopyJob', async ([source]) => {
      const map = await CopyMap.load(geometry, destination, mapStore);
      return new SnapshotCopyJob(source, destination, map, policy, options);
    });
  }

  /**
   * Checks a map store before {@link resume} (no job may be running on it):
   * both slots against their CRC-32 and the geometry `options` give, as
   * `resume` takes them. Reads only.
   * @throws `EINVAL` for bad options or no `mapStore`, `EIO` (with `cause`) if
   *   a store read fails — damage is reported, not thrown.
   */
  static async checkMap(options: SnapshotCopyJobResumeOptions): Promise<CheckReport> {
    const geometry = geometryOf(options);
    if (options.mapStore === undefined)
      throw new BlockDeviceError('EINVAL', 'no mapStore to check');
    return checkMapStore(geometry, options.mapStore);
  }

  /**
   * Checks this job's map store while the job runs: its commits wait while
   * both slots are read, and the slot of its last commit must hold it.
   * @throws `EINVAL` if the job keeps its map in memory only, `EIO` as
   *   {@link SnapshotCopyJob.checkMap}.
   */
  checkMap(): Promise<CheckReport> {
    if (!this.#map.persistent) {
      return Promise.reject(new BlockDeviceError('EINVAL', 'the job has no mapStore to check'));
    }
    return this.#map.betweenCommits((store, gen) => checkMapStore(this.#geometry, store, gen));
  }

  /** The background copier's rate limit in bytes per second (0: unlimited). */
  get rate(): number {
    return this.#pacer.rate;
  }

  /**
   * Changes the background copier's rate limit while the job runs (0:
   * unlimited), from its next run on; a copier waiting on the old budget
   * is woken. Bytes already copied ahead of the old budget still count, at
   * the new rate. The guarantee is the `rate` option's.
   * @throws `EINVAL` unless `bytesPerSecond` is a finite number ≥ 0; the
   *   rate is then unchanged.
   */
  setRate(bytesPerSecond: number): void {
    this.#pacer.setRate(checkRate(bytesPerSecond, 'rate'));
  }

  /** Where the copy stands now. */
  get progress(): CopyProgress {
    const { copierBytes, copyFirstBytes } = this.#engine.counters;
    return {
      copiedBytes: this.#map.copiedBytes,
      totalBytes: this.#geometry.length,
      copierBytes,
      copyFirstBytes,
      queuedWrites: this.#engine.waitingWrites,
    };
  }

  async #run(signal: AbortSignal | undefined): Promise<CopyReport> {
    const started = performance.now();
    const resumedBytes = this.#map.copiedBytes;
    // Let `start` return first: the copy runs in the background.
    await new Promise((resolve) => setImmediate(resolve));
    try {
      if (!this.#map.complete) await this.#engine.run(signal);
      await this.#map.finish();
      await this.#stream?.finish();
    } catch (err) {
      await this.#stream?.abort(err);
      await this.#engine.stop();
      throw err;
    }
    await this.#engine.stop();
    const { copierBytes, copyFirstBytes, queuedWrites } = this.#engine.counters;
    return {
      totalBytes: this.#geometry.length,
      copierBytes,
      copyFirstBytes,
      resumedBytes,
      queuedWrites,
      // To a tenth of a millisecond: the rest is clock noise.
      durationMs: Math.round((performance.now() - started) * 10) / 10,
    };
  }
}

/**
 * `job.device`: the source seen through the job. Its checks (bounds, closed,
 * read-only) are the base class's; I/O goes to the engine, which passes it
 * through once the job has ended.
 */
class CopyJobDevice extends AbstractBlockDevice {
  readonly #source: BlockDevice;
  readonly #engine: CopyEngine;

  constructor(source: BlockDevice, engine: CopyEngine) {
    super('SnapshotCopyJob.device', source.size, source.blockSize, source.readOnly);
    this.#source = source;
    this.#engine = engine;
  }

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    return this.#engine.read(offset, length);
  }

  protected override _readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    return this.#engine.readInto(offset, target);
  }

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    return this.#engine.write(offset, data);
  }

  protected _flush(): Promise<void> {
    return io('source flush', this.#source.flush());
  }

  protected async _close(): Promise<void> {
    // Writes still queued are the application's: they go to the source first.
    await this.#engine.stop();
    await io('source close', this.#source.close());
  }
}

/** What a map without a store flushes: nothing (it never commits). */
const NO_FLUSH = { flush: () => Promise.resolve() };
