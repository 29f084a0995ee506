import {
  BlockDeviceError,
  type Extent,
  type JournalSnapshotInfo,
  type ProgressEvent,
  SelectiveSnapshotDevice,
  type SnapshotInfo,
} from '../index.js';
import { type Command, type CommandContext, stringOption, stringsOption } from './command.js';
import { findSnapshot, parseRef, type SnapshotRef } from './targets.js';
import { formatBytes, parseRanges } from './units.js';
import { type OpenVolume, openVolume } from './volume.js';

/** A snapshot as `ls` and `--json` show it. */
function describeSnapshot(volume: OpenVolume, info: SnapshotInfo) {
  const journal = info as Partial<JournalSnapshotInfo>;
  return {
    id: info.id,
    name: info.name ?? null,
    createdAt: info.createdAt.toISOString(),
    writable: info.writable,
    privateBytes: info.privateBytes,
    ...(journal.sequence === undefined
      ? {}
      : { sequence: journal.sequence, materialized: journal.materialized }),
    extents: volume.top.snapshotExtents(info.id),
  };
}

/** Opens the volume, runs `work`, closes it whatever happens. */
async function withVolume<T>(dir: string, work: (volume: OpenVolume) => Promise<T>): Promise<T> {
  const volume = await openVolume(dir);
  try {
    return await work(volume);
  } finally {
    await volume.close();
  }
}

/** A `<volume>@<snapshot>` or `<volume> <snapshot>` pair of positionals. */
async function refOf(
  positionals: readonly string[],
  usage: string,
): Promise<{ volume: string; snapshot: string }> {
  const ref: SnapshotRef =
    positionals.length === 2
      ? { volume: positionals[0]!, snapshot: positionals[1] }
      : await parseRef(positionals[0]!);
  if (ref.snapshot === undefined || ref.snapshot === '') {
    throw new BlockDeviceError('EINVAL', `name a snapshot: ${usage}`);
  }
  return { volume: ref.volume, snapshot: ref.snapshot };
}

/** Ranges from `--include`/`--exclude`, refused on a volume whose snapshots hold all of it. */
function rangesOf(
  volume: OpenVolume,
  values: Parameters<Command['run']>[1],
  option: string,
): Extent[] | undefined {
  const texts = stringsOption(values, option);
  if (texts.length === 0) return undefined;
  if (!(volume.snapshots instanceof SelectiveSnapshotDevice) || volume.journal !== undefined) {
    throw new BlockDeviceError(
      'EINVAL',
      `--${option} needs a selective volume (blocksnap create --selective): ${volume.dir} takes snapshots of all of it`,
    );
  }
  return parseRanges(texts, `--${option}`);
}

const snapshotCreate: Command = {
  name: 'snapshot create',
  summary: 'take a snapshot (a durability point)',
  usage: '<volume> [--name NAME] [--writable] [--include RANGES] [--exclude RANGES]',
  positionals: [1, 1],
  options: {
    name: { type: 'string' },
    writable: { type: 'boolean' },
    include: { type: 'string', multiple: true },
    exclude: { type: 'string', multiple: true },
  },
  optionHelp: [
    ['--name NAME', 'a name to refer to it by (ids work too)'],
    ['--writable', 'a clone: it takes writes of its own'],
    ['--include RANGES', 'selective volumes: OFFSET:LENGTH[,...] the snapshot holds (default all)'],
    ['--exclude RANGES', 'selective volumes: OFFSET:LENGTH[,...] left out of it'],
  ],
  example: 'blocksnap snapshot create ./vm1 --name nightly',
  run: ([dir], values) =>
    withVolume(dir!, async (volume) => {
      const include = rangesOf(volume, values, 'include');
      const exclude = rangesOf(volume, values, 'exclude');
      const options = {
        name: stringOption(values, 'name'),
        writable: values.writable === true,
        ...(include === undefined ? {} : { include }),
        ...(exclude === undefined ? {} : { exclude }),
      };
      const handle = await volume.top.snapshot(options);
      await handle.close();
      const info = findSnapshot(volume.top, handle.id, dir!);
      const json = describeSnapshot(volume, info);
      return { text: `snapshot ${info.name ?? ''} ${info.id}`.replace('  ', ' '), json };
    }),
};

const snapshotList: Command = {
  name: 'snapshot ls',
  summary: 'list the snapshots, oldest first',
  usage: '<volume>',
  positionals: [1, 1],
  options: {},
  optionHelp: [],
  example: 'blocksnap snapshot ls ./vm1',
  run: ([dir]) =>
    withVolume(dir!, async (volume) => {
      const snapshots = volume.top.listSnapshots().map((s) => describeSnapshot(volume, s));
      const rows = snapshots.map((s) => {
        const held = s.extents.reduce((sum, e) => sum + e.length, 0);
        return [
          s.id,
          s.name ?? '-',
          s.createdAt,
          s.writable ? 'writable' : 'read-only',
          held === volume.top.size ? 'all' : formatBytes(held),
        ];
      });
      const header = ['ID', 'NAME', 'CREATED', 'KIND', 'HOLDS'];
      return { text: table([header, ...rows]), json: snapshots };
    }),
};

