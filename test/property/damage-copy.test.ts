import { afterAll, describe, it } from 'vitest';
import { SOAK_TIMEOUT, writeSoakReport } from '../support/soak.js';
import { copyMapDamageTarget } from './damage-copy-target.js';
import { formatDamageTable, runDamageTrials } from './damage-harness.js';

/**
 * Damage trials on a copy job's map store (docs/ARCHITECTURE.md, "Snapshot
 * rules" 6): one damaged place in the map store, after the copy finished or
 * after the process died mid-copy, makes `resume` fail with `ECORRUPT` or
 * still ends with an exact copy; never a destination that differs without
 * an error.
 */
describe('damage trials: SnapshotCopyJob', () => {
  it(
    'the map store',
    async () => {
      await runDamageTrials(copyMapDamageTarget, {
        fixedSeed: 0xda0600,
        ci: 40,
        soak: 600,
        perKind: 2,
      });
    },
    SOAK_TIMEOUT,
  );

  afterAll(() => {
    console.log(`damage trials, SnapshotCopyJob:\n${formatDamageTable()}`);
    writeSoakReport('damage-copy');
  });
});
