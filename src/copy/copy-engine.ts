import { io, readInto } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import type { CopyMap } from './copy-map.js';
import { RunMover } from './copy-mover.js';
import { type CopyPacer, RUN_BYTES } from './copy-pacer.js';
import { type HeldWrite, HeldWrites } from './held-writes.js';

/** What a write into a part of the range not yet copied does. */
export type ConflictPolicy = 'copy-first' | 'queue';

/** Where copied chunks go: a device, or a sink that frames them into a stream. */
export interface CopySink {
  /** Writes the chunk whose range byte `rangeOffset` starts at. */
  write(rangeOffset: number, data: Uint8Array): Promise<void>;
  /**
   * Writes consecutive chunks, the first at range byte `rangeOffset`, in one
   * vectored write of chunk-sized blocks, taking the buffers over (the
   * engine leaves them alone until it settles); absent: one `write` per chunk.
   */
  writeBlocks?(rangeOffset: number, chunks: readonly Uint8Array[]): Promise<void>;
  /** Resolves when the sink can take another run (back-pressure); absent: always. */
  ready?(): Promise<void>;
}

/** Counters the job reports. */
export interface CopyCounters {
  copierBytes: number;
  copyFirstBytes: number;
  queuedWrites: number;
}

/**
 * Runs in flight for the chunks queued writes wait for: each is a
 * write's latency, so they are not paced, but a queue of thousands of
 * writes does not start thousands of copies at once.
 */
const AWAITED_RUNS = 32;

const PENDING = 0;
const BUSY = 1;
const DONE = 2;

/**
 * The copy of a snapshot range (seed 004): a copier working through the
 * chunks still to copy in ascending order, coalesced into large source
 * reads and written to the destination as fixed-size chunks, with chunks a
 * queued write waits for taken first; and the foreground write path that
 * keeps the copy a point-in-time image (copy-first or queue). The copier's
 * own runs are paced by a {@link CopyPacer} (fewer, smaller runs while the
 * application's I/O is in flight; a rate limit); copies a foreground write
 * waits for are not.
 *
 * A chunk is PENDING (its source bytes are the snapshot's), BUSY (being
 * copied, or its bit being committed), or DONE (durably in the map: the
 * source may change there). A foreground write never touches the source of
 * a chunk that is not DONE.
 */
export class CopyEngine {
  readonly #source: BlockDevice;
  readonly #sink: CopySink;
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
  #cursor = 0;
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

  constructor(
    source: BlockDevice,
    sink: CopySink,
    map: CopyMap,
    policy: ConflictPolicy,
    pacer: CopyPacer,
    onProgress: () => void,
  ) {
    this.#source = source;
    this.#sink = sink;
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

  // ---------------------------------------------------------------- copier

  /**
   * Copies every chunk not yet DONE; resolves when all are, rejects with the
   * first copy failure. Each turn starts, in this order: a run for the
   * chunks a queued write waits for (up to {@link AWAITED_RUNS} in flight,
   * never paced); else a run from the cursor, when the pacer's shape and
   * budget allow; else it waits for a run to end or the pacer to wake it.
   */
  async run(signal: AbortSignal | undefined): Promise<void> {
    // Copier runs until committed; and, of those, the ones whose data are
    // still moving, by kind: a run waiting for its map commit (a group
    // commit, shared) no longer holds the disks, so it does not count
    // against the pacer's runs in flight.
    const runs = new Set<Promise<void>>();
    const moving = { background: new Set<Promise<void>>(), awaited: new Set<Promise<void>>() };
    let failure: unknown;
    const launch = (run: { first: number; count: number }, kind: Set<Promise<void>>): void => {
      let moved!: () => void;
      const data = new Promise<void>((resolve) => {
        moved = resolve;
      }).finally(() => kind.delete(data));
      kind.add(data);
      const copy = this.#copyRun(run.first, run.count, 'copier', moved)
        .catch((err: unknown) => {
          failure ??= err;
        })
        .finally(() => {
          runs.delete(copy);
          moved();
        });
      runs.add(copy);
    };
    const pacer = this.#pacer;
    // An abort ends a wait on the budget at once, not when its timer fires.
    const wake = (): void => pacer.wake();
    signal?.addEventListener('abort', wake);
    try {
      for (;;) {
        // Stopped: `job.device` was closed; the copy ends unfinished.
        const ended = signal?.aborted || this.#stopped;
        if (ended || failure !== undefined || this.#failure !== undefined) break;
        if (this.#sink.ready !== undefined) await this.#sink.ready();
        if (moving.awaited.size < AWAITED_RUNS) {
          const run = this.#awaitedRun();
          if (run !== undefined) {
            launch(run, moving.awaited);
            continue;
          }
        }
        const shape = pacer.shape();
        if (moving.background.size < shape.runs) {
          const delay = pacer.delay();
          if (delay > 0) {
            // Over budget: wait for it, or for a queued write, a new rate, the end.
            await pacer.wait(delay);
            continue;
          }
          const run = this.#nextRun(shape.bytes);
          if (run !== undefined) {
            launch(run, moving.background);
            continue;
          }
          if (runs.size === 0) {
            // Copy-first copies may still be BUSY on chunks the copier skipped.
            if (this.#busy.size === 0) break;
            await Promise.race([...this.#busy.values(), pacer.wait(Infinity)]);
            pacer.wake();
            continue;
          }
        }
        await Promise.race([
          ...runs,
          ...moving.background,
          ...moving.awaited,
          pacer.wait(Infinity),
        ]);
        // The wait above must not outlive this turn.
        pacer.wake();
      }
      await Promise.all(runs);
    } finally {
      signal?.removeEventListener('abort', wake);
    }
    if (failure !== undefined) {
      this.#failure = failure;
      throw failure;
    }
    if (signal?.aborted) throw signal.reason;
    // A copy that failed (a copy-first one, say) before the device was
    // closed is reported as that failure, not as the close.
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#stopped && this.#done < this.#state.length) {
      throw new BlockDeviceError('ECLOSED', 'job.device was closed before the copy finished');
    }
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

  /**
   * The PENDING chunks a queued write waits for (the first such write in
   * arrival order, from its first such chunk to its last chunk, at most
   * {@link RUN_BYTES}): one short copy releases it.
   */
  #awaitedRun(): { first: number; count: number } | undefined {
    if (this.#queue.length === 0) return undefined;
    const state = this.#state;
    const waitedFor = this.#queue.firstAwaited((c) => state[c] === PENDING);
    if (waitedFor === undefined) return undefined;
    const most = Math.max(1, Math.floor(RUN_BYTES / this.#chunkSize));
    let count = 1;
    while (
      count < most &&
      waitedFor.first + count <= waitedFor.last &&
      state[waitedFor.first + count] === PENDING
    ) {
      count++;
    }
    return { first: waitedFor.first, count };
  }

  /** The next run of PENDING chunks from the cursor, of at most `maxBytes` (one chunk at least). */
  #nextRun(maxBytes: number): { first: number; count: number } | undefined {
    const state = this.#state;
    while (this.#cursor < state.length && state[this.#cursor] !== PENDING) this.#cursor++;
    if (this.#cursor >= state.length) return undefined;
    const first = this.#cursor;
    const most = Math.max(1, Math.floor(maxBytes / this.#chunkSize));
    let count = 1;
    while (count < most && first + count < state.length && state[first + count] === PENDING)
      count++;
    return { first, count };
  }

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
