import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { BlockDeviceError, CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import { applyStream, exportStream, type StreamApplyError } from '../../src/stream/stream.js';
import { RECORD_HEAD } from '../../src/stream/stream-frames.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';
import { assertProperty, SOAK_TIMEOUT, writeSoakReport } from '../support/soak.js';
import {
  chunked,
  collect,
  type FrameSpan,
  layoutOf,
  type StreamLayout,
  withFrames,
} from '../support/stream-bytes.js';

const TIMEOUT = SOAK_TIMEOUT;

/**
 * Two kinds of stream. Incremental: a small device with 512-byte blocks,
 * where every changed extent is a frame of its own, so streams have many
 * small frames; a changed extent written with zeros is a zero frame. Full: a
 * 2.5 MiB device, so a full stream is three pieces (1 MiB, 1 MiB, 0.5 MiB),
 * each cut into data frames and zero frames where it holds zeros (most of it).
 */
const KINDS = {
  incremental: { blockSize: 512, blocks: 64, maxWrite: 3 * 512 },
  full: { blockSize: 64 * 1024, blocks: 40, maxWrite: 100_000 },
} as const;
type Kind = keyof typeof KINDS;

interface PlannedWrite {
  at: number;
  length: number;
  seed: number;
  /** Zeros, over whole blocks, instead of seeded bytes: what makes zero frames in an incremental. */
  zero: boolean;
}

/** Writes before snapshot A, between A and B, and B's own (B is writable). */
interface Plan {
  before: PlannedWrite[];
  between: PlannedWrite[];
  own: PlannedWrite[];
}

function plans(kind: Kind): fc.Arbitrary<Plan> {
  const { blockSize, blocks, maxWrite } = KINDS[kind];
  const write = fc.record({
    at: fc.nat(blockSize * blocks - 1),
    length: fc.integer({ min: 1, max: maxWrite }),
    seed: fc.nat(1000),
    zero: fc.boolean(),
  });
  return fc.record({
    before: fc.array(write, { maxLength: 4 }),
    between: fc.array(write, { minLength: 1, maxLength: 8 }),
    own: fc.array(write, { maxLength: 3 }),
  });
}

/** Chunk sizes the input cycles through: often tiny (one byte included), sometimes large. */
const chunkSizes = fc.array(
  fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 70_000 })),
  { minLength: 1, maxLength: 8 },
);

interface Exported {
  bytes: Uint8Array;
  layout: StreamLayout;
  /** What the target holds before: A for an incremental stream, zeros for a full one. */
  base: Uint8Array;
  /** What the target must hold after: B. */
  expected: Uint8Array;
}

/** Builds the device a plan describes and exports B (from A, for an incremental stream). */
async function exportPlan(kind: Kind, plan: Plan): Promise<Exported> {
  const { blockSize, blocks } = KINDS[kind];
  const size = blockSize * blocks;
  const cow = await CowSnapshotDevice.create(
    await MemoryDevice.create({ size, blockSize }),
    await MemoryDevice.create({ size: 2 * size + (1 << 20), blockSize }),
    { maxSnapshots: 4 },
  );
  const put = (device: { write(o: number, d: Uint8Array): Promise<void> }, w: PlannedWrite) => {
    if (!w.zero) return device.write(w.at, seededBytes(Math.min(w.length, size - w.at), w.seed));
    const at = w.at - (w.at % blockSize);
    const end = Math.min(size, Math.ceil((w.at + w.length) / blockSize) * blockSize);
    return device.write(at, new Uint8Array(end - at));
  };
  for (const w of plan.before) await put(cow, w);
  const a = await cow.snapshot();
  for (const w of plan.between) await put(cow, w);
  const b = await cow.snapshot({ writable: true });
  for (const w of plan.own) await put(b, w);
  const incremental = kind === 'incremental';
  const bytes = await collect(
    exportStream(cow, { to: b.id, from: incremental ? a.id : undefined }),
  );
  const base = incremental ? await a.read(0, size) : new Uint8Array(size);
  const expected = await b.read(0, size);
  await cow.close();
  return { bytes, layout: layoutOf(bytes), base, expected };
}

