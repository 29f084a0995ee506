import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { CowRig } from '../support/cow-rig.js';
import { cowCommands, crashCount } from './cow-commands.js';
import { Model } from './cow-harness.js';

const SOAK = process.env.BLOCKSNAP_SOAK === '1';

async function runModel(crashWeight: number, maxCommands: number, numRuns: number, seed: number) {
  await fc.assert(
    fc.asyncProperty(cowCommands(crashWeight, maxCommands), async (cmds) => {
      const model = await Model.create();
      const real = await CowRig.create();
      try {
        await fc.asyncModelRun(() => ({ model, real }), cmds);
      } finally {
        await real.dispose().catch(() => {});
      }
    }),
    { numRuns, seed },
  );
}

describe('CowSnapshotDevice against the reference model', () => {
  it('matches the model through writes, reads, flushes, snapshots, deletes, restores and reopens', async () => {
    await runModel(0, 40, SOAK ? 5000 : 200, 0x5eed01);
  });

  it('recovers from power cuts at random points, mid-snapshot, mid-delete and mid-restore included', async () => {
    await runModel(3, 25, SOAK ? 5000 : 200, 0x5eed02);
  });

  afterAll(() => {
    // The issue asks for at least 200 seeded power cuts per CI run.
    if (!SOAK) expect(crashCount.value).toBeGreaterThanOrEqual(200);
  });
});
