import { io, readInto } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { Copier, type CopierChunks } from './copier.js';
import type { CopyMap } from './copy-map.js';
import { RunMover } from './copy-mover.js';
import { type CopyPacer, RUN_BYTES } from './copy-pacer.js';
import type { CopySink } from './copy-sink.js';
import { type HeldWrite, HeldWrites } from './held-writes.js';

/** What a write into a part of the range not yet copied does. */
export type ConflictPolicy = 'copy-first' | 'queue';

/** Counters the job reports. */
export interface CopyCounters {
  copierBytes: number;
  copyFirstBytes: number;
  queuedWrites: number;
}

const PENDING = 0;
const BUSY = 1;
const DONE = 2;

/**
 * The copy of a snapshot range (seed 004): the chunk states and every copy
 * of chunks (one source read, fixed-size chunk writes to the destination, a
 * map commit), started by the background {@link Copier} or by a foreground
 * write; and the foreground write path that keeps the copy a point-in-time
 * image (copy-first or queue). The copier sees the chunk states only
 * through {@link CopierChunks}.
 *
 * A chunk is PENDING (its source bytes are the snapshot's), BUSY (being
 * copied, or its bit being committed), or DONE (durably in the map: the
 * source may change there). A foreground write never touches the source of
 * a chunk that is not DONE.
 */
