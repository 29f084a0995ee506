import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Release } from '../../src/base/lock-table.js';
import type { BlockRanges } from '../../src/cow/block-ranges.js';
import { type GatePass, RangeGate } from '../../src/cow/range-gate.js';
import { settle } from '../support/async.js';

/** A call on the gate whose grant the test watches. */
interface Call {
  readonly seq: number;
  readonly kind: 'enter' | 'hold';
  readonly ranges: BlockRanges;
  release?: Release;
  released: boolean;
}

/** Issues gate calls in order and records when each is granted. */
class Probe {
  readonly gate = new RangeGate();
  readonly calls: Call[] = [];

  enter(first: number, last: number): Call {
    return this.#track(
      'enter',
      [{ start: first, end: last + 1 }],
      this.gate.enter(first, last).then(leaving),
    );
  }

  /** The write path's way in: `tryEnter`, and `enter` only if that is refused. */
  tryEnter(first: number, last: number): { call: Call; fast: boolean } {
    const pass = this.gate.tryEnter(first, last);
    const release = pass === undefined ? undefined : leaving(pass);
    const granted =
      release === undefined ? this.gate.enter(first, last).then(leaving) : Promise.resolve(release);
    const call = this.#track('enter', [{ start: first, end: last + 1 }], granted);
    if (release !== undefined) call.release = release;
    return { call, fast: release !== undefined };
  }

  hold(ranges: BlockRanges): Call {
    return this.#track('hold', ranges, this.gate.hold(ranges));
  }

  #track(kind: Call['kind'], ranges: BlockRanges, granted: Promise<Release>): Call {
    const call: Call = { seq: this.calls.length, kind, ranges, released: false };
    this.calls.push(call);
    void granted.then((release) => {
      call.release = release;
    });
    return call;
  }

  release(call: Call): void {
    expect(call.release, `call ${call.seq} was granted`).toBeDefined();
    call.release!();
    call.released = true;
  }
}

const granted = (c: Call) => c.release !== undefined;

/** A pass's way out, as a release like a hold's. */
const leaving =
  (pass: GatePass): Release =>
  () =>
    pass.leave();

function overlap(a: BlockRanges, b: BlockRanges): boolean {
  return a.some((x) => b.some((y) => x.start < y.end && y.start < x.end));
}

