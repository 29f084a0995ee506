import { SECTOR } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { ScanReader } from '../store/index.js';
import { headerBytes, type JournalSuper, RECORD_WRITE, RING_START } from './journal-format.js';
import { decodeFrameHeader, type FrameHeader, peekFrame } from './journal-frame.js';
import { decodeNote, type JournalNote } from './journal-notes.js';

/** A frame replay may take: its header, and each record's decoded note where it holds one. */
export type CheckedFrame = FrameHeader & { notes: (JournalNote | undefined)[] | undefined };

/*
 * Every read here takes the reader's window directly when it holds the
 * bytes: awaiting even then would cost a promise and a microtask per record.
 * Each view is checked before the next read, which may reuse its window.
 */

/**
 * Reads and checks the header of the frame at ring position `pos`, which
 * must start record `seq` and follow the frame whose link is `link`, and
 * fit before the ring's end. Returns why not otherwise. The records' data
 * is not looked at.
 */
export async function readFrameHeader(
  reader: ScanReader,
  sb: JournalSuper,
  pos: number,
  seq: number,
  link: number,
): Promise<FrameHeader | string> {
  const c = sb.capacity;
  const count = peekFrame(
    reader.cached(RING_START + pos, SECTOR) ?? (await reader.read(RING_START + pos, SECTOR)),
    sb.epoch,
  );
  if (count < 0) return 'no frame there';
  const size = headerBytes(count);
  if (pos + size > c) return 'frame header runs past the ring end';
  const frame = decodeFrameHeader(
    reader.cached(RING_START + pos, size) ?? (await reader.read(RING_START + pos, size)),
    sb,
  );
  if (typeof frame === 'string') return frame;
  if (frame.firstSeq !== seq) return `a frame of record ${frame.firstSeq}, not ${seq}`;
  if (frame.prevLink !== link) return 'a frame that does not follow the previous one';
  if (pos + frame.bytes > c) return 'frame runs past the ring end';
  return frame;
}

/**
 * Checks one record's data here: its CRC-32, and a note's encoding. Returns
 * the note (undefined for a write), or why the record is damaged.
 */
export function checkRecord(
  r: FrameHeader['records'][number],
  data: Uint8Array,
): JournalNote | undefined | { damage: string } {
  if (checksum(data) !== r.crc) return { damage: `record ${r.seq} fails its checksum` };
  if (r.kind === RECORD_WRITE) return undefined;
  const note = decodeNote(r.kind, data);
  if (typeof note === 'string') return { damage: `record ${r.seq}: ${note}` };
  return note;
}

/**
 * Reads and checks the frame at ring position `pos` whole, header and
 * every record, on this thread (see {@link readFrameHeader}). Returns why
 * not otherwise.
 */
export async function readFrame(
  reader: ScanReader,
  sb: JournalSuper,
  pos: number,
  seq: number,
  link: number,
): Promise<CheckedFrame | string> {
  const frame = await readFrameHeader(reader, sb, pos, seq, link);
  if (typeof frame === 'string') return frame;
  let at = RING_START + pos + headerBytes(frame.records.length);
  let notes: (JournalNote | undefined)[] | undefined;
  const records = frame.records;
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    const checked = checkRecord(
      r,
      reader.cached(at, r.length) ?? (await reader.read(at, r.length)),
    );
    if (checked !== undefined) {
      if ('damage' in checked) return checked.damage;
      notes ??= new Array<JournalNote | undefined>(records.length);
      notes[i] = checked;
    }
    at += r.length;
  }
  return { ...frame, notes };
}
