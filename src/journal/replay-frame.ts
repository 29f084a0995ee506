import { SECTOR } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { ScanReader } from '../store/index.js';
import { headerBytes, type JournalSuper, RECORD_WRITE, RING_START } from './journal-format.js';
import {
  decodeFrameInto,
  type FrameHeader,
  type FrameSummary,
  frameHeaderOf,
  peekFrame,
  type RecordColumns,
} from './journal-frame.js';
import { decodeNote, type JournalNote } from './journal-notes.js';

/**
 * A frame replay may take: its header's fields (its records in the columns
 * it was read into), and each record's decoded note where it holds notes.
 * One shape whichever way it was read, so replay's loop reads it with
 * monomorphic loads.
 */
export interface CheckedFrame {
  frame: FrameSummary;
  notes: (JournalNote | undefined)[] | undefined;
}

/*
 * Every read here takes the reader's window directly when it holds the
 * bytes: awaiting even then would cost a promise and a microtask per record.
 * Each view is checked before the next read, which may reuse its window.
 */

/**
 * Reads and checks the header of the frame at ring position `pos` into
 * `records`: it must start record `seq` and follow the frame whose link is
 * `link`, and fit before the ring's end. Returns why not otherwise. The
 * records' data is not looked at.
 */
export async function readFrameFields(
  reader: ScanReader,
  sb: JournalSuper,
  pos: number,
  seq: number,
  link: number,
  records: RecordColumns,
): Promise<FrameSummary | string> {
  const count = peekFrame(
    reader.cached(RING_START + pos, SECTOR) ?? (await reader.read(RING_START + pos, SECTOR)),
    sb.epoch,
  );
  if (count < 0) return 'no frame there';
  const size = headerBytes(count);
  if (pos + size > sb.capacity) return 'frame header runs past the ring end';
  const frame = decodeFrameInto(
    reader.cached(RING_START + pos, size) ?? (await reader.read(RING_START + pos, size)),
    sb,
    records,
  );
  return continuesChain(frame, sb, pos, seq, link);
}

/** What {@link readFrameFields} checks once the header decoded: that it is the frame replay expects there. */
function continuesChain(
  frame: FrameSummary | string,
  sb: JournalSuper,
  pos: number,
  seq: number,
  link: number,
): FrameSummary | string {
  if (typeof frame === 'string') return frame;
  if (frame.firstSeq !== seq) return `a frame of record ${frame.firstSeq}, not ${seq}`;
  if (frame.prevLink !== link) return 'a frame that does not follow the previous one';
  if (pos + frame.bytes > sb.capacity) return 'frame runs past the ring end';
  return frame;
}

/**
 * {@link readFrameFields}, with the records as objects (replay with CRC
 * workers keeps them): `records` is the caller's own, as the objects are
 * made only after the reads' awaits, when a module-wide one could hold
 * another replay's frame.
 */
export async function readFrameHeader(
  reader: ScanReader,
  sb: JournalSuper,
  pos: number,
  seq: number,
  link: number,
  records: RecordColumns,
): Promise<FrameHeader | string> {
  const frame = await readFrameFields(reader, sb, pos, seq, link, records);
  return typeof frame === 'string' ? frame : frameHeaderOf(frame, records);
}

/**
 * Checks one record's data here: its CRC-32 against `crc`, and a note's
 * encoding (`kind`). Returns the note (undefined for a write), or why
 * record `seq` is damaged.
 */
export function checkRecord(
  seq: number,
  crc: number,
  kind: number,
  data: Uint8Array,
): JournalNote | undefined | { damage: string } {
  if (checksum(data) !== crc) return { damage: `record ${seq} fails its checksum` };
  if (kind === RECORD_WRITE) return undefined;
  const note = decodeNote(kind, data);
  if (typeof note === 'string') return { damage: `record ${seq}: ${note}` };
  return note;
}

/**
 * Reads and checks the frame at ring position `pos` whole, header (into
 * `records`) and every record, on this thread (see
 * {@link readFrameFields}). Returns why not otherwise.
 */
export async function readFrame(
  reader: ScanReader,
  sb: JournalSuper,
  pos: number,
  seq: number,
  link: number,
  records: RecordColumns,
): Promise<CheckedFrame | string> {
  const frame = await readFrameFields(reader, sb, pos, seq, link, records);
  if (typeof frame === 'string') return frame;
  let at = RING_START + pos + headerBytes(frame.count);
  let notes: (JournalNote | undefined)[] | undefined;
  const { length, crc, kind } = records;
  for (let i = 0; i < frame.count; i++) {
    const n = length[i]!;
    const checked = checkRecord(
      seq + i,
      crc[i]!,
      kind[i]!,
      reader.cached(at, n) ?? (await reader.read(at, n)),
    );
    if (checked !== undefined) {
      if ('damage' in checked) return checked.damage;
      notes ??= new Array<JournalNote | undefined>(frame.count);
      notes[i] = checked;
    }
    at += n;
  }
  return { frame, notes };
}

/**
 * {@link readFrame} for a frame the reader's current window holds whole,
 * as nearly every frame is: the same checks, with no promise and no await
 * per frame; undefined (nothing decided) when the window does not hold it.
 */
export function readCachedFrame(
  reader: ScanReader,
  sb: JournalSuper,
  pos: number,
  seq: number,
  link: number,
  records: RecordColumns,
): CheckedFrame | string | undefined {
  const at = RING_START + pos;
  const sector = reader.cached(at, SECTOR);
  if (sector === undefined) return undefined;
  const count = peekFrame(sector, sb.epoch);
  if (count < 0) return 'no frame there';
  const size = headerBytes(count);
  if (pos + size > sb.capacity) return 'frame header runs past the ring end';
  const header = reader.cached(at, size);
  if (header === undefined) return undefined;
  const frame = continuesChain(decodeFrameInto(header, sb, records), sb, pos, seq, link);
  if (typeof frame === 'string') return frame;
  const whole = reader.cached(at, frame.bytes);
  if (whole === undefined) return undefined;
  let from = size;
  let notes: (JournalNote | undefined)[] | undefined;
  const { length, crc, kind } = records;
  for (let i = 0; i < frame.count; i++) {
    const to = from + length[i]!;
    const checked = checkRecord(seq + i, crc[i]!, kind[i]!, whole.subarray(from, to));
    if (checked !== undefined) {
      if ('damage' in checked) return checked.damage;
      notes ??= new Array<JournalNote | undefined>(frame.count);
      notes[i] = checked;
    }
    from = to;
  }
  return { frame, notes };
}
