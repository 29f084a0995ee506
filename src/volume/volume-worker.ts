import {
  isMainThread,
  type MessagePort,
  parentPort,
  receiveMessageOnPort,
  workerData,
} from 'node:worker_threads';
import { readInto } from '../base/index.js';
import type { ProgressEvent } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { PartitionEngine } from './partition-engine.js';
import {
  type PartitionRequest,
  type ProgressReply,
  type RingFailure,
  toErrorReply,
  type WorkerMessage,
  type WorkerReply,
} from './worker-protocol.js';
import {
  DONE_TAIL,
  ENTRY_WORDS,
  MAIN_ASLEEP,
  OP_FLUSH,
  OP_MESSAGE,
  OP_READ,
  OP_WRITE,
  REQUEST_HEAD,
  REQUEST_TAIL,
  RING_SLOTS,
  type RingViews,
  type RingWorkerData,
  ringViews,
  SLAB_BYTES,
  sleepUntilMoved,
  TICKETS,
  WORKER_ASLEEP,
  wake,
} from './worker-ring.js';

/*
 * A processor's worker thread (docs/ARCHITECTURE.md, "VirtualVolume"): it
 * opens its partitions from their specs and runs each one's COW device —
 * change log, lock table, copy-on-write — here, off the volume's thread.
 * Every request's work starts synchronously when the worker reaches its
 * entry in the request ring (src/volume/worker-ring.ts), or the MESSAGE
 * entry of the batch that carries it, in the order of its batch: the ring
 * holds the volume's call order, and the COW device orders by call, so a
 * write called before a snapshot is in it and one called after is not.
 */

/** The open partitions, by index: an array, since the ring looks one up per entry. */
const partitions: (PartitionEngine | undefined)[] = [];

function engine(p: number): PartitionEngine {
  const found = partitions[p];
  if (found === undefined) throw new BlockDeviceError('EIO', `partition ${p} is not open here`);
  return found;
}

/** Starts request `r` on partition `p`; `progress` gets a check's progress events. */
function start(
  p: number,
  r: PartitionRequest,
  progress: (event: ProgressEvent) => void,
): Promise<unknown> {
  switch (r.op) {
    case 'open':
      return PartitionEngine.open({ origin: r.origin, store: r.store, format: r.format }).then(
        (opened) => {
          partitions[p] = opened;
          return opened.geometry;
        },
      );
    case 'read':
      return engine(p).device.read(r.offset, r.length);
    case 'write':
      // The batch's arena moved here with it: nothing else writes to it.
      return engine(p).writeUncopied(r.offset, r.data);
    case 'flush':
      return engine(p).device.flush();
    case 'snapshot':
      return engine(p).snapshot(r.name);
    case 'deleteSnapshot':
      return engine(p).deleteSnapshot(r.snapshot);
    case 'restore':
      return engine(p).device.restore(r.snapshot);
    case 'readSnapshot':
      return engine(p).readSnapshot(r.snapshot, r.offset, r.length);
    case 'listSnapshots':
      return Promise.resolve(engine(p).listSnapshots());
    case 'check':
      // Runs here, where the COW device is: its check reads the store while
      // the partition's own metadata commits wait, which only this thread can arrange.
      return engine(p).device.check({
        verifyData: r.options.verifyData,
        onProgress: r.progress ? progress : undefined,
      });
    case 'close': {
      const closing = engine(p);
      partitions[p] = undefined;
      return closing.close();
    }
  }
}

/** Replies of this turn, posted together at its end (see processor-host.ts `request`). */
let outbox: (WorkerReply | ProgressReply | RingFailure)[] = [];
let outboxTransfer: ArrayBuffer[] = [];

