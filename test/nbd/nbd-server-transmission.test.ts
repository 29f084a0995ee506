import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type BlockDevice,
  CowSnapshotDevice,
  MemoryDevice,
  type NbdServer,
  type NbdServerOptions,
  serveNbd,
} from '../../src/index.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
} from '../../src/nbd/index.js';
import { MAX_UNSENT } from '../../src/nbd/server-transmission.js';
import { pattern } from '../support/bytes.js';
import { CountingDevice } from '../support/counting-device.js';
import { GatedDevice } from '../support/gated-device.js';
import { RawNbdClient } from '../support/nbd-raw-client.js';

const MiB = 1024 * 1024;
let server: NbdServer | undefined;
const clients: RawNbdClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = undefined;
});

async function serve(
  exports: NbdServerOptions['exports'],
  options: Partial<NbdServerOptions> = {},
): Promise<number> {
  server = await serveNbd({ exports, port: 0, ...options });
  return (server.address as { port: number }).port;
}

async function client(port: number): Promise<RawNbdClient> {
  const c = await RawNbdClient.connect(port);
  clients.push(c);
  return c;
}

async function counted(size = 8 * MiB): Promise<CountingDevice> {
  return new CountingDevice(await MemoryDevice.create({ size }));
}

describe('NBD server transmission', () => {
  it('simple replies: WRITE then READ round-trips, unaligned too; FLUSH reaches the device', async () => {
    const disk = await counted();
    const c = await client(await serve({ disk }));
    await c.go('disk');
    const data = pattern(3333, 7);
    c.request(NBD_CMD_WRITE, 0, 1, 1000, data.length, data);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(0);
    c.request(NBD_CMD_READ, 0, 2, 1000, data.length);
    const r = await c.reply(data.length);
    expect(r.cookie).toBe(2);
    expect(Buffer.compare(r.payload, Buffer.from(data))).toBe(0);
    c.request(NBD_CMD_FLUSH, 0, 3, 0, 0);
    expect((await c.reply()).cookie).toBe(3);
    expect(disk.flushes).toBe(1);
    expect(Buffer.compare(Buffer.from(await disk.read(1000, 3333)), Buffer.from(data))).toBe(0);
  });

  it('structured replies: a READ is one OFFSET_DATA chunk marked done; errors are ERROR chunks', async () => {
    const disk = await MemoryDevice.create({ size: 4 * MiB });
    await disk.write(4096, pattern(8192, 3));
    const c = await client(await serve({ disk }));
    await c.go('disk', [NBD_OPT_STRUCTURED_REPLY]);
    c.request(NBD_CMD_READ, 0, 9, 4096, 8192);
    const r = await c.reply();
    expect([r.kind, r.type, r.flags, r.cookie]).toEqual([
      'structured',
      NBD_REPLY_TYPE_OFFSET_DATA,
      NBD_REPLY_FLAG_DONE,
      9,
    ]);
    expect(r.payload.readBigUInt64BE(0)).toBe(4096n);
    expect(Buffer.compare(r.payload.subarray(8), Buffer.from(pattern(8192, 3)))).toBe(0);
    c.request(NBD_CMD_READ, 0, 10, 4 * MiB - 10, 20);
    const e = await c.reply();
    expect([e.type, e.flags, RawNbdClient.errorOf(e)]).toEqual([
      NBD_REPLY_TYPE_ERROR,
      NBD_REPLY_FLAG_DONE,
      NBD_EINVAL,
    ]);
    expect(e.payload.subarray(6).toString()).toMatch(/past the end/);
  });

  it('a READ the device fails (through its callback read) is an ERROR chunk, and the connection goes on', async () => {
    const disk = await MemoryDevice.create({ size: 4 * MiB });
    await disk.write(0, pattern(4096, 5));
    const c = await client(await serve({ disk }));
    await c.go('disk', [NBD_OPT_STRUCTURED_REPLY]);
    c.request(NBD_CMD_READ, 0, 1, 0, 4096);
    expect(
      Buffer.compare((await c.reply()).payload.subarray(8), Buffer.from(pattern(4096, 5))),
    ).toBe(0);
    await disk.close();
    for (const cookie of [2, 3]) {
      c.request(NBD_CMD_READ, 0, cookie, 4096 * cookie, 4096);
      const e = await c.reply();
      expect([e.cookie, e.type, RawNbdClient.errorOf(e)]).toEqual([
        cookie,
        NBD_REPLY_TYPE_ERROR,
        NBD_EIO,
      ]);
      expect(e.payload.subarray(6).toString()).toMatch(/closed/);
    }
  });

  it('a request past the end is refused without touching the device (READ/TRIM EINVAL, WRITE/ZEROES ENOSPC)', async () => {
    const disk = await counted(1 * MiB);
    const c = await client(await serve({ disk }));
    await c.go('disk');
    c.request(NBD_CMD_READ, 0, 1, MiB - 512, 1024);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    c.request(NBD_CMD_WRITE, 0, 2, MiB - 512, 1024, new Uint8Array(1024).fill(9));
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_ENOSPC);
    c.request(NBD_CMD_WRITE_ZEROES, 0, 3, 2n ** 63n, 1);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_ENOSPC);
    c.request(NBD_CMD_TRIM, 0, 4, MiB, 1);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    c.request(NBD_CMD_CACHE, 0, 5, 2n ** 64n - 1n, 2);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    expect([disk.reads, disk.writes]).toEqual([0, 0]);
    // The connection goes on: the write payload was consumed.
    c.request(NBD_CMD_READ, 0, 6, 0, 16);
    expect((await c.reply(16)).error).toBe(0);
  });

  it('a read-only export refuses WRITE, WRITE_ZEROES and TRIM with EPERM before the device sees them', async () => {
    const disk = await counted();
    const c = await client(await serve({ ro: { device: disk, readOnly: true } }));
    await c.go('ro');
    c.request(NBD_CMD_WRITE, 0, 1, 0, 512, new Uint8Array(512).fill(1));
    c.request(NBD_CMD_WRITE_ZEROES, 0, 2, 0, 512);
    c.request(NBD_CMD_TRIM, 0, 3, 0, 512);
    for (let i = 0; i < 3; i++) expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EPERM);
    expect(disk.writes).toBe(0);
  });

  it('unknown commands and flags not valid for a command are EINVAL', async () => {
    const disk = await counted();
    const c = await client(await serve({ disk }));
    await c.go('disk');
    c.request(42, 0, 1, 0, 0);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    c.request(NBD_CMD_READ, NBD_CMD_FLAG_NO_HOLE, 2, 0, 512);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    c.request(NBD_CMD_WRITE, 0x80, 3, 0, 4, new Uint8Array(4));
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    c.request(NBD_CMD_BLOCK_STATUS, 0, 4, 0, 512);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    expect([disk.reads, disk.writes]).toEqual([0, 0]);
  });

  it('WRITE_ZEROES writes zero bytes (NO_HOLE too); FAST_ZERO is an honest ENOTSUP that changes nothing', async () => {
    const disk = await counted(4 * MiB);
    await disk.inner.write(0, new Uint8Array(3 * MiB).fill(0xee));
    const c = await client(await serve({ disk }));
    await c.go('disk');
    c.request(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, 1, 0, 3 * MiB);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_ENOTSUP);
    expect(disk.writes).toBe(0);
    c.request(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA, 2, 100, 2 * MiB + 50);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(0);
    expect(disk.flushes).toBe(1);
    const after = await disk.inner.read(0, 3 * MiB);
    expect(after.subarray(0, 100).every((b) => b === 0xee)).toBe(true);
    expect(after.subarray(100, 100 + 2 * MiB + 50).every((b) => b === 0)).toBe(true);
    expect(after.subarray(100 + 2 * MiB + 50).every((b) => b === 0xee)).toBe(true);
  });

  it('FUA flushes before the reply: the reply waits for the device flush', async () => {
    const gated = new GatedDevice(await MemoryDevice.create({ size: MiB }));
    const c = await client(await serve({ disk: gated }));
    await c.go('disk');
    const flush = gated.gate('flush');
    c.request(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 1, 0, 4, new Uint8Array([1, 2, 3, 4]));
    await flush.reached;
    await expect(c.read(1, 100)).rejects.toThrow(/no 1 bytes/);
    flush.open();
    expect(RawNbdClient.errorOf(await c.reply())).toBe(0);
  });

  it('a burst of pipelined WRITEs past the in-flight limit and the receive buffer lands byte for byte', async () => {
    // Payloads of odd lengths straddle socket reads at every position; the
    // gates hold the first 64 writes (the in-flight limit), so later ones
    // wait, partly received, while the socket reads on: no WRITE may see
    // bytes of a later read.
    const gated = new GatedDevice(await MemoryDevice.create({ size: 4 * MiB }));
    const c = await client(await serve({ disk: gated }));
    await c.go('disk');
    const count = 150;
    const held = Array.from({ length: 64 }, (_, i) =>
      gated.gate('write', (offset) => offset === i * 20_000),
    );
    const expected = Buffer.alloc(4 * MiB);
    const burst: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const offset = i * 20_000;
      const data = pattern(4096 + ((i * 1237) % 15_000), i + 1);
      expected.set(data, offset);
      const header = Buffer.alloc(28);
      header.writeUInt32BE(0x25609513, 0);
      header.writeUInt16BE(NBD_CMD_WRITE, 6);
      header.writeUInt32BE(i, 12);
      header.writeUInt32BE(offset, 20);
      header.writeUInt32BE(data.length, 24);
      burst.push(header, Buffer.from(data));
    }
    c.write(Buffer.concat(burst));
    await Promise.all(held.map((gate) => gate.reached));
    await new Promise((resolve) => setTimeout(resolve, 50));
    for (const gate of held) gate.open();
    const cookies = new Set<number>();
    for (let i = 0; i < count; i++) {
      const reply = await c.reply();
      expect(reply.error).toBe(0);
      cookies.add(reply.cookie);
    }
    expect(cookies.size).toBe(count);
    expect(Buffer.from(await gated.read(0, 4 * MiB)).equals(expected)).toBe(true);
  });

  it('serves requests concurrently and answers in completion order', async () => {
    const gated = new GatedDevice(await MemoryDevice.create({ size: MiB }));
    const c = await client(await serve({ disk: gated }));
    await c.go('disk', [NBD_OPT_STRUCTURED_REPLY]);
    const slow = gated.gate('read', (offset) => offset === 0);
    c.request(NBD_CMD_READ, 0, 1, 0, 512);
    c.request(NBD_CMD_READ, 0, 2, 4096, 512);
    await slow.reached;
    expect((await c.reply()).cookie).toBe(2);
    slow.open();
    expect((await c.reply()).cookie).toBe(1);
  });

  it('extended headers: 64-bit requests, extended replies echoing the offset, BLOCK_STATUS_EXT', async () => {
    const disk = await MemoryDevice.create({ size: 8 * MiB });
    const c = await client(await serve({ disk }));
    await c.greet();
    expect((await c.option(NBD_OPT_EXTENDED_HEADERS))[0]?.type).toBe(NBD_REP_ACK);
    const set = await c.option(
      NBD_OPT_SET_META_CONTEXT,
      RawNbdClient.metaData('disk', ['base:allocation']),
    );
    const id = set[0]?.data.readUInt32BE(0);
    const go = await c.option(7, RawNbdClient.goData('disk'));
    expect(go[go.length - 1]?.type).toBe(NBD_REP_ACK);
    const data = pattern(5000, 11);
    c.extendedRequest(NBD_CMD_WRITE, 0, 1, 777, data.length, data);
    const w = await c.reply();
    expect([w.kind, w.type, w.flags, w.offset]).toEqual([
      'extended',
      NBD_REPLY_TYPE_NONE,
      NBD_REPLY_FLAG_DONE,
      777n,
    ]);
    c.extendedRequest(NBD_CMD_READ, 0, 2, 777, 5000);
    const r = await c.reply();
    expect([r.type, r.offset]).toEqual([NBD_REPLY_TYPE_OFFSET_DATA, 777n]);
    expect(Buffer.compare(r.payload.subarray(8), Buffer.from(data))).toBe(0);
    // A WRITE without PAYLOAD_LEN carries no payload: refused, and the stream stays in step.
    c.extendedRequest(NBD_CMD_WRITE, 0, 3, 0, 16);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    c.extendedRequest(NBD_CMD_BLOCK_STATUS, 0, 4, 0, 8 * MiB);
    const s = await c.reply();
    expect([s.type, s.flags]).toEqual([NBD_REPLY_TYPE_BLOCK_STATUS_EXT, NBD_REPLY_FLAG_DONE]);
    expect([s.payload.readUInt32BE(0), s.payload.readUInt32BE(4)]).toEqual([id, 1]);
    expect([s.payload.readBigUInt64BE(8), s.payload.readBigUInt64BE(16)]).toEqual([
      BigInt(8 * MiB),
      0n,
    ]);
    // A 64-bit effect length past the end.
    c.extendedRequest(NBD_CMD_WRITE_ZEROES, 0, 5, 0, 2n ** 40n);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_ENOSPC);
  });

  it('a 4 GiB write payload is refused and the connection closed, without reading it; others go on', async () => {
    const disk = await counted();
    const port = await serve({ disk });
    const c = await client(port);
    await c.greet();
    await c.option(NBD_OPT_EXTENDED_HEADERS);
    await c.option(7, RawNbdClient.goData('disk'));
    const before = process.memoryUsage().arrayBuffers;
    c.extendedRequest(NBD_CMD_WRITE, 0x1, 1, 0, 4n * 1024n ** 3n, new Uint8Array(0));
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    await c.waitClosed();
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * MiB);
    expect(disk.writes).toBe(0);
    const other = await client(port);
    await other.go('disk');
    other.request(NBD_CMD_READ, 0, 1, 0, 8);
    expect((await other.reply(8)).error).toBe(0);
  });

  it('a payload over maxPayload but within 32 MiB is skipped and refused; the connection goes on', async () => {
    const disk = await counted();
    const c = await client(await serve({ disk }, { maxPayload: MiB }));
    await c.go('disk');
    c.request(NBD_CMD_WRITE, 0, 1, 0, 2 * MiB, new Uint8Array(2 * MiB).fill(3));
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EINVAL);
    c.request(NBD_CMD_READ, 0, 2, 0, 2 * MiB);
    expect(RawNbdClient.errorOf(await c.reply())).toBe(NBD_EOVERFLOW);
    c.request(NBD_CMD_READ, 0, 3, 0, 4);
    const r = await c.reply(4);
    expect([r.cookie, ...r.payload]).toEqual([3, 0, 0, 0, 0]);
    expect(disk.writes).toBe(0);
  });

  it('a client that disconnects in the middle of a write payload writes nothing', async () => {
    const disk = await counted();
    const port = await serve({ disk });
    const c = await client(port);
    await c.go('disk');
    const disconnected = new Promise((resolve) => server?.once('disconnect', resolve));
    c.request(NBD_CMD_WRITE, 0, 1, 0, 64 * 1024, new Uint8Array(30 * 1024).fill(5));
    await new Promise((resolve) => setTimeout(resolve, 50));
    c.destroy();
    await disconnected;
    expect(disk.writes).toBe(0);
  });

  it('a client that never reads its replies stops being read: requests in flight stay bounded', async () => {
    const disk = await counted(64 * MiB);
    const c = await client(await serve({ disk }));
    await c.go('disk');
    c.socket.pause();
    const header = Buffer.alloc(28);
    const many: Buffer[] = [];
    for (let i = 0; i < 2000; i++) {
      header.writeUInt32BE(0x25609513, 0);
      header.writeUInt16BE(NBD_CMD_READ, 6);
      header.writeBigUInt64BE(BigInt(i), 8);
      header.writeBigUInt64BE(BigInt((i % 60) * MiB), 16);
      header.writeUInt32BE(MiB, 24);
      many.push(Buffer.from(header));
    }
    c.write(Buffer.concat(many));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const reads = disk.reads;
    // 16 MiB of unsent replies plus at most 64 MiB in flight, of 1 MiB each, not 2000.
    expect(reads).toBeLessThan(120);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(disk.reads).toBe(reads);
    c.socket.resume();
  });

  it('a READ reply sent from the blocks of a MemoryDevice keeps the bytes read, whatever is written while it waits unsent', async () => {
    // 256 KiB READs of a device written in order lie in one arena each, so
    // their replies go out from the device's memory (LEND_READ). With the
    // client not reading, at least MAX_UNSENT of them wait in the socket
    // when the whole device is overwritten; each must still arrive as read.
    const size = 48 * MiB;
    const length = 256 * 1024;
    const disk = await MemoryDevice.create({ size });
    for (let at = 0; at < size; at += MiB) await disk.write(at, new Uint8Array(MiB).fill(1));
    const c = await client(await serve({ disk }));
    await c.go('disk');
    c.socket.pause();
    for (let i = 0; i < size / length; i++) c.request(NBD_CMD_READ, 0, i, i * length, length);
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (let at = 0; at < size; at += MiB) await disk.write(at, new Uint8Array(MiB).fill(2));
    c.socket.resume();
    const kinds: number[] = [];
    for (let i = 0; i < size / length; i++) {
      const r = await c.reply(length);
      expect([r.cookie, r.error]).toEqual([i, 0]);
      // Wholly the old bytes or wholly the new: a reply is one read.
      const first = r.payload[0] as number;
      expect(r.payload.every((b) => b === first)).toBe(true);
      kinds.push(first);
    }
    const old = kinds.indexOf(2) === -1 ? kinds.length : kinds.indexOf(2);
    expect(kinds.slice(old).every((k) => k === 2)).toBe(true);
    // Every reply the server had made before the overwrite was of the old bytes.
    expect(old).toBeGreaterThanOrEqual(MAX_UNSENT / length);
  });

  it('DISC ends the connection after answering what is in flight', async () => {
    const gated = new GatedDevice(await MemoryDevice.create({ size: MiB }));
    const c = await client(await serve({ disk: gated }));
    await c.go('disk');
    const held = gated.gate('write');
    c.request(NBD_CMD_WRITE, 0, 1, 0, 4, new Uint8Array([9, 9, 9, 9]));
    await held.reached;
    c.request(NBD_CMD_DISC, 0, 2, 0, 0);
    held.open();
    expect((await c.reply()).cookie).toBe(1);
    await c.waitClosed();
    expect([...(await gated.read(0, 4))]).toEqual([9, 9, 9, 9]);
  });

  it('blocksnap:changed:<snapshot> reports what changed since a snapshot of a COW device', async () => {
    const origin = await MemoryDevice.create({ size: 4 * MiB });
    const store = await MemoryDevice.create({ size: 4 * MiB });
    const cow = await CowSnapshotDevice.create(origin, store);
    await cow.snapshot({ name: 'monday' });
    await cow.write(8192, new Uint8Array(4096).fill(1));
    await cow.write(MiB, new Uint8Array(100).fill(2));
    try {
      const c = await client(await serve({ vol: cow }));
      await c.greet();
      await c.option(NBD_OPT_STRUCTURED_REPLY);
      const set = await c.option(
        NBD_OPT_SET_META_CONTEXT,
        RawNbdClient.metaData('vol', ['blocksnap:changed:monday', 'base:allocation']),
      );
      expect(set.map((r) => r.data.subarray(4).toString())).toEqual([
        'blocksnap:changed:monday',
        'base:allocation',
        '',
      ]);
      const changedId = set[0]?.data.readUInt32BE(0);
      await c.option(7, RawNbdClient.goData('vol'));
      c.request(NBD_CMD_BLOCK_STATUS, 0, 1, 4096, 2 * MiB);
      const chunks = [await c.reply(), await c.reply()];
      expect(chunks.map((x) => x.type)).toEqual([
        NBD_REPLY_TYPE_BLOCK_STATUS,
        NBD_REPLY_TYPE_BLOCK_STATUS,
      ]);
      expect(chunks[1]?.flags).toBe(NBD_REPLY_FLAG_DONE);
      const changed = chunks.find((x) => x.payload.readUInt32BE(0) === changedId) as {
        payload: Buffer;
      };
      const extents = [];
      for (let p = 4; p < changed.payload.length; p += 8) {
        extents.push([changed.payload.readUInt32BE(p), changed.payload.readUInt32BE(p + 4)]);
      }
      expect(extents).toEqual([
        [4096, 0],
        [4096, 1],
        [MiB - 12288, 0],
        [4096, 1],
        [MiB, 0],
      ]);
      c.request(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 2, 0, 2 * MiB);
      const one = [await c.reply(), await c.reply()].find(
        (x) => x.payload.readUInt32BE(0) === changedId,
      );
      expect(one?.payload.length).toBe(12);
      expect([one?.payload.readUInt32BE(4), one?.payload.readUInt32BE(8)]).toEqual([8192, 0]);
    } finally {
      await server?.close();
      await cow.close();
    }
  });

  it('close() lets a request in flight finish and be answered, then ends the connection', async () => {
    const gated = new GatedDevice(await MemoryDevice.create({ size: MiB }));
    const c = await client(await serve({ disk: gated }));
    await c.go('disk');
    const held = gated.gate('read');
    c.request(NBD_CMD_READ, 0, 1, 0, 4);
    await held.reached;
    const closing = server?.close();
    await new Promise((resolve) => setTimeout(resolve, 20));
    held.open();
    const r = await c.reply(4);
    expect([r.cookie, r.error]).toEqual([1, 0]);
    await c.waitClosed();
    await closing;
    expect(gated.readOnly).toBe(false);
    // The server closed no device.
    expect((await gated.read(0, 1)).length).toBe(1);
  });
});

