import { describe, expect, it } from 'vitest';
import type { CatalogEntry } from '../../src/journal/journal-catalog.js';
import { SnapshotRegistry } from '../../src/journal/journal-snapshot-registry.js';
import { SUPERBLOCK_SLOT } from '../../src/store/superblock.js';
import type { FaultyOperation } from '../../src/testing/index.js';
import { expectBytes, fill } from '../support/bytes.js';
import { codeOf } from '../support/error-code.js';
import { JournalRig } from '../support/journal-rig.js';

/**
 * Failures for a journal store: after `failSuperblock(nth)`, the `nth`
 * superblock write from then on (slots 0 and 4096, before the ring) fails;
 * every other write goes through.
 */
function failingSuperblock() {
  let countdown = 0;
  return {
    failSuperblock(nth = 1): void {
      countdown = nth;
    },
    failures(op: FaultyOperation): boolean {
      // Superblocks only: not the ring, not the durable mark beside slot 0's superblock.
      if (countdown === 0 || op.kind !== 'write' || op.offset % SUPERBLOCK_SLOT !== 0) return false;
      countdown--;
      return countdown === 0;
    },
  };
}

// The catalog is written to the slot the durable superblock does not name;
// it becomes the catalog only once a superblock naming it is durable. A
// failed superblock write must leave the catalog to be written again.
/** A journal over a COW device whose journal store fails as `fault` says; checkpoints only on demand. */
function overCow(fault: ReturnType<typeof failingSuperblock>): Promise<JournalRig> {
  return JournalRig.create({
    cow: true,
    checkpointAt: 1,
    maxSnapshots: 4,
    journalFailures: fault.failures,
  });
}

describe('JournalDevice: the snapshot catalog after a failed superblock write', () => {
  it('a deletion whose superblock write failed is written by the next persist (close)', async () => {
    const fault = failingSuperblock();
    const rig = await overCow(fault);
    const d = rig.device;
    const keep = await d.snapshot({ name: 'keep' });
    const gone = await d.snapshot({ name: 'gone' });
    await d.checkpoint();
    expect(d.listSnapshots().map((i) => i.materialized)).toEqual([true, true]);
    fault.failSuperblock();
    expect(await codeOf(d.deleteSnapshot(gone.id))).toBe('EIO');
    expect(d.listSnapshots().map((i) => i.id)).toEqual([keep.id]);
    const again = await rig.reopen();
    expect(again.listSnapshots().map((i) => i.name)).toEqual(['keep']);
    expect(rig.cow!.listSnapshots().map((i) => i.name)).toEqual([`journal:${keep.id}`]);
    await again.close();
  });

  it('a materialization whose superblock write failed is written by the retried checkpoint', async () => {
    const fault = failingSuperblock();
    const rig = await overCow(fault);
    const d = rig.device;
    await d.write(0, fill(512, 1));
    const snap = await d.snapshot({ name: 'cut' });
    await d.write(0, fill(512, 2));
    // The checkpoint persists twice: before touching production (goes
    // through), and after materializing the snapshot, naming the new
    // catalog (fails).
    fault.failSuperblock(2);
    expect(await codeOf(d.checkpoint())).toBe('EIO');
    expect(d.listSnapshots()).toMatchObject([{ id: snap.id, materialized: true }]);
    await d.checkpoint();
    expect(d.changedBlocks).toBe(0);
    const again = await rig.reopen();
    expect(again.listSnapshots()).toMatchObject([{ id: snap.id, name: 'cut', materialized: true }]);
    expectBytes('snapshot', await (await again.openSnapshot(snap.id)).read(0, 512), fill(512, 1));
    expectBytes('live', await again.read(0, 512), fill(512, 2));
    await again.close();
  });
});

describe('SnapshotRegistry: when the catalog is dirty', () => {
  const entry = (id: string, sequence: number): CatalogEntry => ({
    id,
    productionId: `p-${id}`,
    name: id,
    createdAt: 0,
    writable: false,
    sequence,
  });

  it('stays dirty for a change made while the superblock naming the catalog was written', async () => {
    const registry = new SnapshotRegistry(4, [entry('a', 1), entry('b', 2)]);
    expect(registry.catalogDirty).toBe(false);
    await registry.forget(registry.get('a'));
    expect(registry.catalogDirty).toBe(true);
    // A persist reads the version with the catalog, then writes...
    const writing = registry.catalogVersion;
    expect(registry.catalog().map((e) => e.id)).toEqual(['b']);
    // ...meanwhile another change...
    await registry.forget(registry.get('b'));
    // ...then its superblock is durable: the later change is still to write.
    registry.catalogDurable(writing);
    expect(registry.catalogDirty).toBe(true);
    registry.catalogDurable(registry.catalogVersion);
    expect(registry.catalogDirty).toBe(false);
  });
});
