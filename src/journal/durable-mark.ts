import { io, SECTOR } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { SUPERBLOCK_BYTES } from '../store/index.js';

/*
 * The durable mark: one sector of the journal store, right after the
 * superblock in slot 0's page (which the superblock's 512 bytes leave
 * unused), saying "every record up to `durableSeq` of this journal was made
 * durable by a completed flush". Written, not flushed, after each flush
 * (JournalWriter.syncAttested), beside the frames rather than after them, so
 * a flush waits for one small write and not for the frame in flight. Replay
 * trusts it, as it trusts a frame header's `durableSeq`, to prove that a
 * damaged record was durable (ECORRUPT) rather than a torn tail. A damaged
 * or stale mark proves nothing: the epoch ties it to this format, and a
 * checksum to itself. docs/ARCHITECTURE.md, "On-disk formats".
 */

/** Store offset of the durable mark. */
export const DURABLE_MARK_AT = SUPERBLOCK_BYTES;
const MAGIC = 0x414a5342; // "BSJA"

/** Encodes the mark for journal `epoch`. */
export function encodeDurableMark(epoch: number, durableSeq: number): Uint8Array {
  const out = new Uint8Array(SECTOR);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint32(4, epoch, true);
  view.setFloat64(8, durableSeq, true);
  view.setUint32(16, checksum(out.subarray(0, 16)), true);
  return out;
}

/** The `durableSeq` the mark on `store` gives for journal `epoch`, or 0 if it is missing, damaged or another format's. */
export async function readDurableMark(store: BlockDevice, epoch: number): Promise<number> {
  const bytes = await io('journal read mark', store.read(DURABLE_MARK_AT, SECTOR));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== MAGIC || view.getUint32(4, true) !== epoch) return 0;
  if (checksum(bytes.subarray(0, 16)) !== view.getUint32(16, true)) return 0;
  const seq = view.getFloat64(8, true);
  return Number.isSafeInteger(seq) && seq > 0 ? seq : 0;
}
