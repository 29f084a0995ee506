import type { MessagePort } from 'node:worker_threads';

/*
 * The shared memory between the volume and one processor's worker
 * (docs/ARCHITECTURE.md, "VirtualVolume", "Processors and messages"): a
 * request ring every request goes through in call order, a completion ring,
 * and a slab of data per ring operation in flight. Reads, writes and
 * flushes of at most SLAB_BYTES are ring operations: their arguments are
 * the ring entry, their bytes are in their slab, and nothing is cloned or
 * posted. Every other request (open, snapshot, restore, check, close, a
 * fault, a synchronous question — and a read or write that finds no free
 * slab) is posted on the control port, and a MESSAGE entry takes its place
 * in the ring: the worker takes the posted batch from the port when it
 * reaches that entry, so it starts every request in the volume's call
 * order whichever way it came — a snapshot after a write on the ring, a
 * write on the ring after a snapshot.
 *
 * Waking: each side looks at the other's ring at the end of its turn, so
 * two busy sides never wake each other; a side that finds nothing raises
 * its ASLEEP flag, reads the other side's counter once more, and sleeps on
 * the flag with `Atomics.waitAsync`; the other side moves its counter, then
 * at the end of its turn takes the flag down (an atomic exchange) and
 * notifies only if it was up: a turn's requests or completions cost one
 * wake-up, not one each.
 */

/** `Atomics.waitAsync` (Node 20 has it; the ES2022 lib this project compiles against does not declare it). */
interface WaitAsync {
  waitAsync(
    array: Int32Array,
    index: number,
    value: number,
  ): { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<string> };
}
const { waitAsync } = Atomics as unknown as WaitAsync;

/** Request ring entries (a power of two). */
export const RING_SLOTS = 1024;
/** Ring operations in flight per processor: one slab, one completion slot each (a power of two). */
export const TICKETS = 64;
/** Bytes of a slab: the largest read or write that goes through the ring. */
export const SLAB_BYTES = 64 * 1024;

/** Ring entry kinds. */
export const OP_READ = 1;
export const OP_WRITE = 2;
export const OP_FLUSH = 3;
/** The next batch posted on the control port. */
export const OP_MESSAGE = 4;

/**
 * Int32 words in a 64-byte cache line. Each control word has a line of its
 * own: both threads store to them (atomic stores, each a full barrier), and
 * packed on one line every store took the line from the other side's core
 * (false sharing: per-thread profiles had a worker's `Atomics.store` at ~8 %
 * of its CPU). Entries and completions stay packed: one side writes them and
 * the other reads them a turn at a time, a line for several.
 */
const LINE_WORDS = 16;
/** Int32 indexes of the control words. */
export const REQUEST_TAIL = 0; // entries published (the volume writes it)
export const REQUEST_HEAD = LINE_WORDS; // entries taken (the worker writes it)
export const WORKER_ASLEEP = 2 * LINE_WORDS;
export const DONE_TAIL = 3 * LINE_WORDS; // completions published (the worker writes it)
export const MAIN_ASLEEP = 4 * LINE_WORDS;
const CONTROL_WORDS = 5 * LINE_WORDS;
/** Int32 words of a request entry: kind, partition, length, ticket (its offset is in `offsets`). */
export const ENTRY_WORDS = 4;

/** The shared buffers, as they cross to the worker at its start. */
export interface RingBuffers {
  readonly words: SharedArrayBuffer;
  readonly offsets: SharedArrayBuffer;
  readonly data: SharedArrayBuffer;
}

/** What a worker starts with (its `workerData`). */
export interface RingWorkerData {
  readonly ring: RingBuffers;
  /** Where the volume posts the batches the ring's MESSAGE entries stand for. */
  readonly control: MessagePort;
}

/** Typed views of the shared buffers, the same on both sides. */
export interface RingViews {
  /** Control words, then the request entries, then the completion ring (tickets). */
  readonly control: Int32Array;
  readonly entries: Int32Array;
  readonly offsets: Float64Array;
  readonly done: Int32Array;
  readonly data: Uint8Array;
}

/** Allocates a processor's shared buffers. */
export function createRingBuffers(): RingBuffers {
  const words = (CONTROL_WORDS + RING_SLOTS * ENTRY_WORDS + TICKETS) * 4;
  return {
    words: new SharedArrayBuffer(words),
    offsets: new SharedArrayBuffer(RING_SLOTS * 8),
    data: new SharedArrayBuffer(TICKETS * SLAB_BYTES),
  };
}

/** The views over `buffers`. */
export function ringViews(buffers: RingBuffers): RingViews {
  return {
    control: new Int32Array(buffers.words, 0, CONTROL_WORDS),
    entries: new Int32Array(buffers.words, CONTROL_WORDS * 4, RING_SLOTS * ENTRY_WORDS),
    offsets: new Float64Array(buffers.offsets),
    done: new Int32Array(buffers.words, (CONTROL_WORDS + RING_SLOTS * ENTRY_WORDS) * 4, TICKETS),
    data: new Uint8Array(buffers.data),
  };
}

/**
 * Wakes the side sleeping on its `asleep` flag, if it is up, taking the flag
 * down: called after the counter that side watches moved, so at most one
 * notification per sleep.
 */
export function wake(control: Int32Array, asleep: number): void {
  if (Atomics.load(control, asleep) === 1 && Atomics.exchange(control, asleep, 0) === 1) {
    Atomics.notify(control, asleep, 1);
  }
}

/**
 * Sleeps until `control[counter]` is no longer `seen`, then calls `then`
 * (in a microtask if it has moved already). The sleep waits on the flag,
 * not on the counter: a side that moves the counter and takes the flag down
 * before this thread waits has it find the flag down and not wait — waiting
 * on the counter, that wake-up would be lost (the flag down, and this
 * thread asleep until a notification nobody sends). The flag is raised
 * before the counter is read again, so a side that moves it after that
 * read finds the flag up and notifies.
 */
export function sleepUntilMoved(
  control: Int32Array,
  asleep: number,
  counter: number,
  seen: number,
  then: () => void,
): void {
  Atomics.store(control, asleep, 1);
  if (Atomics.load(control, counter) === seen) {
    const waited = waitAsync(control, asleep, 1);
    if (waited.async) {
      waited.value.then(then);
      return;
    }
  }
  Atomics.store(control, asleep, 0);
  queueMicrotask(then);
}
