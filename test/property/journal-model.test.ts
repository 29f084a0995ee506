import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { JournalRig, type JournalRigOptions } from '../support/journal-rig.js';
import { BLOCKS, BS, JournalModel, journalCommands, journalCrashes } from './journal-commands.js';

const SOAK = process.env.BLOCKSNAP_SOAK === '1';

/**
 * `ringBytes` small enough that a few writes fill the journal, so
 * checkpoints (manual, forced by a full journal, and in the background at
 * `checkpointAt`) and ring wrap-around happen in most runs.
 */
async function runModel(
  options: { crashWeight: number; maxCommands: number; numRuns: number; seed: number },
  rig: JournalRigOptions,
) {
  await fc.assert(
    fc.asyncProperty(journalCommands(options.crashWeight, options.maxCommands), async (cmds) => {
      const model = new JournalModel();
      const real = await JournalRig.create({ blockSize: BS, blocks: BLOCKS, ...rig });
      try {
        await fc.asyncModelRun(() => ({ model, real }), cmds);
      } finally {
        if (real.power.isOn) await real.device.close().catch(() => {});
      }
    }),
    { numRuns: SOAK ? 5000 : options.numRuns, seed: options.seed },
  );
}

describe('JournalDevice against the reference model', () => {
  it('matches the model through writes, reads, flushes, point-in-time reads, checkpoints and reopens', async () => {
    await runModel(
      { crashWeight: 0, maxCommands: 40, numRuns: 120, seed: 0x10a1 },
      { ringBytes: 12 * 1024, checkpointAt: 1 },
    );
  });

  it('recovers from power cuts at random points, mid-checkpoint included (checkpoints only when full)', async () => {
    await runModel(
      { crashWeight: 3, maxCommands: 25, numRuns: 120, seed: 0x10a2 },
      { ringBytes: 12 * 1024, checkpointAt: 1 },
    );
  });

  it('recovers from power cuts with background checkpoints racing the writes', async () => {
    await runModel(
      { crashWeight: 3, maxCommands: 25, numRuns: 120, seed: 0x10a3 },
      { ringBytes: 10 * 1024, checkpointAt: 0.4 },
    );
  });

  it('the same with some device operations delayed, so the race interleaves at every I/O', async () => {
    await runModel(
      { crashWeight: 3, maxCommands: 20, numRuns: 40, seed: 0x10a4 },
      // A timer on one operation in five: slow enough for commands to overtake them.
      { ringBytes: 10 * 1024, checkpointAt: 0.4, latency: (op) => (op.index % 5 === 4 ? 1 : 0) },
    );
  });

  afterAll(() => {
    if (!SOAK) expect(journalCrashes.value).toBeGreaterThanOrEqual(200);
  });
});
