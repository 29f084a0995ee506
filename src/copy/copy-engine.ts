import { io, readInto } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { ChunkStates } from './chunk-states.js';
import { Copier, type CopierChunks } from './copier.js';
import type { CopyMap } from './copy-map.js';
import { RunMover } from './copy-mover.js';
import type { CopyConflictPolicy } from './copy-options.js';
import { type CopyPacer, RUN_BYTES } from './copy-pacer.js';
import type { CopySink } from './copy-sink.js';
import { HeldWrites } from './held-writes.js';
import { QueuedWrites } from './queued-writes.js';
import { SavedOldBytes } from './saved-old-bytes.js';
import { type SourceWriter, sourceWriter } from './source-writer.js';
import { releasing, WriteOrder } from './write-order.js';

/** Counters the job reports. */
export interface CopyCounters {
  copierBytes: number;
  copyFirstBytes: number;
  queuedWrites: number;
}

/**
 * The copy of a snapshot range (seed 004): every copy of chunks (one source
 * read, fixed-size chunk writes to the destination, a map commit), which
 * moves them through their {@link ChunkStates}, started by the background
 * {@link Copier} or by a foreground write; and the foreground write path
 * that keeps the copy a point-in-time image (copy-first or queue).
 *
 * A foreground write never touches source bytes whose old value is not out
 * of its way: with a map store, until their chunk is DONE (in the
 * destination and durably in the map); without one, until a copy has read
 * them (CAPTURED) or they are saved in memory ({@link SavedOldBytes}),
 * whichever comes first (docs/ARCHITECTURE.md, "Copy job pacing").
 */
export class CopyEngine {
  readonly #source: BlockDevice;
  readonly #map: CopyMap;
  readonly #policy: CopyConflictPolicy;
  /** Source offset of range byte 0, and the range's length. */
  readonly #start: number;
  readonly #length: number;
  readonly #chunkSize: number;
  readonly #states: ChunkStates;
  /**
   * Whether a write may go once its chunks' old bytes are read (CAPTURED):
   * only without a map store, where nothing durable can call a chunk
   * uncopied after a crash (with one, the map's ordering rule needs DONE).
   */
  readonly #early: boolean;
  readonly #queue = new HeldWrites();
  /** When the `'queue'` policy's writes (in `#queue`) leave it. */
  readonly #queued: QueuedWrites;
  /** Old bytes saved for writes into chunks not yet captured (only when `#early`). */
  readonly #saved: SavedOldBytes;
  /** Held writes, so that overlapping ones reach the source in call order. */
  readonly #order = new WriteOrder();
  #stopped = false;
  /**
   * Set once a copy failed: the job can no longer finish. Without a map
   * store every foreground write then passes through; with one, writes into
   * parts not yet copied still copy them first (see {@link passThrough}).
   */
  #failure: unknown;
  readonly counters: CopyCounters = { copierBytes: 0, copyFirstBytes: 0, queuedWrites: 0 };
  readonly #onProgress: () => void;
  readonly #mover: RunMover;
  readonly #pacer: CopyPacer;
  readonly #copier: Copier;
  /** A foreground write to the source: `data` is the job device's private copy, handed over uncopied. */
  readonly #writeSource: SourceWriter;

