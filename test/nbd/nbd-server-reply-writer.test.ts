import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CORK_MAX, LARGE_CORK_MAX, ReplyWriter } from '../../src/nbd/server-reply-writer.js';
import { MAX_IN_FLIGHT, MAX_POOLED, MAX_UNSENT } from '../../src/nbd/server-transmission.js';
import { readHeaderLength } from '../../src/nbd/server-wire.js';

const KiB = 1024;

/** A stream whose writes complete only when the test says so (`complete()`). */
function heldStream(): { stream: Duplex; written: Buffer[]; complete: () => void } {
  const callbacks: (() => void)[] = [];
  const written: Buffer[] = [];
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(Buffer.from(chunk));
      callbacks.push(() => callback());
    },
  });
  return { stream, written, complete: () => callbacks.shift()?.() };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** A stream that records the lengths of each write call's chunks (one entry per `write` or `writev`). */
function writeRecordingStream(): { calls: number[][]; stream: Duplex } {
  const calls: number[][] = [];
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      calls.push([chunk.length]);
      callback();
    },
    writev(chunks, callback) {
      calls.push(chunks.map((c) => (c.chunk as Buffer).length));
      callback();
    },
  });
  return { calls, stream };
}

describe('ReplyWriter', () => {
  it('tells the transmission at each completed write, not once all have left', async () => {
    const { stream, complete } = heldStream();
    let calls = 0;
    const writer = new ReplyWriter(stream, 1024 * KiB, () => calls++);
    for (let i = 0; i < 3; i++) writer.send(Buffer.alloc(64 * KiB, i));
    await tick();
    expect(calls).toBe(0);
    expect(writer.unsent).toBe(3 * 64 * KiB);
    complete();
    await tick();
    // Two replies are still unsent: a 'drain' would not have come yet.
    expect(calls).toBe(1);
    expect(writer.unsent).toBe(2 * 64 * KiB);
  });

  it('takes a pooled buffer back only once its write has completed, and sends its bytes as they were', async () => {
    const { stream, written, complete } = heldStream();
    const writer = new ReplyWriter(stream, 1024 * KiB, () => {});
    const first = writer.take(64 * KiB).fill(1);
    writer.send(first, first);
    const second = writer.take(64 * KiB);
    expect(second).not.toBe(first);
    second.fill(2);
    writer.send(second, second);
    await tick();
    // The first write is still in the stream: a buffer taken now must be another one.
    const third = writer.take(64 * KiB);
    expect(third === first || third === second).toBe(false);
    complete();
    await tick();
    expect(writer.take(64 * KiB)).toBe(first);
    complete();
    await tick();
    expect(written.map((b) => b[0])).toEqual([1, 2]);
  });

  it('keeps every buffer of a full pipeline of 256 KiB READs (nbdcopy): those in flight and those unsent', async () => {
    const { stream, complete } = heldStream();
    const writer = new ReplyWriter(stream, MAX_POOLED, () => {});
    for (const style of ['simple', 'structured', 'extended'] as const) {
      const length = readHeaderLength(style) + 256 * KiB;
      // The transmission reads another request while fewer than MAX_IN_FLIGHT are in flight
      // and fewer than MAX_UNSENT bytes wait in the socket: so many buffers are out at once.
      const pipeline = MAX_IN_FLIGHT + Math.ceil(MAX_UNSENT / length);
      const seen = new Set<Buffer>();
      for (let round = 0; round < 3; round++) {
        const taken = Array.from({ length: pipeline }, () => writer.take(length));
        for (const buffer of taken) {
          seen.add(buffer);
          writer.send(buffer, buffer);
        }
        await tick();
        for (let i = 0; i < pipeline; i++) complete();
        await tick();
      }
      // Every round after the first reuses the first round's buffers: none dropped, none allocated.
      expect(seen.size, style).toBe(pipeline);
      writer.clear();
    }
  });

  it('sends the replies of every callback of one event-loop iteration in one writev', async () => {
    const { calls, stream } = writeRecordingStream();
    const writer = new ReplyWriter(stream, 1024 * KiB, () => {});
    // Two completions of one iteration, each a callback of its own (as two
    // thread-pool reads are): a flush at the next tick would write each alone.
    await new Promise<void>((resolve) => {
      setImmediate(() => writer.send(Buffer.alloc(16, 1)));
      setImmediate(() => {
        writer.send(Buffer.alloc(20, 2));
        resolve();
      });
    });
    await tick();
    expect(calls).toEqual([[16, 20]]);
  });

  it('replies answered inline while requests are parsed leave at the end of that turn, not at the check phase', async () => {
    const { calls, stream } = writeRecordingStream();
    const writer = new ReplyWriter(stream, 1024 * KiB, () => {});
    let checkPhase = false;
    setImmediate(() => {
      checkPhase = true;
    });
    writer.parsing();
    writer.send(Buffer.alloc(16, 1));
    queueMicrotask(() => writer.send(Buffer.alloc(20, 2)));
    await new Promise<void>((resolve) => process.nextTick(resolve));
    expect(checkPhase).toBe(false);
    expect(calls).toEqual([[16, 20]]);
  });

  it('releases lent bytes only once their write has completed, and sends them as they were', async () => {
    const { stream, written, complete } = heldStream();
    const writer = new ReplyWriter(stream, 1024 * KiB, () => {});
    const lent = new Uint8Array(256 * KiB).fill(5);
    let released = 0;
    const header = writer.take(16).fill(9);
    writer.sendLent(header, { bytes: lent, release: () => released++ });
    await tick();
    complete();
    await tick();
    expect(released).toBe(0);
    complete();
    await tick();
    expect(released).toBe(1);
    expect(written.map((b) => [b.length, b[0]])).toEqual([
      [16, 9],
      [256 * KiB, 5],
    ]);
    // The header is a pooled buffer, back once written.
    expect(writer.take(16)).toBe(header);
  });

  it('releases lent bytes whose write never completes once the socket has closed, not before', async () => {
    const { stream } = heldStream();
    stream.on('error', () => {});
    const writer = new ReplyWriter(stream, 1024 * KiB, () => {});
    let released = 0;
    for (let i = 0; i < 3; i++) {
      writer.sendLent(writer.take(16), {
        bytes: new Uint8Array(128 * KiB),
        release: () => released++,
      });
    }
    await tick();
    expect(released).toBe(0);
    stream.destroy();
    await new Promise((resolve) => stream.once('close', resolve));
    expect(released).toBe(3);
    // A reply after the close is not written, and its bytes go back at once.
    writer.sendLent(writer.take(16), {
      bytes: new Uint8Array(128 * KiB),
      release: () => released++,
    });
    expect(released).toBe(4);
  });

  it('sends a lent reply in one writev with its header, even when the batch before it was nearly full', async () => {
    const { calls, stream } = writeRecordingStream();
    const writer = new ReplyWriter(stream, 1024 * KiB, () => {});
    writer.send(Buffer.alloc(64 * KiB - 8));
    writer.sendLent(writer.take(16), { bytes: new Uint8Array(256 * KiB), release: () => {} });
    await tick();
    expect(calls).toEqual([[64 * KiB - 8, 16, 256 * KiB]]);
  });

  it('sends large replies of one turn four to a writev, cut between replies once past LARGE_CORK_MAX', async () => {
    const { calls, stream } = writeRecordingStream();
    const writer = new ReplyWriter(stream, 1024 * KiB, () => {});
    // Eight 256 KiB READs answered inline in one parsing turn (nbdcopy's
    // requests arrive together): four to a writev, not one each.
    writer.parsing();
    for (let i = 0; i < 8; i++) {
      writer.sendLent(writer.take(32), { bytes: new Uint8Array(256 * KiB), release: () => {} });
    }
    await tick();
    const perBatch = Math.ceil(LARGE_CORK_MAX / (32 + 256 * KiB));
    expect(perBatch).toBe(4);
    const batch = Array.from({ length: perBatch }, () => [32, 256 * KiB]).flat();
    expect(calls).toEqual([batch, batch]);
  });

  it('cuts a batch of small replies at CORK_MAX', async () => {
    const { calls, stream } = writeRecordingStream();
    const writer = new ReplyWriter(stream, 1024 * KiB, () => {});
    writer.parsing();
    for (let i = 0; i < 40; i++) writer.send(Buffer.alloc(4 * KiB));
    await tick();
    const perBatch = CORK_MAX / (4 * KiB);
    expect(calls.map((c) => c.length)).toEqual([perBatch, perBatch, 40 - 2 * perBatch]);
  });

  it('reuses nothing after a failed write', async () => {
    const stream = new Duplex({
      read() {},
      write(_chunk, _encoding, callback) {
        callback(new Error('gone'));
      },
    });
    stream.on('error', () => {});
    const writer = new ReplyWriter(stream, 1024 * KiB, () => {});
    const buffer = writer.take(64 * KiB);
    writer.send(buffer, buffer);
    await tick();
    await tick();
    expect(writer.take(64 * KiB)).not.toBe(buffer);
  });
});
