import type { Extent } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { BlockRanges } from './block-ranges.js';

/**
 * Metadata entries of a copy-on-write store. The same encoding serves the
 * append-only log (one frame per group commit) and the full table written at
 * a checkpoint, so replaying a table and replaying a log are one code path.
 */
export type CowEntry =
  | {
      kind: 'snapshot';
      seq: number;
      id: string;
      name: string | undefined;
      createdAt: number;
      writable: boolean;
      /** The blocks a selective snapshot holds; absent: every block. */
      ranges?: BlockRanges | undefined;
    }
  | { kind: 'delete'; seq: number }
  /** Old content of `block`, shared by every snapshot taken before `epoch` that lacks a later copy. */
  | { kind: 'preserve'; epoch: number; block: number; chunk: number; crc: number }
  /** A writable snapshot's own content of `block`. */
  | { kind: 'private'; seq: number; block: number; chunk: number; crc: number }
  /** A restore began; `extents` limits it to those bytes (absent: all the snapshot holds). */
  | { kind: 'restore-begin'; seq: number; extents?: readonly Extent[] | undefined }
  | { kind: 'restore-end'; seq: number }
  /** The newest sequence number ever used; kept in checkpoint tables. */
  | { kind: 'sequence'; seq: number };

const KIND_CODE = {
  snapshot: 1,
  delete: 2,
  preserve: 3,
  private: 4,
  'restore-begin': 5,
  'restore-end': 6,
  sequence: 7,
} as const;

const SEQ_KINDS = ['delete', 'restore-end', 'sequence'] as const;
const SEQ_KIND_BY_CODE = new Map<number, (typeof SEQ_KINDS)[number]>(
  SEQ_KINDS.map((kind) => [KIND_CODE[kind], kind]),
);

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Size of an entry's encoding: a 4-byte head (kind, length) then its payload. */
export function entrySize(entry: CowEntry): number {
  switch (entry.kind) {
    case 'preserve':
    case 'private':
      return 4 + 20;
    case 'snapshot':
      return (
        4 +
        4 +
        1 +
        8 +
        1 +
        utf8Length(entry.id) +
        1 +
        utf8Length(entry.name ?? '') +
        (entry.ranges === undefined ? 0 : 4 + 16 * entry.ranges.length)
      );
    case 'restore-begin':
      return 4 + 4 + (entry.extents === undefined ? 0 : 4 + 16 * entry.extents.length);
    default:
      return 4 + 4;
  }
}

function utf8Length(s: string): number {
  return encoder.encode(s).length;
}

/** Encodes entries back to back into `out` at `pos`; returns the end position. */
export function encodeEntries(entries: readonly CowEntry[], out: Uint8Array, pos: number): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (const entry of entries) {
    const start = pos;
    view.setUint8(pos, KIND_CODE[entry.kind]);
    pos += 4;
    switch (entry.kind) {
      case 'preserve':
      case 'private':
        view.setUint32(pos, entry.kind === 'preserve' ? entry.epoch : entry.seq, true);
        view.setUint32(pos + 4, entry.chunk, true);
        view.setUint32(pos + 8, entry.crc, true);
        view.setFloat64(pos + 12, entry.block, true);
        pos += 20;
        break;
      case 'snapshot': {
        view.setUint32(pos, entry.seq, true);
        view.setUint8(pos + 4, entry.writable ? 1 : 0);
        view.setFloat64(pos + 5, entry.createdAt, true);
        pos += 13;
        for (const text of [entry.id, entry.name ?? '']) {
          const bytes = encoder.encode(text);
          view.setUint8(pos, bytes.length);
          out.set(bytes, pos + 1);
          pos += 1 + bytes.length;
        }
        // An absent name and an empty one differ: flag bit 1 says which;
        // bit 2 says a run list of held blocks follows.
        const flags =
          (entry.writable ? 1 : 0) |
          (entry.name !== undefined ? 2 : 0) |
          (entry.ranges !== undefined ? 4 : 0);
        view.setUint8(start + 8, flags);
        if (entry.ranges !== undefined) {
          pos = encodePairs(
            view,
            pos,
            entry.ranges.map((r) => [r.start, r.end - r.start]),
          );
        }
        break;
      }
      case 'restore-begin':
        view.setUint32(pos, entry.seq, true);
        pos += 4;
        if (entry.extents !== undefined) {
          pos = encodePairs(
            view,
            pos,
            entry.extents.map((e) => [e.offset, e.length]),
          );
        }
        break;
      default:
        view.setUint32(pos, entry.seq, true);
        pos += 4;
    }
    view.setUint16(start + 2, pos - start - 4, true);
  }
  return pos;
}