export class CopyEngine {
  readonly #source: BlockDevice;
  readonly #map: CopyMap;
  readonly #policy: ConflictPolicy;
  readonly #offset: number;
  readonly #length: number;
  readonly #chunkSize: number;
  readonly #state: Uint8Array;
  /** Per BUSY chunk: settles when it is DONE (or the copy of it failed). */
  readonly #busy = new Map<number, Promise<void>>();
  readonly #queue = new HeldWrites();
  /**
   * Writes held back (waiting for their copies, or for an earlier held write
   * they overlap) until their source write has completed: a later write
   * overlapping one waits for that, so overlapping writes reach the source
   * in call order.
   */
  readonly #heldWrites = new Set<{ offset: number; end: number; issued: Promise<void> }>();
  /** Chunks DONE: durably in the map, so the source may change there. */
  #done = 0;
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
    policy: ConflictPolicy,
    pacer: CopyPacer,
    onProgress: () => void,
  ) {
    this.#source = source;
    this.#map = map;
    this.#policy = policy;
    this.#offset = map.geometry.offset;
    this.#length = map.geometry.length;
    this.#chunkSize = map.geometry.chunkSize;
    this.#state = new Uint8Array(map.chunks);
    for (let i = 0; i < map.chunks; i++) {
      if (map.has(i)) {
        this.#state[i] = DONE;
        this.#done++;
      }
    }
    this.#onProgress = onProgress;
    this.#pacer = pacer;
    this.#mover = new RunMover(source, sink, this.#offset, this.#chunkSize, RUN_BYTES);
    const state = this.#state;
    const pending = (c: number): boolean => state[c] === PENDING;
    const chunks: CopierChunks = {
      count: state.length,
      chunkSize: this.#chunkSize,
      isPending: pending,
      firstAwaited: () =>
        this.#queue.length === 0 ? undefined : this.#queue.firstAwaited(pending),
      copy: (first, count, moved) => this.#copyRun(first, count, 'copier', moved),
      copiesInFlight: () => [...this.#busy.values()],
      stopped: () => this.#stopped,
      failure: () => this.#failure,
      fail: (err) => {
        this.#failure = err;
      },
      complete: () => this.#done === state.length,
    };
    this.#copier = new Copier(chunks, sink, pacer);
  }

  /** Writes waiting in the queue now. */
  get waitingWrites(): number {
    return this.#queue.length;
  }

  /** Whether the foreground path no longer guards the snapshot (finished, or stopped or failed without a map store). */
  get passThrough(): boolean {
    if (this.#done === this.#state.length) return true;
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
        if (this.#state[c] === PENDING) copies.push(this.#copyRun(c, 1, 'copy-first'));
      }
      await Promise.all(copies).catch(() => {});
    }
    await this.#drainQueue(this.passThrough);
    await this.#queue.drained();
  }

  // ---------------------------------------------------------- chunk copies

  /**
   * Copies chunks `first..first+count-1` (all PENDING): one source read,
   * fixed-size chunk writes to the destination, then a map commit; only then
   * are they DONE and the writes waiting on them let go.
   */
  #copyRun(
    first: number,
    count: number,
    by: 'copier' | 'copy-first',
    moved?: () => void,
  ): Promise<void> {
    for (let c = first; c < first + count; c++) this.#state[c] = BUSY;
    // Every copy counts toward the rate budget, paced or not.
    this.#pacer.spend(
      Math.min(this.#length, (first + count) * this.#chunkSize) - first * this.#chunkSize,
    );
    const done = this.#copyRunNow(first, count, by, moved);
    const settled = done.catch(() => {});
    for (let c = first; c < first + count; c++) this.#busy.set(c, settled);
    return done.finally(() => {
      for (let c = first; c < first + count; c++) this.#busy.delete(c);
    });
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
      await this.#mover.move(start, end);
      moved?.();
      for (let c = first; c < first + count; c++) this.#map.set(c);
      await this.#map.commit();
    } catch (err) {
      for (let c = first; c < first + count; c++) this.#state[c] = PENDING;
      this.#failure ??= err;
      if (this.#map.persistent) {
        // Resumable: a held write still waiting for a chunk not copied fails
        // with the copy (no copier is left to take it); the rest go on.
        const refused = this.#queue.take((a, b) => !this.#allDone(a, b));
        for (const entry of refused) entry.reject(wrapIO('copy before the held write', err));
        void this.#drainQueue(false);
      } else {
        // The copy cannot finish now: let every held write go to the source.
        void this.#drainQueue(true);
      }
      throw err;
    }
    for (let c = first; c < first + count; c++) this.#state[c] = DONE;
    this.#done += count;
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
    const span = this.#chunksOf(offset, data.length);
    // Behind an earlier queued write it overlaps, wherever it lands and
    // whether or not the job still runs.
    if (this.#queue.overlaps(offset, data.length)) {
      return this.#enqueue(offset, data, span?.first ?? 0, span?.last ?? -1);
    }
    if (span === undefined || this.passThrough) return this.#writeSource(offset, data);
    const { first, last } = span;
    if (this.#allDone(first, last)) return this.#writeSource(offset, data);
    // Once stopped or failed (the copier is gone), a resumable job keeps the
    // map true by copying first.
    const copierRuns = !this.#stopped && this.#failure === undefined;
    if (this.#policy === 'queue' && copierRuns) return this.#enqueue(offset, data, first, last);
    // Copy-first (seed 004, claims 23, 46): copy what is still PENDING, wait for what is BUSY.
    const waits: Promise<void>[] = [];
    let c = first;
    while (c <= last) {
      if (this.#state[c] === PENDING) {
        let n = 1;
        while (c + n <= last && this.#state[c + n] === PENDING) n++;
        waits.push(this.#copyRun(c, n, 'copy-first'));
        c += n;
      } else {
        if (this.#state[c] === BUSY) waits.push(this.#busy.get(c)!);
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
        if (!this.passThrough && !this.#allDone(first, last)) {
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
    const ready = this.#queue.release((a, b) => this.#allDone(a, b), force || this.passThrough);
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

  #allDone(first: number, last: number): boolean {
    for (let c = first; c <= last; c++) if (this.#state[c] !== DONE) return false;
    return true;
  }

  /** The chunks a source byte range touches, or undefined if it misses the copy range. */
  #chunksOf(offset: number, length: number): { first: number; last: number } | undefined {
    const from = Math.max(offset, this.#offset);
    const to = Math.min(offset + length, this.#offset + this.#length);
    if (from >= to) return undefined;
    return {
      first: Math.floor((from - this.#offset) / this.#chunkSize),
      last: Math.floor((to - 1 - this.#offset) / this.#chunkSize),
    };
  }
}
