// `npm run test:soak`: the property, crash and damage tests with fresh seeds
// (BLOCKSNAP_SOAK=1), then the one-screen report of what they survived
// (scripts/soak-report.ts), printed even when a test failed; exits non-zero
// if any round failed.
//
// BLOCKSNAP_SOAK_MINUTES=60 repeats rounds, each with fresh seeds, until the
// time is used; the tests see the deadline (BLOCKSNAP_SOAK_DEADLINE) and stop
// drawing new runs at it, so the last round ends near it. Arguments are
// passed to vitest as file filters (default: the damage trials, then the
// rest of test/property and the FaultyDevice crash tests). Counts go to
// BLOCKSNAP_SOAK_REPORT_DIR, or a fresh temporary directory.
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSoak, mergeSoak } from './soak-report.js';

const started = Date.now();
const minutes = Number(process.env.BLOCKSNAP_SOAK_MINUTES ?? '0');
if (!Number.isFinite(minutes) || minutes < 0) {
  console.error(
    `BLOCKSNAP_SOAK_MINUTES=${process.env.BLOCKSNAP_SOAK_MINUTES} is not a number of minutes`,
  );
  process.exit(2);
}
const deadline = minutes > 0 ? started + minutes * 60_000 : undefined;
const dir = process.env.BLOCKSNAP_SOAK_REPORT_DIR || mkdtempSync(join(tmpdir(), 'blocksnap-soak-'));
const filters = process.argv.slice(2);
// By default each round runs the damage trials first, then the rest: vitest
// starts the longest files first, and the model tests alone would use up a
// timed round before the damage trials began.
const phases =
  filters.length > 0
    ? [filters]
    : [
        ['test/property/damage-'],
        [
          'test/property',
          'test/testing/faulty-device.test.ts',
          '--exclude',
          'test/property/damage-*.test.ts',
        ],
      ];

let rounds = 0;
let failed = false;
do {
  rounds++;
  for (const args of phases) {
    console.log(`\n[soak] round ${rounds}: vitest run ${args.join(' ')} (counts in ${dir})`);
    const result = spawnSync('npx', ['vitest', 'run', ...args], {
      stdio: 'inherit',
      env: {
        ...process.env,
        BLOCKSNAP_SOAK: '1',
        BLOCKSNAP_SOAK_REPORT_DIR: dir,
        ...(deadline === undefined ? {} : { BLOCKSNAP_SOAK_DEADLINE: String(deadline) }),
      },
    });
    if (result.status !== 0) failed = true;
  }
  // A seed given to replay a failure runs once, not for an hour.
} while (deadline !== undefined && Date.now() < deadline && !process.env.BLOCKSNAP_SEED);

console.log(
  `\n${formatSoak(mergeSoak(dir), { rounds, minutes: (Date.now() - started) / 60_000, dir })}`,
);
if (failed) console.log('\n[soak] FAILED: a round had failing tests (see above)');
process.exit(failed ? 1 : 0);
