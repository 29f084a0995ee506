import { expect } from 'vitest';
import type { ExcludedReads } from '../../src/cow/index.js';
import type { Extent } from '../../src/index.js';
import { expectBytes } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { extentsOfBlocks, type SelectiveRig } from '../support/selective-rig.js';

export const BS = 512;
export const BLOCKS = 32;
export const SIZE = BS * BLOCKS;
export const MAX_SNAPSHOTS = 4;
/** Small, so designations and restore ranges past it (EINVAL) come up. */
export const MAX_RUNS = 5;

/** A snapshot's designation as the caller gives it. */
export interface Designation {
  include?: Extent[];
  exclude?: Extent[];
}

/**
 * The blocks a designation holds, by the documented rule written out over
 * single blocks: a block any byte of an include extent falls in is held (all
 * blocks without includes); a block that one exclude extent covers entirely is
 * not. Independent of the device's run arithmetic.
 */
export function heldBlocks(d: Designation, bs = BS, blocks = BLOCKS): boolean[] {
  const held = new Array<boolean>(blocks).fill(d.include === undefined);
  for (const e of d.include ?? []) {
    for (let b = Math.floor(e.offset / bs); b * bs < e.offset + e.length; b++) held[b] = true;
  }
  for (const e of d.exclude ?? []) {
    for (let b = 0; b < blocks; b++) {
      if (b * bs >= e.offset && (b + 1) * bs <= e.offset + e.length) held[b] = false;
    }
  }
  return held;
}

/** Runs of consecutive held blocks. */
export function runCount(held: readonly boolean[]): number {
  return held.filter((h, b) => h && !held[b - 1]).length;
}

function heldList(held: readonly boolean[]): number[] {
  return held.flatMap((h, b) => (h ? [b] : []));
}

function blockRange(offset: number, length: number): [number, number] {
  return [Math.floor(offset / BS), Math.floor((offset + length - 1) / BS)];
}

/** One live snapshot as the model knows it. */
export interface ModelSnap {
  real: string;
  held: boolean[];
  writable: boolean;
  /** Its content; only the bytes of held blocks mean anything. */
  bytes: Uint8Array;
  /** The model clock when it was taken: it holds the writes up to this tick. */
  time: number;
  /** Blocks written through it (a writable snapshot's own blocks). */
  own: Set<number>;
}

export interface PendingWrite {
  /** `'origin'` or a real snapshot id. */
  target: string;
  offset: number;
  data: Uint8Array;
}

/**
 * The reference: the origin and every snapshot as plain byte arrays with the
 * set of blocks each holds; a clock that ticks on every origin write, with
 * the ticks each block was written at (for the bounds of changedExtents);
 * and what a power cut may leave — the content at the last durability point
 * and the writes acknowledged since.
 */
export class SelectiveModel {
  origin: Uint8Array = new Uint8Array(SIZE);
  snaps: ModelSnap[] = [];
  clock = 0;
  /** Per block: the ticks origin writes (restores included) touched it at. */
  readonly written: number[][] = Array.from({ length: BLOCKS }, () => []);
  durable = new Map<string, Uint8Array>();
  pending: PendingWrite[] = [];
  mode: ExcludedReads;

  constructor(mode: ExcludedReads) {
    this.mode = mode;
    this.makeDurable();
  }

  /** A flush or a durability point: everything so far survives a power cut. */
  makeDurable(): void {
    this.durable = new Map([['origin', this.origin.slice()]]);
    for (const s of this.snaps) this.durable.set(s.real, s.bytes.slice());
    this.pending = [];
  }

  byReal(id: string): ModelSnap {
    const s = this.snaps.find((x) => x.real === id);
    if (s === undefined) throw new Error(`model has no snapshot ${id}`);
    return s;
  }

  /** Marks blocks `first..last` of the origin written now. */
  touch(first: number, last: number): void {
    this.clock++;
    for (let b = first; b <= last; b++) this.written[b]!.push(this.clock);
  }

  write(target: string, offset: number, data: Uint8Array): void {
    const [first, last] = blockRange(offset, data.length);
    if (target === 'origin') {
      this.origin.set(data, offset);
      this.touch(first, last);
    } else {
      const s = this.byReal(target);
      s.bytes.set(data, offset);
      for (let b = first; b <= last; b++) s.own.add(b);
    }
    this.pending.push({ target, offset, data });
  }

