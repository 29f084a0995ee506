import type { MemoryDevice } from '../../src/index.js';
import {
  decodeSuperblock,
  SUPERBLOCK_BYTES,
  SUPERBLOCK_SLOT,
  type Superblock,
} from '../../src/store/superblock.js';

/**
 * The newest valid superblock on a store disk (COW store or journal) and the
 * slot it is in, as `open` would choose it: for tests that rewrite it.
 */
export async function newestSuperblock(
  disk: MemoryDevice,
): Promise<{ sb: Superblock; slot: number }> {
  const both = await disk.read(0, 2 * SUPERBLOCK_SLOT);
  let best: { sb: Superblock; slot: number } | undefined;
  for (const slot of [0, 1]) {
    const at = slot * SUPERBLOCK_SLOT;
    const sb = decodeSuperblock(both.subarray(at, at + SUPERBLOCK_BYTES));
    if (typeof sb !== 'string' && (best === undefined || sb.generation > best.sb.generation)) {
      best = { sb, slot };
    }
  }
  if (best === undefined) throw new Error('no valid superblock');
  return best;
}
