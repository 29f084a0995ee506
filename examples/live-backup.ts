// Live backup of a busy volume: a point-in-time copy of a 256 MiB volume is
// made in the background while an application keeps writing to it, then a
// second backup is interrupted halfway (a service restart) and resumed from
// its snapshot map. Run it with `npx tsx examples/live-backup.ts`.
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type BlockDevice,
  type CopyReport,
  FileDevice,
  SnapshotCopyJob,
  type SnapshotCopyJobOptions,
} from '../src/index.js';

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
const BLOCK = 4096;
const dir = await mkdtemp(join(tmpdir(), 'blocksnap-live-backup-'));
const paths = {
  volume: join(dir, 'volume.img'),
  backup1: join(dir, 'backup-1.img'),
  backup2: join(dir, 'backup-2.img'),
  map2: join(dir, 'backup-2.map'),
};
let failures = 0;

function check(ok: boolean, what: string): void {
  console.log(`   ${ok ? '✓' : '✗ FAILED:'} ${what}`);
  if (!ok) failures++;
}

/** SHA-256 of a whole device, read 1 MiB at a time. */
async function sha256(device: BlockDevice): Promise<string> {
  const hash = createHash('sha256');
  for (let at = 0; at < device.size; at += MiB) hash.update(await device.read(at, MiB));
  return hash.digest('hex');
}

/**
 * The application: 16 writers putting random 4 KiB blocks at random places
 * through `device` until `stop()`; remembers what each block must hold.
 */
function startWriter(device: BlockDevice, written: Map<number, Uint8Array>) {
  let running = true;
  let writes = 0;
  // Two writes to one block in flight at once may land in either order, on
  // any disk: like an application, a worker leaves a block another is
  // writing alone, so the last write called to a block is the one it holds.
  const busy = new Set<number>();
  const worker = async () => {
    while (running) {
      const block = Math.floor(Math.random() * (SIZE / BLOCK));
      if (busy.has(block)) continue;
      busy.add(block);
      const data = randomFillSync(new Uint8Array(BLOCK));
      written.set(block, data);
      try {
        await device.write(block * BLOCK, data);
      } finally {
        busy.delete(block);
      }
      writes++;
    }
  };
  const workers = Array.from({ length: 16 }, worker);
  return {
    get writes() {
      return writes;
    },
    async stop(): Promise<void> {
      running = false;
      await Promise.all(workers);
    },
  };
}

/** Prints progress at every 25 % (not on every event: there are thousands). */
function showProgress(job: SnapshotCopyJob, label: string): void {
  let next = 25;
  job.on('progress', (p) => {
    const percent = (100 * p.copiedBytes) / p.totalBytes;
    if (percent < next) return;
    console.log(
      `   ${label} ${Math.floor(percent)} %: ${(p.copiedBytes / MiB).toFixed(1)} MiB copied ` +
        `(${(p.copierBytes / MiB).toFixed(1)} MiB by the copier, ` +
        `${(p.copyFirstBytes / MiB).toFixed(1)} MiB ahead of writes), ${p.queuedWrites} writes queued`,
    );
    while (next <= percent) next += 25;
  });
}

function describeReport(r: CopyReport): string {
  const mbps = r.totalBytes / 1e6 / (r.durationMs / 1000);
  return (
    `${r.totalBytes / MiB} MiB in ${(r.durationMs / 1000).toFixed(2)} s (${mbps.toFixed(0)} MB/s): ` +
    `${(r.copierBytes / MiB).toFixed(1)} MiB by the copier, ${(r.copyFirstBytes / MiB).toFixed(1)} MiB ahead of writes, ` +
    `${(r.resumedBytes / MiB).toFixed(1)} MiB from before a restart, ${r.queuedWrites} writes queued`
  );
}

/** Every block the writers wrote holds its last data. */
async function volumeHoldsWrites(
  device: BlockDevice,
  written: Map<number, Uint8Array>,
): Promise<boolean> {
  for (const [block, data] of written) {
    const now = await device.read(block * BLOCK, BLOCK);
    if (!Buffer.from(now).equals(data)) return false;
  }
  return true;
}

