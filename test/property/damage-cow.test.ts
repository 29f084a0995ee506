import { afterAll, describe, it } from 'vitest';
import { SOAK_TIMEOUT, writeSoakReport } from '../support/soak.js';
import {
  cowDamageTarget,
  cowOverCowDamageTarget,
  selectiveDamageTarget,
} from './damage-cow-targets.js';
import { formatDamageTable, runDamageTrials } from './damage-harness.js';

/**
 * Damage trials on the COW devices (docs/ARCHITECTURE.md, "Snapshot rules"
 * 5 and 6): one damaged place in a COW store after `close()` or after
 * `flush()` and a dropped process is reported (`ECORRUPT`) or harmless,
 * never silently wrong and never a lost snapshot. The origin is not
 * damaged: it holds user data without checksums, like a raw disk.
 */
describe('damage trials: COW devices', () => {
  it(
    'CowSnapshotDevice',
    async () => {
      await runDamageTrials(cowDamageTarget, {
        fixedSeed: 0xda0100,
        ci: 30,
        soak: 400,
        perKind: 2,
      });
    },
    SOAK_TIMEOUT,
  );

  it(
    'SelectiveSnapshotDevice',
    async () => {
      await runDamageTrials(selectiveDamageTarget, {
        fixedSeed: 0xda0200,
        ci: 30,
        soak: 400,
        perKind: 2,
      });
    },
    SOAK_TIMEOUT,
  );

  it(
    'COW over COW',
    async () => {
      await runDamageTrials(cowOverCowDamageTarget, {
        fixedSeed: 0xda0300,
        ci: 20,
        soak: 300,
        perKind: 2,
      });
    },
    SOAK_TIMEOUT,
  );

  afterAll(() => {
    console.log(`damage trials, COW devices:\n${formatDamageTable()}`);
    writeSoakReport('damage-cow');
  });
});
