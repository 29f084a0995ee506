import type { MemoryDevice } from '../../src/index.js';
import { RING_START } from '../../src/journal/index.js';
import { logOffset, SUPERBLOCK_SLOT, tableOffset } from '../../src/store/index.js';
import { newestSuperblock } from '../support/superblock.js';

/**
 * Names the structure at a store offset, read from the undamaged image, so
 * a failing trial says what it damaged (docs/ARCHITECTURE.md, "On-disk
 * formats"): a superblock slot, a table, a log frame (and whether it is the
 * last), a chunk (and whether the last frame names it); a journal's ring or
 * catalog slot.
 */

const FRAME_HEADER = 32;
const LOG_MAGIC = 0x474c5342; // "BSLG"
const PRESERVE = 3;
const PRIVATE = 4;

/** The log frames of the newest superblock's epoch, in order: start offset, end, and the chunks each names. */
async function cowFrames(image: MemoryDevice) {
  const { sb } = await newestSuperblock(image);
  const start = logOffset(sb);
  const frames: { at: number; end: number; chunks: number[] }[] = [];
  let at = start;
  while (at + FRAME_HEADER <= start + sb.logCapacity) {
    const head = await image.read(at, 512);
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    if (view.getUint32(0, true) !== LOG_MAGIC) break;
    if (view.getUint32(4, true) !== sb.epoch || view.getUint32(8, true) !== frames.length) break;
    const entryBytes = view.getUint32(16, true);
    const end = at + Math.ceil((FRAME_HEADER + entryBytes) / 512) * 512;
    const body = await image.read(at + FRAME_HEADER, entryBytes);
    const bv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const chunks: number[] = [];
    for (let p = 0; p + 4 <= entryBytes; ) {
      const kind = bv.getUint8(p);
      const length = bv.getUint16(p + 2, true);
      if (kind === PRESERVE || kind === PRIVATE) chunks.push(bv.getUint32(p + 8, true));
      p += 4 + length;
    }
    frames.push({ at, end, chunks });
    at = end;
  }
  return { sb, frames };
}

/** What lies at `offset` of a COW store. */
export async function cowRegion(image: MemoryDevice, offset: number): Promise<string> {
  if (offset < 2 * SUPERBLOCK_SLOT)
    return `superblock slot ${Math.floor(offset / SUPERBLOCK_SLOT)}`;
  const { sb, frames } = await cowFrames(image);
  const params = new DataView(sb.params.buffer, sb.params.byteOffset, sb.params.byteLength);
  const blockSize = params.getUint32(8, true);
  const dataOffset = params.getFloat64(16, true);
  const last = frames.length - 1;
  if (offset < tableOffset(sb, 1)) return `table 0${sb.active === 0 ? ' (active)' : ''}`;
  if (offset < logOffset(sb)) return `table 1${sb.active === 1 ? ' (active)' : ''}`;
  if (offset < dataOffset) {
    const i = frames.findIndex((f) => offset >= f.at && offset < f.end);
    if (i < 0) return 'log, past the frames of the epoch';
    return `log frame ${i} of ${frames.length}${i === last ? ' (the last)' : ''}`;
  }
  const chunk = Math.floor((offset - dataOffset) / blockSize);
  let named = -1;
  frames.forEach((f, i) => {
    if (f.chunks.includes(chunk)) named = i;
  });
  const by = named < 0 ? 'named by no frame of the epoch' : `named by frame ${named}`;
  return `chunk ${chunk} (${by}${named >= 0 && named === last ? ', the last' : ''})`;
}

/** What lies at `offset` of a journal store. */
export async function journalRegion(image: MemoryDevice, offset: number): Promise<string> {
  if (offset < RING_START) return `superblock slot ${Math.floor(offset / SUPERBLOCK_SLOT)}`;
  const { sb } = await newestSuperblock(image);
  if (offset < RING_START + sb.logCapacity) return `ring +${offset - RING_START}`;
  if (sb.tableCapacity === 0) return 'past the ring';
  const slot = Math.floor((offset - RING_START - sb.logCapacity) / sb.tableCapacity);
  return `catalog slot ${slot}${slot === sb.active ? ' (active)' : ''}`;
}
