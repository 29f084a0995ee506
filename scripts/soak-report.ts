// Merges the JSON counts the soak's test files wrote to a directory
// (test/support/soak.ts, writeSoakReport) and prints them on one screen:
// power cuts, damage trials and their outcomes, EIO injections, the
// injected failures the failure model's stacks survived, property runs, and
// every failure with the seed that replays it.
// Run by scripts/soak.ts after its rounds; by hand: `tsx scripts/soak-report.ts <dir>`.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const OUTCOMES = ['reported-open', 'reported-read', 'harmless', 'silent', 'snapshot-lost'] as const;
type Outcome = (typeof OUTCOMES)[number];

/** One file's counts, as test/support/soak.ts writes them; every field but `suite` may be absent. */
interface SoakCounts {
  suite: string;
  runs?: Record<string, number>;
  powerCuts?: Record<string, number>;
  damageTrials?: Record<string, Partial<Record<Outcome, number>>>;
  eioInjections?: Record<string, number>;
  injectedFailures?: Record<string, number>;
  failures?: { seed: number; what: string }[];
}

/** The sums over every file. */
export interface MergedSoak {
  files: number;
  suites: Set<string>;
  runs: Map<string, number>;
  powerCuts: Map<string, number>;
  damageTrials: Map<string, Record<Outcome, number>>;
  eioInjections: Map<string, number>;
  injectedFailures: Map<string, number>;
  failures: { seed: number; what: string }[];
}

function add(into: Map<string, number>, from: Record<string, number> | undefined): void {
  for (const [key, n] of Object.entries(from ?? {})) into.set(key, (into.get(key) ?? 0) + n);
}

/** Reads and sums every `*.json` in `dir`. */
export function mergeSoak(dir: string): MergedSoak {
  const merged: MergedSoak = {
    files: 0,
    suites: new Set(),
    runs: new Map(),
    powerCuts: new Map(),
    damageTrials: new Map(),
    eioInjections: new Map(),
    injectedFailures: new Map(),
    failures: [],
  };
  let names: string[];
  try {
    names = readdirSync(dir).filter((name) => name.endsWith('.json'));
  } catch {
    return merged;
  }
  for (const name of names.sort()) {
    const counts = JSON.parse(readFileSync(join(dir, name), 'utf8')) as SoakCounts;
    merged.files++;
    merged.suites.add(counts.suite);
    add(merged.runs, counts.runs);
    add(merged.powerCuts, counts.powerCuts);
    add(merged.eioInjections, counts.eioInjections);
    add(merged.injectedFailures, counts.injectedFailures);
    for (const [stack, row] of Object.entries(counts.damageTrials ?? {})) {
      const sum =
        merged.damageTrials.get(stack) ??
        (Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<Outcome, number>);
      for (const o of OUTCOMES) sum[o] += row[o] ?? 0;
      merged.damageTrials.set(stack, sum);
    }
    merged.failures.push(...(counts.failures ?? []));
  }
  return merged;
}

const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
const num = (n: number) => n.toLocaleString('en-US');

/** Rows of cells as aligned text: the first column left, the rest right. */
function table(rows: string[][]): string[] {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  '),
  );
}

function section(title: string, counts: Map<string, number>): string[] {
  const lines = [`${title}: ${num(total(counts))}`];
  if (counts.size === 0) return [...lines, '  (none reported)'];
  const rows = [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => [`  ${k}`, num(n)]);
  return [...lines, ...table(rows)];
}

/** The one-screen report; failures beyond `maxFailures` are counted, not listed. */
export function formatSoak(
  merged: MergedSoak,
  context: { rounds?: number; minutes?: number; dir: string; maxFailures?: number },
): string {
  const lines: string[] = [];
  const head = [`blocksnap soak report: ${merged.files} files from ${merged.suites.size} suites`];
  if (context.rounds !== undefined) head.push(`${context.rounds} rounds`);
  if (context.minutes !== undefined) head.push(`${context.minutes.toFixed(1)} min`);
  lines.push(head.join(', '));
  lines.push(...section('Power cuts', merged.powerCuts));
  const trials = [...merged.damageTrials.values()].reduce(
    (sum, row) => sum + OUTCOMES.reduce((s, o) => s + row[o], 0),
    0,
  );
  lines.push(`Damage trials: ${num(trials)}`);
  if (merged.damageTrials.size > 0) {
    const rows = [
      ['  device/stack', ...OUTCOMES],
      ...[...merged.damageTrials].map(([stack, row]) => [
        `  ${stack}`,
        ...OUTCOMES.map((o) => num(row[o])),
      ]),
    ];
    lines.push(...table(rows));
  } else {
    lines.push('  (none reported)');
  }
  lines.push(...section('EIO injections', merged.eioInjections));
  lines.push(
    ...section('Injected failures survived (failure model, per stack)', merged.injectedFailures),
  );
  lines.push(`Property runs: ${num(total(merged.runs))} in ${merged.runs.size} properties`);
  const max = context.maxFailures ?? 12;
  lines.push(`Failures: ${merged.failures.length}`);
  for (const f of merged.failures.slice(0, max)) {
    const what = f.what.length > 160 ? `${f.what.slice(0, 157)}...` : f.what;
    lines.push(`  BLOCKSNAP_SEED=${f.seed}  ${what}`);
  }
  if (merged.failures.length > max) {
    lines.push(`  ... and ${merged.failures.length - max} more: the JSON files in ${context.dir}`);
  }
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv[2] ?? process.env.BLOCKSNAP_SOAK_REPORT_DIR;
  if (dir === undefined) {
    console.error('usage: tsx scripts/soak-report.ts <dir> (or BLOCKSNAP_SOAK_REPORT_DIR)');
    process.exit(2);
  }
  const merged = mergeSoak(dir);
  console.log(formatSoak(merged, { dir }));
  process.exit(merged.failures.length > 0 ? 1 : 0);
}
