import { afterEach, describe, expect, it } from 'vitest';
import { type BlockDevice, MemoryDevice, type NbdServer, serveNbd } from '../../src/index.js';
import {
  NBD_CMD_READ,
  NBD_EINVAL,
  NBD_EOVERFLOW,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_REP_ACK,
  NBD_REPLY_TYPE_ERROR,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
} from '../../src/nbd/index.js';
import { pattern } from '../support/bytes.js';
import { RawNbdClient } from '../support/nbd-raw-client.js';

/*
 * How the server's replies leave (src/nbd/server-reply-writer.ts): READ
 * replies written from reused buffers; and 64-bit request fields read
 * without BigInt (src/nbd/server-request.ts).
 */

const MiB = 1024 * 1024;
const KiB = 1024;
let server: NbdServer | undefined;
const clients: RawNbdClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = undefined;
});

async function connect(disk: BlockDevice): Promise<RawNbdClient> {
  server = await serveNbd({ exports: { disk }, port: 0 });
  const c = await RawNbdClient.connect((server.address as { port: number }).port);
  clients.push(c);
  return c;
}

/** `count` compact READ requests of `length` bytes, cookie i at `offsetOf(i)`, in one buffer. */
function reads(count: number, length: number, offsetOf: (i: number) => number): Buffer {
  const out = Buffer.alloc(28 * count);
  for (let i = 0; i < count; i++) {
    out.writeUInt32BE(NBD_REQUEST_MAGIC, 28 * i);
    out.writeUInt16BE(NBD_CMD_READ, 28 * i + 6);
    out.writeBigUInt64BE(BigInt(i), 28 * i + 8);
    out.writeBigUInt64BE(BigInt(offsetOf(i)), 28 * i + 16);
    out.writeUInt32BE(length, 28 * i + 24);
  }
  return out;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('NBD server replies', () => {
  it('READ replies from reused buffers: a client slow to read still gets every reply its own bytes', async () => {
    // 600 reads of 64 KiB (37 MiB of replies) while the client reads nothing:
    // the server's reply buffers are reused many times over while earlier
    // replies still wait in the socket. A buffer taken back before its write
    // has completed would be overwritten under a reply not yet sent.
    const disk = await MemoryDevice.create({ size: 16 * MiB });
    const content = pattern(16 * MiB, 5);
    await disk.write(0, content);
    const c = await connect(disk);
    await c.go('disk');
    c.socket.pause();
    const count = 600;
    const length = 64 * KiB;
    const offsetOf = (i: number) => ((i * 37) % 256) * length;
    c.write(reads(count, length, offsetOf));
    await sleep(300);
    c.socket.resume();
    const all = await c.read(count * (16 + length), 20_000);
    const seen = new Set<number>();
    for (let at = 0; at < all.length; at += 16 + length) {
      expect(all.readUInt32BE(at)).toBe(NBD_SIMPLE_REPLY_MAGIC);
      expect(all.readUInt32BE(at + 4)).toBe(0);
      const cookie = Number(all.readBigUInt64BE(at + 8));
      seen.add(cookie);
      const want = content.subarray(offsetOf(cookie), offsetOf(cookie) + length);
      const got = all.subarray(at + 16, at + 16 + length);
      if (Buffer.compare(got, want) !== 0) {
        expect.fail(`reply ${cookie} (offset ${offsetOf(cookie)}) carries other bytes`);
      }
    }
    expect(seen.size).toBe(count);
  });

  it('offsets past 2^53 are refused as past the end, the message naming the exact offset', async () => {
    const disk = await MemoryDevice.create({ size: MiB });
    const c = await connect(disk);
    await c.greet();
    expect((await c.option(NBD_OPT_EXTENDED_HEADERS))[0]?.type).toBe(NBD_REP_ACK);
    const go = await c.option(7, RawNbdClient.goData('disk'));
    expect(go[go.length - 1]?.type).toBe(NBD_REP_ACK);
    // 2^53 + 1 is not a double: read as one, it would be 2^53.
    c.extendedRequest(NBD_CMD_READ, 0, 1, 2n ** 53n + 1n, 4096);
    const r = await c.reply();
    expect([r.type, r.offset]).toEqual([NBD_REPLY_TYPE_ERROR, 2n ** 53n + 1n]);
    expect(r.payload.readUInt32BE(0)).toBe(NBD_EINVAL);
    expect(r.payload.subarray(6).toString()).toContain('at 9007199254740993 ');
    // The largest offset and a length past 2^53: still refused, still exact.
    c.extendedRequest(NBD_CMD_READ, 0, 2, 2n ** 64n - 1n, 2n ** 60n + 3n);
    const big = await c.reply();
    expect(big.offset).toBe(2n ** 64n - 1n);
    // Over the payload limit (EOVERFLOW) comes before past-the-end; the length is exact.
    expect(big.payload.readUInt32BE(0)).toBe(NBD_EOVERFLOW);
    expect(big.payload.subarray(6).toString()).toContain(`${2n ** 60n + 3n} bytes`);
    c.extendedRequest(NBD_CMD_READ, 0, 3, 4096, 4096);
    const ok = await c.reply();
    expect(ok.offset).toBe(4096n);
    expect(RawNbdClient.errorOf(ok)).toBe(0);
  });
});
