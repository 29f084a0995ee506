import { io } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import type { CowLayout } from './cow-layout.js';
import type { LastFrameFailure } from './log-recovery.js';
import type { CowEntry } from './metadata-codec.js';

/**
 * Checks the chunks the last log frame names against their CRC-32s.
 *
 * A failing chunk means a torn tail (the frame landed, its chunks did not)
 * or damage to a durable frame. A preserved block tells them apart without
 * any write-path cost: the origin block is overwritten only after the frame
 * holding its preserved copy is durable (rule 4), and until then still holds
 * exactly the preserved data. So an origin block whose CRC-32 differs from
 * its preserve entry's proves the frame durable, and dropping it would let a
 * snapshot read the origin's newer bytes as its own: damage. An origin block
 * that still matches makes dropping the entry harmless. A writable
 * snapshot's own write has no such witness (the flush's attestation covers
 * it).
 */
export async function verifyChunks(
  origin: BlockDevice,
  store: BlockDevice,
  layout: CowLayout,
  entries: CowEntry[],
): Promise<LastFrameFailure | undefined> {
  let first: LastFrameFailure | undefined;
  for (const entry of entries) {
    if (entry.kind !== 'preserve' && entry.kind !== 'private') continue;
    if (entry.chunk >= layout.chunkCount) {
      return {
        failure: `chunk ${entry.chunk} (block ${entry.block}) is past the store's ${layout.chunkCount} chunks`,
      };
    }
    const at = layout.dataOffset + entry.chunk * layout.blockSize;
    const data = await io('store read', store.read(at, layout.blockSize));
    if (checksum(data) === entry.crc) continue;
    const failure = `chunk ${entry.chunk} (block ${entry.block}) at store offset ${at} fails its checksum`;
    first ??= { failure };
    if (entry.kind === 'preserve' && (await originMoved(origin, layout, entry.block, entry.crc))) {
      return {
        failure,
        durableBecause: `origin block ${entry.block} no longer holds the data preserved from it, so the origin was written after the frame was durable`,
      };
    }
  }
  return first;
}

/** Whether origin block `block` (of the store's geometry) no longer has CRC-32 `crc`. */
async function originMoved(
  origin: BlockDevice,
  layout: CowLayout,
  block: number,
  crc: number,
): Promise<boolean> {
  const bs = layout.blockSize;
  // Another geometry is refused once the layout is known; nothing to compare then.
  if (layout.originSize !== origin.size || bs !== origin.blockSize) return false;
  if ((block + 1) * bs > origin.size) return false;
  const data = await io('origin read', origin.read(block * bs, bs));
  return checksum(data) !== crc;
}
