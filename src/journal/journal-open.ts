import { randomInt } from 'node:crypto';
import { allocateBuffer, checkStackedOver, io, SECTOR } from '../base/index.js';
import type { BlockDevice, ProgressEvent } from '../device.js';
import { readCatalog, writeCatalog } from './journal-catalog.js';
import type { JournalParts } from './journal-core.js';
import {
  CATALOG_ENTRY_MAX,
  headerBytes,
  type JournalSuper,
  RING_START,
  readJournalSuper,
  writeJournalSuper,
} from './journal-format.js';
import { buildFrame } from './journal-frame.js';
import { addRecord, RecordIndex } from './journal-index.js';
import { RingSpace } from './journal-ring.js';
import { type ReplayResult, replayJournal } from './journal-scan.js';
import {
  type JournalRepair,
  reconcileSnapshots,
  SnapshotRegistry,
} from './journal-snapshot-registry.js';
import { ChangesTable } from './journal-table.js';

/**
 * What `JournalDevice.open` does before the device exists: reads the
 * superblock, replays the journal from its head into a changes table and a
 * record index, reconciles the snapshot catalog with production, seals the
 * replayed tail and writes the superblock that says the journal is in use
 * (docs/ARCHITECTURE.md, Crash ordering: JournalDevice).
 * @throws `ECORRUPT`, `EINVAL` and `EIO` as `JournalDevice.open` documents.
 */
export async function recoverJournal(
  production: BlockDevice,
  journal: BlockDevice,
  onProgress: ((event: ProgressEvent) => void) | undefined,
  repair = false,
): Promise<
  Pick<JournalParts, 'superblock' | 'table' | 'index' | 'replay' | 'registry'> & {
    repairs: JournalRepair[];
  }
> {
  const sb = await readJournalSuper(journal);
  // Before anything is replayed onto it: a journal opened over the wrong
  // layer (a COW layer forgotten) would apply its records around it.
  const below = { size: sb.productionSize, blockSize: sb.blockSize, identity: sb.production };
  checkStackedOver(below, production, 'the journal', 'production device');
  const table = new ChangesTable();
  const index = new RecordIndex(sb.headSeq);
  const perBlock = sb.blockSize / SECTOR;
  const snapshots = new SnapshotRegistry(
    Math.floor(sb.catalogCapacity / CATALOG_ENTRY_MAX),
    await readCatalog(journal, sb),
  );
  const replayed = await replayJournal(
    journal,
    sb,
    (seq, firstBlock, blocks, note, sector, time) => {
      addRecord(index, table, perBlock, firstBlock, blocks, sector, time);
      if (note !== undefined) snapshots.noteLanded(seq, note);
    },
    onProgress,
  );
  const repairs = await reconcileSnapshots(snapshots, production, repair);
  // A repair's catalog goes into the other slot now; the superblock below
  // makes it the catalog (until then the old one stays the durable one).
  let base = sb;
  if (repairs.length > 0) {
    const version = snapshots.catalogVersion;
    base = await writeCatalog(journal, sb, snapshots.catalog());
    snapshots.catalogDurable(version);
  }
  // Not clean from now on until close. After a clean close the mark is
  // cleared durably before the seal, the first frame past the close point:
  // a power cut with the seal (or any later frame) on the store and the
  // mark still there would make the next replay find frames past the clean
  // tail (ECORRUPT), and a torn tail after reopen must drop again.
  const superblock: JournalSuper = {
    ...base,
    generation: sb.generation + 1,
    clean: false,
    tailAbs: undefined,
  };
  if (sb.clean) await writeJournalSuper(journal, superblock);
  const replay = await sealReplayedTail(journal, sb, replayed);
  // The flush makes every replayed record and the seal durable, which
  // frames written from now on will attest.
  if (sb.clean) await io('journal flush', journal.flush());
  else await writeJournalSuper(journal, superblock);
  return { superblock, table, index, replay, registry: snapshots, repairs };
}

/**
 * Ends a replayed journal with an empty frame at its tail, written before any
 * new frame can land (not flushed: the superblock write that follows in
 * `open` flushes it, or after a clean close a flush of its own, the mark
 * having been cleared before this frame). Returns where the journal now ends.
 *
 * Why: replay drops a tail of frames a power cut left torn. The first frame
 * written after it would start where the first dropped one did, with the
 * same sequence number and the same link to the frame before; if the power
 * failed again before that new frame's header was durable, the dropped
 * header still there would chain on again, and the next replay would bring
 * back writes the device had already shown as lost (the journal model's
 * soak found it). The seal takes that place durably with a link of its own
 * (a new session): nothing dropped is reachable from it. Its `durableSeq`
 * is the last replayed record, which open's flush makes durable. A ring too
 * full for the seal had no room for a dropped frame either.
 */
async function sealReplayedTail(
  store: BlockDevice,
  sb: JournalSuper,
  replay: ReplayResult,
): Promise<ReplayResult> {
  const ring = new RingSpace(sb.capacity, replay.headAbs, replay.tailAbs);
  const at = ring.place(headerBytes(0));
  if (at === undefined) return replay;
  const { pieces, length, link } = buildFrame(
    {
      epoch: sb.epoch,
      session: randomInt(0, 0xffffffff),
      firstSeq: replay.nextSeq,
      durableSeq: replay.nextSeq - 1,
      prevLink: replay.link,
    },
    [],
    sb.blockSize,
    replay.lastTime,
    allocateBuffer,
    true,
  );
  await io('journal write', store.write(RING_START + (at % sb.capacity), pieces[0]!));
  return { ...replay, headAbs: ring.headAbs, tailAbs: at + length, link };
}
