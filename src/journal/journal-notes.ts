import { BlockDeviceError } from '../errors.js';
import { NOTE_BYTES, RECORD_DELETE, RECORD_RESTORE, RECORD_SNAPSHOT } from './journal-format.js';

/**
 * A journal record that is not a write: it takes a sequence number in call
 * order like a write, so it marks an exact point of the journal.
 * - `snapshot`: a snapshot holding every record before it (seed 000, claim 52);
 * - `delete`: a snapshot not yet materialized is gone;
 * - `restore`: the device's content becomes a snapshot's from here on.
 */
export type JournalNote =
  | {
      kind: 'snapshot';
      id: string;
      name: string | undefined;
      createdAt: number;
      writable: boolean;
    }
  | { kind: 'delete'; id: string }
  | { kind: 'restore'; id: string };

/** Longest snapshot id a note or catalog entry holds, in bytes. */
export const MAX_ID_BYTES = 64;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The record kind a note is written as. */
export function noteKind(note: JournalNote): number {
  switch (note.kind) {
    case 'snapshot':
      return RECORD_SNAPSHOT;
    case 'delete':
      return RECORD_DELETE;
    default:
      return RECORD_RESTORE;
  }
}

/**
 * A note's record data: one zero-padded sector of
 * `idLength u8 · id · flags u8 (1 writable, 2 named) · createdAt f64 · nameLength u16 · name`.
 * The record's crc covers it.
 */
export function encodeNote(note: JournalNote): Uint8Array {
  const out = new Uint8Array(NOTE_BYTES);
  const view = new DataView(out.buffer);
  const id = encoder.encode(note.id);
  if (id.length > MAX_ID_BYTES) throw new BlockDeviceError('EINVAL', 'snapshot id is too long');
  out[0] = id.length;
  out.set(id, 1);
  let at = 1 + id.length;
  if (note.kind === 'snapshot') {
    const name = note.name === undefined ? undefined : encoder.encode(note.name);
    out[at] = (note.writable ? 1 : 0) | (name === undefined ? 0 : 2);
    view.setFloat64(at + 1, note.createdAt, true);
    view.setUint16(at + 9, name?.length ?? 0, true);
    at += 11;
    if (name !== undefined) out.set(name, at);
  }
  return out;
}

/** Decodes a note record's data, or says why it is not one. */
export function decodeNote(kind: number, data: Uint8Array): JournalNote | string {
  try {
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const idLength = data[0]!;
    if (idLength === 0 || idLength > MAX_ID_BYTES) return 'note holds no snapshot id';
    const id = decoder.decode(data.subarray(1, 1 + idLength));
    const at = 1 + idLength;
    if (kind === RECORD_DELETE) return { kind: 'delete', id };
    if (kind === RECORD_RESTORE) return { kind: 'restore', id };
    if (kind !== RECORD_SNAPSHOT) return `record kind ${kind} is no note`;
    const flags = data[at]!;
    const nameLength = view.getUint16(at + 9, true);
    if (at + 11 + nameLength > data.length) return 'note name runs past the record';
    return {
      kind: 'snapshot',
      id,
      writable: (flags & 1) !== 0,
      createdAt: view.getFloat64(at + 1, true),
      name:
        (flags & 2) !== 0
          ? decoder.decode(data.subarray(at + 11, at + 11 + nameLength))
          : undefined,
    };
  } catch {
    return 'note holds malformed UTF-8';
  }
}
