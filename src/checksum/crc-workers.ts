import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { checksum } from './crc32.js';

/*
 * CRC-32 checks of many byte ranges of shared buffers, split between the
 * calling thread and worker threads (docs/ARCHITECTURE.md, Performance
 * notes: replay).
 *
 * A batch takes one of SLOTS slots of one shared control buffer: its done
 * count, the lowest failing index, its count, the id of its data buffer,
 * then one (offset, length, expected crc) triple per range. Its claim word
 * (a 64-bit tag: the slot's use number above, the next unclaimed range
 * below) is in a second buffer. Every thread, the caller included, claims
 * 16 ranges at a time (about 64 KiB of 4 KiB records, a few tens of µs)
 * with a compare-and-swap on the tag, so the work splits by who has time,
 * nothing waits for a worker that has not started, and a worker reading a
 * message late about a slot that has since been reused claims nothing: the
 * use number no longer matches. The buffers travel to a worker once; a
 * batch's message is two numbers.
 */

/** Slots: batches handed out and not yet judged. */
const SLOTS = 8;
/** Ranges a slot holds: a 4 MiB window of 512-byte records, and one. */
const SLOT_RANGES = ((4 << 20) >> 9) + 1;
const SLOT_WORDS = 4 + 3 * SLOT_RANGES;
const DONE = 0;
const BAD = 1;
const COUNT = 2;
const DATA = 3;
const RANGES = 4;

/**
 * One claim loop over the batch in `slot` while it is use `use`, the same
 * in every thread (`crc` is zlib's CRC-32; `dataOf` finds a shared buffer
 * by id). Returns true if this call completed the batch: its last claim
 * brought the done count to the count. Self-contained, with its constants
 * spelled out: the worker runs its source text.
 */
function claimRanges(
  control: Int32Array,
  tags: BigInt64Array,
  slot: number,
  use: bigint,
  dataOf: (id: number) => Uint8Array,
  crc: (bytes: Uint8Array) => number,
): boolean {
  const base = slot * (4 + 3 * (((4 << 20) >> 9) + 1));
  for (;;) {
    const tag = Atomics.load(tags, slot);
    if (tag >> 32n !== use) return false;
    const from = Number(tag & 0xffffffffn);
    // Stable while the tag says `use`: a slot is refilled only once its
    // done count reached its count, which needs this claim's end.
    const count = control[base + 2]!;
    if (from >= count) return false;
    const to = Math.min(count, from + 16);
    if (Atomics.compareExchange(tags, slot, tag, (use << 32n) | BigInt(to)) !== tag) continue;
    const data = dataOf(control[base + 3]!);
    for (let i = from; i < to; i++) {
      const h = base + 4 + 3 * i;
      const offset = control[h]!;
      if ((crc(data.subarray(offset, offset + control[h + 1]!)) | 0) !== control[h + 2]) {
        // Lower the batch's first failure to i; the rest of this claim
        // cannot matter.
        for (;;) {
          const bad = Atomics.load(control, base + 1);
          if (i >= bad || Atomics.compareExchange(control, base + 1, bad, i) === bad) break;
        }
        break;
      }
    }
    if (Atomics.add(control, base, to - from) + (to - from) === count) return true;
  }
}

/** The worker: registers shared buffers, runs a claim loop per batch message, and says when it completed one. */
const WORKER_SOURCE = `
const { crc32 } = require('node:zlib');
const { parentPort, workerData } = require('node:worker_threads');
const control = new Int32Array(workerData.control);
const tags = new BigInt64Array(workerData.tags);
const buffers = new Map();
const dataOf = (id) => buffers.get(id);
const claimRanges = ${claimRanges.toString()};
parentPort.on('message', (m) => {
  if (m.register !== undefined) buffers.set(m.register, new Uint8Array(m.buffer));
  else if (claimRanges(control, tags, m.slot, BigInt(m.use), dataOf, crc32)) parentPort.postMessage(m);
});
`;

/**
 * Worker threads that check CRC-32s of ranges of shared buffers alongside the
 * calling thread: a batch's verdict (its first failing range) is the same
 * whichever thread checked which range, and a worker that fails or exits
 * only leaves its share to the caller.
 */
