import {
  BlockDeviceError,
  type CheckOptions,
  type CheckReport,
  type VolumeCheckReport,
} from '../index.js';
import { type Command, type CommandContext, stringOption } from './command.js';
import { formatBytes, parseSize } from './units.js';
import type { VirtualLayer } from './virtual-volume-dir.js';
import { createVolume, openVolume, volumeFiles } from './volume.js';

/** The snapshot store a volume gets unless `--store` says: the volume's size and 64 MiB of metadata room, sparse. */
const STORE_MARGIN = 64 * 1024 * 1024;

const create: Command = {
  name: 'create',
  summary: 'make a volume: a directory with its data file, snapshot store and optional journal',
  usage:
    '<dir> --size SIZE [--block-size SIZE] [--store SIZE] [--journal SIZE | --selective | --partitions N [--processors N] [--stripe SIZE]]',
  positionals: [1, 1],
  options: {
    size: { type: 'string' },
    'block-size': { type: 'string' },
    store: { type: 'string' },
    journal: { type: 'string' },
    selective: { type: 'boolean' },
    partitions: { type: 'string' },
    processors: { type: 'string' },
    stripe: { type: 'string' },
  },
  optionHelp: [
    ['--size SIZE', 'bytes of the volume: 20G, 512M, 4k (binary multiples)'],
    ['--block-size SIZE', 'block size, a power of two from 512 to 1M (default 4k)'],
    [
      '--store SIZE',
      'snapshot store; sparse, so only what snapshots keep uses disk (default size + 64M)',
    ],
    ['--journal SIZE', 'put a write journal of this size on top (point-in-time history, pit)'],
    ['--selective', 'snapshots of chosen ranges (snapshot create --include/--exclude)'],
    [
      '--partitions N',
      'a VirtualVolume: N partitions, each its own data file and snapshot store (--store is split over them)',
    ],
    ['--processors N', 'worker threads the partitions run on (default 0: in the command itself)'],
    [
      '--stripe SIZE',
      'stripe the volume over the partitions in units of SIZE (default: contiguous)',
    ],
  ],
  example: 'blocksnap create ./vm1 --size 20G --journal 1G',
  async run([dir], values) {
    const virtual = virtualOptions(values);
    const sizeText = stringOption(values, 'size');
    if (sizeText === undefined)
      throw new BlockDeviceError('EINVAL', 'create needs --size (e.g. --size 20G)');
    const size = parseSize(sizeText, '--size');
    const blockSize = parseSize(stringOption(values, 'block-size') ?? '4k', '--block-size');
    const storeText = stringOption(values, 'store');
    const journalText = stringOption(values, 'journal');
    const selective = values.selective === true;
    if (virtual !== undefined && (selective || journalText !== undefined)) {
      throw new BlockDeviceError(
        'EINVAL',
        '--partitions with --journal or --selective: a VirtualVolume takes snapshots of all of it and has no journal',
      );
    }
    if (selective && journalText !== undefined) {
      throw new BlockDeviceError(
        'EINVAL',
        '--selective and --journal together: a journal snapshot holds the whole volume, so ranges could not be chosen',
      );
    }
    if (size === 0 || size % blockSize !== 0) {
      throw new BlockDeviceError(
        'EINVAL',
        `--size ${sizeText} is not a positive multiple of the block size ${blockSize}`,
      );
    }
    const manifest = await createVolume(dir!, {
      size,
      blockSize,
      storeSize: storeText === undefined ? size + STORE_MARGIN : parseSize(storeText, '--store'),
      journalSize: journalText === undefined ? undefined : parseSize(journalText, '--journal'),
      selective,
      virtual,
    });
    const stack = manifest.stack.map((l) => l.layer);
    const files = volumeFiles({ dir: dir!, manifest });
    const shape =
      virtual === undefined
        ? ''
        : ` of ${virtual.partitions} partitions on ${virtual.processors} processors${virtual.stripeUnit === 0 ? '' : `, striped by ${formatBytes(virtual.stripeUnit)}`}`;
    return {
      text: `created ${dir}: ${formatBytes(size)}, ${blockSize}-byte blocks, stack ${stack.join(' > ')}${shape}`,
      json: { volume: dir, size, blockSize, stack, files, ...(virtual ?? {}) },
    };
  },
};

