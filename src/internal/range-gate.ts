import { type BlockRanges, rangesOverlap } from './block-ranges.js';
import type { Release } from './lock-table.js';

interface Entrant {
  /** Call order: a hold waits only for entrants called before it. */
  readonly seq: number;
  readonly first: number;
  readonly last: number;
  /** Only holds over `everything` stop it (snapshot-handle I/O); otherwise every overlapping hold does. */
  readonly side: boolean;
  wake?: (release: Release) => void;
}

interface Hold {
  readonly seq: number;
  readonly ranges: BlockRanges;
  /** Stops side entrants too (delete, restore), not just origin I/O (a snapshot's cut). */
  readonly everything: boolean;
  granted: boolean;
  readonly wake: (release: Release) => void;
}

/**
 * A gate for consistent cuts of *some* blocks (seed 002, claims 24–25, 33,
 * 41): I/O enters with the blocks it touches; a hold over a set of blocks
 * drains the I/O already inside those blocks, keeps out I/O to them that
 * arrives after it, and never stops I/O to any other block.
 *
 * Order is call order, fixed synchronously at the call: a hold is granted
 * once every overlapping entrant called before it has left, and an entrant
 * waits for every overlapping hold called before it. Waits only ever point
 * at earlier calls, so they cannot form a cycle. A hold over every block is
 * the old exclusive gate.
 *
 * Side entrants (I/O of snapshot handles) are stopped and drained only by
 * holds over `everything` (delete, restore): a new snapshot's cut concerns
 * the origin alone, so reads of older snapshots go on through it.
 */
export class RangeGate {
  #calls = 0;
  readonly #inside = new Set<Entrant>();
  readonly #waiting: Entrant[] = [];
  readonly #holds: Hold[] = [];

  /** Entrants inside or waiting and holds registered (for tests and diagnostics). */
  get pending(): { inside: number; waiting: number; holds: number } {
    return { inside: this.#inside.size, waiting: this.#waiting.length, holds: this.#holds.length };
  }

  /**
   * Enters for blocks `first..last` at once if no hold blocks them,
   * returning the release; otherwise takes nothing and returns undefined.
   * Lets the uncontended write path skip a promise and a microtask.
   */
  tryEnter(first: number, last: number): Release | undefined {
    const entrant: Entrant = { seq: this.#calls + 1, first, last, side: false };
    if (this.#holds.length > 0 && this.#blocked(entrant)) return undefined;
    this.#calls++;
    this.#inside.add(entrant);
    return this.#releaser(entrant);
  }

  /**
   * Enters for blocks `first..last`; resolves once no earlier overlapping
   * hold that stops it is registered (`side`: only holds over everything do).
   */
  enter(first: number, last: number, side = false): Promise<Release> {
    const entrant: Entrant = { seq: ++this.#calls, first, last, side };
    if (!this.#blocked(entrant)) {
      this.#inside.add(entrant);
      return Promise.resolve(this.#releaser(entrant));
    }
    return new Promise((resolve) => {
      entrant.wake = resolve;
      this.#waiting.push(entrant);
    });
  }

  /**
   * Holds `ranges`: from this call on, entrants to them wait; resolves once
   * the overlapping entrants called before it have left. The release lets
   * the waiting ones in.
   */
  hold(ranges: BlockRanges, everything = false): Promise<Release> {
    return new Promise((resolve) => {
      this.#holds.push({ seq: ++this.#calls, ranges, everything, granted: false, wake: resolve });
      this.#grantHolds();
    });
  }

  #blocked(entrant: Entrant): boolean {
    for (const hold of this.#holds) {
      if (
        hold.seq < entrant.seq &&
        (hold.everything || !entrant.side) &&
        rangesOverlap(hold.ranges, entrant.first, entrant.last)
      ) {
        return true;
      }
    }
    return false;
  }

  #releaser(entrant: Entrant): Release {
    return () => {
      if (!this.#inside.delete(entrant)) return;
      if (this.#holds.length > 0) this.#grantHolds();
    };
  }

  #grantHolds(): void {
    for (const hold of this.#holds) {
      if (hold.granted || this.#drainsInto(hold)) continue;
      hold.granted = true;
      hold.wake(() => this.#releaseHold(hold));
    }
  }

  /** Whether an overlapping entrant called before `hold` is still inside or waiting. */
  #drainsInto(hold: Hold): boolean {
    const earlier = (e: Entrant) => e.seq < hold.seq && rangesOverlap(hold.ranges, e.first, e.last);
    for (const e of this.#inside) if (earlier(e)) return true;
    return this.#waiting.some(earlier);
  }

  #releaseHold(hold: Hold): void {
    const i = this.#holds.indexOf(hold);
    if (i < 0) return;
    this.#holds.splice(i, 1);
    for (let k = 0; k < this.#waiting.length; ) {
      const entrant = this.#waiting[k]!;
      if (this.#blocked(entrant)) {
        k++;
        continue;
      }
      this.#waiting.splice(k, 1);
      this.#inside.add(entrant);
      entrant.wake!(this.#releaser(entrant));
    }
    this.#grantHolds();
  }
}