function reply(
  port: NonNullable<typeof parentPort>,
  message: WorkerReply | ProgressReply | RingFailure,
): void {
  if (outbox.length === 0) {
    // At the end of the turn, so every request finished in it shares the message.
    setImmediate(() => {
      const batch = outbox;
      const transfer = outboxTransfer;
      outbox = [];
      outboxTransfer = [];
      port.postMessage(batch, transfer);
    });
  }
  outbox.push(message);
  // A read result is a buffer of its own (src/device.ts): it moves, uncopied.
  if ('ok' in message && message.ok && message.value instanceof Uint8Array) {
    outboxTransfer.push(message.value.buffer as ArrayBuffer);
  }
}

/** Starts one request; its reply goes out with the others of this turn. */
function handle(port: NonNullable<typeof parentPort>, message: WorkerMessage): void {
  if (message.op === 'fault') {
    if (message.how === 'exit') process.exit(1);
    setImmediate(() => {
      throw new Error('fault injected into a volume processor');
    });
    return;
  }
  if (message.op === 'sync') {
    let answer: WorkerReply;
    try {
      const q = message.question;
      answer = { id: 0, ok: true, value: engine(message.p).changedExtents(q.from, q.to) };
    } catch (err) {
      answer = { id: 0, ok: false, error: toErrorReply(err) };
    }
    message.port.postMessage(answer);
    message.port.close();
    Atomics.store(message.flag, 0, 1);
    Atomics.notify(message.flag, 0);
    return;
  }
  const { id, p } = message;
  let op: Promise<unknown>;
  try {
    op = start(p, message, ({ done, total }) => reply(port, { id, progress: { done, total } }));
  } catch (err) {
    op = Promise.reject(err);
  }
  op.then(
    (value) => reply(port, { id, ok: true, value }),
    (err: unknown) => reply(port, { id, ok: false, error: toErrorReply(err) }),
  );
}

/** The worker's end of the rings: takes entries in order, publishes completions. */
class RingServer {
  readonly #views: RingViews;
  readonly #port: NonNullable<typeof parentPort>;
  readonly #control: MessagePort;
  /** Entries taken (mirrors REQUEST_HEAD). */
  #head = 0;
  /** Completions published (mirrors DONE_TAIL). */
  #doneTail = 0;
  /** Whether the end of this turn is queued (see {@link #endTurn}). */
  #turnQueued = false;
  /** Whether completions were published since the volume was last woken for them. */
  #completed = false;
  /** Whether {@link #wakeForCompletions} is queued as a microtask. */
  #wakeQueued = false;
  /** Whether a wait for requests is armed. */
  #sleeping = false;
  /**
   * The last view handed out of each ticket's slab: the next operation on
   * the ticket with the same length gets it again instead of a new view.
   * Safe as reusing the slab is: the volume hands the ticket out again
   * only after its completion is settled, and a device is done with a
   * write's data (`WRITE_OWNED`) or a read's target by then.
   */
  readonly #slabViews: (Uint8Array | undefined)[] = [];

  constructor(port: NonNullable<typeof parentPort>, data: RingWorkerData) {
    this.#views = ringViews(data.ring);
    this.#port = port;
    this.#control = data.control;
  }