/** `--partitions/--processors/--stripe`, or undefined for a volume of one data file. */
function virtualOptions(values: Parameters<Command['run']>[1]) {
  const partitions = stringOption(values, 'partitions');
  const processors = stringOption(values, 'processors');
  const stripe = stringOption(values, 'stripe');
  if (partitions === undefined) {
    if (processors !== undefined || stripe !== undefined) {
      throw new BlockDeviceError(
        'EINVAL',
        '--processors and --stripe shape a VirtualVolume: give --partitions too',
      );
    }
    return undefined;
  }
  return {
    partitions: wholeNumber(partitions, '--partitions'),
    processors: processors === undefined ? 0 : wholeNumber(processors, '--processors'),
    stripeUnit: stripe === undefined ? 0 : parseSize(stripe, '--stripe'),
  };
}

function wholeNumber(text: string, option: string): number {
  if (!/^\d+$/.test(text)) {
    throw new BlockDeviceError('EINVAL', `${option} ${text}: a whole number`);
  }
  return Number(text);
}

const info: Command = {
  name: 'info',
  summary: 'size, block size, stack, snapshots, store space used, journal fill',
  usage: '<volume>',
  positionals: [1, 1],
  options: {},
  optionHelp: [],
  example: 'blocksnap info ./vm1 --json',
  async run([dir]) {
    const volume = await openVolume(dir!);
    try {
      const { manifest, snapshots, journal, top, virtual } = volume;
      const chunkBytes = manifest.blockSize;
      // A VirtualVolume's stores are its partitions', each used by its own processor.
      const store =
        snapshots === undefined
          ? undefined
          : {
              chunks: snapshots.totalChunks,
              freeChunks: snapshots.freeChunks,
              usedBytes: (snapshots.totalChunks - snapshots.freeChunks) * chunkBytes,
              capacityBytes: snapshots.totalChunks * chunkBytes,
            };
      const virtualInfo =
        virtual === undefined
          ? undefined
          : {
              partitions: virtual.partitionCount,
              processors: (manifest.stack[0] as VirtualLayer).processors,
              placement: virtual.placement,
              stripeUnit: virtual.stripeUnit,
            };
      const journalInfo =
        journal === undefined
          ? undefined
          : {
              capacityBytes: journal.journalCapacity,
              usedBytes: journal.journalUsed,
              fill:
                journal.journalCapacity === 0 ? 0 : journal.journalUsed / journal.journalCapacity,
              sequence: journal.sequence,
              oldestSequence: journal.oldestSequence,
            };
      const json = {
        volume: dir,
        size: manifest.size,
        blockSize: manifest.blockSize,
        stack: manifest.stack.map((l) => l.layer),
        files: volumeFiles(volume),
        snapshots: top.listSnapshots().length,
        store: store ?? null,
        journal: journalInfo ?? null,
        ...(virtualInfo === undefined ? {} : { virtual: virtualInfo }),
      };
      const lines = [
        `volume:      ${dir}`,
        `size:        ${formatBytes(manifest.size)} (${manifest.size} bytes)`,
        `block size:  ${manifest.blockSize}`,
        `stack:       ${json.stack.join(' > ')}`,
        `snapshots:   ${json.snapshots}`,
      ];
      if (store !== undefined) {
        lines.push(
          `store used:  ${formatBytes(store.usedBytes)} of ${formatBytes(store.capacityBytes)}`,
        );
      }
      if (virtualInfo !== undefined) {
        lines.push(
          `partitions:  ${virtualInfo.partitions}, ${virtualInfo.stripeUnit === 0 ? 'contiguous' : `striped by ${formatBytes(virtualInfo.stripeUnit)}`}`,
          `processors:  ${virtualInfo.processors} (partition i on processor ${virtualInfo.placement.join(', ')})`,
        );
      }
      if (journalInfo !== undefined) {
        lines.push(
          `journal:     ${formatBytes(journalInfo.usedBytes)} of ${formatBytes(journalInfo.capacityBytes)} (${(journalInfo.fill * 100).toFixed(1)} %)`,
          `history:     records ${journalInfo.oldestSequence} to ${journalInfo.sequence} (pit --at)`,
        );
      }
      return { text: lines.join('\n'), json };
    } finally {
      await volume.close();
    }
  },
};

/**
 * Runs one layer's check with a progress bar of the bytes it walks,
 * labelled `check <layer>`: one bar per layer, since a layer's total is
 * known only once its own walk has begun.
 */
