import { afterAll, describe, it } from 'vitest';
import { SOAK_TIMEOUT, writeSoakReport } from '../support/soak.js';
import { formatDamageTable, runDamageTrials } from './damage-harness.js';
import { journalDamageTarget, journalOverCowDamageTarget } from './damage-journal-targets.js';

/**
 * Damage trials on the journal (docs/ARCHITECTURE.md, "Snapshot rules" 5
 * and 6): one damaged place in the journal store (and, over COW, in the COW
 * store) after `close()` or after `flush()` and a dropped process is
 * reported (`ECORRUPT`) or harmless, never silently wrong and never a lost
 * snapshot. Production's raw device is not damaged: it holds user data
 * without checksums, like a raw disk.
 */
describe('damage trials: JournalDevice', () => {
  it(
    'JournalDevice over MemoryDevice',
    async () => {
      await runDamageTrials(journalDamageTarget, {
        fixedSeed: 0xda0400,
        ci: 30,
        soak: 400,
        perKind: 2,
      });
    },
    SOAK_TIMEOUT,
  );

  it(
    'JournalDevice over CowSnapshotDevice',
    async () => {
      await runDamageTrials(journalOverCowDamageTarget, {
        fixedSeed: 0xda0500,
        ci: 20,
        soak: 300,
        perKind: 2,
      });
    },
    SOAK_TIMEOUT,
  );

  afterAll(() => {
    console.log(`damage trials, JournalDevice:\n${formatDamageTable()}`);
    writeSoakReport('damage-journal');
  });
});
