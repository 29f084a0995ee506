import { checksum } from '../../src/checksum/index.js';
import { cowCodec, readCowParams } from '../../src/cow/cow-layout.js';
import { type ScannedFrame, scanLog } from '../../src/cow/log-format.js';
import type { CowEntry } from '../../src/cow/metadata-codec.js';
import type { MemoryDevice, Snapshot } from '../../src/index.js';
import type { Superblock } from '../../src/store/superblock.js';
import { fill, pattern } from './bytes.js';
import { CowRig } from './cow-rig.js';
import { SelectiveRig } from './selective-rig.js';
import { newestSuperblock } from './superblock.js';

/*
 * Reading and damaging a COW store's log in tests: the last frame, the
 * chunks its entries name, and the two devices that share the format.
 */

export const BS = 512;
export const BLOCKS = 16;
export const SIZE = BLOCKS * BS;
export const old = pattern(SIZE, 7);
export const fresh = fill(SIZE, 0xee);

export interface Subject {
  rig: CowRig | SelectiveRig;
  /** A snapshot holding blocks 0–7 at least. */
  snapshot(options?: { writable?: boolean }): Promise<Snapshot>;
}

export async function cowSubject(): Promise<Subject> {
  const rig = await CowRig.create({ blocks: BLOCKS, storeBytes: 128 * 1024 });
  return { rig, snapshot: (o) => rig.device.snapshot(o) };
}

export async function selectiveSubject(): Promise<Subject> {
  const rig = await SelectiveRig.create({ blocks: BLOCKS, storeBytes: 128 * 1024 });
  return {
    rig,
    snapshot: (o) => rig.device.snapshot({ ...o, include: [{ offset: 0, length: 8 * BS }] }),
  };
}

export const subjects = [
  { device: 'CowSnapshotDevice', make: cowSubject },
  { device: 'SelectiveSnapshotDevice', make: selectiveSubject },
];

/** The store's log as open would scan it, and where each entry's chunk is. */
export async function storeLog(disk: MemoryDevice): Promise<{
  sb: Superblock;
  frames: ScannedFrame<CowEntry>[];
  chunkAt: (entry: CowEntry) => number;
}> {
  const { sb } = await newestSuperblock(disk);
  const layout = readCowParams(sb.params, disk);
  const frames = await scanLog(disk, sb, cowCodec);
  const chunkAt = (entry: CowEntry): number => {
    if (entry.kind !== 'preserve' && entry.kind !== 'private') throw new Error('no chunk');
    return layout.dataOffset + entry.chunk * layout.blockSize;
  };
  return { sb, frames, chunkAt };
}

/** The first entry of `kind` in the log's last frame, and the store offset of its chunk. */
export async function lastFrameChunk(
  disk: MemoryDevice,
  kind: 'preserve' | 'private',
): Promise<{ frame: ScannedFrame<CowEntry>; at: number }> {
  const { frames, chunkAt } = await storeLog(disk);
  const frame = frames.at(-1);
  const entry = frame?.entries.find((e) => e.kind === kind);
  if (frame === undefined || entry === undefined)
    throw new Error(`last frame has no ${kind} entry`);
  return { frame, at: chunkAt(entry) };
}

export async function flipBit(disk: MemoryDevice, offset: number): Promise<void> {
  const [byte] = await disk.read(offset, 1);
  await disk.write(offset, Uint8Array.of(byte! ^ 0x04));
}

/** Whether the log's last frame names a chunk whose data does not match it: what a torn tail looks like. */
export async function lastFrameTorn(disk: MemoryDevice): Promise<boolean> {
  const { frames, chunkAt } = await storeLog(disk);
  for (const entry of frames.at(-1)?.entries ?? []) {
    if (entry.kind !== 'preserve' && entry.kind !== 'private') continue;
    if (checksum(await disk.read(chunkAt(entry), BS)) !== entry.crc) return true;
  }
  return false;
}
