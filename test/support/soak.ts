import { randomInt } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';

/**
 * Seeds, run counts and the soak report every property and crash test shares.
 *
 * In CI (no `BLOCKSNAP_SOAK`) every property runs its fixed seed, so a run
 * is the same run each time. With `BLOCKSNAP_SOAK=1` each property draws a
 * fresh seed and prints it; `BLOCKSNAP_SEED=<n>` makes every property (and
 * every damage trial series) run seed `n`, which is how a failing seed the
 * soak printed is reproduced. With `BLOCKSNAP_SOAK_REPORT_DIR` set, each
 * test file writes what it counted there as JSON at its end
 * (`scripts/soak-report.ts` merges and prints them).
 */

/** Whether this run is a soak: fresh seeds, many more runs. */
export const SOAK = process.env.BLOCKSNAP_SOAK === '1';

/** A soak's cases run far past the default test timeout. */
export const SOAK_TIMEOUT = SOAK ? 24 * 60 * 60_000 : undefined;

/**
 * When a timed soak (`BLOCKSNAP_SOAK_MINUTES`, set by scripts/soak.ts as
 * `BLOCKSNAP_SOAK_DEADLINE`, ms since the epoch) must stop drawing new runs.
 */
export function soakDeadline(): number | undefined {
  const text = process.env.BLOCKSNAP_SOAK_DEADLINE;
  if (!SOAK || text === undefined || text === '') return undefined;
  const deadline = Number(text);
  return Number.isFinite(deadline) ? deadline : undefined;
}

/** Whether a timed soak's deadline has passed. */
export function pastDeadline(): boolean {
  const deadline = soakDeadline();
  return deadline !== undefined && Date.now() >= deadline;
}

/** The seed `BLOCKSNAP_SEED` asks for, if any. */
export function forcedSeed(): number | undefined {
  const text = process.env.BLOCKSNAP_SEED;
  if (text === undefined || text === '') return undefined;
  const seed = Number(text);
  if (!Number.isSafeInteger(seed)) throw new Error(`BLOCKSNAP_SEED=${text} is not an integer`);
  return seed;
}

/**
 * The seed for the property or trial series `label`: `BLOCKSNAP_SEED` if
 * set, else a fresh one in a soak (printed, so a failure can be replayed),
 * else `fixed`.
 */
export function seedFor(label: string, fixed: number): number {
  const forced = forcedSeed();
  if (forced !== undefined) return forced;
  if (!SOAK) return fixed;
  const seed = randomInt(0, 2 ** 31);
  console.log(`[soak] ${label}: seed ${seed} (replay: BLOCKSNAP_SEED=${seed})`);
  return seed;
}

/** What a damage trial came to; `silent` and `snapshot-lost` are failures. */
export type DamageOutcome =
  | 'reported-open'
  | 'reported-read'
  | 'harmless'
  | 'silent'
  | 'snapshot-lost';

/** The outcomes in the order the tables print them. */
export const DAMAGE_OUTCOMES: readonly DamageOutcome[] = [
  'reported-open',
  'reported-read',
  'harmless',
  'silent',
  'snapshot-lost',
];

/** One test file's counts, in the shape `scripts/soak-report.ts` merges. */
export interface SoakCounts {
  suite: string;
  /** Property runs per property, so the report shows how much each file ran. */
  runs: Record<string, number>;
  powerCuts: Record<string, number>;
  damageTrials: Record<string, Record<DamageOutcome, number>>;
  eioInjections: Record<string, number>;
  /** Failures the failure property test injected, per stack, in runs that passed. */
  injectedFailures: Record<string, number>;
  failures: { seed: number; what: string }[];
}

/** The counts of the test file that imported this module (vitest isolates each file's modules). */
const counts: SoakCounts = {
  suite: '',
  runs: {},
  powerCuts: {},
  damageTrials: {},
  eioInjections: {},
  injectedFailures: {},
  failures: [],
};

/** Counts `n` power cuts of the device or stack `stack`. */
export function countPowerCuts(stack: string, n = 1): void {
  counts.powerCuts[stack] = (counts.powerCuts[stack] ?? 0) + n;
}

/** Counts `n` injected I/O failures the stack `stack` survived (its run passed). */
export function countInjectedFailures(stack: string, n: number): void {
  counts.injectedFailures[stack] = (counts.injectedFailures[stack] ?? 0) + n;
}

/** Counts one damage trial on `stack` and what it came to. */
export function countDamage(stack: string, outcome: DamageOutcome): void {
  const row =
    counts.damageTrials[stack] ??
    (Object.fromEntries(DAMAGE_OUTCOMES.map((o) => [o, 0])) as Record<DamageOutcome, number>);
  row[outcome]++;
  counts.damageTrials[stack] = row;
}

/** Records a failure and the seed that replays it. */
export function recordFailure(seed: number, what: string): void {
  counts.failures.push({ seed, what });
}

/** What this file has counted so far. */
export function soakCounts(): Readonly<SoakCounts> {
  return counts;
}

/**
 * `fc.assert` with the seed from {@link seedFor} and `numRuns` (or
 * `soakRuns` in a soak, cut short at a timed soak's deadline); counts the
 * runs under `label` and records a failure with its seed before rethrowing it.
 */
export async function assertProperty<Ts>(
  label: string,
  property: fc.IAsyncPropertyWithHooks<Ts> | fc.IPropertyWithHooks<Ts>,
  options: { seed: number; numRuns: number; soakRuns: number },
): Promise<void> {
  const seed = seedFor(label, options.seed);
  const numRuns = SOAK ? options.soakRuns : options.numRuns;
  let ran = 0;
  const counted = (property as fc.IAsyncPropertyWithHooks<Ts>).beforeEach(async (run) => {
    ran++;
    await run();
  });
  const deadline = soakDeadline();
  const limit =
    deadline === undefined
      ? {}
      : {
          interruptAfterTimeLimit: Math.max(1000, deadline - Date.now()),
          markInterruptAsFailure: false,
        };
  try {
    await fc.assert(counted as fc.IAsyncPropertyWithHooks<Ts>, { numRuns, seed, ...limit });
  } catch (err) {
    const first = String(err instanceof Error ? err.message : err).split('\n')[0];
    recordFailure(seed, `${label}: ${first}`);
    throw err;
  } finally {
    counts.runs[label] = (counts.runs[label] ?? 0) + ran;
  }
}

/**
 * Writes this file's counts as JSON to `BLOCKSNAP_SOAK_REPORT_DIR` (if set)
 * under a name of its own, so rounds and files never overwrite each other.
 */
export function writeSoakReport(suite: string): void {
  const dir = process.env.BLOCKSNAP_SOAK_REPORT_DIR;
  if (dir === undefined || dir === '') return;
  counts.suite = suite;
  mkdirSync(dir, { recursive: true });
  const name = `${suite.replace(/[^a-z0-9-]+/gi, '_')}-${process.pid}-${Date.now()}-${randomInt(1e9)}.json`;
  writeFileSync(join(dir, name), `${JSON.stringify(counts, null, 2)}\n`);
}
