/**
 * A CowSnapshotDevice whose origin and store are both NbdDevices: the origin
 * on qemu-nbd (a raw file), the store on nbdkit's memory plugin. A snapshot
 * keeps the old bytes across writes and across closing and reopening the
 * stack over new connections.
 */
import { afterAll, expect, it } from 'vitest';
import { CowSnapshotDevice, NbdDevice } from '../../src/index.js';
import { expectSameBytes, fill, seededBytes } from '../support/bytes.js';
import {
  type NbdPeer,
  rawImage,
  startNbdkit,
  startQemuNbd,
  tempDir,
} from '../support/nbd-peers.js';
import { describeWithPeers } from '../support/peers.js';

const MiB = 1024 * 1024;
const running: NbdPeer[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const peer of running) await peer.stop();
  for (const cleanup of cleanups) await cleanup();
});

describeWithPeers(['qemu-nbd', 'nbdkit'], 'CowSnapshotDevice over NbdDevices', () => {
  it('snapshot, write, read the snapshot: the old bytes, also after reopening over new connections', async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const originPeer = await startQemuNbd(await rawImage(dir, 4 * MiB, seededBytes(4 * MiB, 5)), [
      '-e',
      '4',
    ]);
    running.push(originPeer);
    const storePeer = await startNbdkit(['memory', 'size=8M']);
    running.push(storePeer);
    const connect = async () => ({
      origin: await NbdDevice.connect(originPeer.url),
      store: await NbdDevice.connect(storePeer.url),
    });

    const first = await connect();
    const cow = await CowSnapshotDevice.create(first.origin, first.store);
    const before = await cow.read(0, 4 * MiB);
    const snap = await cow.snapshot({ name: 'before' });
    await cow.write(MiB + 100, fill(3 * 4096, 0xee));
    await cow.write(0, fill(4096, 0xdd));
    const after = before.slice();
    after.set(fill(3 * 4096, 0xee), MiB + 100);
    after.set(fill(4096, 0xdd), 0);
    expectSameBytes('live', await cow.read(0, 4 * MiB), after);
    const handle = await cow.openSnapshot(snap.id);
    expectSameBytes('snapshot', await handle.read(0, 4 * MiB), before);
    await cow.close();

    const second = await connect();
    const reopened = await CowSnapshotDevice.open(second.origin, second.store);
    try {
      expectSameBytes('live after reopen', await reopened.read(0, 4 * MiB), after);
      const again = await reopened.openSnapshot(snap.id);
      expectSameBytes('snapshot after reopen', await again.read(0, 4 * MiB), before);
      expect(reopened.listSnapshots().map((s) => s.name)).toEqual(['before']);
    } finally {
      await reopened.close();
    }
  });
});
