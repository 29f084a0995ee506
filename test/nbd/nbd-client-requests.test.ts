import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { RequestBatch } from '../../src/nbd/nbd-client-requests.js';
import {
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EXTENDED_REQUEST_MAGIC,
  NBD_REQUEST_MAGIC,
} from '../../src/nbd/protocol.js';
import { seededBytes } from '../support/bytes.js';

/*
 * The client's request batching (src/nbd/nbd-client-requests.ts): what one
 * turn of the event loop queues leaves in one socket write, in order, and
 * bytes handed to the socket are never written again.
 */

/** A stream that keeps every Buffer written to it, as given (not copied). */
function recordingStream(): { stream: Duplex; writes: Buffer[] } {
  const writes: Buffer[] = [];
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      writes.push(chunk);
      callback();
    },
  });
  return { stream, writes };
}

const nextTick = () => new Promise<void>((resolve) => process.nextTick(resolve));

/** The cookies of the 28-byte requests in `bytes`, checking each header's magic. */
function cookiesOf(bytes: Buffer, payloadOf: (cookie: number) => number): number[] {
  const cookies: number[] = [];
  let at = 0;
  while (at < bytes.length) {
    expect(bytes.readUInt32BE(at)).toBe(NBD_REQUEST_MAGIC);
    const cookie = bytes.readUInt32BE(at + 12);
    cookies.push(cookie);
    at += 28 + payloadOf(cookie);
  }
  return cookies;
}

describe('RequestBatch', () => {
  it('sends the requests of one turn in one write on the next tick, in order', async () => {
    const { stream, writes } = recordingStream();
    const batch = new RequestBatch(stream, false);
    const payload = seededBytes(4096, 1);
    batch.add(0, NBD_CMD_READ, 1, 0, 4096);
    batch.add(0, NBD_CMD_WRITE, 2, 2 ** 40 + 4096, 4096, payload);
    batch.add(0, NBD_CMD_READ, 3, 8192, 512);
    expect(writes).toHaveLength(0);
    await nextTick();
    expect(writes).toHaveLength(1);
    const bytes = writes[0]!;
    expect(bytes.length).toBe(28 * 3 + 4096);
    expect(cookiesOf(bytes, (c) => (c === 2 ? 4096 : 0))).toEqual([1, 2, 3]);
    // The write's header: command, 64-bit offset, length; its payload follows.
    expect(bytes.readUInt16BE(28 + 6)).toBe(NBD_CMD_WRITE);
    expect(bytes.readUInt32BE(28 + 16)).toBe(2 ** 8);
    expect(bytes.readUInt32BE(28 + 20)).toBe(4096);
    expect(bytes.readUInt32BE(28 + 24)).toBe(4096);
    expect(bytes.subarray(56, 56 + 4096)).toEqual(Buffer.from(payload));
    batch.add(0, NBD_CMD_READ, 4, 0, 512);
    await nextTick();
    expect(writes).toHaveLength(2);
    expect(cookiesOf(writes[1]!, () => 0)).toEqual([4]);
  });

  it('copies a payload before add returns', async () => {
    const { stream, writes } = recordingStream();
    const batch = new RequestBatch(stream, false);
    const payload = new Uint8Array(512).fill(7);
    batch.add(0, NBD_CMD_WRITE, 1, 0, 512, payload);
    payload.fill(9);
    await nextTick();
    expect(writes[0]!.subarray(28)).toEqual(Buffer.alloc(512, 7));
  });

  it('a large write goes on its own, after the requests queued before it', async () => {
    const { stream, writes } = recordingStream();
    const batch = new RequestBatch(stream, false);
    const large = seededBytes(64 * 1024, 2);
    batch.add(0, NBD_CMD_READ, 1, 0, 4096);
    batch.add(0, NBD_CMD_WRITE, 2, 0, large.length, large);
    batch.add(0, NBD_CMD_READ, 3, 0, 4096);
    expect(writes).toHaveLength(2);
    expect(cookiesOf(writes[0]!, () => 0)).toEqual([1]);
    expect(cookiesOf(writes[1]!, () => large.length)).toEqual([2]);
    expect(writes[1]!.subarray(28)).toEqual(Buffer.from(large));
    await nextTick();
    expect(writes).toHaveLength(3);
    expect(cookiesOf(writes[2]!, () => 0)).toEqual([3]);
  });

  it('never writes again into bytes handed to the socket, across full buffers', async () => {
    const { stream, writes } = recordingStream();
    const batch = new RequestBatch(stream, false);
    const payloads = new Map<number, Uint8Array>();
    const copies: Buffer[] = [];
    for (let turn = 0; turn < 4; turn++) {
      for (let i = 0; i < 20; i++) {
        const cookie = turn * 100 + i + 1;
        const payload = seededBytes(3000, cookie);
        payloads.set(cookie, payload);
        batch.add(0, NBD_CMD_WRITE, cookie, 0, payload.length, payload);
      }
      await nextTick();
      for (let w = copies.length; w < writes.length; w++) copies.push(Buffer.from(writes[w]!));
    }
    // 20 × 3028 bytes a turn: every other turn fills a 64 KiB buffer.
    expect(writes.length).toBeGreaterThan(4);
    for (let w = 0; w < writes.length; w++)
      expect(writes[w]!.equals(copies[w]!), `write ${w}`).toBe(true);
    const all = Buffer.concat(writes);
    const cookies = cookiesOf(all, () => 3000);
    expect(cookies).toEqual([...payloads.keys()]);
    let at = 0;
    for (const cookie of cookies) {
      expect(all.subarray(at + 28, at + 28 + 3000).equals(payloads.get(cookie)!)).toBe(true);
      at += 28 + 3000;
    }
  });

  it('writes 32-byte extended headers with a 64-bit length', async () => {
    const { stream, writes } = recordingStream();
    const batch = new RequestBatch(stream, true);
    batch.add(0, NBD_CMD_READ, 5, 4096, 2 ** 33);
    await nextTick();
    const bytes = writes[0]!;
    expect(bytes.length).toBe(32);
    expect(bytes.readUInt32BE(0)).toBe(NBD_EXTENDED_REQUEST_MAGIC);
    expect(bytes.readUInt32BE(12)).toBe(5);
    expect(bytes.readUInt32BE(24)).toBe(2);
    expect(bytes.readUInt32BE(28)).toBe(0);
  });

  it('sends nothing on a destroyed stream', async () => {
    const { stream, writes } = recordingStream();
    const batch = new RequestBatch(stream, false);
    batch.add(0, NBD_CMD_READ, 1, 0, 4096);
    stream.destroy();
    await nextTick();
    batch.flush();
    expect(writes).toHaveLength(0);
  });
});
