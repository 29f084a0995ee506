import { rm } from 'node:fs/promises';
import {
  type BlockDevice,
  BlockDeviceError,
  type CopyReport,
  FileDevice,
  SnapshotCopyJob,
  type SnapshotCopyJobOptions,
} from '../index.js';
import { type Command, type CommandContext, Interrupted, stringOption } from './command.js';
import { exists, findSnapshot, type OpenTarget, openTarget, parseRef } from './targets.js';
import { formatBytes, parseSize } from './units.js';
import { type OpenVolume, openVolume } from './volume.js';

/** The map store's file is whole blocks of this size. */
const MAP_BLOCK = 4096;

/** The source of a copy: a volume's live content or one of its snapshots. */
interface CopySource {
  readonly device: BlockDevice;
  readonly volume: OpenVolume;
  /** Closes the snapshot handle, if any, and the volume. */
  close(): Promise<void>;
}

async function openSource(text: string): Promise<CopySource> {
  const ref = await parseRef(text);
  const volume = await openVolume(ref.volume);
  if (ref.snapshot === undefined) {
    // The job owns the volume's top from `start` on: `job.device.close()` closes it.
    return { device: volume.top, volume, close: () => volume.close() };
  }
  try {
    const info = findSnapshot(volume.top, ref.snapshot, ref.volume);
    const handle = await volume.top.openSnapshot(info.id);
    return {
      device: handle,
      volume,
      close: async () => {
        await handle.close();
        await volume.close();
      },
    };
  } catch (err) {
    await volume.close();
    throw err;
  }
}

/**
 * Starts the job, or resumes it from `mapPath` when that file holds a map
 * (left by an interrupted run); a new map file is sized by the job.
 */
async function startJob(
  options: SnapshotCopyJobOptions,
  mapPath: string | undefined,
  destinationCreated: boolean,
  context: CommandContext,
): Promise<{ job: SnapshotCopyJob; map: FileDevice | undefined; resumed: boolean }> {
  if (mapPath === undefined)
    return { job: await SnapshotCopyJob.start(options), map: undefined, resumed: false };
  if (await exists(mapPath)) {
    if (destinationCreated) {
      throw new BlockDeviceError(
        'EINVAL',
        `${mapPath} is the map of a copy whose destination is gone: remove the map to start over`,
      );
    }
    const map = await FileDevice.open(mapPath, { blockSize: MAP_BLOCK });
    try {
      const job = await SnapshotCopyJob.resume({
        ...options,
        destination: options.destination as BlockDevice,
        mapStore: map,
      });
      context.note(
        `resuming from ${mapPath}: ${formatBytes(job.progress.copiedBytes)} of ${formatBytes(job.progress.totalBytes)} copied already`,
      );
      return { job, map, resumed: true };
    } catch (err) {
      await map.close();
      throw err;
    }
  }
  const bytes = SnapshotCopyJob.mapStoreBytes(options);
  const size = Math.ceil(bytes / MAP_BLOCK) * MAP_BLOCK;
  const map = await FileDevice.open(mapPath, { size, blockSize: MAP_BLOCK, create: true });
  try {
    return { job: await SnapshotCopyJob.start({ ...options, mapStore: map }), map, resumed: false };
  } catch (err) {
    await map.close();
    await rm(mapPath, { force: true });
    throw err;
  }
}

const copy: Command = {
  name: 'copy',
  summary:
    'copy a volume (or a snapshot of it) to an image file or another volume, as it was at the start',
  usage: '<volume>[@<snapshot>] <destination> [--map FILE] [--chunk-size SIZE]',
  positionals: [2, 2],
  options: {
    map: { type: 'string' },
    'chunk-size': { type: 'string' },
  },
  optionHelp: [
    [
      '--map FILE',
      'keep the copy map there: an interrupted copy resumes when run again; removed once done',
    ],
    [
      '--chunk-size SIZE',
      'the unit copied and tracked, a power of two from 512 to 64M (default 64k)',
    ],
  ],
  example: 'blocksnap copy ./vm1 /backup/vm1.img --map /backup/vm1.map',
  async run([sourceText, destinationPath], values, context) {
    const mapPath = stringOption(values, 'map');
    const chunkText = stringOption(values, 'chunk-size');
    const chunkSize = chunkText === undefined ? undefined : parseSize(chunkText, '--chunk-size');
    const source = await openSource(sourceText!);
    let destination: OpenTarget | undefined;
    let job: SnapshotCopyJob | undefined;
    let map: FileDevice | undefined;
    let resumed = false;
    const bar = context.progress('copy');
    let report: CopyReport;
    try {
      destination = await openTarget(destinationPath!, source.device);
      const options: SnapshotCopyJobOptions = {
        source: source.device,
        destination: destination.device,
        length: source.device.size,
        chunkSize,
        signal: context.signal,
      };
      ({ job, map, resumed } = await startJob(options, mapPath, destination.created, context));
      const started = job;
      started.on('progress', (p) => bar.update(p.copiedBytes, p.totalBytes));
      bar.update(started.progress.copiedBytes, started.progress.totalBytes);
      report = await started.done;
      bar.finish();
      await destination.device.flush();
    } catch (err) {
      if (context.signal.aborted) {
        bar.stop('interrupted');
        throw new Interrupted(
          mapPath === undefined
            ? `copy stopped; ${destinationPath} is incomplete. Run it again to start over (with --map FILE an interrupted copy resumes instead)`
            : `copy stopped; ${mapPath} records what is copied: run the same command again to resume`,
        );
      }
      bar.stop('failed');
      throw err;
    } finally {
      // `job.device` owns the source device from `start` on; closing it closes the source.
      if (job !== undefined) await job.device.close().catch(() => {});
      await source.close().catch(() => {});
      await destination?.close().catch(() => {});
      await map?.close().catch(() => {});
    }
    // The copy is whole and durable: a later run with this map would resume
    // a copy that is done, so the map goes.
    if (mapPath !== undefined) await rm(mapPath, { force: true });
    const json = {
      source: sourceText,
      destination: destinationPath,
      map: mapPath ?? null,
      resumed,
      ...report,
    };
    const text = `copied ${sourceText} to ${destinationPath}: ${formatBytes(report.totalBytes)}${report.resumedBytes > 0 ? ` (${formatBytes(report.resumedBytes)} by an earlier run)` : ''} in ${(report.durationMs / 1000).toFixed(1)} s`;
    return { text, json };
  },
};

/** `copy`. */
export const copyCommands: readonly Command[] = [copy];
