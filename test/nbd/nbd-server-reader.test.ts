import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ByteReader } from '../../src/nbd/server-reader.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('ByteReader', () => {
  it('hands out the bytes in order however the stream cut them, through every way of reading', async () => {
    const stream = new PassThrough();
    const reader = new ByteReader(stream);
    const sent = Buffer.from(Array.from({ length: 200 }, (_, i) => i));
    // Cut across every boundary below: 28-byte headers over 1-, 5- and 64-byte chunks.
    for (const [from, to] of [
      [0, 1],
      [1, 6],
      [6, 70],
      [70, 71],
      [71, 200],
    ] as const) {
      stream.write(sent.subarray(from, to));
    }
    await tick();
    const got: number[] = [];
    // The first header lies across three chunks: not in one piece, so gathered.
    expect(reader.peekNow(28)).toBeUndefined();
    got.push(...(await reader.read(28)));
    // The next lies whole in the 64-byte chunk: seen in place, then consumed.
    const second = reader.peekNow(28);
    expect(second).toBeDefined();
    got.push(...(second as Buffer).subarray(reader.headAt, reader.headAt + 28));
    reader.consume(28);
    // The rest of that chunk exactly, then two bytes across two chunks.
    got.push(...(reader.takeNow(14) as Buffer));
    expect(reader.peekNow(2)).toBeUndefined();
    got.push(...(reader.takeNow(2) as Buffer));
    const rest = reader.peekNow(128);
    expect(rest).toBeDefined();
    got.push(...(rest as Buffer).subarray(reader.headAt, reader.headAt + 128));
    reader.consume(128);
    expect(reader.buffered).toBe(0);
    expect(reader.takeNow(1)).toBeUndefined();
    expect(Buffer.from(got)).toEqual(sent);
  });

  it('a read that cuts a chunk leaves the rest of it to the next read, byte for byte', async () => {
    const stream = new PassThrough();
    const reader = new ByteReader(stream);
    stream.write(Buffer.from('abcdefgh'));
    await tick();
    expect((reader.takeNow(3) as Buffer).toString()).toBe('abc');
    const view = reader.peekNow(2) as Buffer;
    expect(view.subarray(reader.headAt, reader.headAt + 2).toString()).toBe('de');
    reader.consume(2);
    expect((await reader.read(3)).toString()).toBe('fgh');
    expect(reader.buffered).toBe(0);
  });
});
