import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  assertProperty,
  countPowerCuts,
  SOAK,
  SOAK_TIMEOUT as TIMEOUT,
  writeSoakReport,
} from '../support/soak.js';
import { coverage, planArb, runPlan } from './copy-job-harness.js';

let completed = 0;

/** One property over `numRuns` plans (many more in a soak). */
function property(title: string, crash: boolean, maxOps: number, seed: number): void {
  it(
    title,
    async () => {
      await assertProperty(
        `copy job model ${seed.toString(16)}`,
        fc.asyncProperty(fc.scheduler(), planArb({ crash, maxOps }), runPlan),
        { numRuns: 150, soakRuns: 4000, seed },
      );
      completed++;
    },
    TIMEOUT,
  );
}

describe('SnapshotCopyJob against a model, under a random schedule', () => {
  property(
    'copies the range as it was at start while reads and writes race the copier, both policies, any chunk size; aborts at random points',
    false,
    14,
    0xc0b1,
  );
  property(
    'still ends with an exact copy after power cuts under source, destination and map store, and resumes',
    true,
    10,
    0xc0b2,
  );

  afterAll(() => {
    countPowerCuts('SnapshotCopyJob', coverage.powerCuts);
    writeSoakReport('copy-job-model');
    if (SOAK || completed < 2) return;
    // Not vacuous: every path was taken, many times.
    expect(coverage.queuedWrites).toBeGreaterThanOrEqual(50);
    expect(coverage.copyFirstBytes).toBeGreaterThan(0);
    expect(coverage.aborted).toBeGreaterThanOrEqual(15);
    expect(coverage.resumedAfterAbort).toBeGreaterThanOrEqual(3);
    expect(coverage.reads).toBeGreaterThanOrEqual(100);
    expect(coverage.cutMidCopy).toBeGreaterThanOrEqual(40);
    expect(coverage.cutInStart).toBeGreaterThanOrEqual(3);
    expect(coverage.cutInResume).toBeGreaterThanOrEqual(10);
  });
});
