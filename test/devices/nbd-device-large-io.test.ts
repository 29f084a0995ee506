/**
 * NbdDevice transfers larger than the buffers its connection reuses: a
 * clear connection's socket reads into one 256 KiB buffer and requests are
 * batched into 64 KiB ones (src/nbd/nbd-client-receiver.ts,
 * nbd-client-requests.ts), so replies and requests that span several of
 * them, mixed with small ones in flight at once, must come through whole —
 * against blocksnap's own server and nbdkit's memory plugin.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryDevice, NbdDevice, type NbdServer, serveNbd } from '../../src/index.js';
import { seededBytes } from '../support/bytes.js';
import { type NbdPeer, startNbdkit } from '../support/nbd-peers.js';
import { describeWithPeers } from '../support/peers.js';

const MiB = 1 << 20;
const SIZE = 8 * MiB;

/** Writes the whole export in large and small writes at once, then reads it back every way. */
async function exercise(url: string): Promise<void> {
  const device = await NbdDevice.connect(url, { timeoutMs: 10_000 });
  try {
    const content = seededBytes(SIZE, 11);
    // A 3 MiB write, 4 KiB writes and a 1 MiB + 512 B write in flight together.
    const writes: Promise<void>[] = [device.write(0, content.subarray(0, 3 * MiB))];
    for (let at = 3 * MiB; at < 4 * MiB; at += 4096) {
      writes.push(device.write(at, content.subarray(at, at + 4096)));
    }
    writes.push(device.write(4 * MiB, content.subarray(4 * MiB, SIZE)));
    await Promise.all(writes);
    await device.flush();

    expect(Buffer.from(await device.read(0, SIZE)).equals(content)).toBe(true);
    const target = new Uint8Array(SIZE);
    // Large and small reads in flight at once, into one target.
    const reads: Promise<Uint8Array>[] = [
      device.readInto(0, target.subarray(0, 5 * MiB)),
      device.readInto(7 * MiB, target.subarray(7 * MiB)),
    ];
    for (let at = 5 * MiB; at < 7 * MiB; at += 4096) {
      reads.push(device.readInto(at, target.subarray(at, at + 4096)));
    }
    await Promise.all(reads);
    expect(Buffer.from(target).equals(content)).toBe(true);
    const small = await Promise.all(
      Array.from({ length: 256 }, (_, i) => device.read(i * 32 * 1024 + 512, 1000)),
    );
    for (let i = 0; i < small.length; i++) {
      const at = i * 32 * 1024 + 512;
      expect(Buffer.from(small[i]!).equals(content.subarray(at, at + 1000))).toBe(true);
    }
  } finally {
    await device.close();
  }
}

describe('NbdDevice large transfers against serveNbd', () => {
  let server: NbdServer | undefined;

  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('multi-MiB reads and writes mixed with small ones, over TCP', async () => {
    const memory = await MemoryDevice.create({ size: SIZE });
    server = await serveNbd({ exports: { big: memory }, port: 0 });
    const address = server.address;
    if (!('port' in address)) throw new Error('expected a TCP address');
    await exercise(`nbd://127.0.0.1:${address.port}/big`);
  });
});

describeWithPeers(['nbdkit'], 'NbdDevice large transfers against nbdkit', () => {
  let peer: NbdPeer | undefined;

  afterEach(async () => {
    await peer?.stop();
    peer = undefined;
  });

  it('multi-MiB reads and writes mixed with small ones, over nbdkit memory', async () => {
    peer = await startNbdkit(['memory', `size=${SIZE}`]);
    await exercise(peer.url);
  });
});