const snapshotRemove: Command = {
  name: 'snapshot rm',
  summary: 'delete a snapshot and free what no other snapshot needs',
  usage: '<volume>@<snapshot> | <volume> <snapshot>',
  positionals: [1, 2],
  options: {},
  optionHelp: [],
  example: 'blocksnap snapshot rm ./vm1@nightly',
  async run(positionals) {
    const ref = await refOf(positionals, 'blocksnap snapshot rm <volume>@<snapshot>');
    return withVolume(ref.volume, async (volume) => {
      const info = findSnapshot(volume.top, ref.snapshot, ref.volume);
      await volume.top.deleteSnapshot(info.id);
      return {
        text: `deleted ${info.name ?? info.id}`,
        json: { deleted: info.id, name: info.name ?? null },
      };
    });
  },
};

const snapshotRollback: Command = {
  name: 'snapshot rollback',
  summary: 'make the volume equal a snapshot (every snapshot stays)',
  usage: '<volume>@<snapshot> [--include RANGES]',
  positionals: [1, 2],
  options: { include: { type: 'string', multiple: true } },
  optionHelp: [
    ['--include RANGES', 'selective volumes: restore only these bytes (OFFSET:LENGTH[,...])'],
  ],
  example: 'blocksnap snapshot rollback ./vm1@before-upgrade',
  async run(positionals, values, context) {
    const ref = await refOf(positionals, 'blocksnap snapshot rollback <volume>@<snapshot>');
    return withVolume(ref.volume, async (volume) => {
      const info = findSnapshot(volume.top, ref.snapshot, ref.volume);
      const ranges = rangesOf(volume, values, 'include');
      await withLayerProgress(volume, context, async () => {
        if (ranges !== undefined && volume.snapshots instanceof SelectiveSnapshotDevice) {
          await volume.snapshots.restore(info.id, { ranges });
        } else {
          await volume.top.restore(info.id);
        }
      });
      return {
        text: `rolled ${ref.volume} back to ${info.name ?? info.id}`,
        json: {
          volume: ref.volume,
          restored: info.id,
          name: info.name ?? null,
          ranges: ranges ?? null,
        },
      };
    });
  },
};

/**
 * Runs `work` with a bar for the `progress` events of every layer (the
 * journal's checkpoint, the COW layer's restore); their units are pieces
 * of work, not bytes.
 */
async function withLayerProgress(
  volume: OpenVolume,
  context: CommandContext,
  work: () => Promise<void>,
): Promise<void> {
  const bars = new Map<string, ReturnType<CommandContext['progress']>>();
  const listener = (event: ProgressEvent) => {
    let bar = bars.get(event.operation);
    if (bar === undefined) {
      for (const other of bars.values()) other.finish();
      bar = context.progress(event.operation, 'steps');
      bars.set(event.operation, bar);
    }
    bar.update(event.done, event.total);
  };
  const { snapshots, journal } = volume;
  snapshots?.on('progress', listener);
  journal?.on('progress', listener);
  try {
    await work();
    for (const bar of bars.values()) bar.finish();
  } catch (err) {
    for (const bar of bars.values()) bar.stop('failed');
    throw err;
  } finally {
    snapshots?.off('progress', listener);
    journal?.off('progress', listener);
  }
}

const diff: Command = {
  name: 'diff',
  summary: 'the byte extents that changed between two snapshots, or a snapshot and now',
  usage: '<volume>@<from> <volume>[@<to>]',
  positionals: [2, 2],
  options: {},
  optionHelp: [],
  example: 'blocksnap diff ./vm1@monday ./vm1@tuesday',
  async run([fromText, toText]) {
    const from = await parseRef(fromText!);
    const to = await parseRef(toText!);
    if (from.snapshot === undefined) {
      throw new BlockDeviceError(
        'EINVAL',
        `diff: name the first snapshot as <volume>@<snapshot>, got '${fromText}'`,
      );
    }
    if (from.volume !== to.volume) {
      throw new BlockDeviceError(
        'EINVAL',
        `diff compares points of one volume: got ${from.volume} and ${to.volume}`,
      );
    }
    return withVolume(from.volume, async (volume) => {
      const a = findSnapshot(volume.top, from.snapshot!, from.volume);
      const b =
        to.snapshot === undefined ? undefined : findSnapshot(volume.top, to.snapshot, to.volume);
      // A journal knows the changes of snapshots a checkpoint has taken on
      // production; take one first if either is still in the journal.
      const pending = [a, b].some(
        (s) => (s as Partial<JournalSnapshotInfo> | undefined)?.materialized === false,
      );
      if (pending) await volume.journal?.checkpoint();
      const extents = volume.top.changedExtents(a.id, b?.id ?? 'live');
      const bytes = extents.reduce((sum, e) => sum + e.length, 0);
      const lines = extents.map((e) => `${e.offset}\t${e.length}`);
      lines.push(`${extents.length} extent(s), ${formatBytes(bytes)} changed`);
      return {
        text: lines.join('\n'),
        json: { from: a.id, to: b?.id ?? 'live', extents, bytes },
      };
    });
  },
};

/** Columns padded to their widest cell. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '))
    .join('\n');
}

/** `snapshot create|ls|rm|rollback`, `diff`. */
export const snapshotCommands: readonly Command[] = [
  snapshotCreate,
  snapshotList,
  snapshotRemove,
  snapshotRollback,
  diff,
];

export { withVolume };
