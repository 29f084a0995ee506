import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice, type NbdServer, serveNbd, VirtualVolume } from '../../src/index.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { useBundledWorker } from '../support/volume-rig.js';

/*
 * Remote partitions: origins and stores given as { nbd: url }, served here
 * by blocksnap's own NBD server over loopback TCP, opened by the worker
 * that owns each partition; and a partition's server going away.
 */

const MiB = 1 << 20;
let stopBundle: () => Promise<void>;
beforeAll(async () => {
  stopBundle = await useBundledWorker();
});
afterAll(() => stopBundle());

async function exports(n: number): Promise<Record<string, MemoryDevice>> {
  const out: Record<string, MemoryDevice> = {};
  for (let i = 0; i < n; i++) {
    out[`origin${i}`] = await MemoryDevice.create({ size: 256 * 1024 });
    out[`store${i}`] = await MemoryDevice.create({ size: 2 * MiB });
  }
  return out;
}

describe('VirtualVolume over NBD exports', () => {
  it('runs partitions whose devices are NBD exports, in workers, and opens them again', async () => {
    const disks = await exports(2);
    const server: NbdServer = await serveNbd({
      exports: (name) => disks[name]?.reopen(),
      port: 0,
    });
    try {
      const { port } = server.address as { port: number };
      const url = (name: string) => `nbd://127.0.0.1:${port}/${name}`;
      const store = await MemoryDevice.create({ size: MiB });
      const partitions = [0, 1].map((i) => ({
        origin: { nbd: url(`origin${i}`) },
        store: { nbd: url(`store${i}`) },
      }));
      const volume = await VirtualVolume.create({
        store,
        partitions,
        processors: 2,
        stripeUnit: 65536,
      });
      const data = seededBytes(volume.size, 31);
      await volume.write(0, data);
      const snap = await volume.snapshot({ name: 'remote' });
      await volume.write(0, new Uint8Array(65536 * 2).fill(1));
      expectSameBytes('the snapshot', await snap.read(0, volume.size), data);
      await volume.close();

      const again = await VirtualVolume.open({ store: store.reopen(), processors: 1 });
      expect(again.listSnapshots().map((s) => s.name)).toEqual(['remote']);
      const live = data.slice();
      live.fill(1, 0, 65536 * 2);
      expectSameBytes('reopened', await again.read(0, again.size), live);
      await again.close();
    } finally {
      await server.close();
    }
  }, 30_000);

  it('a worker partition whose server went away comes back with restartProcessor once the server is back', async () => {
    const disks = await exports(2);
    const serve = (port: number) => serveNbd({ exports: (name) => disks[name]?.reopen(), port });
    let server = await serve(0);
    const { port } = server.address as { port: number };
    const url = (name: string) => `nbd://127.0.0.1:${port}/${name}`;
    const volume = await VirtualVolume.create({
      store: await MemoryDevice.create({ size: MiB }),
      partitions: [0, 1].map((i) => ({
        origin: { nbd: url(`origin${i}`) },
        store: { nbd: url(`store${i}`) },
      })),
      processors: 2,
    });
    volume.on('error', () => {});
    try {
      const data = seededBytes(volume.size, 41);
      await volume.write(0, data);
      await volume.flush();
      await server.close();
      await expectCode(volume.read(0, 4096), 'EIO', 'a read while the server is gone');
      server = await serve(port);
      await volume.restartProcessor(0);
      await volume.restartProcessor(1);
      expectSameBytes('after the restarts', await volume.read(0, volume.size), data);
      await volume.close();
    } finally {
      await server.close();
    }
  }, 30_000);

  it('a partition whose server goes away fails EIO on its range, without hanging', async () => {
    const disks = await exports(1);
    const server = await serveNbd({ exports: (name) => disks[name]?.reopen(), port: 0 });
    const { port } = server.address as { port: number };
    const local = {
      origin: await MemoryDevice.create({ size: 256 * 1024 }),
      store: await MemoryDevice.create({ size: 2 * MiB }),
    };
    const volume = await VirtualVolume.create({
      store: await MemoryDevice.create({ size: MiB }),
      partitions: [
        local,
        {
          origin: { nbd: `nbd://127.0.0.1:${port}/origin0` },
          store: { nbd: `nbd://127.0.0.1:${port}/store0` },
        },
      ],
    });
    volume.on('error', () => {});
    await server.close();
    await expectCode(volume.read(256 * 1024, 4096), 'EIO', 'a read of the remote partition');
    await volume.write(0, new Uint8Array(4096).fill(2));
    expect((await volume.read(0, 4096))[0]).toBe(2);
    await expectCode(volume.snapshot(), 'EIO', 'a snapshot');
    await volume.close().catch(() => {});
  }, 30_000);
});
