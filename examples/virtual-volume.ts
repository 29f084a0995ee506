// A VirtualVolume: one 64 MiB volume striped over 4 partitions that run on
// 2 worker threads, each partition a copy-on-write device over two files.
// A schedule takes overall snapshots with retention, an incremental stream
// carries what changed between two of them to a replica, and a worker is
// killed mid-work and brought back with nothing flushed lost.
// Run it with `npx tsx examples/virtual-volume.ts`.
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  applyStream,
  type BlockDevice,
  BlockDeviceError,
  exportStream,
  FileDevice,
  MemoryDevice,
  VirtualVolume,
} from '../src/index.js';

const MiB = 1024 * 1024;
const PARTITION = 16 * MiB;
const dir = await mkdtemp(join(tmpdir(), 'blocksnap-virtual-volume-'));
let failures = 0;

function check(ok: boolean, what: string): void {
  console.log(`   ${ok ? '✓' : '✗ FAILED:'} ${what}`);
  if (!ok) failures++;
}

async function sha256(device: BlockDevice): Promise<string> {
  const hash = createHash('sha256');
  for (let at = 0; at < device.size; at += MiB) hash.update(await device.read(at, MiB));
  return hash.digest('hex').slice(0, 16);
}

/** Writes `count` random 4 KiB blocks at random places. */
async function scribble(volume: VirtualVolume, count: number): Promise<void> {
  const blocks = volume.size / 4096;
  await Promise.all(
    Array.from({ length: count }, () =>
      volume.write(Math.floor(Math.random() * blocks) * 4096, randomFillSync(new Uint8Array(4096))),
    ),
  );
}

try {
  console.log('1. Create a volume of 4 partitions (files) striped by 64 KiB over 2 workers');
  const store = await FileDevice.open(join(dir, 'volume.store'), { size: MiB, create: true });
  const volume = await VirtualVolume.create({
    store,
    processors: 2,
    stripeUnit: 64 * 1024,
    partitions: [0, 1, 2, 3].map((i) => ({
      origin: { file: join(dir, `partition-${i}.img`), size: PARTITION },
      store: { file: join(dir, `partition-${i}.cow`), size: 2 * PARTITION },
    })),
  });
  console.log(
    `   ${volume.size / MiB} MiB; partition i runs on processor ${volume.placement.join(', ')}`,
  );
  await volume.write(0, randomFillSync(new Uint8Array(volume.size)));

  console.log('2. A schedule: an overall snapshot every 100 ms, keeping the newest 3');
  const schedule = volume.schedule({ every: 100, keep: 3, name: 'frequent' });
  let taken = 0;
  let pruned = 0;
  schedule.on('snapshot', (info) => {
    taken++;
    console.log(`   snapshot ${info.id.slice(0, 8)} taken at ${info.createdAt.toISOString()}`);
  });
  schedule.on('deleted', () => pruned++);
  while (taken < 5) {
    await scribble(volume, 64);
    await new Promise((r) => setTimeout(r, 20));
  }
  schedule.stop();
  await schedule.settled();
  const kept = volume.listSnapshots();
  check(kept.length === 3 && pruned === taken - 3, `${taken} taken, ${pruned} pruned, 3 kept`);
  const parts = volume.partitionSnapshots(kept[0]!.id);
  console.log(
    `   the oldest kept is ${parts.length} partition snapshots: ${parts.map((p) => `#${p.partition} seq ${p.sequence}`).join(', ')}`,
  );

  console.log('3. An incremental export between the two newest snapshots, applied to a replica');
  const [, older, newer] = kept;
  const replica = await MemoryDevice.create({ size: volume.size });
  await applyStream(exportStream(volume, { to: older!.id }), replica);
  const changed = volume.changedExtents(older!.id, newer!.id);
  const bytes = changed.reduce((n, e) => n + e.length, 0);
  await applyStream(exportStream(volume, { from: older!.id, to: newer!.id }), replica);
  const newest = await volume.openSnapshot(newer!.id);
  check(
    (await sha256(replica)) === (await sha256(newest)),
    `the replica equals the newest snapshot after ${changed.length} changed extents (${bytes / 1024} KiB) crossed`,
  );
  await newest.close();

  console.log('4. Processor 1 dies (an out-of-memory kill looks the same)');
  await scribble(volume, 256);
  await volume.flush();
  const before = await sha256(volume);
  volume.on('error', () => {});
  volume.on('processor-exit', (i) => console.log(`   processor-exit event: processor ${i}`));
  // A recovery drill: the worker is killed the way the system would kill it.
  await volume.crashProcessor(1);
  const refused = await volume.read(64 * 1024, 4096).then(
    () => undefined,
    (err: unknown) => err,
  );
  check(BlockDeviceError.is(refused, 'EIO'), `its partitions' I/O fails EIO (${String(refused)})`);
  check((await volume.read(0, 4096)).length === 4096, 'the other partitions go on');
  const snapshotRefused = await volume.snapshot().then(
    () => false,
    () => true,
  );
  check(snapshotRefused, 'snapshot() refuses cleanly while a processor is dead');

  console.log('5. restartProcessor(1) reopens its partitions from their stores');
  await volume.restartProcessor(1);
  check((await sha256(volume)) === before, 'every flushed write is back');
  check(volume.listSnapshots().length === 3, 'and every overall snapshot');
  await volume.close();

  console.log('6. Open the volume again, all partitions in this thread this time');
  const again = await VirtualVolume.open({
    store: await FileDevice.open(join(dir, 'volume.store')),
    processors: 0,
  });
  check((await sha256(again)) === before, 'the same content');
  await again.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}

if (failures > 0) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('done');
