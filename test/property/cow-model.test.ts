import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { CowRig } from '../support/cow-rig.js';
import {
  assertProperty,
  countPowerCuts,
  SOAK,
  SOAK_TIMEOUT,
  writeSoakReport,
} from '../support/soak.js';
import { cowCommands, crashCount } from './cow-commands.js';
import { Model } from './cow-harness.js';

async function runModel(
  label: string,
  crashWeight: number,
  maxCommands: number,
  numRuns: number,
  seed: number,
) {
  await assertProperty(
    label,
    fc.asyncProperty(cowCommands(crashWeight, maxCommands), async (cmds) => {
      const model = await Model.create();
      const real = await CowRig.create();
      try {
        await fc.asyncModelRun(() => ({ model, real }), cmds);
      } finally {
        await real.dispose().catch(() => {});
      }
    }),
    { numRuns, soakRuns: 5000, seed },
  );
}

describe('CowSnapshotDevice against the reference model', () => {
  it(
    'matches the model through writes, reads, flushes, snapshots, deletes, restores and reopens',
    async () => {
      await runModel('cow model', 0, 40, 200, 0x5eed01);
    },
    SOAK_TIMEOUT,
  );

  it(
    'recovers from power cuts at random points, mid-snapshot, mid-delete and mid-restore included',
    async () => {
      await runModel('cow model, power cuts', 3, 25, 200, 0x5eed02);
    },
    SOAK_TIMEOUT,
  );

  afterAll(() => {
    countPowerCuts('CowSnapshotDevice', crashCount.value);
    writeSoakReport('cow-model');
    // The issue asks for at least 200 seeded power cuts per CI run.
    if (!SOAK) expect(crashCount.value).toBeGreaterThanOrEqual(200);
  });
});
