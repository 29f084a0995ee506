/**
 * NbdDevice against a scripted server (test/support/fake-nbd-server.ts):
 * the handshake variants and reply forms qemu-nbd and nbdkit do not offer
 * here, and replies that break the protocol.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { NbdDevice, NbdServerError } from '../../src/index.js';
import * as P from '../../src/nbd/index.js';
import { within } from '../support/async.js';
import { fill, seededBytes } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import {
  type FakeReplies,
  type FakeRequest,
  type FakeServer,
  type FakeServerOptions,
  startFakeServer,
} from '../support/fake-nbd-server.js';

const SIZE = 64 * 1024;
let server: FakeServer | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function connectTo(options: Partial<FakeServerOptions> = {}, name = '') {
  server = await startFakeServer({ size: SIZE, ...options });
  return NbdDevice.connect({ port: server.port, exportName: name, timeoutMs: 5_000 });
}

async function roundTrip(device: NbdDevice): Promise<void> {
  const data = seededBytes(10_000, 3);
  await device.write(1234, data);
  expect(await device.read(1234, data.length)).toEqual(data);
  await device.flush();
}

describe('NbdDevice handshake variants', () => {
  it('uses simple replies where the server refuses structured ones', async () => {
    const device = await connectTo({ structured: false });
    expect(device.negotiated.structuredReplies).toBe(false);
    await roundTrip(device);
    await device.close();
    expect(server!.requests.at(-1)?.request.command).toBe(P.NBD_CMD_DISC);
  });

  it('falls back to NBD_OPT_EXPORT_NAME where the server lacks GO, and on a non-fixed newstyle server', async () => {
    for (const options of [
      { go: false, exports: ['x'] },
      { fixed: false, exports: ['x'] },
    ]) {
      const device = await connectTo(options, 'x');
      expect(device.size).toBe(SIZE);
      await roundTrip(device);
      await device.close();
      await server!.close();
      server = undefined;
    }
  });

  it('uses extended headers where offered: 32-byte requests and replies', async () => {
    const device = await connectTo({ extended: true });
    expect(device.negotiated).toMatchObject({ extendedHeaders: true, structuredReplies: true });
    await roundTrip(device);
    const write = server!.requests.find((r) => r.request.command === P.NBD_CMD_WRITE)!;
    expect(write.request.flags & P.NBD_CMD_FLAG_PAYLOAD_LEN).not.toBe(0);
    await device.close();
  });

  it('refuses an unknown export with ENOENT, quoting the server', async () => {
    server = await startFakeServer({ size: SIZE, exports: ['a'] });
    const err = await expectCode(
      NbdDevice.connect({ port: server.port, exportName: 'b' }),
      'ENOENT',
    );
    expect(err.message).toMatch(/no export named "b"/);
  });

  it('opens several connections where the export allows multi-conn, one otherwise; flush goes to one', async () => {
    const multi = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_CAN_MULTI_CONN;
    server = await startFakeServer({ size: SIZE, flags: multi });
    const three = await NbdDevice.connect({ port: server.port, connections: 3 });
    expect(three.negotiated.connections).toBe(3);
    await Promise.all(
      Array.from({ length: 6 }, (_, i) => three.write(i * 4096, fill(4096, i + 1))),
    );
    await three.flush();
    const writes = server.requests.filter((r) => r.request.command === P.NBD_CMD_WRITE);
    expect(new Set(writes.map((r) => r.connection)).size).toBe(3);
    expect(server.requests.filter((r) => r.request.command === P.NBD_CMD_FLUSH)).toHaveLength(1);
    await three.close();
    await server.close();

    server = await startFakeServer({ size: SIZE });
    const one = await NbdDevice.connect({ port: server.port, connections: 3 });
    expect(one.negotiated.connections).toBe(1);
    expect(server.connections).toBe(1);
    await one.close();
  });

  it('flush is a no-op where the export does not advertise it', async () => {
    const device = await connectTo({ flags: P.NBD_FLAG_HAS_FLAGS });
    await device.write(0, fill(4096, 1));
    await device.flush();
    expect(server!.requests.some((r) => r.request.command === P.NBD_CMD_FLUSH)).toBe(false);
    await device.close();
  });
});

describe('NbdDevice reply forms', () => {
  it('matches replies sent in reverse order to their requests', async () => {
    const held: Buffer[] = [];
    const device = await connectTo({
      handle: (request, replies) => {
        if (request.command !== P.NBD_CMD_READ) return false;
        held.push(replies.standard(request));
        if (held.length === 8) for (const reply of held.reverse()) replies.send(reply);
        return true;
      },
    });
    server!.image.set(seededBytes(SIZE, 9));
    const reads = await Promise.all(
      Array.from({ length: 8 }, (_, i) => device.read(i * 4096, 4096)),
    );
    for (let i = 0; i < 8; i++)
      expect(reads[i]).toEqual(server!.image.subarray(i * 4096, (i + 1) * 4096));
    await device.close();
  });

  it('assembles a read from data and hole chunks in any order; holes read as zeros', async () => {
    const device = await connectTo({
      handle: (request, replies) => {
        if (request.command !== P.NBD_CMD_READ) return false;
        const half = request.length / 2;
        const data = Buffer.alloc(8 + half, 0x5a);
        data.writeBigUInt64BE(BigInt(request.offset + half), 0);
        const hole = Buffer.alloc(12);
        hole.writeBigUInt64BE(BigInt(request.offset), 0);
        hole.writeUInt32BE(half, 8);
        replies.send(replies.chunk(request, 0, P.NBD_REPLY_TYPE_OFFSET_DATA, data));
        replies.send(
          replies.chunk(request, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_OFFSET_HOLE, hole),
        );
        return true;
      },
    });
    const got = await device.read(8192, 8192);
    expect(got.subarray(0, 4096)).toEqual(new Uint8Array(4096));
    expect(got.subarray(4096)).toEqual(fill(4096, 0x5a));
    await device.close();
  });

  it('an error chunk rejects with EIO carrying the error and the server message; the device goes on', async () => {
    let fail = true;
    const device = await connectTo({
      handle: (request, replies) => {
        if (request.command !== P.NBD_CMD_READ || !fail) return false;
        fail = false;
        const message = Buffer.from('disk on fire');
        const payload = Buffer.alloc(6 + message.length);
        payload.writeUInt32BE(P.NBD_EIO, 0);
        payload.writeUInt16BE(message.length, 4);
        message.copy(payload, 6);
        replies.send(
          replies.chunk(request, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_ERROR, payload),
        );
        return true;
      },
    });
    const err = await expectCode(device.read(0, 4096), 'EIO');
    expect(err.cause).toBeInstanceOf(NbdServerError);
    expect(err.cause).toMatchObject({ errno: 5, serverMessage: 'disk on fire' });
    expect(await device.read(0, 4096)).toEqual(new Uint8Array(4096));
    await device.close();
  });

  it('after ESHUTDOWN, refuses new requests and disconnects once the rest are answered', async () => {
    const device = await connectTo({
      handle: (request, replies) => {
        if (request.command !== P.NBD_CMD_READ) return false;
        replies.send(replies.simple(request.cookie, P.NBD_ESHUTDOWN));
        return true;
      },
      structured: false,
    });
    await expectCode(device.read(0, 4096), 'EIO');
    await expectCode(device.write(0, fill(4096, 1)), 'EIO');
    await within(
      (async () => {
        while (server!.requests.at(-1)?.request.command !== P.NBD_CMD_DISC) {
          await new Promise((r) => setTimeout(r, 10));
        }
      })(),
      3_000,
      'the soft disconnect after ESHUTDOWN',
    );
    await device.close().catch(() => {});
  });
});

describe('NbdDevice when the server breaks the protocol', () => {
  /** A server answering the first read with `bad`, after which every call must fail EIO. */
  async function expectViolation(
    bad: (request: FakeRequest, replies: FakeReplies) => void,
    pattern: RegExp,
  ): Promise<void> {
    const device = await connectTo({
      handle: (request, replies) => {
        if (request.command !== P.NBD_CMD_READ) return false;
        bad(request, replies);
        return true;
      },
    });
    const errors: Error[] = [];
    device.on('error', (e) => errors.push(e));
    const err = await within(
      expectCode(device.read(0, 4096), 'EIO'),
      3_000,
      'a read answered badly',
    );
    expect(err.message).toMatch(pattern);
    await expectCode(device.write(0, fill(512, 1)), 'EIO');
    expect(errors).toHaveLength(1);
    await within(
      device.close().catch(() => {}),
      3_000,
      'close after a violation',
    );
  }

  it('a bad reply magic', async () => {
    await expectViolation((_, replies) => replies.send(Buffer.alloc(32, 0x11)), /bad reply magic/);
  });

  it('a reply to a cookie never sent', async () => {
    await expectViolation((request, replies) => {
      const other = { ...request, cookie: Buffer.from([0, 0, 0, 0, 0, 0, 0x77, 0x77]) };
      replies.send(replies.standard(other));
    }, /unknown cookie/);
  });

  it('a data chunk longer than the read asked for', async () => {
    await expectViolation((request, replies) => {
      const payload = Buffer.alloc(8 + request.length + 512);
      payload.writeBigUInt64BE(BigInt(request.offset), 0);
      replies.send(
        replies.chunk(request, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_OFFSET_DATA, payload),
      );
    }, /outside the requested range/);
  });

  it('a read that claims success without its data', async () => {
    await expectViolation((request, replies) => {
      replies.send(
        replies.chunk(request, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, Buffer.alloc(0)),
      );
    }, /without all of its data/);
  });

  it('overlapping data chunks', async () => {
    await expectViolation((request, replies) => {
      const payload = Buffer.alloc(8 + 2048);
      payload.writeBigUInt64BE(BigInt(request.offset), 0);
      replies.send(replies.chunk(request, 0, P.NBD_REPLY_TYPE_OFFSET_DATA, payload));
      replies.send(
        replies.chunk(request, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_OFFSET_DATA, payload),
      );
    }, /overlap/);
  });

  it('a dropped connection with reads in flight', async () => {
    await expectViolation((_, replies) => replies.destroy(), /closed the connection/);
  });
});
