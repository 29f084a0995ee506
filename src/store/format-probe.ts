import { io } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { STORE_MAGIC, SUPERBLOCK_SLOT } from './superblock.js';

/** The copy map's magic ("BSCM"), at the start of its first slot (src/copy/copy-map.ts). */
const COPY_MAP_MAGIC = 0x4d435342;

/** The four ASCII letters a little-endian u32 magic or kind spells. */
function letters(n: number): string {
  return Buffer.from(new Uint32Array([n]).buffer).toString('latin1');
}

/** A blocksnap format found on a device. */
export interface FoundFormat {
  /** A metadata store (COW store, journal) or a copy job's map. */
  format: 'store' | 'copy map';
  /** What was found and where, for a message. */
  description: string;
}

/**
 * What blocksnap format `device` holds, if any: a store superblock (a COW
 * store or a journal, in either slot — a damaged one still counts: the
 * store behind it is not empty) or a copy map. Reads the first 8 KiB (less
 * on a smaller device) and nothing else.
 * @throws `EIO` if the read fails.
 */
export async function probeFormat(device: BlockDevice): Promise<FoundFormat | undefined> {
  const length = Math.min(device.size, 2 * SUPERBLOCK_SLOT);
  if (length < 8) return undefined;
  const head = await io('store read', device.read(0, length));
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  for (const at of [0, SUPERBLOCK_SLOT]) {
    if (at + 12 <= length && view.getUint32(at, true) === STORE_MAGIC) {
      const kind = letters(view.getUint32(at + 8, true));
      return {
        format: 'store',
        description: `a blocksnap store of kind "${kind}" (superblock at offset ${at})`,
      };
    }
  }
  if (view.getUint32(0, true) === COPY_MAP_MAGIC) {
    return { format: 'copy map', description: 'a blocksnap copy map' };
  }
  return undefined;
}

/**
 * Refuses to format `device` over a blocksnap format it already holds,
 * unless `force`: a `create` over an existing store would erase every
 * snapshot and every journaled write in it without a word. `reusable` names
 * a format the caller may overwrite anyway (a copy job's map store may hold
 * an earlier job's map).
 * @throws `EBUSY` naming what was found and how to proceed; `EIO`.
 */
export async function refuseReformat(
  device: BlockDevice,
  what: string,
  force: boolean | undefined,
  reusable?: FoundFormat['format'],
): Promise<void> {
  if (force === true) return;
  const found = await probeFormat(device);
  if (found === undefined || found.format === reusable) return;
  throw new BlockDeviceError(
    'EBUSY',
    `${what} already holds ${found.description}: formatting it would erase it. Open it instead, or pass { force: true } to reformat it`,
  );
}
