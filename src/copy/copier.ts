import { BlockDeviceError } from '../errors.js';
import { type CopyPacer, RUN_BYTES } from './copy-pacer.js';
import type { CopySink } from './copy-sink.js';

/**
 * Runs in flight for the chunks queued writes wait for: each is a
 * write's latency, so they are not paced, but a queue of thousands of
 * writes does not start thousands of copies at once.
 */
const AWAITED_RUNS = 32;

/** Consecutive chunks `first..first+count-1`, copied as one run. */
interface ChunkRun {
  readonly first: number;
  readonly count: number;
}

/**
 * What the copier sees of the copy engine's chunk states (`copy-engine.ts`):
 * it chooses runs and starts their copies, while the states, the held
 * writes and the failure stay the engine's to change.
 */
export interface CopierChunks {
  /** Chunks in the copy range. */
  readonly count: number;
  /** Bytes per chunk (the last chunk may be short). */
  readonly chunkSize: number;
  /** Whether the chunk is PENDING: not copied, and no copy of it started. */
  isPending(chunk: number): boolean;
  /** The first PENDING chunk a queued write waits for, with that write's last chunk. */
  firstAwaited(): { first: number; last: number } | undefined;
  /** Copies PENDING chunks as the copier; `moved` is called once their data left the disks. */
  copy(first: number, count: number, moved: () => void): Promise<void>;
  /** One promise per BUSY chunk, settling when its copy ends (copy-first ones included). */
  copiesInFlight(): Promise<void>[];
  /** Whether `job.device` was closed: the copy ends unfinished. */
  stopped(): boolean;
  /** The first copy failure (the copier's or a copy-first one), or undefined. */
  failure(): unknown;
  /** Records the copier's failure as the job's. */
  fail(err: unknown): void;
  /** Whether every chunk is DONE. */
  complete(): boolean;
}

/**
 * The background copier of a copy job (seed 004): works through the chunks
 * still to copy in ascending order from a cursor, coalesced into runs of up
 * to {@link RUN_BYTES}, with the chunks a queued write waits for taken first.
 * Its own runs are paced by a {@link CopyPacer} (fewer, smaller runs while
 * the application's I/O is in flight; a rate limit); the runs a queued write
 * waits for are not. It only chooses runs: every copy goes through
 * {@link CopierChunks.copy}, which keeps the chunk states.
 */
export class Copier {
  readonly #chunks: CopierChunks;
  readonly #sink: CopySink;
  readonly #pacer: CopyPacer;
  /** The chunks before it were BUSY or DONE when it passed them: runs go in ascending order. */
  #cursor = 0;

  constructor(chunks: CopierChunks, sink: CopySink, pacer: CopyPacer) {
    this.#chunks = chunks;
    this.#sink = sink;
    this.#pacer = pacer;
  }

  /**
   * Copies every chunk not yet DONE; resolves when all are, rejects with the
   * first copy failure. Each turn starts, in this order: a run for the
   * chunks a queued write waits for (up to {@link AWAITED_RUNS} in flight,
   * never paced); else a run from the cursor, when the pacer's shape and
   * budget allow; else it waits for a run to end or the pacer to wake it.
   */
  async run(signal: AbortSignal | undefined): Promise<void> {
    const chunks = this.#chunks;
    // Copier runs until committed; and, of those, the ones whose data are
    // still moving, by kind: a run waiting for its map commit (a group
    // commit, shared) no longer holds the disks, so it does not count
    // against the pacer's runs in flight.
    const runs = new Set<Promise<void>>();
    const moving = { background: new Set<ChunkRun>(), awaited: new Set<ChunkRun>() };
    let failure: unknown;
    const pacer = this.#pacer;
    // Every run's end (and its data leaving the disks) wakes the loop through
    // the pacer, its one waiter: one wait per turn, not a race over every
    // run in flight, which attached a handler to each of up to 65 promises
    // per turn (with writes queued, several turns per write).
    const launch = (run: ChunkRun, kind: Set<ChunkRun>): void => {
      kind.add(run);
      const moved = (): void => {
        if (kind.delete(run)) pacer.wake();
      };
      const copy = chunks
        .copy(run.first, run.count, moved)
        .catch((err: unknown) => {
          failure ??= err;
        })
        .finally(() => {
          runs.delete(copy);
          moved();
          pacer.wake();
        });
      runs.add(copy);
    };
    // An abort ends a wait on the budget at once, not when its timer fires.
    const wake = (): void => pacer.wake();
    signal?.addEventListener('abort', wake);
    try {
      for (;;) {
        // Stopped: `job.device` was closed; the copy ends unfinished.
        const ended = signal?.aborted || chunks.stopped();
        if (ended || failure !== undefined || chunks.failure() !== undefined) break;
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
            const copyFirst = chunks.copiesInFlight();
            if (copyFirst.length === 0) break;
            await Promise.race([...copyFirst, pacer.wait(Infinity)]);
            pacer.wake();
            continue;
          }
        }
        await pacer.wait(Infinity);
      }
      await Promise.all(runs);
    } finally {
      signal?.removeEventListener('abort', wake);
    }
    if (failure !== undefined) {
      chunks.fail(failure);
      throw failure;
    }
    if (signal?.aborted) throw signal.reason;
    // A copy that failed (a copy-first one, say) before the device was
    // closed is reported as that failure, not as the close.
    if (chunks.failure() !== undefined) throw chunks.failure();
    if (chunks.stopped() && !chunks.complete()) {
      throw new BlockDeviceError('ECLOSED', 'job.device was closed before the copy finished');
    }
  }

  /**
   * The PENDING chunks a queued write waits for (the first such write in
   * arrival order, from its first such chunk to its last chunk, at most
   * {@link RUN_BYTES}): one short copy releases it.
   */
  #awaitedRun(): ChunkRun | undefined {
    const chunks = this.#chunks;
    const waitedFor = chunks.firstAwaited();
    if (waitedFor === undefined) return undefined;
    const most = Math.max(1, Math.floor(RUN_BYTES / chunks.chunkSize));
    let count = 1;
    while (
      count < most &&
      waitedFor.first + count <= waitedFor.last &&
      chunks.isPending(waitedFor.first + count)
    ) {
      count++;
    }
    return { first: waitedFor.first, count };
  }

  /** The next run of PENDING chunks from the cursor, of at most `maxBytes` (one chunk at least). */
  #nextRun(maxBytes: number): ChunkRun | undefined {
    const chunks = this.#chunks;
    while (this.#cursor < chunks.count && !chunks.isPending(this.#cursor)) this.#cursor++;
    if (this.#cursor >= chunks.count) return undefined;
    const first = this.#cursor;
    const most = Math.max(1, Math.floor(maxBytes / chunks.chunkSize));
    let count = 1;
    while (count < most && first + count < chunks.count && chunks.isPending(first + count)) count++;
    return { first, count };
  }
}
