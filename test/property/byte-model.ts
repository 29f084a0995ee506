/**
 * The byte model the EIO matrix (eio-harness.ts) and the failure model
 * (failure-model.test.ts) check devices against: per byte, the values a
 * read may return now and the values a reopen may find.
 */
import type { WriteOp } from './eio-workload.js';

/** A write as the model sees it: every byte of it is `value`. */
export type ModelWrite = Pick<WriteOp, 'offset' | 'length' | 'value'>;

/**
 * What each byte of a device (or writable snapshot) may hold: `live` now,
 * `floor` after a reopen. A byte's set starts as its known value; a write
 * adds its value to `floor` when called (it may land, and stay), and when
 * its step settles replaces `live` with the values of the writes over it
 * that succeeded, plus those that failed (a failed write may have landed,
 * whole or in part); with none succeeded, adds the failed ones. A
 * successful flush, called with no write in flight, makes `floor` what
 * `live` is.
 */
export class ByteModel {
  #live: number[][];
  #floor: number[][];
  /**
   * Values of failed writes not overwritten since by one that succeeded: a
   * reopen may find them even where reads did not show them ("a write that
   * failed may be there in whole, in part, or not at all",
   * docs/ARCHITECTURE.md, "After an I/O error", After reopen). Only the
   * failure model tracks them (with `ghosts` on).
   */
  #ghosts: number[][] | undefined;

  constructor(initial: Uint8Array, ghosts = false) {
    this.#live = Array.from(initial, (v) => [v]);
    this.#floor = this.#live.map((s) => s.slice());
    this.#ghosts = ghosts ? this.#live.map(() => []) : undefined;
  }

  /** Bytes modelled. */
  get size(): number {
    return this.#live.length;
  }

  /** An independent copy (the failure model forks a device's model per outcome of a rejected operation). */
  clone(): ByteModel {
    const copy = new ByteModel(new Uint8Array(0));
    copy.#live = this.#live.map((s) => s.slice());
    copy.#floor = this.#floor.map((s) => s.slice());
    copy.#ghosts = this.#ghosts?.map((s) => s.slice());
    return copy;
  }

  /**
   * A point-in-time copy of what may be read now, as a snapshot taken now
   * holds it: `live` and `floor` both this model's `live`.
   */
  frozen(): ByteModel {
    const copy = new ByteModel(new Uint8Array(0));
    copy.#live = this.#live.map((s) => s.slice());
    copy.#floor = this.#live.map((s) => s.slice());
    copy.#ghosts = this.#ghosts?.map(() => []);
    return copy;
  }

  /** A write was called: it may land, and a reopen may find it. */
  called(w: ModelWrite): void {
    for (let i = w.offset; i < w.offset + w.length; i++) addTo(this.#floor[i]!, w.value);
  }

  /** The writes of one step settled, `ok` telling which succeeded. */
  settled(writes: readonly { op: ModelWrite; ok: boolean }[]): void {
    const touched = new Map<number, { ok: number[]; failed: number[] }>();
    for (const { op, ok } of writes) {
      for (let i = op.offset; i < op.offset + op.length; i++) {
        let t = touched.get(i);
        if (t === undefined) {
          t = { ok: [], failed: [] };
          touched.set(i, t);
        }
        (ok ? t.ok : t.failed).push(op.value);
      }
    }
    for (const [i, t] of touched) {
      const next = t.ok.length > 0 ? [...t.ok] : this.#live[i]!.slice();
      for (const v of t.failed) addTo(next, v);
      this.#live[i] = next;
      const ghosts = this.#ghosts?.[i];
      if (ghosts === undefined) continue;
      if (t.ok.length > 0) ghosts.length = 0;
      for (const v of t.failed) addTo(ghosts, v);
    }
  }

  /** A flush succeeded with no write in flight: what may be read now is what a reopen may find. */
  flushed(): void {
    this.#floor = this.#live.map((s, i) => {
      const floor = s.slice();
      for (const v of this.#ghosts?.[i] ?? []) addTo(floor, v);
      return floor;
    });
  }

  /**
   * Bytes `[from, to)` now hold what `source` holds there (a restore), and,
   * `durable`, a reopen finds them so.
   */
  replace(source: ByteModel, from: number, to: number, durable: boolean): void {
    for (let i = from; i < to; i++) {
      this.#live[i] = source.#live[i]!.slice();
      if (durable) this.#floor[i] = source.#live[i]!.slice();
      if (this.#ghosts !== undefined) this.#ghosts[i] = [];
    }
  }

  /**
   * Bytes from `offset` were read with nothing in flight and showed `data`
   * (already checked to be allowed): from now on a read must return exactly
   * that. With `reopened`, it is also what the disks hold now, so what a
   * later reopen may find.
   */
  observed(offset: number, data: Uint8Array, reopened = false): void {
    for (let k = 0; k < data.length; k++) {
      this.#live[offset + k] = [data[k]!];
      if (!reopened) continue;
      this.#floor[offset + k] = [data[k]!];
      if (this.#ghosts !== undefined) this.#ghosts[offset + k] = [];
    }
  }

  /** Whether byte `i` may read `v` now (or, `afterReopen`, after a reopen). */
  allows(i: number, v: number, afterReopen = false): boolean {
    return (afterReopen ? this.#floor : this.#live)[i]!.includes(v);
  }

  /**
   * The first byte of `data`, read at `offset`, that neither `live` (or,
   * `afterReopen`, `floor`) allows nor one of `racing` writes in flight puts
   * there, described; undefined if every byte is allowed.
   */
  mismatch(
    offset: number,
    data: Uint8Array,
    racing: readonly ModelWrite[] = [],
    afterReopen = false,
  ): string | undefined {
    const sets = afterReopen ? this.#floor : this.#live;
    for (let k = 0; k < data.length; k++) {
      const i = offset + k;
      const v = data[k]!;
      if (sets[i]!.includes(v)) continue;
      if (racing.some((w) => w.value === v && i >= w.offset && i < w.offset + w.length)) continue;
      return (
        `byte ${i} is ${v}; allowed ${JSON.stringify(sets[i])}` +
        (racing.length > 0 ? ` or a racing write's` : '')
      );
    }
    return undefined;
  }

  /**
   * Throws unless every byte of `data`, read at `offset`, is one `live` (or,
   * `afterReopen`, `floor`) allows, or one of `racing` writes in flight puts
   * there.
   */
  check(
    what: string,
    offset: number,
    data: Uint8Array,
    racing: readonly ModelWrite[] = [],
    afterReopen = false,
  ): void {
    const wrong = this.mismatch(offset, data, racing, afterReopen);
    if (wrong !== undefined) throw new Error(`${what}: ${wrong}`);
  }
}

function addTo(set: number[], v: number): void {
  if (!set.includes(v)) set.push(v);
}
