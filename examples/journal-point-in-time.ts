// Continuous data protection with a write journal: a volume takes writes, a
// bad write destroys a record, and the volume is read back at the point just
// before it; then snapshots are taken instantly and materialized on the
// production volume by a checkpoint. Run it with
// `npx tsx examples/journal-point-in-time.ts`.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BlockDevice, CowSnapshotDevice, FileDevice, JournalDevice } from '../src/index.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;
const dir = await mkdtemp(join(tmpdir(), 'blocksnap-journal-'));
const paths = {
  volume: join(dir, 'volume.img'),
  snapshots: join(dir, 'snapshots.img'),
  journal: join(dir, 'journal.img'),
};
let failures = 0;

function check(ok: boolean, what: string): void {
  console.log(`   ${ok ? '✓' : '✗ FAILED:'} ${what}`);
  if (!ok) failures++;
}

/** One block holding `text`, zero-padded. */
function record(text: string): Uint8Array {
  const out = new Uint8Array(BLOCK);
  out.set(new TextEncoder().encode(text));
  return out;
}

/** The text of block `n` of `device`. */
async function readRecord(device: BlockDevice, n: number): Promise<string> {
  const bytes = await device.read(n * BLOCK, BLOCK);
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** The stack: a journal in front of a copy-on-write volume (so the journal can materialize snapshots). */
async function openStack(create: boolean): Promise<JournalDevice> {
  const volume = await FileDevice.open(paths.volume, { size: 64 * MiB, create });
  const store = await FileDevice.open(paths.snapshots, { size: 16 * MiB, create });
  const journal = await FileDevice.open(paths.journal, { size: 8 * MiB, create });
  if (create) {
    const production = await CowSnapshotDevice.create(volume, store, { maxSnapshots: 16 });
    return JournalDevice.create(production, journal, { checkpointAt: 1 });
  }
  return JournalDevice.open(await CowSnapshotDevice.open(volume, store), journal);
}

try {
  console.log(`1. A 64 MiB volume behind an 8 MiB write journal, in ${dir}`);
  const device = await openStack(true);
  device.on('checkpoint', (e) =>
    console.log(
      `   (checkpoint: ${e.records} records → ${e.blocks} blocks to the volume, ` +
        `${e.snapshots} snapshot(s) materialized, ${e.freedBytes} journal bytes freed)`,
    ),
  );

  console.log('2. The application writes customer records (each write is one journal I/O)');
  const names = ['alice: 120 EUR', 'bob: 75 EUR', 'carol: 310 EUR', 'dave: 42 EUR'];
  await Promise.all(names.map((text, n) => device.write(n * BLOCK, record(text))));
  await device.write(1 * BLOCK, record('bob: 80 EUR'));
  await device.flush();
  const good = device.sequence;
  console.log(`   ${good} records in the journal, ${device.changedBlocks} blocks changed`);

  // A moment passes, then a buggy batch job zeroes a record and scribbles on another.
  await new Promise((resolve) => setTimeout(resolve, 20));
  const beforeBug = new Date();
  await new Promise((resolve) => setTimeout(resolve, 20));
  console.log('3. A bad write: a buggy job overwrites carol and dave');
  await device.write(2 * BLOCK, new Uint8Array(2 * BLOCK).fill(0x21));
  await device.flush();
  check((await readRecord(device, 2)).startsWith('!!!'), 'live volume: carol is garbage now');

  console.log(
    `4. Read the volume as it was after record ${good}, and as it was at ${beforeBug.toISOString()}`,
  );
  const bySeq = await device.pointInTime(good);
  const byTime = await device.pointInTime(beforeBug);
  check((await readRecord(bySeq, 2)) === 'carol: 310 EUR', `pointInTime(${good}): carol intact`);
  check((await readRecord(byTime, 3)) === 'dave: 42 EUR', 'pointInTime(date): dave intact');
  check(byTime.sequence === good, `the date resolves to record ${byTime.sequence}`);

  console.log('5. Repair: copy the two records from the point in time back to the live volume');
  await device.write(2 * BLOCK, await bySeq.read(2 * BLOCK, 2 * BLOCK));
  await bySeq.close();
  await byTime.close();
  check((await readRecord(device, 2)) === 'carol: 310 EUR', 'live volume: carol repaired');

  console.log('6. Take a snapshot before a migration: instant, a marker in the journal');
  const snap = await device.snapshot({ name: 'before-migration' });
  await device.write(0, record('alice: 0 EUR (migrated)'));
  const [info] = device.listSnapshots();
  check(
    info?.materialized === false,
    `snapshot ${info?.name} at record ${info?.sequence}: pending`,
  );
  check((await readRecord(snap, 0)) === 'alice: 120 EUR', 'the snapshot reads through the journal');

  console.log(
    '7. Checkpoint: apply the journal to the volume, materializing the snapshot at its marker',
  );
  await device.checkpoint();
  check(device.listSnapshots()[0]?.materialized === true, 'the snapshot is now on the volume');
  check((await readRecord(snap, 0)) === 'alice: 120 EUR', 'the same handle still reads it');
  check((await readRecord(device, 0)) === 'alice: 0 EUR (migrated)', 'the live volume moved on');
  check(device.changedBlocks === 0, 'the changes table is empty; the journal space is free');

  console.log('8. Close, reopen from the three files');
  await device.close();
  const again = await openStack(false);
  const snapshots = again.listSnapshots();
  check(snapshots.map((s) => s.name).join() === 'before-migration', 'the snapshot is back');
  const reopened = await again.openSnapshot(snapshots[0]!.id);
  check((await readRecord(reopened, 0)) === 'alice: 120 EUR', 'with its content');
  check((await readRecord(again, 1)) === 'bob: 80 EUR', 'and so is every record');
  await again.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}

if (failures > 0) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('Done: every check passed.');