describe('RangeGate', () => {
  it('lets entrants in at once when nothing is held, and grants a hold over nothing in use', async () => {
    const p = new Probe();
    const a = p.enter(0, 3);
    const b = p.enter(2, 5);
    const h = p.hold([{ start: 10, end: 12 }]);
    await settle();
    expect([a, b, h].map(granted)).toEqual([true, true, true]);
    expect(p.gate.pending).toEqual({ inside: 2, waiting: 0, holds: 1 });
  });

  it('a hold waits for the overlapping entrants called before it, and only for them', async () => {
    const p = new Probe();
    const inside = p.enter(4, 4);
    const elsewhere = p.enter(8, 9);
    const h = p.hold([{ start: 2, end: 6 }]);
    await settle();
    expect(granted(h)).toBe(false);
    p.release(elsewhere);
    await settle();
    expect(granted(h)).toBe(false);
    p.release(inside);
    await settle();
    expect(granted(h)).toBe(true);
  });

  it('entrants called after a hold wait if they overlap it, and pass at once if they do not', async () => {
    const p = new Probe();
    const h = p.hold([
      { start: 2, end: 4 },
      { start: 8, end: 9 },
    ]);
    const inGap = p.enter(4, 7);
    const across = p.enter(0, 2);
    const onSecondRun = p.enter(8, 8);
    const after = p.enter(9, 20);
    await settle();
    expect([
      granted(h),
      granted(inGap),
      granted(across),
      granted(onSecondRun),
      granted(after),
    ]).toEqual([true, true, false, false, true]);
    p.release(h);
    await settle();
    expect(granted(across) && granted(onSecondRun)).toBe(true);
    expect(p.gate.pending).toEqual({ inside: 4, waiting: 0, holds: 0 });
  });

  it('a hold counts an earlier entrant still waiting behind an older hold (call order, no cut through)', async () => {
    const p = new Probe();
    const h1 = p.hold([{ start: 0, end: 4 }]);
    const e = p.enter(1, 1);
    const h2 = p.hold([{ start: 1, end: 2 }]);
    const late = p.enter(1, 1);
    await settle();
    expect([granted(h1), granted(e), granted(h2), granted(late)]).toEqual([
      true,
      false,
      false,
      false,
    ]);
    p.release(h1);
    await settle();
    // e was called before h2: it goes first, and h2 waits for it to leave.
    expect([granted(e), granted(h2), granted(late)]).toEqual([true, false, false]);
    p.release(e);
    await settle();
    expect([granted(h2), granted(late)]).toEqual([true, false]);
    p.release(h2);
    await settle();
    expect(granted(late)).toBe(true);
  });

  it('a release is idempotent: calling it twice lets no one in early', async () => {
    const p = new Probe();
    const a = p.enter(0, 0);
    const b = p.enter(0, 0);
    const h = p.hold([{ start: 0, end: 1 }]);
    await settle();
    p.release(a);
    a.release!();
    await settle();
    expect(granted(h)).toBe(false);
    p.release(b);
    await settle();
    expect(granted(h)).toBe(true);
    h.release!();
    h.release!();
    expect(p.gate.pending).toEqual({ inside: 0, waiting: 0, holds: 0 });
  });

  it('tryEnter lets a write in synchronously unless an earlier overlapping hold stands, and keeps its place in call order', async () => {
    const p = new Probe();
    const first = p.tryEnter(3, 3);
    expect(first.fast).toBe(true);
    const h = p.hold([{ start: 2, end: 5 }]);
    const blocked = p.tryEnter(4, 4);
    const beside = p.tryEnter(5, 9);
    expect([blocked.fast, beside.fast]).toEqual([false, true]);
    // The refused one queued behind the hold; a hold called after it waits for it.
    const h2 = p.hold([{ start: 4, end: 5 }]);
    await settle();
    expect([granted(h), granted(blocked.call), granted(h2)]).toEqual([false, false, false]);
    p.release(first.call);
    await settle();
    expect(granted(h)).toBe(true);
    p.release(h);
    await settle();
    expect([granted(blocked.call), granted(h2)]).toEqual([true, false]);
    p.release(blocked.call);
    await settle();
    expect(granted(h2)).toBe(true);
  });

  it("tryEnter of a side entrant (snapshot-handle I/O) passes a snapshot's hold, and stops only at a hold over everything", async () => {
    const gate = new RangeGate();
    const cut = gate.hold([{ start: 0, end: 8 }]);
    // A snapshot's cut concerns origin I/O: a side entrant goes in beside it.
    const side = gate.tryEnter(2, 2, true);
    expect(side).toBeDefined();
    expect(gate.tryEnter(3, 3)).toBeUndefined();
    (await cut)();
    // A delete or restore (a hold over everything) drains the side entrant first...
    let everythingHeld = false;
    const everything = gate.hold([{ start: 0, end: 8 }], true).then((release) => {
      everythingHeld = true;
      return release;
    });
    await settle();
    expect(everythingHeld).toBe(false);
    // ...and keeps later side entrants out, synchronously.
    expect(gate.tryEnter(5, 5, true)).toBeUndefined();
    side!.leave();
    (await everything)();
    const after = gate.tryEnter(5, 5, true);
    expect(after).toBeDefined();
    after!.leave();
    expect(gate.pending).toEqual({ inside: 0, waiting: 0, holds: 0 });
  });

  /**
   * Random scripts of enters, holds and releases against the rule itself:
   * an entrant is in exactly when every overlapping hold called before it
   * has been released; a hold is granted exactly when every overlapping
   * entrant called before it has left. Releasing whatever is granted, in
   * any order, always ends with everything through (no deadlock).
   */
  it('grants exactly what call order allows, in any script, and never deadlocks', async () => {
    const run = fc.tuple(fc.nat(15), fc.integer({ min: 1, max: 4 }));
    const action = fc.oneof(
      fc.tuple(run, fc.boolean()).map(([[first, n], tryFirst]) => ({
        kind: 'enter' as const,
        first,
        last: first + n - 1,
        tryFirst,
      })),
      fc
        .array(run, { minLength: 1, maxLength: 3 })
        .map((runs) => ({ kind: 'hold' as const, runs })),
      fc.nat(100).map((pick) => ({ kind: 'release' as const, pick })),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(action, { maxLength: 30 }), async (script) => {
        const p = new Probe();
        const check = () => {
          for (const c of p.calls) {
            const blockers = p.calls.filter(
              (o) =>
                o.seq < c.seq && o.kind !== c.kind && overlap(o.ranges, c.ranges) && !o.released,
            );
            const what = `${c.kind} #${c.seq}, blocked by ${blockers.map((b) => b.seq)}`;
            expect(granted(c), what).toBe(blockers.length === 0);
          }
        };
        for (const a of script) {
          if (a.kind === 'enter' && a.tryFirst) p.tryEnter(a.first, a.last);
          else if (a.kind === 'enter') p.enter(a.first, a.last);
          else if (a.kind === 'hold') {
            const runs = a.runs
              .map(([start, n]) => ({ start, end: start + n }))
              .sort((x, y) => x.start - y.start);
            // Canonical: merge overlapping or touching runs.
            const merged: { start: number; end: number }[] = [];
            for (const r of runs) {
              const last = merged[merged.length - 1];
              if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
              else merged.push({ ...r });
            }
            p.hold(merged);
          } else {
            const ready = p.calls.filter((c) => granted(c) && !c.released);
            if (ready.length > 0) p.release(ready[a.pick % ready.length]!);
          }
          await settle();
          check();
        }
        // Drain: release whatever is granted until all is through.
        for (let guard = 0; p.calls.some((c) => !c.released); guard++) {
          const ready = p.calls.filter((c) => granted(c) && !c.released);
          expect(ready.length, 'deadlock: calls wait, none is granted').toBeGreaterThan(0);
          p.release(ready[0]!);
          await settle();
          check();
          expect(guard).toBeLessThan(100);
        }
        expect(p.gate.pending).toEqual({ inside: 0, waiting: 0, holds: 0 });
      }),
      { numRuns: 300, seed: 0x9a7e },
    );
  });
});