/**
 * Decodes `count` entries from `bytes`. The caller has already checked a
 * checksum over them, so a malformed entry here means a bug or a forged
 * checksum: it is `ECORRUPT` all the same, naming `where`.
 */
export function decodeEntries(bytes: Uint8Array, count: number, where: string): CowEntry[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries: CowEntry[] = [];
  let pos = 0;
  const fail = (why: string): never => {
    throw new BlockDeviceError('ECORRUPT', `${where}: entry ${entries.length} ${why}`);
  };
  for (let i = 0; i < count; i++) {
    if (pos + 4 > bytes.length) fail('runs past the end');
    const code = view.getUint8(pos);
    const length = view.getUint16(pos + 2, true);
    const body = pos + 4;
    if (body + length > bytes.length) fail('runs past the end');
    switch (code) {
      case KIND_CODE.preserve:
      case KIND_CODE.private: {
        if (length !== 20) fail(`has length ${length}`);
        const first = view.getUint32(body, true);
        const chunk = view.getUint32(body + 4, true);
        const crc = view.getUint32(body + 8, true);
        const block = view.getFloat64(body + 12, true);
        if (!Number.isSafeInteger(block) || block < 0) fail(`has block ${block}`);
        entries.push(
          code === KIND_CODE.preserve
            ? { kind: 'preserve', epoch: first, block, chunk, crc }
            : { kind: 'private', seq: first, block, chunk, crc },
        );
        break;
      }
      case KIND_CODE.snapshot: {
        const seq = view.getUint32(body, true);
        const flags = view.getUint8(body + 4);
        const createdAt = view.getFloat64(body + 5, true);
        let p = body + 13;
        const texts: string[] = [];
        for (let t = 0; t < 2; t++) {
          const n = view.getUint8(p);
          if (p + 1 + n > body + length) fail('has a string past its end');
          try {
            texts.push(decoder.decode(bytes.subarray(p + 1, p + 1 + n)));
          } catch {
            fail('has a string that is not UTF-8');
          }
          p += 1 + n;
        }
        const snapshot: CowEntry & { kind: 'snapshot' } = {
          kind: 'snapshot',
          seq,
          id: texts[0]!,
          name: flags & 2 ? texts[1]! : undefined,
          createdAt,
          writable: (flags & 1) === 1,
        };
        if (flags & 4) {
          const pairs = decodePairs(view, p, body + length, fail);
          let previousEnd = -1;
          snapshot.ranges = pairs.map(([start, count]) => {
            // Runs are stored normalized: ascending, disjoint, not touching.
            if (count <= 0 || start <= previousEnd) fail('has a run list out of order');
            previousEnd = start + count;
            return { start, end: start + count };
          });
        }
        entries.push(snapshot);
        break;
      }
      case KIND_CODE['restore-begin']: {
        if (length < 4) fail(`has length ${length}`);
        const seq = view.getUint32(body, true);
        if (length === 4) entries.push({ kind: 'restore-begin', seq });
        else {
          const pairs = decodePairs(view, body + 4, body + length, fail);
          entries.push({
            kind: 'restore-begin',
            seq,
            extents: pairs.map(([offset, length]) => ({ offset, length })),
          });
        }
        break;
      }
      default: {
        const kind = SEQ_KIND_BY_CODE.get(code);
        if (kind === undefined) fail(`has unknown kind ${code}`);
        if (length !== 4) fail(`has length ${length}`);
        entries.push({ kind: kind!, seq: view.getUint32(body, true) });
      }
    }
    pos = body + length;
  }
  return entries;
}

/** Writes a u32 count then `[a, b]` float64 pairs; returns the end. */
function encodePairs(view: DataView, pos: number, pairs: [number, number][]): number {
  view.setUint32(pos, pairs.length, true);
  pos += 4;
  for (const [a, b] of pairs) {
    view.setFloat64(pos, a, true);
    view.setFloat64(pos + 8, b, true);
    pos += 16;
  }
  return pos;
}

/** Reads what {@link encodePairs} wrote, which must end exactly at `end`. */
function decodePairs(
  view: DataView,
  pos: number,
  end: number,
  fail: (why: string) => never,
): [number, number][] {
  if (pos + 4 > end) fail('has a truncated pair list');
  const count = view.getUint32(pos, true);
  if (pos + 4 + 16 * count !== end) fail(`has a pair list of ${count} that does not fit`);
  const out: [number, number][] = [];
  for (let i = 0; i < count; i++) {
    const a = view.getFloat64(pos + 4 + 16 * i, true);
    const b = view.getFloat64(pos + 12 + 16 * i, true);
    if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || a < 0 || b < 0) {
      fail(`has a pair (${a}, ${b}) that is not two non-negative integers`);
    }
    out.push([a, b]);
  }
  return out;
}
