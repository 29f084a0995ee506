import { isMainThread, parentPort } from 'node:worker_threads';
import type { ProgressEvent } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { PartitionEngine } from './partition-engine.js';
import {
  type PartitionRequest,
  type ProgressReply,
  toErrorReply,
  type WorkerMessage,
  type WorkerReply,
} from './worker-protocol.js';

/*
 * A processor's worker thread (docs/ARCHITECTURE.md, "VirtualVolume"): it
 * opens its partitions from their specs and runs each one's COW device —
 * change log, lock table, copy-on-write — here, off the volume's thread.
 * Every request's work starts synchronously when its message arrives, in
 * the order of its batch: messages arrive in the order the volume posted
 * them, and the COW device
 * orders by call, so a write posted before a snapshot is in it and one
 * posted after is not.
 */

const partitions = new Map<number, PartitionEngine>();

function engine(p: number): PartitionEngine {
  const found = partitions.get(p);
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
          partitions.set(p, opened);
          return opened.geometry;
        },
      );
    case 'read':
      return engine(p).device.read(r.offset, r.length);
    case 'write':
      return engine(p).device.write(r.offset, r.data);
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
      partitions.delete(p);
      return closing.close();
    }
  }
}

/** Replies of this turn, posted together at its end (see processor-host.ts `request`). */
let outbox: (WorkerReply | ProgressReply)[] = [];
let outboxTransfer: ArrayBuffer[] = [];

function reply(port: NonNullable<typeof parentPort>, message: WorkerReply | ProgressReply): void {
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

function serve(port: NonNullable<typeof parentPort>): void {
  // A message is the requests the volume made in one turn, in call order.
  port.on('message', (batch: WorkerMessage[]) => {
    for (const message of batch) handle(port, message);
  });
}

if (!isMainThread && parentPort !== null) serve(parentPort);