/** A device used by the tests of exports: counts closes. */
class ClosingCounter extends CountingDevice {
  closes = 0;
  override close(): Promise<void> {
    this.closes++;
    return super.close();
  }
}

describe('NBD server exports and lifecycle', () => {
  it('listens on a Unix socket path and answers there', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'nbd-sock-'));
    try {
      const socket = path.join(dir, 's');
      server = await serveNbd({
        exports: { disk: await MemoryDevice.create({ size: MiB }) },
        path: socket,
      });
      expect(server.address).toEqual({ path: socket });
      const c = await RawNbdClient.connect(socket);
      clients.push(c);
      expect((await c.go('disk')).size).toBe(BigInt(MiB));
    } finally {
      await server?.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('an AbortSignal closes the server; await using closes it too', async () => {
    const abort = new AbortController();
    const disk = await MemoryDevice.create({ size: MiB });
    const s = await serveNbd({ exports: { disk }, port: 0, signal: abort.signal });
    const port = (s.address as { port: number }).port;
    abort.abort();
    await s.close();
    await expect(RawNbdClient.connect(port)).rejects.toThrow();
    {
      await using t = await serveNbd({ exports: { disk }, port: 0 });
      expect(t.connections).toBe(0);
    }
  });

  it('refuses bad options with EINVAL and a used port with EBUSY', async () => {
    const disk = await MemoryDevice.create({ size: MiB });
    await expect(serveNbd({ exports: { disk }, port: 70000 })).rejects.toThrow(/EINVAL/);
    await expect(serveNbd({ exports: { disk }, maxPayload: 100 })).rejects.toThrow(/EINVAL/);
    await expect(serveNbd({ exports: { disk: {} as BlockDevice } })).rejects.toThrow(/EINVAL/);
    await expect(serveNbd({ exports: 'disk' as never })).rejects.toThrow(/EINVAL/);
    await expect(
      serveNbd({ exports: { disk }, tls: { mode: 'maybe' as never, psk: { a: 'ab' } } }),
    ).rejects.toThrow(/EINVAL/);
    const port = await serve({ disk });
    await expect(serveNbd({ exports: { disk }, port })).rejects.toThrow(/EBUSY/);
  });

  it('a resolver is asked once per name while connections share it, and released when the last ends', async () => {
    const disk = new ClosingCounter(await MemoryDevice.create({ size: MiB }));
    let asked = 0;
    let released = 0;
    const port = await serve((name) => {
      if (name !== 'lazy') return undefined;
      asked++;
      return { device: disk, release: () => void released++ };
    });
    const a = await client(port);
    const b = await client(port);
    await a.go('lazy');
    const { flags } = await b.go('lazy');
    expect(flags & 0x100).toBe(0x100); // CAN_MULTI_CONN: one device for both
    expect(asked).toBe(1);
    a.request(NBD_CMD_DISC, 0, 1, 0, 0);
    await a.waitClosed();
    expect(released).toBe(0);
    b.request(NBD_CMD_DISC, 0, 1, 0, 0);
    await b.waitClosed();
    await expect.poll(() => released).toBe(1);
    expect(disk.closes).toBe(0);
  });
});
