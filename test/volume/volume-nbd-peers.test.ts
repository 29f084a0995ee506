import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MemoryDevice, VirtualVolume } from '../../src/index.js';
import { expectSameBytes, fill, seededBytes } from '../support/bytes.js';
import { expectCode, isCode } from '../support/error-code.js';
import { type NbdPeer, startNbdkit, startQemuNbd, tempDir } from '../support/nbd-peers.js';
import { describeWithPeers } from '../support/peers.js';
import { useBundledWorker } from '../support/volume-rig.js';

/*
 * Partitions on the NBD servers users run: qemu-nbd over raw files, which
 * a test can kill with SIGKILL and start again over the same files on the
 * same port, and nbdkit's memory plugin. A killed server fails its own
 * partition's range with EIO at once, the other partition goes on, and
 * restartProcessor reconnects once the server is back (docs/ARCHITECTURE.md,
 * "VirtualVolume", Faults).
 */

const KiB = 1024;
const PARTITION = 256 * KiB;
const BLOCK = 4096;

let stopBundle: () => Promise<void>;
beforeAll(async () => {
  stopBundle = await useBundledWorker();
});
afterAll(() => stopBundle());

describeWithPeers(['qemu-nbd', 'nbdkit'], 'VirtualVolume over qemu-nbd and nbdkit', () => {
  it('a qemu-nbd killed mid-run: EIO on its partition only; started again, restartProcessor finds everything flushed and the snapshot', async () => {
    const { dir, cleanup } = await tempDir();
    const peers: NbdPeer[] = [];
    const started = async (peer: Promise<NbdPeer>) => {
      const p = await peer;
      peers.push(p);
      return p;
    };
    try {
      const originFile = join(dir, 'origin0.img');
      const storeFile = join(dir, 'store0.img');
      await writeFile(originFile, new Uint8Array(PARTITION));
      await writeFile(storeFile, new Uint8Array(2048 * KiB));
      const origin0 = await started(startQemuNbd(originFile));
      const store0 = await started(startQemuNbd(storeFile));
      const origin1 = await started(startNbdkit(['memory', `size=${PARTITION}`]));
      const store1 = await started(startNbdkit(['memory', 'size=2M']));
      // Round-robin placement: partition 0 (qemu-nbd) on processor 0,
      // partition 1 (nbdkit) on processor 1.
      const volume = await VirtualVolume.create({
        store: await MemoryDevice.create({ size: 1 << 20 }),
        partitions: [
          { origin: { nbd: origin0.url }, store: { nbd: store0.url } },
          { origin: { nbd: origin1.url }, store: { nbd: store1.url } },
        ],
        processors: 2,
      });
      volume.on('error', () => {});
      const data = seededBytes(volume.size, 17);
      await volume.write(0, data);
      const snap = await volume.snapshot({ name: 'before' });
      const later = fill(8 * BLOCK, 0x5a);
      await volume.write(32 * BLOCK, later);
      await volume.flush();

      // Writes into partition 0 (copy-on-write: the snapshot holds its
      // blocks) are in flight when both of its servers are killed.
      const inFlight = Array.from({ length: 16 }, (_, i) =>
        volume.write(i * BLOCK, fill(BLOCK, 0xaa)),
      );
      await origin0.stop('SIGKILL');
      await store0.stop('SIGKILL');
      for (const r of await Promise.allSettled(inFlight)) {
        if (r.status === 'rejected') expect(isCode(r.reason, 'EIO'), String(r.reason)).toBe(true);
      }
      await expectCode(volume.read(0, BLOCK), 'EIO', 'a read of the killed partition');
      await expectCode(volume.write(PARTITION - BLOCK, fill(BLOCK, 1)), 'EIO', 'a write to it');
      await expectCode(volume.snapshot(), 'EIO', 'a snapshot while a partition is gone');
      // Partition 1 goes on, reads and writes.
      await volume.write(PARTITION, fill(BLOCK, 0x33));
      expect((await volume.read(PARTITION, BLOCK))[0]).toBe(0x33);
      expectSameBytes(
        'the snapshot of partition 1',
        await snap.read(PARTITION, PARTITION),
        data.subarray(PARTITION),
      );

      peers.push(await startQemuNbd(originFile, [], origin0.port));
      peers.push(await startQemuNbd(storeFile, [], store0.port));
      await volume.restartProcessor(0);
      const live = await volume.read(0, PARTITION);
      for (let b = 0; b < 16; b++) {
        // An unflushed write the kill cut short: old or new, whole.
        const block = live.subarray(b * BLOCK, (b + 1) * BLOCK);
        const old = data.subarray(b * BLOCK, (b + 1) * BLOCK);
        if (block[0] === 0xaa) expectSameBytes(`block ${b}`, block, fill(BLOCK, 0xaa));
        else expectSameBytes(`block ${b}`, block, old);
      }
      const flushed = data.slice(16 * BLOCK, PARTITION);
      flushed.set(later, 16 * BLOCK);
      expectSameBytes('flushed writes', live.subarray(16 * BLOCK), flushed);
      expectSameBytes('the snapshot', await snap.read(0, volume.size), data);
      await volume.write(0, fill(BLOCK, 0x44));
      expect((await volume.read(0, BLOCK))[0]).toBe(0x44);
      await snap.close();
      await volume.close();
    } finally {
      for (const p of peers) await p.stop();
      await cleanup();
    }
  }, 60_000);
});