async function checkWithProgress<R extends CheckReport>(
  context: CommandContext,
  layer: string,
  check: (options: CheckOptions) => Promise<R>,
  verifyData: boolean,
): Promise<R> {
  const bar = context.progress(`check ${layer}`);
  try {
    const report = await check({ verifyData, onProgress: (e) => bar.update(e.done, e.total) });
    bar.finish();
    return report;
  } catch (err) {
    bar.stop('failed');
    throw err;
  }
}

const check: Command = {
  name: 'check',
  summary: 'verify every checksum of every store, read-only; exit status 7 on damage',
  usage: '<volume> [--quick]',
  positionals: [1, 1],
  options: { quick: { type: 'boolean' } },
  optionHelp: [['--quick', 'metadata only: skip reading the preserved data chunks']],
  example: 'blocksnap check ./vm1',
  async run([dir], values, context) {
    // A store too damaged to open fails here with ECORRUPT (exit status 7),
    // naming the structure: that is the check's answer too.
    const volume = await openVolume(dir!);
    const { snapshots, virtual, journal } = volume;
    const layers: { layer: string; file: string; report: CheckReport }[] = [];
    /** Per partition of a VirtualVolume: its COW store file and its problem count. */
    const partitionLines: string[] = [];
    try {
      const files = volumeFiles(volume);
      const verifyData = values.quick !== true;
      if (virtual !== undefined) {
        const report = await checkWithProgress(
          context,
          'virtual',
          (o) => virtual.check(o),
          verifyData,
        );
        layers.push({ layer: 'virtual', file: files[0]!, report });
        partitionLines.push(...virtualCheckLines(volume.manifest.stack[0] as VirtualLayer, report));
      } else if (journal !== undefined) {
        layers.push({
          layer: 'journal',
          file: files[0]!,
          report: await checkWithProgress(context, 'journal', (o) => journal.check(o), verifyData),
        });
      }
      if (snapshots !== undefined) {
        const layer = volume.manifest.stack[layers.length]!.layer;
        const file = files[layers.length]!;
        const report = await checkWithProgress(
          context,
          layer,
          (o) => snapshots.check(o),
          verifyData,
        );
        layers.push({ layer, file, report });
      }
    } finally {
      await volume.close();
    }
    const problems = layers.flatMap((l) =>
      l.report.problems.map((p) => ({ layer: l.layer, ...p })),
    );
    const json = {
      volume: dir,
      ok: problems.length === 0,
      layers: layers.map((l) => ({ layer: l.layer, file: l.file, ...l.report })),
    };
    const lines = layers.map(
      (l) =>
        `${l.layer} (${l.file}): ${l.report.problems.length === 0 ? 'ok' : `${l.report.problems.length} problem(s)`}; checked ${l.report.checked.frames} frames, ${l.report.checked.records} records, ${l.report.checked.chunks} chunks, ${formatBytes(l.report.checked.bytes)}`,
    );
    lines.push(...partitionLines);
    for (const p of problems)
      lines.push(`  ${p.layer} ${p.structure} at ${p.offset}: ${p.message}`);
    if (problems.length > 0) {
      // The report first (stdout), then the one-line error and its exit status.
      context.io.stdout.write(`${context.json ? JSON.stringify(json) : lines.join('\n')}\n`);
      throw new BlockDeviceError('ECORRUPT', `check found ${problems.length} problem(s) in ${dir}`);
    }
    return { text: lines.join('\n'), json };
  },
};

/**
 * A line per partition of a VirtualVolume's check (ok, or how many problems
 * name it: the report prefixes each with `partition N: `), and one for the
 * orphan partition snapshots if any — not damage: the next open deletes them.
 */
function virtualCheckLines(layer: VirtualLayer, report: VolumeCheckReport): string[] {
  const lines = layer.partitions.map((files, i) => {
    const found = report.problems.filter((p) => p.message.startsWith(`partition ${i}: `)).length;
    return `  partition ${i} (${files.store}): ${found === 0 ? 'ok' : `${found} problem(s)`}`;
  });
  if (report.orphans.length > 0) {
    lines.push(
      `  ${report.orphans.length} orphan partition snapshot(s) of uncommitted volume snapshots (not damage: the next open deletes them)`,
    );
  }
  return lines;
}

/** `create`, `info`, `check`. */
export const volumeCommands: readonly Command[] = [create, info, check];
