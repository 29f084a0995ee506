import {
  MessageChannel,
  type MessagePort,
  receiveMessageOnPort,
  Worker,
} from 'node:worker_threads';
import type { CheckOptions, CheckReport, Extent, SnapshotInfo } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { DeviceSpec } from './device-spec.js';
import type { Partition } from './partition.js';
import type { PartitionSnapshotMade } from './partition-engine.js';
import { RingClient } from './ring-client.js';
import { workerEntry } from './worker-entry.js';
import {
  type FaultRequest,
  fromErrorReply,
  type PartitionRequest,
  type ProgressReply,
  type RingFailure,
  type WorkerMessage,
  type WorkerReply,
} from './worker-protocol.js';
import { createRingBuffers, type RingWorkerData } from './worker-ring.js';

/*
 * The volume's side of a worker processor (docs/ARCHITECTURE.md,
 * "VirtualVolume"): one Worker, its rings (src/volume/ring-client.ts), the
 * control port for the requests that are posted, a map of those awaiting
 * replies by id, and the processor's death. A worker that dies — an uncaught exception,
 * `process.exit` inside it, `terminate()` — fails every request it had and
 * every later one with `EIO`, until `VirtualVolume.restartProcessor`
 * starts a new worker that opens the partitions again from their stores.
 */

/**
 * Bytes of a batch's write arena (see `#stage`); a larger write gets one of
 * its own size. Small enough for malloc to serve without an mmap of its own
 * (a 256 KiB arena per turn cost more than the writes in it).
 */
const ARENA_BYTES = 64 * 1024;

/** How long a synchronous question (changedExtents) waits for a worker. */
const SYNC_TIMEOUT_MS = 10_000;

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  /** Gets the request's progress replies (a check's). */
  progress?: ((done: number, total: number) => void) | undefined;
}

/** Internal method of a VirtualVolume: processor `index`'s host, for fault tests. */
export const PROCESSOR: unique symbol = Symbol('blocksnap.volumeProcessor');

/** One worker thread running some of the volume's partitions. */
export class WorkerProcessor {
  /** The processor's index in the volume (0-based). */
  readonly index: number;
  readonly #worker: Worker;
  /** Reads, writes and flushes (src/volume/worker-ring.ts). */
  readonly #ring: RingClient;
  /** Where posted requests go; a MESSAGE entry in the ring marks each batch's place. */
  readonly #control: MessagePort;
  readonly #pending = new Map<number, Pending>();
  /** Posted requests made since the last ring entry, posted together by one message. */
  #outbox: WorkerMessage[] = [];
  #outboxTransfer: ArrayBuffer[] = [];
  /** Where posted writes' data is copied: one buffer moves for many writes. */
  #arena: Uint8Array | undefined;
  #arenaUsed = 0;
  #nextId = 1;
  /** Why the worker is gone, once it is. */
  #death: BlockDeviceError | undefined;
  /** Called once when the worker dies (not when it is stopped). */
  readonly #onDeath: (err: BlockDeviceError) => void;
  #stopping = false;