  constructor(
    source: BlockDevice,
    sink: CopySink,
    map: CopyMap,
    policy: CopyConflictPolicy,
    pacer: CopyPacer,
    onProgress: () => void,
  ) {
    this.#source = source;
    this.#writeSource = sourceWriter(source);
    this.#map = map;
    this.#policy = policy;
    const { offset, length, chunkSize } = map.geometry;
    this.#start = offset;
    this.#length = length;
    this.#chunkSize = chunkSize;
    this.#states = new ChunkStates(map.geometry, map.chunks, (i) => map.has(i));
    this.#early = !map.persistent;
    this.#saved = new SavedOldBytes(source, offset, chunkSize, this.#states, pacer);
    this.#queued = new QueuedWrites(this.#queue, {
      writable: (a, b) => this.#states.writable(a, b, this.#early),
      passThrough: () => this.passThrough,
      save: this.#early ? (at, length) => this.#saveOld(at, length) : undefined,
      fail: (err) => this.#saveFailed(err),
      queued: () => {
        this.counters.queuedWrites++;
        this.#onProgress();
      },
      // The copier takes the chunks this write waits for next.
      awaitCopy: () => this.#pacer.wake(),
      writeSource: (at, data) => this.#writeSource(at, data),
    });
    this.#onProgress = onProgress;
    this.#pacer = pacer;
    this.#mover = new RunMover(source, sink, offset, chunkSize, RUN_BYTES);
    const states = this.#states;
    const pending = (c: number): boolean => states.isPending(c);
    const chunks: CopierChunks = {
      count: states.count,
      chunkSize: this.#chunkSize,
      isPending: pending,
      firstAwaited: () =>
        this.#queue.length === 0 ? undefined : this.#queue.firstAwaited(pending, this.#early),
      copy: (first, count, moved) => this.#copyRun(first, count, 'copier', moved),
      copiesInFlight: () => states.copiesInFlight(),
      stopped: () => this.#stopped,
      failure: () => this.#failure,
      fail: (err) => {
        this.#failure = err;
      },
      complete: () => states.complete,
    };
    this.#copier = new Copier(chunks, sink, pacer);
  }

  /** Writes waiting in the queue now. */
  get waitingWrites(): number {
    return this.#queue.length;
  }

  /** Whether the foreground path no longer guards the snapshot (finished, or stopped or failed without a map store). */
  get passThrough(): boolean {
    if (this.#states.complete) return true;
    // A stopped or failed job with a map store stays resumable: writes into
    // chunks not yet copied still copy them first, so the durable map never
    // calls a chunk uncopied whose source changed, and resume stays exact.
    if (this.#map.persistent) return false;
    return this.#stopped || this.#failure !== undefined;
  }

  /** Copies every chunk not yet DONE ({@link Copier.run}); rejects with the first copy failure. Once all are, the saved bytes' slabs are let go. */
  run(signal: AbortSignal | undefined): Promise<void> {
    return this.#copier.run(signal).finally(() => this.#states.complete && this.#saved.clear());
  }

  /** Stops guarding the snapshot: every queued write is applied, and later writes pass through. */
  async stop(): Promise<void> {
    this.#stopped = true;
    // A copier waiting on its rate budget ends now.
    this.#pacer.wake();
    if (!this.passThrough) {
      // Resumable: the held writes' chunks are copied first, then the
      // writes are released as those copies complete.
      const copies: Promise<void>[] = [];
      for (const c of new Set(this.#queue.awaitedChunks())) {
        if (this.#states.isPending(c)) copies.push(this.#copyRun(c, 1, 'copy-first'));
      }
      await Promise.all(copies).catch(() => {});
    }
    await this.#queued.drain(this.passThrough);
    await this.#queue.drained();
    if (this.passThrough) this.#saved.clear();
  }

  // ---------------------------------------------------------- chunk copies

  /**
   * Copies chunks `first..first+count-1` (all PENDING): one source read,
   * fixed-size chunk writes to the destination, then a map commit; only then
   * are they DONE. Writes waiting on them are let go then, or, without a map
   * store, as soon as the source read has their old bytes.
   */
  #copyRun(
    first: number,
    count: number,
    by: 'copier' | 'copy-first',
    moved?: () => void,
  ): Promise<void> {
    // Every copy counts toward the rate budget, paced or not.
    this.#pacer.spend(
      Math.min(this.#length, (first + count) * this.#chunkSize) - first * this.#chunkSize,
    );
    let ended!: () => void;
    this.#states.begin(
      first,
      count,
      new Promise<void>((resolve) => {
        ended = resolve;
      }),
    );
    return this.#copyRunNow(first, count, by, moved).finally(ended);
  }

  async #copyRunNow(
    first: number,
    count: number,
    by: 'copier' | 'copy-first',
    moved: (() => void) | undefined,
  ): Promise<void> {
    const cs = this.#chunkSize;
    const start = first * cs;
    const end = Math.min(this.#length, (first + count) * cs);
    try {
      await this.#mover.move(start, end, (run) => {
        // In the same turn as the capture: no save adds to these chunks after it.
        this.#saved.restore(first, count, start, run);
        this.#states.capture(first, count);
        if (this.#early) void this.#queued.drain(false);
      });
      moved?.();
      for (let c = first; c < first + count; c++) this.#map.set(c);
      await this.#map.commit();
    } catch (err) {
      this.#states.end(first, count, false);
      this.#failure ??= err;
      if (this.#map.persistent) {
        // Resumable: a held write still waiting for a chunk not copied fails
        // with the copy (no copier is left to take it); the rest go on.
        const refused = this.#queue.take((a, b) => !this.#states.allDone(a, b));
        for (const entry of refused) entry.reject(wrapIO('copy before the held write', err));
        void this.#queued.drain(false);
      } else {
        // The copy cannot finish now: let every held write go to the source.
        this.#saved.clear();
        void this.#queued.drain(true);
      }
      throw err;
    }
    this.#states.end(first, count, true);
    if (by === 'copier') this.counters.copierBytes += end - start;
    else this.counters.copyFirstBytes += end - start;
    this.#onProgress();
    void this.#queued.drain(false);
  }

  // ------------------------------------------------------------ foreground

  /** Reads the newest data: the source, with writes still queued laid over it. */
  read(offset: number, length: number): Promise<Uint8Array> {
    // While the copy runs, the copier makes way for the application's I/O.
    if (this.passThrough) return this.#readNow(offset, length);
    return this.#pacer.foreground(this.#readNow(offset, length));
  }

  #readNow(offset: number, length: number): Promise<Uint8Array> {
    return this.#queued.read(offset, length, () =>
      io('source read', this.#source.read(offset, length)),
    );
  }

  /** `read` into the caller's buffer: the source reads straight into it, held writes laid over it. */
  readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    return this.#queued.readInto(offset, target, () =>
      io('source read', readInto(this.#source, offset, target)),
    );
  }

  /** A foreground write: straight through, or after its chunks are copied, or queued (the policy). `data` is handed over (the job device's private copy): unchanged until this settles. */
  write(offset: number, data: Uint8Array): Promise<void> {
    if (this.passThrough && this.#order.size === 0 && this.#queue.length === 0) {
      return this.#writeSource(offset, data);
    }
    return this.#pacer.foreground(this.#writeNow(offset, data));
  }

  #writeNow(offset: number, data: Uint8Array): Promise<void> {
    const end = offset + data.length;
    const earlier = this.#order.ahead(offset, end);
    if (earlier.length === 0) return this.#writeInOrder(offset, data, false);
    // Held now, at the call, so writes called after it wait for it in turn.
    const done = this.#order.hold(offset, end);
    return Promise.all(earlier)
      .then(() => this.#writeInOrder(offset, data, true))
      .finally(done);
  }

  /** A write no earlier overlapping write is still waiting ahead of (`registered`: it is in the wait set already). */
  #writeInOrder(offset: number, data: Uint8Array, registered: boolean): Promise<void> {
    const states = this.#states;
    const early = this.#early;
    const span = states.chunksOf(offset, data.length);
    // Behind an earlier queued write it overlaps, wherever it lands, job running or not.
    if (this.#queue.overlaps(offset, data.length)) {
      return this.#queued.enqueue(offset, data, span?.first ?? 0, span?.last ?? -1);
    }
    if (span === undefined || this.passThrough) return this.#writeSource(offset, data);
    const { first, last } = span;
    if (states.writable(first, last, early)) return this.#writeSource(offset, data);
    // Stopped or failed (no copier), a resumable job keeps the map true by copying first.
    const copierRuns = !this.#stopped && this.#failure === undefined;
    if (this.#policy === 'queue' && copierRuns)
      return this.#queued.enqueue(offset, data, first, last);
    if (early) return this.#saveFirst(offset, data, first, last, registered);
    return this.#copyFirst(offset, data, first, last, registered);
  }

  /**
   * Copy-first without a map store: the old bytes this write overwrites in
   * chunks not yet captured are saved in memory (one source read of the
   * write's own bytes), then the write goes; the copy of those chunks lays
   * them back (`saved-old-bytes.ts`). Past the memory limit, whole chunks
   * are copied first instead.
   */
  #saveFirst(
    offset: number,
    data: Uint8Array,
    first: number,
    last: number,
    registered: boolean,
  ): Promise<void> {
    // Registered before the save reads: an overlapping write called later
    // waits until this one's source write completed, so no source write
    // lands on these bytes while their old value is being read.
    const done = registered ? undefined : this.#order.hold(offset, offset + data.length);
    const written = this.#saveOld(offset, data.length).then(
      (saved) =>
        saved ? this.#writeSource(offset, data) : this.#copyFirst(offset, data, first, last, true),
      (err: unknown) => {
        this.#saveFailed(err);
        return this.#writeSource(offset, data);
      },
    );
    return done === undefined ? written : releasing(written, done);
  }

  /**
   * Copy-first (seed 004, claims 23, 46): copies what is still PENDING, waits
   * for what is being copied (its old bytes read, when `early`), then writes.
   */
  #copyFirst(
    offset: number,
    data: Uint8Array,
    first: number,
    last: number,
    registered: boolean,
  ): Promise<void> {
    const states = this.#states;
    const early = this.#early;
    const waits: Promise<void>[] = [];
    let c = first;
    while (c <= last) {
      if (states.isPending(c)) {
        let n = 1;
        while (c + n <= last && states.isPending(c + n)) n++;
        const copy = this.#copyRun(c, n, 'copy-first');
        if (early) {
          // Its failure fails the job (the copier reports it), not this write.
          copy.catch(() => {});
          for (let k = c; k < c + n; k++) waits.push(states.waitFor(k, true)!);
        } else {
          waits.push(copy);
        }
        c += n;
      } else {
        const wait = states.waitFor(c, early);
        if (wait !== undefined) waits.push(wait);
        c++;
      }
    }
    const done = registered ? undefined : this.#order.hold(offset, offset + data.length);
    // A failed copy ends the job (its `done` rejects). Without a map store
    // the application's write still lands; with one it fails, as landing
    // would make a resume copy the new bytes into the snapshot.
    let copyFailure: unknown;
    const written = Promise.all(waits)
      .catch((err: unknown) => {
        copyFailure = err;
      })
      .then(() => {
        if (!this.passThrough && !states.writable(first, last, early)) {
          throw new BlockDeviceError('EIO', 'copy-first: the range was not copied', {
            cause: copyFailure ?? this.#failure,
          });
        }
        return this.#writeSource(offset, data);
      });
    return done === undefined ? written : releasing(written, done);
  }

  /** Saves the old bytes a write of source bytes `[offset, offset + length)` overwrites in the range (`saved-old-bytes.ts`). */
  #saveOld(offset: number, length: number): Promise<boolean> {
    const from = Math.max(offset, this.#start) - this.#start;
    const to = Math.min(offset + length, this.#start + this.#length) - this.#start;
    return from < to ? this.#saved.save(from, to) : Promise.resolve(true);
  }

  /** A save's source read failed: as a failed copy, the job fails, and the application's writes land. */
  #saveFailed(err: unknown): void {
    this.#failure ??= err;
    this.#saved.clear();
    this.#pacer.wake();
    void this.#queued.drain(true);
  }
}