export class CrcWorkers {
  readonly #workers: Worker[] = [];
  readonly #control = new Int32Array(new SharedArrayBuffer(SLOTS * SLOT_WORDS * 4));
  readonly #tags = new BigInt64Array(new SharedArrayBuffer(SLOTS * 8));
  readonly #uses: number[] = new Array<number>(SLOTS).fill(0);
  readonly #free: number[] = [];
  /** The batch in each slot a worker may still complete. */
  readonly #waiting: (CrcBatch | undefined)[] = new Array<CrcBatch | undefined>(SLOTS);
  readonly #ids = new WeakMap<SharedArrayBuffer, number>();
  readonly #buffers: Uint8Array[] = [];
  #dead = false;

  private constructor() {
    for (let s = SLOTS - 1; s >= 0; s--) this.#free.push(s);
  }

  /**
   * Starts `count` workers (default: one fewer than the CPUs, at least one,
   * at most two), or returns undefined where worker threads cannot start.
   * They start in the background; batches handed out meanwhile are checked
   * by the caller.
   */
  static start(
    count = Math.min(2, Math.max(1, availableParallelism() - 1)),
  ): CrcWorkers | undefined {
    const pool = new CrcWorkers();
    try {
      for (let i = 0; i < count; i++) pool.#spawn();
    } catch {
      pool.close();
      return undefined;
    }
    return pool;
  }