  constructor(index: number, onDeath: (err: BlockDeviceError) => void) {
    this.index = index;
    this.#onDeath = onDeath;
    const { entry, eval: isCode } = workerEntry();
    const ring = createRingBuffers();
    const { port1, port2 } = new MessageChannel();
    this.#ring = new RingClient(ring);
    this.#control = port1;
    this.#worker = new Worker(entry, {
      eval: isCode,
      workerData: { ring, control: port2 } satisfies RingWorkerData,
      transferList: [port2],
    });
    this.#worker.on('message', (replies: (WorkerReply | ProgressReply | RingFailure)[]) => {
      for (const reply of replies) this.#settle(reply);
    });
    this.#worker.on('error', (err) => this.#die(`failed: ${err.message}`, err));
    this.#worker.on('exit', (code) => this.#die(`exited with code ${code}`, undefined));
    this.#worker.on('messageerror', (err) => this.#die(`sent a broken message`, err));
  }

  /** Whether the worker is gone. */
  get dead(): boolean {
    return this.#death !== undefined;
  }

  /** The worker itself, for fault tests that terminate it. @internal */
  get worker(): Worker {
    return this.#worker;
  }

  /**
   * Reads `length` bytes at `offset` of partition `p`: through the ring,
   * or posted when it cannot go there. Started in call order with every
   * other request either way.
   */
  read(p: number, offset: number, length: number): Promise<Uint8Array> {
    if (this.#death !== undefined) return Promise.reject(this.#death);
    this.#post();
    return (
      this.#ring.read(p, offset, length) ??
      (this.request(p, { op: 'read', offset, length }) as Promise<Uint8Array>)
    );
  }

  /** Writes `data` at `offset` of partition `p`, as {@link read}; `data` is copied before this returns. */
  write(p: number, offset: number, data: Uint8Array): Promise<void> {
    if (this.#death !== undefined) return Promise.reject(this.#death);
    this.#post();
    return (
      this.#ring.write(p, offset, data) ??
      (this.request(p, { op: 'write', offset, data: this.#stage(data) }) as Promise<void>)
    );
  }

  /** Flushes partition `p`, as {@link read}. */
  flush(p: number): Promise<void> {
    if (this.#death !== undefined) return Promise.reject(this.#death);
    this.#post();
    return this.#ring.flush(p) ?? (this.request(p, { op: 'flush' }) as Promise<void>);
  }

  /**
   * Posts a request to partition `p`; what it resolves with. `progress` gets
   * the progress replies the worker sends for it before it settles.
   */
  request(
    p: number,
    request: PartitionRequest,
    progress?: (done: number, total: number) => void,
  ): Promise<unknown> {
    if (this.#death !== undefined) return Promise.reject(this.#death);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, progress });
      // One message per request costs more than a 4 KiB I/O: requests made
      // together go as one message, posted in a microtask or before the
      // next ring entry, whichever comes first, so the order holds.
      if (this.#outbox.length === 0) queueMicrotask(() => this.#post());
      this.#outbox.push({ id, p, ...request } satisfies WorkerMessage);
    });
  }

  /**
   * A copy of `data` in this batch's arena, to post with a write that
   * cannot go through the ring: the one copy a write makes (the caller may reuse `data` once
   * `write` returns). The arena's buffer moves to the worker with the
   * batch, so many writes cost one allocation and one transfer.
   */
  #stage(data: Uint8Array): Uint8Array {
    let arena = this.#arena;
    if (arena === undefined || this.#arenaUsed + data.length > arena.length) {
      if (arena !== undefined) this.#outboxTransfer.push(arena.buffer as ArrayBuffer);
      // Not zero-filled: every byte handed out is overwritten first.
      arena = Buffer.allocUnsafeSlow(Math.max(ARENA_BYTES, data.length));
      this.#arena = arena;
      this.#arenaUsed = 0;
    }
    const view = arena.subarray(this.#arenaUsed, this.#arenaUsed + data.length);
    view.set(data);
    this.#arenaUsed += data.length;
    return view;
  }

  /**
   * Posts the requests made since the last ring entry as one message, and
   * marks its place in the ring: the worker takes it there, between the
   * ring entries published before and after it.
   */
  #post(): void {
    if (this.#arena !== undefined) {
      this.#outboxTransfer.push(this.#arena.buffer as ArrayBuffer);
      this.#arena = undefined;
    }
    if (this.#outbox.length === 0) return;
    const batch = this.#outbox;
    const transfer = this.#outboxTransfer;
    this.#outbox = [];
    this.#outboxTransfer = [];
    if (this.#death === undefined) this.#postInOrder(batch, transfer);
  }

  /** Posts `batch` on the control port and publishes its MESSAGE entry. */
  #postInOrder(batch: WorkerMessage[], transfer: (ArrayBuffer | MessagePort)[]): void {
    // Posted first: once the worker sees the entry, the message is in its port.
    this.#control.postMessage(batch, transfer);
    this.#ring.message();
  }

  /** Terminates the worker, as an out-of-memory kill would; the death is reported as any other. */
  async crash(): Promise<void> {
    await this.#worker.terminate();
  }

  /** Makes the worker die as a bug would (fault tests). @internal */
  fault(how: FaultRequest['how']): void {
    this.#post();
    this.#postInOrder([{ id: 0, op: 'fault', how } satisfies WorkerMessage], []);
  }

  /**
   * Asks partition `p` for its changed extents and blocks this thread until
   * the worker answers (ChangeTracking is synchronous): the worker posts the
   * answer on a port of its own and wakes this thread through a shared flag.
   * @throws `EIO` if the worker is dead or does not answer in time.
   */
  changedExtents(p: number, from: string, to: string): Extent[] {
    if (this.#death !== undefined) throw this.#death;
    const { port1, port2 } = new MessageChannel();
    const flag = new Int32Array(new SharedArrayBuffer(4));
    try {
      // Requests made before this question go first: the answer reflects them.
      this.#post();
      this.#postInOrder(
        [
          {
            op: 'sync',
            p,
            question: { kind: 'changedExtents', from, to },
            port: port2,
            flag,
          } satisfies WorkerMessage,
        ],
        [port2],
      );
      // This thread blocks: nothing woken at the end of its turn would be in time.
      this.#ring.wakeNow();
      if (Atomics.wait(flag, 0, 0, SYNC_TIMEOUT_MS) === 'timed-out') {
        throw new BlockDeviceError('EIO', `processor ${this.index} did not answer in time`);
      }
      const received = receiveMessageOnPort(port1);
      if (received === undefined) {
        throw new BlockDeviceError('EIO', `processor ${this.index} sent no answer`);
      }
      const reply = received.message as WorkerReply;
      if (!reply.ok) throw fromErrorReply(reply.error);
      return reply.value as Extent[];
    } finally {
      port1.close();
    }
  }

  /** Ends the worker; its pending requests fail `EIO`. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#worker.terminate();
    this.#die('was stopped', undefined);
  }

  #settle(reply: WorkerReply | ProgressReply | RingFailure): void {
    if ('ticket' in reply) {
      this.#ring.failed(reply.ticket, fromErrorReply(reply.error));
      return;
    }
    const pending = this.#pending.get(reply.id);
    if (pending === undefined) return;
    if ('progress' in reply) {
      pending.progress?.(reply.progress.done, reply.progress.total);
      return;
    }
    this.#pending.delete(reply.id);
    if (reply.ok) pending.resolve(reply.value);
    else pending.reject(fromErrorReply(reply.error));
  }

  #die(how: string, cause: unknown): void {
    if (this.#death !== undefined) return;
    this.#death = new BlockDeviceError('EIO', `volume processor ${this.index} ${how}`, { cause });
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(this.#death);
    this.#ring.fail(this.#death);
    this.#control.close();
    if (!this.#stopping) this.#onDeath(this.#death);
  }
}

/** A partition whose COW device runs in a worker. */
export class RemotePartition implements Partition {
  readonly #processor: WorkerProcessor;
  readonly #p: number;
  readonly size: number;
  readonly blockSize: number;

  private constructor(processor: WorkerProcessor, p: number, size: number, blockSize: number) {
    this.#processor = processor;
    this.#p = p;
    this.size = size;
    this.blockSize = blockSize;
  }

  /** Opens (or formats) partition `p` in `processor`'s worker. */
  static async open(
    processor: WorkerProcessor,
    p: number,
    origin: DeviceSpec,
    store: DeviceSpec,
    format: { maxSnapshots: number; force: boolean } | undefined,
  ): Promise<RemotePartition> {
    const geometry = (await processor.request(p, { op: 'open', origin, store, format })) as {
      size: number;
      blockSize: number;
    };
    return new RemotePartition(processor, p, geometry.size, geometry.blockSize);
  }

  /** The processor that runs this partition. */
  get processor(): WorkerProcessor {
    return this.#processor;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#processor.read(this.#p, offset, length);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#processor.write(this.#p, offset, data);
  }

  flush(): Promise<void> {
    return this.#processor.flush(this.#p);
  }

  snapshot(name: string): Promise<PartitionSnapshotMade> {
    return this.#processor.request(this.#p, {
      op: 'snapshot',
      name,
    }) as Promise<PartitionSnapshotMade>;
  }

  deleteSnapshot(id: string): Promise<void> {
    return this.#processor.request(this.#p, {
      op: 'deleteSnapshot',
      snapshot: id,
    }) as Promise<void>;
  }

  restore(id: string): Promise<void> {
    return this.#processor.request(this.#p, { op: 'restore', snapshot: id }) as Promise<void>;
  }

  readSnapshot(id: string, offset: number, length: number): Promise<Uint8Array> {
    return this.#processor.request(this.#p, {
      op: 'readSnapshot',
      snapshot: id,
      offset,
      length,
    }) as Promise<Uint8Array>;
  }

  listSnapshots(): Promise<SnapshotInfo[]> {
    return this.#processor.request(this.#p, { op: 'listSnapshots' }) as Promise<SnapshotInfo[]>;
  }

  changedExtents(from: string, to: string | 'live'): Extent[] {
    return this.#processor.changedExtents(this.#p, from, to);
  }

  check(options: CheckOptions): Promise<CheckReport> {
    // Only the fields a check reads cross: any other property of the caller's
    // object (a function, say) could not be cloned to the worker.
    const { onProgress } = options;
    return this.#processor.request(
      this.#p,
      {
        op: 'check',
        options: { verifyData: options.verifyData },
        progress: onProgress !== undefined,
      },
      onProgress && ((done, total) => onProgress({ operation: 'check', done, total })),
    ) as Promise<CheckReport>;
  }

  close(): Promise<void> {
    return this.#processor.request(this.#p, { op: 'close' }) as Promise<void>;
  }
}
