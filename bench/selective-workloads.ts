/**
 * The SelectiveSnapshotDevice rows: what a write costs where no snapshot
 * designates the block (claims 25, 33: I/O to other ranges goes on as if
 * there were no snapshot), against FileDevice writes measured in the same
 * run (`fd-write`). Same machinery as workloads.ts: the origin and store
 * files are preconditioned right before the row, offsets come from the same
 * seeded generators, the load is a closed loop of `cfg.inFlight` workers.
 */
import { precondition, promised } from './harness.js';
import {
  type BenchConfig,
  paths,
  type Row,
  type RowResult,
  result,
  run,
  storeSizeFor,
  workload,
} from './workloads.js';

/** The share of the device the row's snapshot designates: a "database" range at the front. */
const DESIGNATED = 0.1;

/**
 * One snapshot designating the first tenth of the device, then 4 KiB writes
 * at random blocks of the other nine tenths: none needs a copy, and the row
 * checks that none made one.
 */
async function selectiveOutsideWriteRow(cfg: BenchConfig): Promise<RowResult> {
  const { origin, store } = paths(cfg);
  precondition(origin, cfg.size, cfg.seed + 1);
  precondition(store, storeSizeFor(cfg.size, cfg.blockSize), cfg.seed + 2);
  const device = await cfg.lib.SelectiveSnapshotDevice.create(
    await cfg.lib.FileDevice.open(origin, { blockSize: cfg.blockSize }),
    await cfg.lib.FileDevice.open(store, { blockSize: cfg.blockSize }),
  );
  try {
    const bs = cfg.blockSize;
    const blocks = cfg.size / bs;
    const designated = Math.ceil(blocks * DESIGNATED);
    await device.snapshot({ include: [{ offset: 0, length: designated * bs }], name: 'database' });
    const { offset, buffers } = workload(cfg);
    const outside = blocks - designated;
    const r = await run(
      cfg,
      promised((w) => device.write((designated + ((offset(w) / bs) % outside)) * bs, buffers[w]!)),
    );
    if (device.preservedBlocks !== 0) {
      throw new Error(`${device.preservedBlocks} blocks were preserved outside the designation`);
    }
    return result(r, [
      `origin and store FileDevices (files preconditioned); 1 snapshot designating the first ${DESIGNATED * 100} % of the device; random blocks of the other ${100 - DESIGNATED * 100} %; nothing preserved`,
    ]);
  } finally {
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
