import type { Release } from '../base/index.js';
import { type BlockRanges, rangesOverlap } from './block-ranges.js';

/**
 * One I/O's place in a {@link RangeGate}: the blocks it touches, from the
 * call that let it in until it leaves. One object per I/O, and no closure:
 * the write path makes one per write.
 */
export class GatePass {
  /** Call order: a hold waits only for entrants called before it. */
  readonly seq: number;
  readonly first: number;
  readonly last: number;
  /** Only holds over `everything` stop it (snapshot-handle I/O); otherwise every overlapping hold does. */
  readonly side: boolean;
  /** Neighbours in the gate's list of passes inside (an intrusive list: no Set entry per I/O). */
  prev: GatePass | undefined = undefined;
  next: GatePass | undefined = undefined;
  inside = false;
  wake: ((pass: GatePass) => void) | undefined = undefined;
  readonly #gate: RangeGate;

  constructor(gate: RangeGate, seq: number, first: number, last: number, side: boolean) {
    this.#gate = gate;
    this.seq = seq;
    this.first = first;
    this.last = last;
    this.side = side;
  }

  /** Leaves the gate, letting in holds that waited for this I/O. Idempotent. */
  leave(): void {
    this.#gate.leave(this);
  }
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
 * Side entrants (I/O of snapshot handles) are stopped only by holds over
 * `everything` (delete, restore): a new snapshot's cut concerns the origin
 * alone, so reads of older snapshots go on through it. Any overlapping hold
 * still waits for side entrants called before it, so a cut waits at most for
 * the snapshot I/O already in flight over its blocks.
 */
export class RangeGate {
  #calls = 0;
  /** The passes inside, newest first. */
  #inside: GatePass | undefined = undefined;
  #insideCount = 0;
  readonly #waiting: GatePass[] = [];
  readonly #holds: Hold[] = [];

  /** Entrants inside or waiting and holds registered (for tests and diagnostics). */
  get pending(): { inside: number; waiting: number; holds: number } {
    return { inside: this.#insideCount, waiting: this.#waiting.length, holds: this.#holds.length };
  }

  /**
   * Enters for blocks `first..last` at once if no hold that stops it blocks
   * them (`side`: as {@link enter}), returning the pass to leave with;
   * otherwise takes nothing and returns undefined. Lets the uncontended
   * write and snapshot-read paths skip a promise and a microtask.
   */
  tryEnter(first: number, last: number, side = false): GatePass | undefined {
    if (this.#holds.length > 0 && this.#blockedAt(this.#calls + 1, first, last, side)) {
      return undefined;
    }
    const pass = new GatePass(this, ++this.#calls, first, last, side);
    this.#letIn(pass);
    return pass;
  }

  /**
   * Enters for blocks `first..last`; resolves once no earlier overlapping
   * hold that stops it is registered (`side`: only holds over everything do).
   */
  enter(first: number, last: number, side = false): Promise<GatePass> {
    const pass = new GatePass(this, ++this.#calls, first, last, side);
    if (!this.#blocked(pass)) {
      this.#letIn(pass);
      return Promise.resolve(pass);
    }
    return new Promise((resolve) => {
      pass.wake = resolve;
      this.#waiting.push(pass);
    });
  }

  /** Takes `pass` out of the gate (see {@link GatePass.leave}). */
  leave(pass: GatePass): void {
    if (!pass.inside) return;
    pass.inside = false;
    const { prev, next } = pass;
    if (prev === undefined) this.#inside = next;
    else prev.next = next;
    if (next !== undefined) next.prev = prev;
    pass.prev = undefined;
    pass.next = undefined;
    this.#insideCount--;
    if (this.#holds.length > 0) this.#grantHolds();
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

  #letIn(pass: GatePass): void {
    pass.inside = true;
    const head = this.#inside;
    pass.next = head;
    if (head !== undefined) head.prev = pass;
    this.#inside = pass;
    this.#insideCount++;
  }

  #blocked(pass: GatePass): boolean {
    return this.#blockedAt(pass.seq, pass.first, pass.last, pass.side);
  }

  #blockedAt(seq: number, first: number, last: number, side: boolean): boolean {
    for (const hold of this.#holds) {
      if (hold.seq < seq && (hold.everything || !side) && rangesOverlap(hold.ranges, first, last)) {
        return true;
      }
    }
    return false;
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
    const earlier = (e: GatePass) =>
      e.seq < hold.seq && rangesOverlap(hold.ranges, e.first, e.last);
    for (let e = this.#inside; e !== undefined; e = e.next) if (earlier(e)) return true;
    return this.#waiting.some(earlier);
  }

  #releaseHold(hold: Hold): void {
    const i = this.#holds.indexOf(hold);
    if (i < 0) return;
    this.#holds.splice(i, 1);
    for (let k = 0; k < this.#waiting.length; ) {
      const pass = this.#waiting[k]!;
      if (this.#blocked(pass)) {
        k++;
        continue;
      }
      this.#waiting.splice(k, 1);
      this.#letIn(pass);
      pass.wake!(pass);
    }
    this.#grantHolds();
  }
}
