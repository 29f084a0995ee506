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
 * Int32 words in a 64-byte cache line. Every control word, every request
 * entry and every completion slot has a line of its own: the two threads
 * write their own words, and a store by one side (each is an atomic store,
 * a full barrier) does not take away from the other side's core the line
 * holding a word that side writes too (false sharing: per-thread profiles
 * had the workers' `Atomics.store` at ~8 % of their CPU with the words packed).
 */
const LINE_WORDS = 16;
/** Int32 indexes of the control words. */
export const REQUEST_TAIL = 0; // entries published (the volume writes it)
export const REQUEST_HEAD = LINE_WORDS; // entries taken (the worker writes it)
export const WORKER_ASLEEP = 2 * LINE_WORDS;
export const DONE_TAIL = 3 * LINE_WORDS; // completions published (the worker writes it)
export const MAIN_ASLEEP = 4 * LINE_WORDS;
const CONTROL_WORDS = 5 * LINE_WORDS;
/**
 * Int32 words from one request entry to the next: kind, partition, length,
 * ticket, then the offset as a float64 in the same line (see {@link offsetIndex}).
 */
export const ENTRY_WORDS = LINE_WORDS;

/** Index in {@link RingViews.offsets} of the offset of the entry in ring slot `slot`. */
export function offsetIndex(slot: number): number {
  // Bytes 16–23 of the slot's line: after its four int32 words.
  return slot * (ENTRY_WORDS / 2) + 2;
}

/** Index in {@link RingViews.done} of completion number `n` (its ticket). */
export function doneIndex(n: number): number {
  return (n & (TICKETS - 1)) * LINE_WORDS;
}

/** The shared buffers, as they cross to the worker at its start. */
export interface RingBuffers {
  /** Control words, request entries, completion slots. */
  readonly words: SharedArrayBuffer;
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
  /** The request entries again, for their offsets ({@link offsetIndex}). */
  readonly offsets: Float64Array;
  /** Completion slots ({@link doneIndex}). */
  readonly done: Int32Array;
  readonly data: Uint8Array;
}

/** Allocates a processor's shared buffers. */
export function createRingBuffers(): RingBuffers {
  const words = (CONTROL_WORDS + RING_SLOTS * ENTRY_WORDS + TICKETS * LINE_WORDS) * 4;
  return {
    words: new SharedArrayBuffer(words),
    data: new SharedArrayBuffer(TICKETS * SLAB_BYTES),
  };
}

/** The views over `buffers`. */
export function ringViews(buffers: RingBuffers): RingViews {
  return {
    control: new Int32Array(buffers.words, 0, CONTROL_WORDS),
    entries: new Int32Array(buffers.words, CONTROL_WORDS * 4, RING_SLOTS * ENTRY_WORDS),
    offsets: new Float64Array(buffers.words, CONTROL_WORDS * 4, (RING_SLOTS * ENTRY_WORDS) / 2),
    done: new Int32Array(
      buffers.words,
      (CONTROL_WORDS + RING_SLOTS * ENTRY_WORDS) * 4,
      TICKETS * LINE_WORDS,
    ),
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
