/**
 * The SelectiveSnapshotDevice rows: what a write costs where no snapshot
 * designates the block (claims 25, 33: I/O to other ranges goes on as if
 * there were no snapshot), against FileDevice writes measured alongside in
 * alternating bursts. Same machinery as workloads.ts: the origin and store
 * files are preconditioned right before the row, offsets come from the same
 * seeded generators, the load is a closed loop of `cfg.inFlight` workers.
 */
import type { BlockDevice } from '../src/index.js';
import { alternating, describeBursts, rate, type Side, sideResult } from './alternating.js';
import { precondition, promised } from './harness.js';
import {
  type BenchConfig,
  paths,
  type Row,
  type RowResult,
  storeSizeFor,
  workload,
} from './workloads.js';

/** The share of the device the row's snapshot designates: a "database" range at the front. */
const DESIGNATED = 0.1;

/**
 * One snapshot designating the first tenth of the device, then 4 KiB writes
 * at random blocks of the other nine tenths — none needs a copy, and the row
 * checks that none made one — in alternating bursts with the same writes
 * through a plain FileDevice on the same origin file: the row's ratio.
 */
async function selectiveOutsideWriteRow(cfg: BenchConfig): Promise<RowResult> {
  const { origin, store } = paths(cfg);
  precondition(origin, cfg.size, cfg.seed + 1);
  precondition(store, storeSizeFor(cfg.size, cfg.blockSize), cfg.seed + 2);
  const device = await cfg.lib.SelectiveSnapshotDevice.create(
    await cfg.lib.FileDevice.open(origin, { lock: false, blockSize: cfg.blockSize }),
    await cfg.lib.FileDevice.open(store, { lock: false, blockSize: cfg.blockSize }),
  );
  // The baseline: a second handle on the origin file, written at the same offsets.
  const file = await cfg.lib.FileDevice.open(origin, { lock: false, blockSize: cfg.blockSize });
  try {
    const bs = cfg.blockSize;
    const blocks = cfg.size / bs;
    const designated = Math.ceil(blocks * DESIGNATED);
    await device.snapshot({ include: [{ offset: 0, length: designated * bs }], name: 'database' });
    const outside = blocks - designated;
    const writes = (dev: BlockDevice): Side => {
      const { offset, buffers } = workload(cfg);
      return {
        issue: promised((w) =>
          dev.write((designated + ((offset(w) / bs) % outside)) * bs, buffers[w]!),
        ),
      };
    };
    const r = await alternating(cfg, [writes(device), writes(file)]);
    if (device.preservedBlocks !== 0) {
      throw new Error(`${device.preservedBlocks} blocks were preserved outside the designation`);
    }
    return sideResult(r, 0, [
      `origin and store FileDevices (files preconditioned); 1 snapshot designating the first ${DESIGNATED * 100} % of the device; random blocks of the other ${100 - DESIGNATED * 100} %; nothing preserved`,
      `against the same writes through a second FileDevice on the origin file: ${Math.round(rate(r, 1)).toLocaleString('en-US')} ops/s; ${describeBursts(cfg, r)}`,
    ]);
  } finally {
    await file.close();
    await device.close();
  }
}

/** The selective-snapshot rows, in table order. */
export function selectiveRows(_cfg: BenchConfig): Row[] {
  return [
    {
      id: 'sel-write-outside',
      label: 'SelectiveSnapshotDevice write outside the designated range',
      kind: 'write',
      run: selectiveOutsideWriteRow,
    },
  ];
}