  snapshot(real: string, held: boolean[], writable: boolean): void {
    this.snaps.push({
      real,
      held,
      writable,
      bytes: this.origin.slice(),
      time: this.clock,
      own: new Set(),
    });
    this.makeDurable();
  }

  delete(real: string): void {
    this.snaps.splice(this.snaps.indexOf(this.byReal(real)), 1);
    this.makeDurable();
  }

  /** The origin after restoring `real` (within `ranges`, to the byte), without changing the model. */
  restored(real: string, ranges: Extent[] | undefined): Uint8Array {
    const s = this.byReal(real);
    const out = this.origin.slice();
    const wanted = (i: number) =>
      ranges === undefined || ranges.some((e) => i >= e.offset && i < e.offset + e.length);
    for (let i = 0; i < SIZE; i++) {
      if (s.held[Math.floor(i / BS)] && wanted(i)) out[i] = s.bytes[i]!;
    }
    return out;
  }

  /**
   * Restores `real`: its bytes over the origin's where it holds them (and
   * within `ranges`); the blocks it may differ in count as written now.
   */
  restore(real: string, ranges: Extent[] | undefined): void {
    const s = this.byReal(real);
    const touched = new Set<number>();
    for (const e of ranges ?? [{ offset: 0, length: SIZE }]) {
      const [first, last] = blockRange(e.offset, e.length);
      for (let b = first; b <= last; b++) touched.add(b);
    }
    this.clock++;
    for (const b of touched) {
      const diverged = s.own.has(b) || this.written[b]!.some((t) => t > s.time);
      if (s.held[b] && diverged) this.written[b]!.push(this.clock);
    }
    this.origin = this.restored(real, ranges);
    this.makeDurable();
  }

  /** What reading a snapshot returns: its bytes, `EEXCLUDED`, or zeros where it holds nothing. */
  snapshotRead(s: ModelSnap, offset: number, length: number): Uint8Array | 'EEXCLUDED' {
    const [first, last] = blockRange(offset, length);
    const out = s.bytes.slice(offset, offset + length);
    for (let b = first; b <= last; b++) {
      if (s.held[b]) continue;
      if (this.mode === 'error') return 'EEXCLUDED';
      const from = Math.max(offset, b * BS);
      const to = Math.min(offset + length, (b + 1) * BS);
      out.fill(0, from - offset, to - offset);
    }
    return out;
  }

  /** Whether a write through writable snapshot `s` touches only blocks it holds. */
  holdsAll(s: ModelSnap, offset: number, length: number): boolean {
    const [first, last] = blockRange(offset, length);
    for (let b = first; b <= last; b++) if (!s.held[b]) return false;
    return true;
  }

  /**
   * What changedExtents(from, to) must and may report, block by block. It
   * must report every block both hold whose content differs, and every block
   * `to` holds that `from` does not; it may report, besides, only blocks
   * both hold that were written in between (written back with the same bytes
   * counts) or written through either snapshot.
   */
  changedBounds(from: ModelSnap, to: ModelSnap | 'live'): { must: number[]; may: Set<number> } {
    const must: number[] = [];
    const may = new Set<number>();
    const lo = to === 'live' ? from.time : Math.min(from.time, to.time);
    const hi = to === 'live' ? Number.POSITIVE_INFINITY : Math.max(from.time, to.time);
    const other = to === 'live' ? this.origin : to.bytes;
    for (let b = 0; b < BLOCKS; b++) {
      if (to !== 'live' && !to.held[b]) continue;
      if (!from.held[b]) {
        if (to !== 'live') {
          must.push(b);
          may.add(b);
        }
        continue;
      }
      const written =
        this.written[b]!.some((t) => t > lo && t <= hi) ||
        from.own.has(b) ||
        (to !== 'live' && to.own.has(b));
      if (written) may.add(b);
      const a = from.bytes.subarray(b * BS, (b + 1) * BS);
      if (!Buffer.from(a).equals(other.subarray(b * BS, (b + 1) * BS))) must.push(b);
    }
    return { must, may };
  }

