import type { Duplex } from 'node:stream';
import type { LentBytes } from '../base/index.js';
import { ReplyBufferPool } from './server-reply-pool.js';

/** Bytes of replies corked into one writev at most (see {@link ReplyWriter.send}). */
export const CORK_MAX = 64 * 1024;
/**
 * Bytes of replies corked into one writev at most once the last reply
 * added is itself {@link CORK_MAX} or more: four 256 KiB READ replies.
 * Under nbdcopy (READs of 256 KiB, 64 in flight on each of two
 * connections) the small bound sent each reply in a writev of its own, and
 * each woke the client's reading thread again: about twice the context
 * switches per GiB in nbdcopy, and a copy slower than nbdkit's; with
 * 1 MiB it is faster. Small replies keep the small bound, under which the
 * first replies of a turn leave while the rest are still being answered:
 * with 1 MiB for every reply, 4 KiB READs at queue depth 32 cost more CPU
 * per request (docs/ARCHITECTURE.md, "NBD", "Performance").
 */
export const LARGE_CORK_MAX = 1024 * 1024;

/**
 * The socket side of one connection's transmission phase
 * (docs/ARCHITECTURE.md, "NBD"): writes replies whole, batches the small
 * ones of one event-loop iteration into one writev, and lends READ replies
 * pooled buffers that come back only once the socket has written them.
 * A reply is never split across socket writes (the socket keeps
 * `setNoDelay`: nothing waits for Nagle).
 */
export class ReplyWriter {
  readonly #stream: Duplex;
  readonly #pool: ReplyBufferPool;
  readonly #onWritten: () => void;
  /**
   * What each write still in the socket carries, in write order: a pooled
   * buffer to hand back once written, bytes a device lent to release then,
   * or undefined. A writable stream calls write callbacks in write order,
   * so the one shared callback ({@link #written}) takes one entry per call.
   */
  readonly #writing: (Buffer | LentBytes | undefined)[] = [];
  #writingHead = 0;
  /** Set on the first failed write: the socket is going away and no buffer is reused again. */
  #failed = false;
  /** Lent bytes whose write callback came after a failure: released once the socket has closed. */
  readonly #heldLent: LentBytes[] = [];
  #corked = false;
  #corkedBytes = 0;
  #uncorkQueued = false;
  /** Set from {@link parsing} until the microtasks of that turn have run. */
  #inParsingTurn = false;

