import { Worker } from 'node:worker_threads';
import { BlockDeviceError } from '../errors.js';
import { checksum } from './metadata-codec.js';

/*
 * CRC-32 of large buffers on a worker thread, so that checking a stream's
 * frames overlaps with reading and writing them. Node's zlib.crc32 runs at
 * ~2.5 GB/s here: on the main thread, checking a 256 MiB stream costs about
 * as long as writing it to a file (bench row stream-apply-file), and the
 * main thread also assembles the frames. A worker gives the check a core of
 * its own; whenever it is not ready or busy, the main thread computes the
 * CRC itself — same function, same result.
 *
 * The buffer is transferred to the worker and back (no copy, and plain
 * memory: copies into a SharedArrayBuffer are several times slower).
 */

/** Below this a round trip to the worker (tens of µs) costs more than the CRC. */
const OFFLOAD_MIN = 128 * 1024;
/** CRCs queued at the worker before the main thread computes the next one itself. */
const WORKER_QUEUE = 2;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { crc32 } = require('node:zlib');
parentPort.on('message', (m) => {
  const crc = crc32(new Uint8Array(m.buffer, 0, m.length)) >>> 0;
  parentPort.postMessage({ id: m.id, crc, buffer: m.buffer }, [m.buffer]);
});
`;

/** A CRC the worker computes: it hands the buffer back with it. */
export interface RemoteCrc {
  readonly crc: number;
  /** The buffer, back from the worker (the one passed in was detached). */
  readonly buffer: Uint8Array;
}

interface Waiting {
  readonly resolve: (result: RemoteCrc) => void;
  readonly reject: (err: unknown) => void;
}

class CrcWorker {
  #worker: Worker | undefined;
  #state: 'idle' | 'starting' | 'ready' | 'broken' = 'idle';
  #next = 0;
  readonly #waiting = new Map<number, Waiting>();
  /** Settles when the worker is ready (true) or cannot run (false). */
  #ready: Promise<boolean> = Promise.resolve(false);

  /**
   * The CRC-32 of `buffer[0, length)` (as {@link checksum}): a number when
   * computed here; a promise when the worker computes it, in which case
   * `buffer` — which must span a whole ArrayBuffer of the caller's — is
   * detached, and handed back with the CRC. Rejects (`EIO`) only if the
   * worker dies meanwhile, taking the buffer with it.
   */
  checksum(buffer: Uint8Array, length: number): number | Promise<RemoteCrc> {
    const whole = buffer.buffer;
    if (
      length < OFFLOAD_MIN ||
      !(whole instanceof ArrayBuffer) ||
      buffer.byteOffset !== 0 ||
      buffer.byteLength !== whole.byteLength
    ) {
      return checksum(buffer.subarray(0, length));
    }
    if (this.#state === 'idle') this.#start();
    const worker = this.#worker;
    if (this.#state !== 'ready' || worker === undefined || this.#waiting.size >= WORKER_QUEUE) {
      return checksum(buffer.subarray(0, length));
    }
    const id = this.#next++;
    // Referenced only while it owes an answer: an idle worker never keeps the process alive.
    if (this.#waiting.size === 0) worker.ref();
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      try {
        worker.postMessage({ id, buffer: whole, length }, [whole]);
      } catch {
        // Not transferable after all (nothing was detached): computed here.
        this.#waiting.delete(id);
        if (this.#waiting.size === 0) worker.unref();
        resolve({ crc: checksum(buffer.subarray(0, length)), buffer });
      }
    });
  }

  /**
   * Starts the worker unless it runs; resolves with whether it is ready to
   * take CRCs (false: it cannot run, the main thread computes them all).
   * For tests, which must know which path they exercise.
   */
  whenReady(): Promise<boolean> {
    if (this.#state === 'idle') this.#start();
    return this.#ready;
  }

  #start(): void {
    this.#state = 'starting';
    let worker: Worker;
    try {
      worker = new Worker(WORKER_SOURCE, { eval: true, name: 'blocksnap crc32' });
    } catch {
      this.#state = 'broken';
      return;
    }
    worker.unref();
    this.#worker = worker;
    let settle!: (ready: boolean) => void;
    this.#ready = new Promise((resolve) => {
      settle = resolve;
    });
    worker.on('online', () => {
      if (this.#state === 'starting') this.#state = 'ready';
      settle(this.#state === 'ready');
    });
    worker.on('message', (m: { id: number; crc: number; buffer: ArrayBuffer }) => {
      const waiting = this.#waiting.get(m.id);
      if (waiting === undefined) return;
      this.#waiting.delete(m.id);
      if (this.#waiting.size === 0) worker.unref();
      waiting.resolve({ crc: m.crc, buffer: new Uint8Array(m.buffer) });
    });
    // A worker that fails is not used again.
    const fail = (err?: unknown): void => {
      this.#state = 'broken';
      settle(false);
      this.#worker = undefined;
      for (const w of this.#waiting.values()) {
        w.reject(new BlockDeviceError('EIO', 'the CRC worker thread failed', { cause: err }));
      }
      this.#waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', () => fail());
  }
}

/** The process's CRC worker, started on first use with a buffer worth it. */
export const crcWorker = new CrcWorker();
