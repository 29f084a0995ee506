/**
 * Two sides of a comparison measured in alternating bursts within one row,
 * for the targets that are a ratio of a few per cent: rows at opposite ends
 * of a round see the machine at different speeds, bursts back to back see
 * it alike.
 */
import { closedLoop, type Issue } from './harness.js';
import type { BenchConfig, RowResult } from './workloads.js';

/** One side of an {@link alternating} measurement. */
export interface Side {
  issue: Issue;
  /** Ops this side may still make (a journal's room); unlimited if omitted. */
  budget?: number;
}

export interface AlternatingResult {
  /** Per side: ops and seconds over the counted bursts. */
  ops: [number, number];
  seconds: [number, number];
  /** Median over burst pairs of (ops/s of side 0 ÷ ops/s of side 1). */
  ratio: number;
  /** The smallest and largest pair ratio. */
  range: [number, number];
  pairs: number;
  /** A side ran out of budget before every burst ran. */
  stopped: boolean;
}

/**
 * Measures two sides in alternating bursts — A B, B A, A B, ... — each
 * pair back to back, so drift in the machine's speed (other processes on a
 * small machine, writeback, garbage collection, JIT) falls on both alike;
 * rows at opposite ends of a round can see a 2× swing, which swamps a 5 or
 * 20 % target. The warm-up too alternates, in quarters: a fresh device's
 * first bursts run slow, and the side warmed last would otherwise find the
 * code tuned to the other side's objects. Measured time is `cfg.seconds`
 * per side, in 16 bursts.
 */
export async function alternating(
  cfg: BenchConfig,
  sides: [Side, Side],
): Promise<AlternatingResult> {
  const bursts = 16;
  const burst = cfg.seconds / bursts;
  const ops: [number, number] = [0, 0];
  const seconds: [number, number] = [0, 0];
  const budget = sides.map((s) => s.budget ?? Number.POSITIVE_INFINITY);
  const exercise = async (i: 0 | 1, time: number, counted: boolean): Promise<number> => {
    const r = await closedLoop(sides[i].issue, {
      inFlight: cfg.inFlight,
      seconds: time,
      limit: Math.max(0, budget[i]!),
    });
    budget[i]! -= r.ops;
    if (counted) {
      ops[i] += r.ops;
      seconds[i] += r.seconds;
    }
    return r.opsPerSec;
  };
  for (let q = 0; q < 4 && cfg.warmup > 0; q++) {
    await exercise(0, cfg.warmup / 4, false);
    await exercise(1, cfg.warmup / 4, false);
  }
  const ratios: number[] = [];
  let stopped = false;
  for (let i = 0; i < bursts && !stopped; i++) {
    const rates: [number, number] = [0, 0];
    for (const side of i % 2 === 0 ? ([0, 1] as const) : ([1, 0] as const)) {
      rates[side] = await exercise(side, burst, true);
    }
    stopped = budget.some((b) => b <= 0);
    if (!stopped) ratios.push(rates[0] / rates[1]);
  }
  if (ratios.length === 0) throw new Error('a side ran out of budget before one burst pair');
  const sorted = [...ratios].sort((a, b) => a - b);
  return {
    ops,
    seconds,
    ratio: sorted[Math.floor(sorted.length / 2)]!,
    range: [sorted[0]!, sorted[sorted.length - 1]!],
    pairs: ratios.length,
    stopped,
  };
}

export function describeBursts(cfg: BenchConfig, r: AlternatingResult): string {
  return (
    `${cfg.warmup} s warm-up per side (alternating quarters), then ${r.pairs} pairs of back-to-back bursts of ` +
    `${(cfg.seconds / 16).toFixed(3)} s per side, order alternating; pair ratios ${r.range[0].toFixed(2)}–${r.range[1].toFixed(2)}` +
    (r.stopped ? '; a journal ran out of room: fewer bursts than planned' : '')
  );
}

export function rate(r: AlternatingResult, side: 0 | 1): number {
  return r.ops[side] / r.seconds[side];
}

/** A row's result from one side of an alternating run; the ratio is the run's. */
export function sideResult(r: AlternatingResult, side: 0 | 1, notes: string[]): RowResult {
  return {
    opsPerSec: rate(r, side),
    ops: r.ops[side],
    seconds: r.seconds[side],
    ratio: r.ratio,
    notes,
  };
}
