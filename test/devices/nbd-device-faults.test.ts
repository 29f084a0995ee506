/**
 * NbdDevice when the server fails: killed in the middle of writes, injecting
 * errors (nbdkit's error filter), or too slow (nbdkit's delay filter). Every
 * test is bounded in time: the point is that nothing hangs.
 */
import { unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BlockDeviceError, NbdDevice, NbdServerError } from '../../src/index.js';
import { watch, within } from '../support/async.js';
import { expectSameBytes, fill, seededBytes } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import {
  type NbdPeer,
  rawImage,
  startNbdkit,
  startQemuNbd,
  tempDir,
} from '../support/nbd-peers.js';
import { describeWithPeers } from '../support/peers.js';

const MiB = 1024 * 1024;
const peers: NbdPeer[] = [];
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const peer of peers.splice(0)) await peer.stop('SIGKILL');
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function started(peer: Promise<NbdPeer>): Promise<NbdPeer> {
  const p = await peer;
  peers.push(p);
  return p;
}

describeWithPeers(['qemu-nbd'], 'NbdDevice when qemu-nbd is killed mid-write', () => {
  it('fails the writes in flight and every later call with EIO, never hangs; the flushed data survives a restart', async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const file = await rawImage(dir, 64 * MiB);
    const first = await started(startQemuNbd(file));
    const device = await NbdDevice.connect(first.url, { timeoutMs: 10_000 });
    const errors: Error[] = [];
    device.on('error', (err) => errors.push(err));

    // The first 4 MiB, written and flushed: what must survive.
    const flushed = seededBytes(4 * MiB, 1);
    await device.write(0, flushed);
    await device.flush();

    // 32 MiB of writes elsewhere, sent to a server stopped (SIGSTOP) so that
    // they are surely in flight, then the server is killed under them.
    process.kill(first.process.child.pid!, 'SIGSTOP');
    const writes = Array.from({ length: 32 }, (_, i) =>
      watch(device.write(8 * MiB + i * MiB, fill(MiB, 0x40 + i))),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(writes.filter((w) => w.settled)).toHaveLength(0);
    await first.stop('SIGKILL');
    const outcomes = await within(
      Promise.allSettled(writes.map((w) => w.promise)),
      5_000,
      'writes in flight when the server died',
    );
    for (const o of outcomes) {
      expect(o.status === 'rejected' && BlockDeviceError.is(o.reason, 'EIO')).toBe(true);
    }

    // Later calls fail at once, and close does not hang (its flush fails: EIO).
    await within(expectCode(device.read(0, 4096), 'EIO'), 5_000, 'read after the server died');
    await within(expectCode(device.write(0, fill(4096, 9)), 'EIO'), 5_000, 'write after');
    await within(expectCode(device.flush(), 'EIO'), 5_000, 'flush after');
    await within(expectCode(device.close(), 'EIO'), 5_000, 'close after');
    expect(errors.length).toBe(1);

    // The same file served again: the flushed 4 MiB are there; each block of
    // the killed writes holds the old or the new bytes.
    const second = await started(startQemuNbd(file));
    const again = await NbdDevice.connect(second.url);
    try {
      expectSameBytes('flushed region', await again.read(0, 4 * MiB), flushed);
      for (let i = 0; i < 32; i++) {
        const block = await again.read(8 * MiB + i * MiB, 4096);
        expect([0, 0x40 + i]).toContain(block[0]);
      }
    } finally {
      await again.close();
    }
  });
});