  /**
   * A writer on `stream` that keeps at most `maxPooled` bytes of free
   * buffers, and calls `onWritten` each time a write has left.
   */
  constructor(stream: Duplex, maxPooled: number, onWritten: () => void) {
    this.#stream = stream;
    this.#pool = new ReplyBufferPool(maxPooled);
    this.#onWritten = onWritten;
    stream.once('close', this.#closed);
  }

  /** Bytes written and not yet taken by the socket. */
  get unsent(): number {
    return this.#stream.writableLength;
  }

  /** A buffer of `length` bytes for a reply, to {@link send} as `pooled` or {@link give} back. */
  take(length: number): Buffer {
    return this.#pool.take(length);
  }

  /** Hands back a buffer from {@link take} that was never sent (the read into it failed). */
  give(buffer: Buffer): void {
    this.#pool.give(buffer);
  }

  /** Drops the free buffers: the connection has ended and holds none. */
  clear(): void {
    this.#pool.clear();
  }

  /**
   * The transmission is parsing requests that just arrived: until this
   * turn's microtasks have run, replies are of requests the device answered
   * inline (a MemoryDevice), and the batch leaves at the end of the turn
   * ({@link send}).
   */
  parsing(): void {
    if (this.#inParsingTurn) return;
    this.#inParsingTurn = true;
    process.nextTick(this.#parsed);
  }

  readonly #parsed = (): void => {
    this.#inParsingTurn = false;
  };

  /**
   * Writes one reply whole: `first`, then `second` if given. Replies sent
   * together are corked and leave in one writev (one system call for many
   * small replies at queue depth), never split: at the end of the turn for
   * replies sent while requests are parsed ({@link parsing}: answered inline,
   * they leave as soon as the turn's requests are done, and the client's
   * next requests overlap the server's work), else at the check phase of
   * the event loop's iteration (each thread-pool completion is a turn of
   * its own: every reply completed in the iteration joins one writev) — up
   * to {@link CORK_MAX} bytes, or {@link LARGE_CORK_MAX} after a reply of
   * that size or more: a larger batch leaves at once, since a writev completes only when all of it has
   * left, and until then none of its buffers comes back and all its bytes
   * count as unsent. `pooled`, if given, is the buffer from {@link take}
   * the reply is written from (`first`); it goes back to the pool once the
   * socket has written it, never before.
   */
  send(first: Buffer, pooled?: Buffer, second?: Buffer): void {
    if (this.#closedForWrites()) return;
    this.#write(first, pooled, second, undefined);
  }

  /**
   * Writes a READ reply whose data a device lent (its `LEND_READ`):
   * `header` (a buffer from {@link take}, back to the pool once written)
   * then the lent bytes, corked together as {@link send} does, so the
   * reply is never split. The bytes are released once the socket has
   * written them (their write callback), or once it has closed after a
   * failure; never before, since until then the socket may still read them.
   */
  sendLent(header: Buffer, lent: LentBytes): void {
    if (this.#closedForWrites()) {
      lent.release();
      return;
    }
    const { bytes } = lent;
    this.#write(
      header,
      header,
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      lent,
    );
  }

  #closedForWrites(): boolean {
    return this.#stream.destroyed || this.#stream.writableEnded;
  }

  /** One reply, `first` then `second`, each with what its write callback hands back. */
  #write(
    first: Buffer,
    firstEntry: Buffer | undefined,
    second: Buffer | undefined,
    secondEntry: LentBytes | undefined,
  ): void {
    const stream = this.#stream;
    if (!this.#corked) {
      this.#corked = true;
      stream.cork();
      if (!this.#uncorkQueued) {
        this.#uncorkQueued = true;
        if (this.#inParsingTurn) process.nextTick(this.#uncork);
        else setImmediate(this.#uncork);
      }
    }
    this.#writing.push(firstEntry);
    stream.write(first, this.#written);
    let bytes = first.length;
    if (second !== undefined) {
      this.#writing.push(secondEntry);
      stream.write(second, this.#written);
      bytes += second.length;
    }
    // Checked after the whole reply: a batch is cut between replies, never inside one.
    this.#corkedBytes += bytes;
    if (this.#corkedBytes >= (bytes >= CORK_MAX ? LARGE_CORK_MAX : CORK_MAX)) this.#flushBatch();
  }

  readonly #uncork = (): void => {
    this.#uncorkQueued = false;
    this.#flushBatch();
  };

  #flushBatch(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.#corkedBytes = 0;
    this.#stream.uncork();
  }

  /**
   * Called once per write, in write order, when the socket has written it
   * (or failed): hands a pooled buffer back and tells the transmission,
   * whose request loop may have stopped on unsent bytes — at each write, not
   * only once all of them have left ('drain'), so the pipeline never empties.
   */
  readonly #written = (err?: Error | null): void => {
    const writing = this.#writing;
    const pooled = writing[this.#writingHead];
    writing[this.#writingHead++] = undefined;
    if (this.#writingHead === writing.length) {
      writing.length = 0;
      this.#writingHead = 0;
    } else if (this.#writingHead >= 1024 && this.#writingHead * 2 >= writing.length) {
      // Under constant load the queue may never empty: drop the entries taken.
      writing.splice(0, this.#writingHead);
      this.#writingHead = 0;
    }
    // After a failure, callbacks may come out of order: no buffer is trusted
    // to be free, and lent bytes wait for the socket's close.
    if (err) this.#failed = true;
    if (pooled !== undefined) {
      if (Buffer.isBuffer(pooled)) {
        if (!this.#failed) this.#pool.give(pooled);
      } else if (this.#failed) this.#heldLent.push(pooled);
      else pooled.release();
    }
    this.#onWritten();
  };

  /**
   * The socket has closed: it reads none of the bytes written to it any
   * more, so every lent reply still unanswered by a write callback is released.
   */
  readonly #closed = (): void => {
    for (const lent of this.#heldLent.splice(0)) lent.release();
    const writing = this.#writing;
    for (let i = this.#writingHead; i < writing.length; i++) {
      const entry = writing[i];
      if (entry !== undefined && !Buffer.isBuffer(entry)) {
        entry.release();
        writing[i] = undefined;
      }
    }
  };
}