  /** Rebuilds the content from what the real device holds after a crash (already checked to be allowed). */
  async resync(real: SelectiveRig, created: ModelSnap | undefined): Promise<void> {
    const ids = real.device.listSnapshots().map((s) => s.id);
    this.snaps = ids.map((id) =>
      id === created?.real ? created : this.snaps.find((s) => s.real === id)!,
    );
    this.origin = await real.device.read(0, SIZE);
    for (const s of this.snaps) s.bytes = await readHeld(real, s);
    this.makeDurable();
  }
}

/** A snapshot's held bytes read run by run (so either excludedReads mode serves it), zeros elsewhere. */
export async function readHeld(real: SelectiveRig, s: ModelSnap): Promise<Uint8Array> {
  const out = new Uint8Array(SIZE);
  const handle = await real.handle(s.real);
  for (const e of extentsOfBlocks(heldList(s.held), BS)) {
    out.set(await handle.read(e.offset, e.length), e.offset);
  }
  return out;
}

/** `bytes` with every block `held` says is not held zeroed: what a snapshot is compared on. */
export function masked(bytes: Uint8Array, held: readonly boolean[]): Uint8Array {
  const out = bytes.slice();
  held.forEach((h, b) => {
    if (!h) out.fill(0, b * BS, (b + 1) * BS);
  });
  return out;
}

/**
 * Compares everything the model knows with the real device: the snapshot
 * list, what each holds, the origin, each snapshot's held bytes (and an
 * excluded read), changedExtents of every pair against its bounds, and
 * that with no snapshot left no store space is in use.
 */
export async function expectSame(m: SelectiveModel, r: SelectiveRig): Promise<void> {
  const infos = r.device.listSnapshots();
  expect(infos.map((s) => s.id)).toEqual(m.snaps.map((s) => s.real));
  expect(infos.map((s) => s.writable)).toEqual(m.snaps.map((s) => s.writable));
  expectBytes('origin', await r.device.read(0, SIZE), m.origin);
  for (const s of m.snaps) {
    expect(r.device.snapshotExtents(s.real), `extents of ${s.real}`).toEqual(
      extentsOfBlocks(heldList(s.held), BS),
    );
    const handle = await r.handle(s.real);
    if (m.mode === 'zero') {
      expectBytes(`snapshot ${s.real}`, await handle.read(0, SIZE), masked(s.bytes, s.held));
    } else {
      expectBytes(`snapshot ${s.real}`, await readHeld(r, s), masked(s.bytes, s.held));
      const excluded = s.held.indexOf(false);
      if (excluded >= 0) {
        const what = `read of excluded block ${excluded} of ${s.real}`;
        await expectCode(handle.read(excluded * BS, 1), 'EEXCLUDED', what);
      }
    }
  }
  for (const from of m.snaps) {
    for (const to of [...m.snaps, 'live' as const]) {
      expectChanged(m, r, from, to);
    }
  }
  expect(r.badPreserves, 'blocks preserved twice in a generation, or held by no snapshot').toEqual(
    [],
  );
  if (m.snaps.length === 0) {
    expect(r.device.preservedBlocks, 'preserved blocks with no snapshot').toBe(0);
    expect(r.device.freeChunks, 'free chunks with no snapshot').toBe(r.device.totalChunks);
  }
}

function expectChanged(
  m: SelectiveModel,
  r: SelectiveRig,
  from: ModelSnap,
  to: ModelSnap | 'live',
): void {
  const what = `changedExtents(${from.real}, ${to === 'live' ? 'live' : to.real})`;
  const got = r.device.changedExtents(from.real, to === 'live' ? 'live' : to.real);
  const blocks = got.flatMap((e) =>
    Array.from({ length: e.length / BS }, (_, i) => e.offset / BS + i),
  );
  // Coalesced, ascending, whole blocks.
  expect(got, `${what} is canonical`).toEqual(extentsOfBlocks(blocks, BS));
  const { must, may } = m.changedBounds(from, to);
  const reported = new Set(blocks);
  const missed = must.filter((b) => !reported.has(b));
  expect(missed, `${what} misses blocks that differ`).toEqual([]);
  const extra = blocks.filter((b) => !may.has(b));
  expect(extra, `${what} reports blocks never written in between`).toEqual([]);
}