describeWithPeers(['nbdkit'], 'NbdDevice under nbdkit error and delay filters', () => {
  /** nbdkit memory whose errors (`error` of the filter's names) fire while `trigger` exists. */
  async function erroring(error: string): Promise<{ device: NbdDevice; trigger: string }> {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const trigger = join(dir, 'fail-now');
    const peer = await started(
      startNbdkit([
        '--filter=error',
        'memory',
        'size=1M',
        `error-pread=EIO`,
        `error-pwrite=${error}`,
        'error-rate=100%',
        `error-file=${trigger}`,
      ]),
    );
    return { device: await NbdDevice.connect(peer.url, { timeoutMs: 10_000 }), trigger };
  }

  it('maps injected EIO to EIO with the NBD error as cause, and stays usable after', async () => {
    const { device, trigger } = await erroring('EIO');
    try {
      await device.write(0, fill(8192, 7));
      await writeFile(trigger, '');
      const readErr = await expectCode(device.read(0, 4096), 'EIO');
      expect(readErr.cause).toBeInstanceOf(NbdServerError);
      expect(readErr.cause).toMatchObject({ errno: 5, errorName: 'EIO', command: 'READ' });
      const writeErr = await expectCode(device.write(0, fill(4096, 8)), 'EIO');
      expect(writeErr.cause).toMatchObject({ errno: 5, command: 'WRITE' });
      await unlink(trigger);
      // The server goes on, and so does the device: the failed write left block 0 as it was.
      expect(await device.read(0, 8192)).toEqual(fill(8192, 7));
      await device.write(4096, fill(4096, 9));
      expect(await device.read(4096, 4096)).toEqual(fill(4096, 9));
    } finally {
      await device.close();
    }
  });

  it('maps ENOSPC to ENOSPC and a write refused with EPERM to EROFS', async () => {
    for (const [injected, code] of [
      ['ENOSPC', 'ENOSPC'],
      ['EPERM', 'EROFS'],
    ] as const) {
      const { device, trigger } = await erroring(injected);
      try {
        await writeFile(trigger, '');
        const err = await expectCode(device.write(0, fill(4096, 1)), code);
        expect(err.cause).toMatchObject({ errorName: injected });
        await unlink(trigger);
        await device.write(0, fill(4096, 2));
        expect(await device.read(0, 4096)).toEqual(fill(4096, 2));
      } finally {
        await device.close();
      }
    }
  });

  it('a request past timeoutMs fails with EIO, and so does every call after; close does not hang', async () => {
    const peer = await started(startNbdkit(['--filter=delay', 'memory', 'size=1M', 'rdelay=5']));
    const device = await NbdDevice.connect(peer.url, { timeoutMs: 300 });
    const errors: Error[] = [];
    device.on('error', (err) => errors.push(err));
    await device.write(0, fill(4096, 3));
    const sentAt = Date.now();
    const err = await within(expectCode(device.read(0, 4096), 'EIO'), 3_000, 'a delayed read');
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(250);
    expect(err.message).toMatch(/no reply within 300 ms/);
    expect(errors).toHaveLength(1);
    await expectCode(device.write(0, fill(4096, 4)), 'EIO');
    await within(expectCode(device.close(), 'EIO'), 3_000, 'close after a timeout');
  });

  it('a connect that gets no answer fails with EIO within timeoutMs; an aborted one with the reason', async () => {
    // A listening socket that never speaks: nbdkit paused before its greeting is
    // hard to arrange, so a plain TCP server stands in.
    const net = await import('node:net');
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    try {
      const err = await within(
        expectCode(NbdDevice.connect({ port, timeoutMs: 200 }), 'EIO'),
        3_000,
        'connect to a silent server',
      );
      expect(err.message).toMatch(/no answer within 200 ms/);
      const controller = new AbortController();
      const pending = NbdDevice.connect({ port, signal: controller.signal });
      const reason = new Error('stop');
      controller.abort(reason);
      await expect(within(pending, 3_000, 'aborted connect')).rejects.toBe(reason);
    } finally {
      silent.close();
    }
  });
});

describe('NbdDevice connect errors', () => {
  it('refuses a server nobody runs with EIO, naming the address', async () => {
    const err = await expectCode(NbdDevice.connect('nbd://127.0.0.1:1/x'), 'EIO');
    expect(err.message).toMatch(/127\.0\.0\.1:1/);
  });
});
