import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RingSpace } from '../../src/journal/journal-ring.js';

/** Places a frame of `bytes` and lands it; returns where it went (undefined: no space). */
function put(ring: RingSpace, bytes: number): number | undefined {
  const at = ring.place(bytes);
  if (at !== undefined) ring.landed(at + bytes);
  return at;
}

function state(ring: RingSpace): [number, number, number] {
  return [ring.headAbs, ring.landedAbs, ring.used];
}

describe('RingSpace', () => {
  it('places frames back to back from where the journal left off', () => {
    const ring = new RingSpace(4096, 1000, 1500);
    expect(state(ring)).toEqual([1000, 1500, 500]);
    expect(put(ring, 512)).toBe(1500);
    expect(put(ring, 1024)).toBe(2012);
    expect(state(ring)).toEqual([1000, 3036, 2036]);
  });

  it('refuses a frame the free space cannot hold, changing nothing, until the head moves on', () => {
    const ring = new RingSpace(4096, 0, 0);
    expect(put(ring, 3072)).toBe(0);
    expect(ring.place(1536)).toBeUndefined();
    expect(state(ring)).toEqual([0, 3072, 3072]);
    // Exactly full is allowed.
    expect(put(ring, 1024)).toBe(3072);
    expect(ring.used).toBe(4096);
    expect(ring.place(1)).toBeUndefined();
    ring.release(2048);
    // Now at the ring's end with 2048 free at its start: the next lap.
    expect(put(ring, 2048)).toBe(4096);
    expect(state(ring)).toEqual([2048, 6144, 4096]);
  });

  it('never splits a frame at the ring end: it goes to the next lap, the skipped bytes used until the head passes', () => {
    const ring = new RingSpace(4096, 0, 0);
    put(ring, 3584);
    ring.release(3584);
    expect(ring.used).toBe(0);
    // 512 bytes are left before the end; a frame of 1024 skips them, and
    // they count as used until the head passes them.
    expect(put(ring, 1024)).toBe(4096);
    expect(state(ring)).toEqual([3584, 5120, 1536]);
    ring.release(4096);
    expect(ring.used).toBe(1024);
    const ring2 = new RingSpace(4096, 2048, 3584);
    // Skipping 512 to the next lap: used 1536 + 512 skipped + 2048 = 4096 fits.
    expect(put(ring2, 2048)).toBe(4096);
    expect(state(ring2)).toEqual([2048, 6144, 4096]);
    ring2.release(4096);
    expect(ring2.used).toBe(2048);
  });

  it('does not skip to the next lap when the skipped bytes leave too little room', () => {
    const ring = new RingSpace(4096, 2048, 3584);
    // used 1536 + 512 skipped + 2560 > 4096.
    expect(ring.place(2560)).toBeUndefined();
    expect(state(ring)).toEqual([2048, 3584, 1536]);
  });

  it('in an empty ring the head moves to the next lap with the frame, so a frame of the whole ring fits', () => {
    const ring = new RingSpace(4096, 5000, 5000);
    // 5000 % 4096 = 904: 3192 bytes before the end, too few for 4096.
    expect(ring.place(4096)).toBe(8192);
    expect([ring.headAbs, ring.landedAbs]).toEqual([8192, 8192]);
    ring.landed(8192 + 4096);
    expect(ring.used).toBe(4096);
    // At a lap boundary nothing moves: the whole ring is free in place.
    const aligned = new RingSpace(4096, 8192, 8192);
    expect(put(aligned, 4096)).toBe(8192);
    expect(state(aligned)).toEqual([8192, 12288, 4096]);
  });

  it('release never moves the head backwards', () => {
    const ring = new RingSpace(4096, 1024, 3072);
    ring.release(512);
    expect(ring.headAbs).toBe(1024);
    ring.release(2048);
    ring.release(1536);
    expect(state(ring)).toEqual([2048, 3072, 1024]);
  });

  // Frames are placed and landed in order, and the oldest are freed by
  // moving the head to the start of a later one. Whatever happens, a
  // placed frame lies within one lap after every live frame, and only a
  // non-empty ring ever refuses a frame (the journal then frees space by a
  // checkpoint and asks again).
  it('keeps every live frame intact over random placements and releases', () => {
    const capacity = 8192;
    const step = fc.oneof(
      fc.record({ kind: fc.constant('place' as const), sectors: fc.integer({ min: 1, max: 16 }) }),
      fc.record({ kind: fc.constant('release' as const), frames: fc.integer({ min: 1, max: 4 }) }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 5 * capacity }),
        fc.array(step, { maxLength: 80 }),
        (start, steps) => {
          const startAbs = start - (start % 512);
          const ring = new RingSpace(capacity, startAbs, startAbs);
          /** Live frames, oldest first: [start, end) in absolute positions. */
          const live: [number, number][] = [];
          for (const s of steps) {
            if (s.kind === 'release') {
              const freed = live.splice(0, s.frames);
              if (freed.length > 0) ring.release(live[0]?.[0] ?? freed.at(-1)![1]);
              continue;
            }
            const bytes = s.sectors * 512;
            const before = state(ring);
            const at = ring.place(bytes);
            if (at === undefined) {
              expect(live.length, 'an empty ring refused a frame').toBeGreaterThan(0);
              expect(state(ring)).toEqual(before);
              continue;
            }
            expect(at).toBeGreaterThanOrEqual(before[1]);
            expect((at % capacity) + bytes, 'the frame straddles the ring end').toBeLessThanOrEqual(
              capacity,
            );
            const oldest = live[0]?.[0] ?? at;
            expect(at + bytes - oldest, 'the frame overwrites a live one').toBeLessThanOrEqual(
              capacity,
            );
            expect(ring.headAbs).toBeLessThanOrEqual(oldest);
            ring.landed(at + bytes);
            live.push([at, at + bytes]);
            expect(ring.used).toBeLessThanOrEqual(capacity);
          }
        },
      ),
      { seed: 0x41a6, numRuns: 200 },
    );
  });
});