/** A damaged stream, and how many frames (a prefix) applying it may write before it fails. */
interface Damaged {
  bytes: Uint8Array;
  framesApplied: number;
}

/** Frames that end at or before `at`: what a reader has whole when the damage starts there. */
function framesBefore(layout: StreamLayout, at: number): number {
  return layout.frames.filter((f) => f.end <= at).length;
}

function spliced(bytes: Uint8Array, layout: StreamLayout, frames: FrameSpan[]): Uint8Array {
  return Buffer.concat([
    bytes.subarray(0, layout.manifestEnd),
    ...frames.map((f) => bytes.subarray(f.start, f.end)),
    bytes.subarray(layout.trailerStart),
  ]);
}

const damages = {
  /** One bit flipped anywhere: header, manifest, a frame's head, data or tail, the trailer. */
  'a single-bit flip': fc
    .record({ at: fc.nat(), bit: fc.nat(7) })
    .map(({ at, bit }) => (s: Exported): Damaged => {
      const bytes = s.bytes.slice();
      const p = at % bytes.length;
      bytes[p]! ^= 1 << bit;
      return { bytes, framesApplied: framesBefore(s.layout, p) };
    }),
  /** Cut off at any byte. */
  truncation: fc.nat().map((at) => (s: Exported): Damaged => {
    const p = at % s.bytes.length;
    return { bytes: s.bytes.subarray(0, p), framesApplied: framesBefore(s.layout, p) };
  }),
  /** One frame left out. */
  'a dropped frame': fc.nat().map((k) => (s: Exported): Damaged => {
    const frames = s.layout.frames;
    const i = k % frames.length;
    return {
      bytes: spliced(s.bytes, s.layout, [...frames.slice(0, i), ...frames.slice(i + 1)]),
      framesApplied: i,
    };
  }),
  /** One frame sent twice in a row. */
  'a duplicated frame': fc.nat().map((k) => (s: Exported): Damaged => {
    const frames = s.layout.frames;
    const i = k % frames.length;
    return {
      bytes: spliced(s.bytes, s.layout, [...frames.slice(0, i + 1), ...frames.slice(i)]),
      framesApplied: i + 1,
    };
  }),
  /** Two frames exchanged. */
  'two swapped frames': fc
    .record({ x: fc.nat(), y: fc.nat() })
    .map(({ x, y }) => (s: Exported): Damaged => {
      const frames = s.layout.frames;
      const i = x % frames.length;
      const j = (i + 1 + (y % (frames.length - 1))) % frames.length;
      const swapped = frames.slice();
      swapped[i] = frames[j]!;
      swapped[j] = frames[i]!;
      return { bytes: spliced(s.bytes, s.layout, swapped), framesApplied: Math.min(i, j) };
    }),
  /** One bit flipped in the head of a zero frame (a few bytes among many in a full stream). */
  'a single-bit flip in a zero frame': fc
    .record({ k: fc.nat(), at: fc.nat(RECORD_HEAD - 1), bit: fc.nat(7) })
    .map(({ k, at, bit }) => (s: Exported): Damaged | undefined => {
      const zeros = s.layout.frames.filter((f) => f.zero);
      if (zeros.length === 0) return undefined;
      const frame = zeros[k % zeros.length]!;
      const bytes = s.bytes.slice();
      bytes[frame.start + at]! ^= 1 << bit;
      return { bytes, framesApplied: s.layout.frames.indexOf(frame) };
    }),
} satisfies Record<string, fc.Arbitrary<(s: Exported) => Damaged | undefined>>;

type DamageName = keyof typeof damages;
/** What each damage needs of a stream to apply at all. */
const MIN_FRAMES: Record<DamageName, number> = {
  'a single-bit flip': 0,
  truncation: 0,
  'a dropped frame': 1,
  'a duplicated frame': 1,
  'two swapped frames': 2,
  'a single-bit flip in a zero frame': 1,
};