  /** Takes every entry published; the end of the turn looks again, or sleeps. */
  pump(): void {
    const control = this.#views.control;
    const tail = Atomics.load(control, REQUEST_TAIL);
    while (this.#head !== tail) {
      this.#take(this.#head & (RING_SLOTS - 1));
      this.#head = (this.#head + 1) | 0;
    }
    Atomics.store(control, REQUEST_HEAD, this.#head);
    this.#endTurnLater();
  }

  #endTurnLater(): void {
    if (this.#turnQueued) return;
    this.#turnQueued = true;
    setImmediate(() => this.#endTurn());
  }

  /**
   * At the end of a turn: wakes the volume if this turn completed requests
   * and it sleeps (once for all of them), then takes the entries published
   * in the meantime, without a wake-up, and sleeps only when there are none.
   */
  #endTurn(): void {
    this.#turnQueued = false;
    const control = this.#views.control;
    if (this.#completed) {
      this.#completed = false;
      wake(control, MAIN_ASLEEP);
    }
    if (this.#sleeping) return;
    if (Atomics.load(control, REQUEST_TAIL) !== this.#head) {
      this.pump();
      return;
    }
    this.#sleeping = true;
    sleepUntilMoved(control, WORKER_ASLEEP, REQUEST_TAIL, this.#head, () => {
      this.#sleeping = false;
      this.pump();
    });
  }

  /** Starts the request in ring slot `slot`. */
  #take(slot: number): void {
    const { entries, offsets } = this.#views;
    const at = slot * ENTRY_WORDS;
    const kind = entries[at]!;
    if (kind === OP_MESSAGE) {
      // Posted before its entry was published: it is in the port.
      const received = receiveMessageOnPort(this.#control);
      if (received === undefined) throw new Error('a ring MESSAGE entry without its message');
      for (const message of received.message as WorkerMessage[]) handle(this.#port, message);
      return;
    }
    const p = entries[at + 1]!;
    const length = entries[at + 2]!;
    const ticket = entries[at + 3]!;
    const offset = offsets[slot]!;
    let op: Promise<unknown>;
    try {
      const partition = engine(p);
      if (kind === OP_READ) {
        // Straight into the slab: no result buffer of its own, no copy.
        op = readInto(partition.device, offset, this.#slab(ticket, length));
      } else if (kind === OP_WRITE) {
        // The slab is this write's until its completion is settled: the
        // volume reuses it only after that, so the device may hold it as
        // long, and no private copy of it is taken.
        op = partition.writeUncopied(offset, this.#slab(ticket, length));
      } else if (kind === OP_FLUSH) {
        op = partition.device.flush();
      } else {
        throw new Error(`unknown ring entry kind ${kind}`);
      }
    } catch (err) {
      op = Promise.reject(err);
    }
    op.then(
      () => this.#complete(ticket),
      (err: unknown) => reply(this.#port, { ticket, error: toErrorReply(err) }),
    );
  }

  /** The first `length` bytes of `ticket`'s slab. */
  #slab(ticket: number, length: number): Uint8Array {
    const last = this.#slabViews[ticket];
    if (last !== undefined && last.length === length) return last;
    const start = ticket * SLAB_BYTES;
    const view = this.#views.data.subarray(start, start + length);
    this.#slabViews[ticket] = view;
    return view;
  }

  #complete(ticket: number): void {
    const { control, done } = this.#views;
    done[this.#doneTail & (TICKETS - 1)] = ticket;
    this.#doneTail = (this.#doneTail + 1) | 0;
    Atomics.store(control, DONE_TAIL, this.#doneTail);
    this.#completed = true;
    if (!this.#wakeQueued) {
      this.#wakeQueued = true;
      queueMicrotask(this.#wakeForCompletions);
    }
    this.#endTurnLater();
  }

  /**
   * Wakes a sleeping volume for the completions published so far, without
   * waiting for the end of the turn. Queued behind the reactions already
   * due, so the requests of a turn that finish together (rewrites, reads)
   * still share one wake-up; but a turn whose COW first writes run on
   * through their metadata commit (docs/ARCHITECTURE.md, "VirtualVolume")
   * no longer holds the requests that finished early until the commit is
   * done: the volume settles them and issues its next requests (to the
   * other processors, too) while this one works. The end of the turn wakes
   * it again only for completions published after this, and only if it
   * sleeps again by then.
   */
  readonly #wakeForCompletions = (): void => {
    this.#wakeQueued = false;
    if (!this.#completed) return;
    this.#completed = false;
    wake(this.#views.control, MAIN_ASLEEP);
  };
}

if (!isMainThread && parentPort !== null) {
  const data = workerData as RingWorkerData;
  // The control port has no listener (its messages are taken in ring
  // order): held referenced, it keeps this thread alive while it waits.
  data.control.ref();
  new RingServer(parentPort, data).pump();
}