  #spawn(): void {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { control: this.#control.buffer, tags: this.#tags.buffer },
    });
    worker.on('message', (m: { slot: number; use: number }) => {
      const batch = this.#waiting[m.slot];
      if (batch !== undefined && this.#uses[m.slot] === m.use) batch.settle(true);
    });
    // A worker that fails or exits takes its claims with it: the caller
    // checks every batch still open itself.
    const lost = (): void => {
      this.#dead = true;
      for (const batch of this.#waiting) batch?.settleAlone();
    };
    worker.on('error', lost);
    worker.on('exit', lost);
    this.#workers.push(worker);
  }

  /** Whether no worker is there to complete a batch. @internal */
  get dead(): boolean {
    return this.#dead;
  }

  /**
   * A new batch of ranges of `data`, a view of a `SharedArrayBuffer` that
   * must not change until the batch is judged ({@link CrcBatch.finish}).
   */
  batch(data: Uint8Array): CrcBatch {
    const buffer = data.buffer;
    if (!(buffer instanceof SharedArrayBuffer)) {
      throw new TypeError('a CRC batch checks a view of a SharedArrayBuffer');
    }
    let id = this.#ids.get(buffer);
    if (id === undefined) {
      id = this.#buffers.length;
      this.#ids.set(buffer, id);
      this.#buffers.push(new Uint8Array(buffer));
      for (const worker of this.#workers) worker.postMessage({ register: id, buffer });
    }
    // No slot free (more batches open than SLOTS): checked here alone.
    return new CrcBatch(this, data, id, this.#free.pop());
  }

  /** Fills `slot` for `batch` and hands it to the workers. @internal */
  post(batch: CrcBatch, slot: number, ranges: Int32Array, count: number, dataId: number): void {
    const control = this.#control;
    const base = slot * SLOT_WORDS;
    control.set(ranges.subarray(0, 3 * count), base + RANGES);
    control[base + DONE] = 0;
    control[base + BAD] = count;
    control[base + COUNT] = count;
    control[base + DATA] = dataId;
    const use = ++this.#uses[slot]!;
    this.#waiting[slot] = batch;
    // The tag published last: a claim that reads it sees the slot filled.
    Atomics.store(this.#tags, slot, BigInt(use) << 32n);
    if (this.#dead) return;
    for (const worker of this.#workers) worker.postMessage({ slot, use });
  }

  /** This thread's claim loop on `slot`; true if it completed the batch. @internal */
  claim(slot: number): boolean {
    const data = this.#buffers;
    return claimRanges(
      this.#control,
      this.#tags,
      slot,
      BigInt(this.#uses[slot]!),
      (id) => data[id]!,
      checksum,
    );
  }

  /** The slot's done count and first failing range (its count if none). @internal */
  verdict(slot: number): { done: number; bad: number } {
    const base = slot * SLOT_WORDS;
    return {
      done: Atomics.load(this.#control, base + DONE),
      bad: Atomics.load(this.#control, base + BAD),
    };
  }

  /** Gives a judged batch's slot back. @internal */
  release(slot: number): void {
    this.#waiting[slot] = undefined;
    this.#free.push(slot);
  }

  /** Stops the workers; batches not yet judged are finished by the caller. */
  close(): void {
    this.#dead = true;
    for (const batch of this.#waiting) batch?.settleAlone();
    for (const worker of this.#workers) {
      worker.removeAllListeners();
      // Nothing depends on when the thread is gone.
      worker.terminate().catch(() => {});
    }
    this.#workers.length = 0;
  }
}

/**
 * Ranges of one shared buffer whose CRC-32s must match: filled with
 * {@link add}, handed out with {@link submit}, and judged by {@link finish}.
 */
export class CrcBatch {
  /** Ranges one batch holds at most. */
  static readonly MAX_RANGES = SLOT_RANGES;
  readonly #pool: CrcWorkers;
  readonly #data: Uint8Array;
  readonly #dataId: number;
  readonly #slot: number | undefined;
  /** The triples, absolute offsets in the shared buffer, until submitted. */
  #ranges = new Int32Array(3 * 64);
  #count = 0;
  #submitted = false;
  #settled = false;
  /** Set when judged alone: the first failing range, or the count. */
  #bad = -1;
  #wake: (() => void) | undefined;
  #byWorker = false;

  /** @internal */
  constructor(pool: CrcWorkers, data: Uint8Array, dataId: number, slot: number | undefined) {
    this.#pool = pool;
    this.#data = data;
    this.#dataId = dataId;
    this.#slot = slot;
  }

  /** Ranges added so far. */
  get count(): number {
    return this.#count;
  }

  /** Adds the range `[offset, offset + length)` of the batch's view, whose CRC-32 must be `crc`. */
  add(offset: number, length: number, crc: number): void {
    if (this.#submitted) throw new Error('CRC batch already submitted');
    if (this.#count === SLOT_RANGES) throw new RangeError('CRC batch is full');
    if (offset < 0 || length <= 0 || offset + length > this.#data.length) {
      throw new RangeError(`range [${offset}, ${offset + length}) is outside the batch's view`);
    }
    if (this.#ranges.length < 3 * (this.#count + 1)) {
      const grown = new Int32Array(this.#ranges.length * 2);
      grown.set(this.#ranges);
      this.#ranges = grown;
    }
    const h = 3 * this.#count++;
    this.#ranges[h] = this.#data.byteOffset + offset;
    this.#ranges[h + 1] = length;
    this.#ranges[h + 2] = crc | 0;
  }

  /** Hands the batch to the workers; no range can be added after it. */
  submit(): void {
    if (this.#submitted) return;
    this.#submitted = true;
    if (this.#slot !== undefined && this.#count > 0) {
      this.#pool.post(this, this.#slot, this.#ranges, this.#count, this.#dataId);
    }
  }

  /**
   * Checks what no worker has claimed (unless `help` is false), then waits
   * for the workers' claims: resolves with the index of the first range
   * whose CRC-32 does not match, or -1 if all do.
   */
  async finish(help = true): Promise<number> {
    this.submit();
    const slot = this.#slot;
    const count = this.#count;
    if (slot === undefined || count === 0 || this.#pool.dead) this.settleAlone();
    else if (help && this.#pool.claim(slot)) this.settle();
    else if (this.#pool.verdict(slot).done === count) this.settle(true);
    if (!this.#settled) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
    let bad = this.#bad;
    if (slot !== undefined) {
      if (bad < 0) bad = this.#pool.verdict(slot).bad;
      this.#pool.release(slot);
    }
    return bad < count ? bad : -1;
  }

  /** Whether a worker's claim completed the batch: the verdict came from a worker thread, in part or whole. */
  get byWorker(): boolean {
    return this.#byWorker;
  }

  /** The batch is complete (`byWorker`: a worker said so). @internal */
  settle(byWorker = false): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#byWorker = byWorker;
    this.#wake?.();
  }

  /**
   * No worker will complete the batch: checks every range here, whoever
   * claimed it (a lost worker's claim is never counted). @internal
   */
  settleAlone(): void {
    if (this.#settled) return;
    const whole = new Uint8Array(this.#data.buffer);
    const ranges = this.#ranges;
    let bad = this.#count;
    for (let i = 0; i < this.#count; i++) {
      const offset = ranges[3 * i]!;
      if (
        (checksum(whole.subarray(offset, offset + ranges[3 * i + 1]!)) | 0) !==
        ranges[3 * i + 2]
      ) {
        bad = i;
        break;
      }
    }
    this.#bad = bad;
    this.settle();
  }
}
