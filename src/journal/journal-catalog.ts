import { io } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { CATALOG_ENTRY_MAX, catalogOffset, type JournalSuper } from './journal-format.js';
import { MAX_ID_BYTES } from './journal-notes.js';

/**
 * A snapshot of a journal device that a checkpoint has materialized: it is a
 * snapshot of the production device now, and its marker has left the
 * journal, so the catalog is what remembers it.
 */
export interface CatalogEntry {
  /** The journal device's id for it (what users see). */
  id: string;
  /** The production device's id for it. */
  productionId: string;
  name: string | undefined;
  createdAt: number;
  writable: boolean;
  /** Sequence number of its marker: it holds every record before. */
  sequence: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const NO_NAME = 0xffff;

/** Longest production snapshot id a catalog entry holds, in UTF-8 bytes. */
export const MAX_PRODUCTION_ID_BYTES = 255;

/**
 * Encodes entries back to back:
 * `idLength u8 · id · productionIdLength u8 · productionId · nameLength u16
 * (0xffff: none) · name · createdAt f64 · writable u8 · sequence f64`
 * — at most CATALOG_ENTRY_MAX bytes each.
 */
export function encodeCatalog(entries: readonly CatalogEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    const id = encoder.encode(e.id);
    const pid = encoder.encode(e.productionId);
    const name = e.name === undefined ? undefined : encoder.encode(e.name);
    const out = new Uint8Array(1 + id.length + 1 + pid.length + 2 + (name?.length ?? 0) + 17);
    const view = new DataView(out.buffer);
    out[0] = id.length;
    out.set(id, 1);
    let at = 1 + id.length;
    out[at] = pid.length;
    out.set(pid, at + 1);
    at += 1 + pid.length;
    view.setUint16(at, name === undefined ? NO_NAME : name.length, true);
    if (name !== undefined) out.set(name, at + 2);
    at += 2 + (name?.length ?? 0);
    view.setFloat64(at, e.createdAt, true);
    out[at + 8] = e.writable ? 1 : 0;
    view.setFloat64(at + 9, e.sequence, true);
    parts.push(out);
  }
  return Buffer.concat(parts);
}

/** Decodes `count` entries; `ECORRUPT` if they do not parse. */
export function decodeCatalog(bytes: Uint8Array, count: number): CatalogEntry[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries: CatalogEntry[] = [];
  let at = 0;
  try {
    for (let i = 0; i < count; i++) {
      const idLength = bytes[at]!;
      const id = decoder.decode(bytes.subarray(at + 1, at + 1 + idLength));
      at += 1 + idLength;
      const pidLength = bytes[at]!;
      const productionId = decoder.decode(bytes.subarray(at + 1, at + 1 + pidLength));
      at += 1 + pidLength;
      const nameLength = view.getUint16(at, true);
      const named = nameLength !== NO_NAME;
      const name = named ? decoder.decode(bytes.subarray(at + 2, at + 2 + nameLength)) : undefined;
      at += 2 + (named ? nameLength : 0);
      entries.push({
        id,
        productionId,
        name,
        createdAt: view.getFloat64(at, true),
        writable: bytes[at + 8] === 1,
        sequence: view.getFloat64(at + 9, true),
      });
      at += 17;
    }
  } catch {
    throw new BlockDeviceError('ECORRUPT', 'journal snapshot catalog does not parse');
  }
  if (at !== bytes.length) {
    throw new BlockDeviceError('ECORRUPT', 'journal snapshot catalog does not parse');
  }
  return entries;
}

/** Checks that an entry fits its CATALOG_ENTRY_MAX bytes; `EINVAL` otherwise. */
export function checkCatalogEntry(e: CatalogEntry): void {
  if (encoder.encode(e.productionId).length > MAX_PRODUCTION_ID_BYTES) {
    throw new BlockDeviceError(
      'EINVAL',
      `production snapshot id ${e.productionId} is longer than ${MAX_PRODUCTION_ID_BYTES} UTF-8 bytes`,
    );
  }
  if (encoder.encode(e.id).length > MAX_ID_BYTES) {
    throw new BlockDeviceError('EINVAL', `snapshot id ${e.id} is too long`);
  }
  if (encodeCatalog([e]).length > CATALOG_ENTRY_MAX) {
    throw new BlockDeviceError('EINVAL', 'snapshot catalog entry is too large');
  }
}

/**
 * Writes `entries` into the catalog slot the superblock does not name, and
 * flushes, so the superblock the caller writes next may name it: until that
 * superblock is durable, the old slot stays the valid catalog. Returns the
 * superblock fields that name the new slot.
 */
export async function writeCatalog(
  store: BlockDevice,
  sb: JournalSuper,
  entries: readonly CatalogEntry[],
): Promise<JournalSuper> {
  const bytes = encodeCatalog(entries);
  if (bytes.length > sb.catalogCapacity) {
    throw new BlockDeviceError(
      'ENOSPC',
      `snapshot catalog needs ${bytes.length} bytes, has ${sb.catalogCapacity}`,
    );
  }
  const which = 1 - sb.catalogActive;
  if (bytes.length > 0) {
    await io('journal catalog write', store.write(catalogOffset(sb, which), bytes));
    await io('journal catalog flush', store.flush());
  }
  return {
    ...sb,
    catalogActive: which,
    catalogBytes: bytes.length,
    catalogCount: entries.length,
    catalogCrc: checksum(bytes),
  };
}

/** Reads the catalog the superblock names, checking it; `ECORRUPT` if damaged. */
export async function readCatalog(store: BlockDevice, sb: JournalSuper): Promise<CatalogEntry[]> {
  if (sb.catalogBytes === 0) {
    if (sb.catalogCount !== 0) {
      throw new BlockDeviceError('ECORRUPT', 'journal snapshot catalog does not parse');
    }
    return [];
  }
  const at = catalogOffset(sb, sb.catalogActive);
  const bytes = await io('journal catalog read', store.read(at, sb.catalogBytes));
  if (checksum(bytes) !== sb.catalogCrc) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `journal snapshot catalog at store offset ${at} fails its checksum`,
    );
  }
  return decodeCatalog(bytes, sb.catalogCount);
}
