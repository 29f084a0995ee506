import { CheckReportBuilder, io } from '../base/index.js';
import type { BlockDevice, CheckReport } from '../device.js';
import { type CopyGeometry, chunkCount, decodeSlot, slotBytes } from './copy-map.js';

/*
 * `check()` of a copy job's map store (docs/ARCHITECTURE.md, "check()"):
 * both slots, each against its CRC-32 and the job's geometry. A resume
 * takes the valid slot of the highest generation, so a damaged slot is
 * reported as keeping the map from being resumed as it is: if it was the
 * newer one, the older map calls chunks uncopied that the source may have
 * been written over since, and copying them again would copy the new data.
 */

/**
 * Reads both slots of `store`; `generation`, when a running job's map
 * gives it, is the one its last commit wrote (in slot `generation % 2`).
 * @throws `EIO` (with `cause`) if a store read fails.
 */
export async function checkMapStore(
  geometry: CopyGeometry,
  store: BlockDevice,
  generation?: number,
): Promise<CheckReport> {
  const report = new CheckReportBuilder();
  const size = slotBytes(chunkCount(geometry));
  const both = report.read(await io('map store read', store.read(0, 2 * size)));
  let valid = 0;
  for (const slot of [0, 1]) {
    const at = slot * size;
    const where = `copy map slot ${slot} at store offset ${at}`;
    report.counts.superblocks++;
    const decoded = decodeSlot(both.subarray(at, at + size));
    if (typeof decoded === 'string') {
      report.problem('copy-map', at, `${where} ${decoded}`, true);
      continue;
    }
    const other = (Object.keys(geometry) as (keyof CopyGeometry)[]).find(
      (key) => decoded.geometry[key] !== geometry[key],
    );
    if (other !== undefined) {
      report.problem(
        'copy-map',
        at,
        `${where} describes another copy: ${other} ${decoded.geometry[other]}, not ${geometry[other]}`,
        true,
      );
      continue;
    }
    if (generation !== undefined && slot === generation % 2 && decoded.generation !== generation) {
      report.problem(
        'copy-map',
        at,
        `${where} holds generation ${decoded.generation}, not the ${generation} the job wrote last`,
        true,
      );
      continue;
    }
    valid++;
    report.counts.tables++;
    report.counts.records += chunkCount(geometry);
  }
  if (valid === 0) report.reopens = false;
  return report.build([], []);
}