/**
 * What applying frame `f` over `base` writes. An incremental stream skips
 * (counts, does not write) a frame whose extent the target already holds: a
 * block rewritten with the bytes it had is in the stream, and costs no
 * write. A zero frame writes zeros only over the units (4 KiB, or the frame
 * if shorter) of the target that are not zero already.
 */
function bytesWritten(kind: Kind, f: FrameSpan, base: Uint8Array): number {
  const old = Buffer.from(base.subarray(f.offset, f.offset + f.data.length));
  if (kind === 'incremental' && old.equals(f.data)) return 0;
  if (!f.zero) return f.data.length;
  const unit = Math.max(KINDS[kind].blockSize, 4096);
  let bytes = 0;
  for (let at = 0; at < old.length; at += unit) {
    const part = old.subarray(at, at + unit);
    if (part.some((b) => b !== 0)) bytes += part.length;
  }
  return bytes;
}

async function targetHolding(content: Uint8Array, blockSize: number): Promise<MemoryDevice> {
  const target = await MemoryDevice.create({ size: content.length, blockSize });
  await target.write(0, content);
  return target;
}

describe.each(Object.keys(KINDS) as Kind[])('a damaged %s stream', (kind) => {
  const numRuns = kind === 'incremental' ? 250 : 40;

  it.each((Object.keys(damages) as DamageName[]).map((name, i) => [name, i] as const))(
    'with %s is always refused with ECORRUPT, after writing only a prefix of correct frames',
    async (name, i) => {
      await assertProperty(
        `${kind} stream with ${name}`,
        fc.asyncProperty(plans(kind), damages[name], chunkSizes, async (plan, damage, sizes) => {
          const exported = await exportPlan(kind, plan);
          fc.pre(exported.layout.frames.length >= MIN_FRAMES[name]);
          const damaged = damage(exported);
          fc.pre(damaged !== undefined);
          const target = await targetHolding(exported.base, KINDS[kind].blockSize);
          const outcome = await applyStream(chunked(damaged.bytes, sizes), target).then(
            (report) => report,
            (err: unknown) => err,
          );
          expect(
            BlockDeviceError.is(outcome, 'ECORRUPT'),
            `expected ECORRUPT, got ${outcome instanceof Error ? outcome.message : JSON.stringify(outcome)}`,
          ).toBe(true);
          const prefix = exported.layout.frames.slice(0, damaged.framesApplied);
          expect((outcome as StreamApplyError).applied).toEqual({
            frames: damaged.framesApplied,
            bytes: prefix.reduce((sum, f) => sum + bytesWritten(kind, f, exported.base), 0),
          });
          expectSameBytes(
            'target after the failed apply',
            await target.read(0, target.size),
            withFrames(exported.base, prefix),
            KINDS[kind].blockSize,
          );
        }),
        { numRuns, soakRuns: 3000, seed: 0xda3a + i + (kind === 'full' ? 0x100 : 0) },
      );
    },
    TIMEOUT,
  );

  it(
    'intact, in any chunking, is applied exactly (the control for the cases above), zero frames included',
    async () => {
      let withZeroFrames = 0;
      await assertProperty(
        `${kind} stream intact`,
        fc.asyncProperty(plans(kind), chunkSizes, async (plan, sizes) => {
          const exported = await exportPlan(kind, plan);
          if (exported.layout.frames.some((f) => f.zero)) withZeroFrames++;
          const target = await targetHolding(exported.base, KINDS[kind].blockSize);
          const report = await applyStream(chunked(exported.bytes, sizes), target);
          expect(report.frames).toBe(exported.layout.frames.length);
          expectSameBytes('target', await target.read(0, target.size), exported.expected);
        }),
        { numRuns, soakRuns: 3000, seed: kind === 'full' ? 0xc0f1 : 0xc0f2 },
      );
      // The plans make zero frames often enough for the damages above to hit them.
      expect(withZeroFrames).toBeGreaterThan(numRuns / 4);
    },
    TIMEOUT,
  );
});

afterAll(() => writeSoakReport('stream-damage'));