try {
  console.log(`1. A ${SIZE / MiB} MiB volume, filled with data, in ${dir}`);
  {
    const volume = await FileDevice.open(paths.volume, { size: SIZE, create: true });
    const extent = randomFillSync(new Uint8Array(MiB));
    for (let at = 0; at < SIZE; at += MiB) {
      extent[0] = at / MiB;
      await volume.write(at, extent);
    }
    await volume.close();
  }

  console.log('2. Back it up while the application keeps writing (copy-first policy)');
  const volume = await FileDevice.open(paths.volume);
  const atStart = await sha256(volume);
  console.log(`   the volume now: sha256 ${atStart.slice(0, 16)}…`);
  const backup1 = await FileDevice.open(paths.backup1, { size: SIZE, create: true });
  const job1 = await SnapshotCopyJob.start({
    source: volume,
    destination: backup1,
    conflictPolicy: 'copy-first',
  });
  showProgress(job1, 'backup 1:');
  // From now on the application writes through job1.device, never to the volume itself.
  const written = new Map<number, Uint8Array>();
  const writer1 = startWriter(job1.device, written);
  const report1 = await job1.done;
  console.log(
    `   done: ${describeReport(report1)}; the application wrote ${writer1.writes} blocks during the copy`,
  );
  check(
    (await sha256(backup1)) === atStart,
    'the backup is the volume as it was at the start, bit for bit',
  );
  await writer1.stop();
  check(
    await volumeHoldsWrites(job1.device, written),
    `the volume holds all ${writer1.writes} writes`,
  );
  await backup1.close();

  console.log('3. A second backup, with its snapshot map in a file (queue policy)');
  const atStart2 = await sha256(job1.device);
  const options: SnapshotCopyJobOptions = {
    source: job1.device,
    destination: await FileDevice.open(paths.backup2, { size: SIZE, create: true }),
    conflictPolicy: 'queue',
    chunkSize: MiB,
  };
  const mapBytes = Math.ceil(SnapshotCopyJob.mapStoreBytes(options) / BLOCK) * BLOCK;
  const map2 = await FileDevice.open(paths.map2, { size: mapBytes, create: true });
  const stop = new AbortController();
  const job2 = await SnapshotCopyJob.start({ ...options, mapStore: map2, signal: stop.signal });
  showProgress(job2, 'backup 2:');
  const writer2 = startWriter(job2.device, written);
  await new Promise<void>((resolve) =>
    job2.on('progress', (p) => {
      if (p.copiedBytes >= p.totalBytes / 2) resolve();
    }),
  );

  console.log('4. The service shuts down halfway: writes stop, the job is aborted, files closed');
  await writer2.stop();
  stop.abort();
  const aborted = await job2.done.then(
    () => 'finished',
    (err: Error) => err.name,
  );
  check(aborted === 'AbortError', `done rejected with ${aborted}`);
  const copiedBefore = job2.progress.copiedBytes;
  console.log(`   ${copiedBefore / MiB} MiB of ${SIZE / MiB} MiB copied before the shutdown`);
  await job2.device.close(); // and the volume under it
  await options.destination.close();
  await map2.close();

  console.log('5. After the restart: reopen the files and resume from the map');
  const volume2 = await FileDevice.open(paths.volume);
  const destination3 = await FileDevice.open(paths.backup2);
  const map3 = await FileDevice.open(paths.map2);
  const job3 = await SnapshotCopyJob.resume({
    source: volume2,
    destination: destination3,
    mapStore: map3,
    conflictPolicy: 'queue',
    chunkSize: MiB,
  });
  showProgress(job3, 'backup 2, resumed:');
  const writer3 = startWriter(job3.device, written);
  const report3 = await job3.done;
  await writer3.stop();
  console.log(`   done: ${describeReport(report3)}`);
  check(
    report3.resumedBytes === copiedBefore,
    'nothing copied before the restart was copied again',
  );
  // The destination and map stay ours: closed before the backup is read
  // back (a FileDevice open for writing keeps other openers out).
  await destination3.close();
  await map3.close();
  const backup2 = await FileDevice.open(paths.backup2, { readOnly: true });
  check(
    (await sha256(backup2)) === atStart2,
    'backup 2 is the volume as it was when backup 2 started, bit for bit',
  );
  await backup2.close();
  check(
    await volumeHoldsWrites(job3.device, written),
    `the volume holds every write, ${writer1.writes + writer2.writes + writer3.writes} in all`,
  );
  await job3.device.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}

if (failures > 0) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('Done: every check passed.');
