// Selective snapshots as a backup tool: only the "database" range of a volume
// is protected; every night a snapshot of that range is taken and an
// incremental stream of what changed since the night before is shipped to a
// backup device; then the database range of the volume is corrupted and
// restored, while the rest of the volume keeps its newer content. Run it
// with `npx tsx examples/selective-backup.ts`.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  applyStream,
  type BlockDevice,
  exportStream,
  FileDevice,
  SelectiveSnapshotDevice,
  type Snapshot,
} from '../src/index.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;
const VOLUME = 64 * MiB;
/** The range the database lives in: the only bytes the snapshots hold. */
const DATABASE = { offset: 8 * MiB, length: 16 * MiB };
/** Scratch space outside it: temp files, caches — never preserved. */
const SCRATCH = { offset: 40 * MiB, length: 8 * MiB };

const dir = await mkdtemp(join(tmpdir(), 'blocksnap-selective-'));
let failures = 0;

function check(ok: boolean, what: string): void {
  console.log(`   ${ok ? '✓' : '✗ FAILED:'} ${what}`);
  if (!ok) failures++;
}

/** SHA-256 of a byte range of a device, read 1 MiB at a time. */
async function digest(device: BlockDevice, range: { offset: number; length: number }) {
  const hash = createHash('sha256');
  for (let at = range.offset; at < range.offset + range.length; at += MiB) {
    hash.update(await device.read(at, Math.min(MiB, range.offset + range.length - at)));
  }
  return hash.digest('hex').slice(0, 16);
}

/** A day of database activity: `pages` random 4 KiB pages rewritten, plus scratch writes. */
async function workday(device: SelectiveSnapshotDevice, day: number, pages: number) {
  let seed = day * 7919;
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed;
  };
  const page = new Uint8Array(BLOCK);
  for (let i = 0; i < pages; i++) {
    page.fill((day * 31 + i) & 0xff);
    const at = DATABASE.offset + Math.floor((next() / 2 ** 31) * (DATABASE.length / BLOCK)) * BLOCK;
    await device.write(at, page);
  }
  await device.write(SCRATCH.offset, new Uint8Array(MiB).fill(day));
}

/** Ships a snapshot to the backup device as a stream: full, or since `from`. */
async function ship(
  device: SelectiveSnapshotDevice,
  backup: BlockDevice,
  to: Snapshot,
  from?: Snapshot,
) {
  const stream = exportStream(
    device,
    from === undefined ? { to: to.id } : { to: to.id, from: from.id },
  );
  const report = await applyStream(stream, backup);
  console.log(
    `   shipped ${report.incremental ? 'an incremental' : 'a full'} stream: ` +
      `${report.extents} extent(s), ${report.frames} frame(s), ${(report.dataBytes / MiB).toFixed(2)} MiB carried, ${(report.bytesWritten / MiB).toFixed(2)} MiB written (${report.framesSkipped} frame(s) already there)`,
  );
  return report;
}

try {
  console.log(`1. A 64 MiB volume; the database lives in [8 MiB, 24 MiB). Files in ${dir}`);
  const volume = await FileDevice.open(join(dir, 'volume.img'), { size: VOLUME, create: true });
  const store = await FileDevice.open(join(dir, 'store.img'), { size: 32 * MiB, create: true });
  const device = await SelectiveSnapshotDevice.create(volume, store, { maxSnapshots: 8 });
  const backup = await FileDevice.open(join(dir, 'backup.img'), { size: VOLUME, create: true });
  await device.write(DATABASE.offset, new Uint8Array(DATABASE.length).fill(0x11));
  await device.write(0, new Uint8Array(MiB).fill(0xee)); // the OS, outside the database

  console.log('2. Night 1: snapshot the database range and ship a full backup');
  const night1 = await device.snapshot({ include: [DATABASE], name: 'night-1' });
  console.log(`   snapshot holds ${JSON.stringify(device.snapshotExtents(night1.id))}`);
  await ship(device, backup, night1);
  const atNight1 = await digest(night1, DATABASE);
  check((await digest(backup, DATABASE)) === atNight1, 'backup = night 1');
  await night1
    .read(0, BLOCK)
    .then(() => check(false, 'reading outside the database is refused'))
    .catch((err: { code?: string }) =>
      check(err.code === 'EEXCLUDED', `reading outside the database is ${err.code}`),
    );

  console.log('3. Day 2: 300 database pages rewritten, scratch space churned');
  const preservedBefore = device.preservedBlocks;
  await workday(device, 2, 300);
  console.log(
    `   ${device.preservedBlocks - preservedBefore} database block(s) preserved; scratch writes preserved nothing`,
  );
  const night2 = await device.snapshot({ include: [DATABASE], name: 'night-2' });
  const changed = device.changedExtents(night1.id, night2.id);
  const changedBytes = changed.reduce((n, e) => n + e.length, 0);
  console.log(
    `   changed since night 1 (from the change table, no data read): ${changed.length} extent(s), ${(changedBytes / MiB).toFixed(2)} MiB`,
  );
  const incremental = await ship(device, backup, night2, night1);
  check(incremental.dataBytes === changedBytes, 'the stream carried only the changed blocks');
  const atNight2 = await digest(night2, DATABASE);
  check((await digest(backup, DATABASE)) === atNight2, 'backup = night 2');

  console.log('4. Shipping night 2 again is harmless; shipping it onto a stale copy is refused');
  await ship(device, backup, night2, night1);
  check((await digest(backup, DATABASE)) === atNight2, 'backup still = night 2');
  const stale = await FileDevice.open(join(dir, 'stale.img'), { size: VOLUME, create: true });
  await applyStream(exportStream(device, { to: night2.id, from: night1.id }), stale)
    .then(() => check(false, 'a target without the base is refused'))
    .catch((err: { code?: string; applied?: { frames: number } }) =>
      check(
        err.code === 'EINVAL' && err.applied?.frames === 0,
        `a target without night 1 is refused before anything is written (${err.code})`,
      ),
    );
  await stale.close();

  console.log('5. Day 3: a bad migration scribbles over the database');
  await workday(device, 3, 50);
  const scratchBefore = await digest(device, SCRATCH);
  await device.write(DATABASE.offset + 3 * MiB, new Uint8Array(2 * MiB).fill(0xba));
  console.log(`   database now ${await digest(device, DATABASE)}, night 2 was ${atNight2}`);

  console.log('6. Restore the database range from night 2');
  await device.restore(night2.id);
  check((await digest(device, DATABASE)) === atNight2, 'database = night 2 again');
  check((await digest(device, SCRATCH)) === scratchBefore, 'scratch space kept its day-3 content');
  check((await digest(night1, DATABASE)) === atNight1, 'night 1 still holds night 1');
  check(device.listSnapshots().length === 2, 'both snapshots are intact');

  console.log('7. Close and reopen: snapshots and change tables come back from the store');
  await device.close();
  const reopened = await SelectiveSnapshotDevice.open(
    await FileDevice.open(join(dir, 'volume.img')),
    await FileDevice.open(join(dir, 'store.img')),
  );
  const [n1, n2] = reopened.listSnapshots();
  check(
    JSON.stringify(reopened.changedExtents(n1!.id, n2!.id)) === JSON.stringify(changed),
    'changedExtents(night 1, night 2) is the same after reopening',
  );
  await reopened.close();
  await backup.close();
  console.log(failures === 0 ? 'All checks passed.' : `${failures} check(s) FAILED.`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
if (failures > 0) process.exitCode = 1;
