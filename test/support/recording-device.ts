import { SECTOR } from '../../src/base/index.js';
import { PassThroughDevice } from './pass-through-device.js';

/**
 * Passes I/O through and remembers, per 512-byte sector, every content a
 * write left there, in order: the damage trials pick their targets among
 * the sectors a device wrote, and take "a sector from an older write" from
 * this history.
 */
export class RecordingDevice extends PassThroughDevice {
  /** Sector index → the sector's content after each write that touched it, oldest first. */
  readonly history = new Map<number, Uint8Array[]>();

  override async write(offset: number, data: Uint8Array): Promise<void> {
    await super.write(offset, data);
    // Read back after the write: a partial-sector write leaves the rest of
    // the sector as it was, and the history holds whole sectors.
    const first = Math.floor(offset / SECTOR);
    const last = Math.floor((offset + data.length - 1) / SECTOR);
    const now = await this.inner.read(first * SECTOR, (last - first + 1) * SECTOR);
    for (let s = first; s <= last; s++) {
      const content = now.slice((s - first) * SECTOR, (s - first + 1) * SECTOR);
      const versions = this.history.get(s);
      if (versions === undefined) this.history.set(s, [content]);
      else versions.push(content);
    }
  }

  /** The sectors ever written, ascending. */
  get writtenSectors(): number[] {
    return [...this.history.keys()].sort((a, b) => a - b);
  }
}
