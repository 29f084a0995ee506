import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  assertProperty,
  countInjectedFailures,
  SOAK,
  SOAK_TIMEOUT,
  writeSoakReport,
} from '../support/soak.js';
import { failureCommands } from './failure-commands.js';
import { coverage, FailureRun } from './failure-run.js';
import { FAILURE_STACKS, type FailureStack } from './failure-stacks.js';

/**
 * Per stack: the fixed seed and the runs of a CI run (about 40 s for the
 * file on the project's 2-core machine); a soak draws fresh seeds and runs
 * 20 times as many.
 */
const PLAN: Record<string, { seed: number; numRuns: number }> = {
  cow: { seed: 0xfa1101, numRuns: 150 },
  selective: { seed: 0xfa1102, numRuns: 150 },
  'journal-over-cow': { seed: 0xfa1103, numRuns: 150 },
  'cow-over-cow': { seed: 0xfa1104, numRuns: 120 },
  'copy-job': { seed: 0xfa1105, numRuns: 200 },
};

let completed = 0;

/**
 * One run: the commands, then, with nothing armed, a close and a reopen
 * that must find what the model allows, and whatever the stack must have
 * done by then; counts the failures injected (and survived) under `stack`.
 */
async function runCommands(
  stack: FailureStack,
  cmds: Iterable<fc.AsyncCommand<FailureRun, FailureRun>>,
): Promise<void> {
  const run = await FailureRun.create(stack);
  await fc.asyncModelRun(() => ({ model: run, real: run }), cmds);
  run.arm.armed.clear();
  await run.reopen('final close() + open', 'close');
  await run.subject.finish(`${stack.name}: after the last reopen`);
  await run.subject.close();
  countInjectedFailures(stack.name, run.arm.injected);
}

/*
 * Issue 20, the failure property test: fast-check commands over every
 * stack, with "the next N operations of a disk fail" armed at any point and
 * the application going on after each rejection, then close+reopen or
 * crash+reopen; after every command the device and its snapshots equal one
 * of the model's worlds (failure-worlds.ts): a rejected write leaves its
 * bytes either way, a rejected snapshot operation has not happened or has
 * happened completely, and what a reopen finds is what the device showed
 * (or, after a power cut, what a flush made durable). Fail-stop is checked
 * as documented: every write and snapshot operation refused until reopen.
 */
describe('failure model: every stack against the reference model under injected I/O failures', () => {
  for (const stack of FAILURE_STACKS) {
    const { seed, numRuns } = PLAN[stack.name]!;
    it(
      `${stack.name}: a rejected operation has not happened or has happened whole, and acknowledged flushed writes survive (${stack.disks.join(', ')} failing)`,
      async () => {
        await assertProperty(
          `failure model ${stack.name}`,
          fc.asyncProperty(failureCommands(stack, 30), (cmds) => runCommands(stack, cmds)),
          { seed, numRuns, soakRuns: 20 * numRuns },
        );
        completed++;
      },
      SOAK_TIMEOUT,
    );
  }

  afterAll(() => {
    writeSoakReport('failure-model');
    if (SOAK || completed < FAILURE_STACKS.length) return;
    // Not vacuous: failures were injected, calls rejected, fail-stops and
    // forks of rejected snapshot operations met, devices reopened.
    expect(coverage.injected).toBeGreaterThanOrEqual(300);
    for (const kind of ['write', 'snapshot-op', 'read', 'flush', 'close']) {
      expect(coverage.rejected.get(kind) ?? 0, `${kind} rejections`).toBeGreaterThanOrEqual(10);
    }
    expect(coverage.stops).toBeGreaterThanOrEqual(20);
    expect(coverage.forks).toBeGreaterThanOrEqual(40);
    expect(coverage.reopens).toBeGreaterThanOrEqual(500);
  });
});
