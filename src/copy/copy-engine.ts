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
import { type HeldWrite, HeldWrites } from './held-writes.js';
import { SavedOldBytes } from './saved-old-bytes.js';

/** Counters the job reports. */
export interface CopyCounters {
  copierBytes: number;
  copyFirstBytes: number;
  queuedWrites: number;
}

/**
 * The copy of a snapshot range (seed 004): every copy of chunks (one
 * source read, fixed-size chunk writes to the destination, a map commit),
 * which moves them through their {@link ChunkStates}, started by the
 * background {@link Copier} or by a foreground write; and the foreground write path that keeps the copy a point-in-time
 * image (copy-first or queue). The copier sees the chunk states only
 * through {@link CopierChunks}.
 *
 * A foreground write never touches the source of a chunk whose old bytes
 * are not out of its way ({@link ChunkStates.writable}): with a map store,
 * until the chunk is DONE (in the destination and durably in the map); without
 * one, until its old bytes are read — the write then overlaps the copy's
 * destination write instead of waiting for it (docs/ARCHITECTURE.md,
 * "Copy job pacing").
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
  /** Old bytes saved for writes into chunks not yet captured (only when `#early`). */
  readonly #saved: SavedOldBytes;
  /**
   * Writes held back (waiting for their copies, or for an earlier held write
   * they overlap) until their source write has completed: a later write
   * overlapping one waits for that, so overlapping writes reach the source
   * in call order.
   */
  readonly #heldWrites = new Set<{ offset: number; end: number; issued: Promise<void> }>();
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

  constructor(
    source: BlockDevice,
    sink: CopySink,
    map: CopyMap,
    policy: CopyConflictPolicy,
    pacer: CopyPacer,
    onProgress: () => void,
  ) {
    this.#source = source;
    this.#map = map;
    this.#policy = policy;
    const { offset, length, chunkSize } = map.geometry;
    this.#start = offset;
    this.#length = length;
    this.#chunkSize = chunkSize;
    this.#states = new ChunkStates(map.geometry, map.chunks, (i) => map.has(i));
    this.#saved = new SavedOldBytes(source, offset, chunkSize, this.#states, pacer);
    this.#early = !map.persistent;
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
        this.#queue.length === 0 ? undefined : this.#queue.firstAwaited(pending),
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

  /** Copies every chunk not yet DONE ({@link Copier.run}); rejects with the first copy failure. */
  run(signal: AbortSignal | undefined): Promise<void> {
    return this.#copier.run(signal);
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
    await this.#drainQueue(this.passThrough);
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
        if (this.#early) void this.#drainQueue(false);
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
        void this.#drainQueue(false);
      } else {
        // The copy cannot finish now: let every held write go to the source.
        this.#saved.clear();
        void this.#drainQueue(true);
      }
      throw err;
    }
    this.#states.end(first, count, true);
    if (by === 'copier') this.counters.copierBytes += end - start;
    else this.counters.copyFirstBytes += end - start;
    this.#onProgress();
    void this.#drainQueue(false);
  }

  // ------------------------------------------------------------ foreground

  /** Reads the newest data: the source, with writes still queued laid over it. */
  read(offset: number, length: number): Promise<Uint8Array> {
    // While the copy runs, the copier makes way for the application's I/O.
    if (this.passThrough) return this.#readNow(offset, length);
    return this.#pacer.foreground(this.#readNow(offset, length));
  }

  async #readNow(offset: number, length: number): Promise<Uint8Array> {
    // Taken at the call: a queued write applied while the source read is in
    // flight may be missing from what it returns.
    const queued = this.#queue.length === 0 ? [] : this.#queue.overlapping(offset, length);
    const data = await io('source read', this.#source.read(offset, length));
    if (queued.length === 0) return data;
    const out = new Uint8Array(length);
    out.set(data);
    HeldWrites.overlay(queued, offset, out);
    return out;
  }

  /** `read` into the caller's buffer: the source reads straight into it, held writes laid over it. */
  async readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    // Taken at the call, as in read.
    const queued = this.#queue.length === 0 ? [] : this.#queue.overlapping(offset, target.length);
    await io('source read', readInto(this.#source, offset, target));
    if (queued.length > 0) HeldWrites.overlay(queued, offset, target);
    return target;
  }

  /** A foreground write: straight through, or after its chunks are copied, or queued (the policy). */
  write(offset: number, data: Uint8Array): Promise<void> {
    if (this.passThrough && this.#heldWrites.size === 0 && this.#queue.length === 0) {
      return this.#writeSource(offset, data);
    }
    return this.#pacer.foreground(this.#writeNow(offset, data));
  }

  #writeNow(offset: number, data: Uint8Array): Promise<void> {
    const end = offset + data.length;
    const earlier: Promise<void>[] = [];
    for (const w of this.#heldWrites) {
      if (w.offset < end && offset < w.end) earlier.push(w.issued);
    }
    if (earlier.length === 0) return this.#writeInOrder(offset, data, false);
    // Registered now, at the call, so writes called after it wait for it in turn.
    const done = this.#register(offset, end);
    return Promise.all(earlier)
      .then(() => this.#writeInOrder(offset, data, true))
      .finally(done);
  }

  /** Registers a write that waits; returns what ends its registration. */
  #register(offset: number, end: number): () => void {
    let issue!: () => void;
    const entry = {
      offset,
      end,
      issued: new Promise<void>((resolve) => {
        issue = resolve;
      }),
    };
    this.#heldWrites.add(entry);
    return () => {
      this.#heldWrites.delete(entry);
      issue();
    };
  }

  /** A write no earlier overlapping write is still waiting ahead of (`registered`: it is in the wait set already). */
  #writeInOrder(offset: number, data: Uint8Array, registered: boolean): Promise<void> {
    const states = this.#states;
    const early = this.#early;
    const span = states.chunksOf(offset, data.length);
    // Behind an earlier queued write it overlaps, wherever it lands and
    // whether or not the job still runs.
    if (this.#queue.overlaps(offset, data.length)) {
      return this.#enqueue(offset, data, span?.first ?? 0, span?.last ?? -1);
    }
    if (span === undefined || this.passThrough) return this.#writeSource(offset, data);
    const { first, last } = span;
    if (states.writable(first, last, early)) return this.#writeSource(offset, data);
    // Once stopped or failed (the copier is gone), a resumable job keeps the
    // map true by copying first.
    const copierRuns = !this.#stopped && this.#failure === undefined;
    if (this.#policy === 'queue' && copierRuns) return this.#enqueue(offset, data, first, last);
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
    const done = registered ? undefined : this.#register(offset, offset + data.length);
    const from = Math.max(offset, this.#start) - this.#start;
    const to = Math.min(offset + data.length, this.#start + this.#length) - this.#start;
    const written = this.#saved.save(from, to).then(
      (saved) =>
        saved ? this.#writeSource(offset, data) : this.#copyFirst(offset, data, first, last, true),
      (err: unknown) => {
        // As a failed copy-first copy: the job fails, the application's write lands.
        this.#failure ??= err;
        this.#saved.clear();
        this.#pacer.wake();
        void this.#drainQueue(true);
        return this.#writeSource(offset, data);
      },
    );
    return done === undefined ? written : written.finally(done);
  }

  /**
   * Copy-first (seed 004, claims 23, 46): copies what is still PENDING,
   * waits for what is being copied (its old bytes read, when `early`), then
   * writes.
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
    const done = registered ? undefined : this.#register(offset, offset + data.length);
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
    return done === undefined ? written : written.finally(done);
  }

  #enqueue(offset: number, data: Uint8Array, first: number, last: number): Promise<void> {
    this.counters.queuedWrites++;
    const done = new Promise<void>((resolve, reject) => {
      const entry: HeldWrite = {
        offset,
        data,
        firstChunk: first,
        lastChunk: last,
        applying: false,
        resolve,
        reject,
      };
      this.#queue.push(entry);
    });
    this.#onProgress();
    // The copier takes the chunks this write waits for next.
    this.#pacer.wake();
    void this.#drainQueue(this.passThrough);
    return done;
  }

  /** Applies the queued writes that may go now, each once its source write is issued. */
  async #drainQueue(force: boolean): Promise<void> {
    const ready = this.#queue.release(
      (a, b) => this.#states.writable(a, b, this.#early),
      force || this.passThrough,
    );
    await Promise.all(
      ready.map(async (entry) => {
        try {
          await this.#writeSource(entry.offset, entry.data);
          entry.resolve();
        } catch (err) {
          entry.reject(err);
        } finally {
          this.#queue.remove(entry);
        }
        // Its removal may unblock a later write that overlapped it.
        await this.#drainQueue(force);
      }),
    );
  }

  #writeSource(offset: number, data: Uint8Array): Promise<void> {
    return this.#source.write(offset, data).catch((err: unknown) => {
      throw wrapIO('source write', err);
    });
  }
}
