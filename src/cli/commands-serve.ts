import { basename, resolve } from 'node:path';
import {
  type BlockDevice,
  BlockDeviceError,
  type NbdExportResolver,
  type PointInTime,
  type ResolvedNbdExport,
  type SnapshotCapable,
  type SnapshotInfo,
  snapshotExports,
} from '../index.js';
import {
  type Command,
  type CommandContext,
  type CommandResult,
  type OptionValues,
  stringOption,
} from './command.js';
import { withVolume } from './commands-snapshot.js';
import {
  type AnnouncedExport,
  LISTEN_HELP,
  LISTEN_OPTIONS,
  listenOptions,
  serveUntilStopped,
} from './serve-listen.js';

/** The export name `--name` gives, else the volume directory's own name. */
function exportName(values: OptionValues, dir: string): string {
  const name = stringOption(values, 'name') ?? basename(resolve(dir));
  if (name === '' || name.includes('@')) {
    throw new BlockDeviceError(
      'EINVAL',
      `export name '${name}' must be non-empty and without '@' (its snapshots are NAME@SNAPSHOT): give --name`,
    );
  }
  return name;
}

/**
 * The exports of a volume: `name` (its live content, read-only unless
 * `writable`) and `name@<snapshot>` for each snapshot, always read-only
 * (`snapshotExports` opens a snapshot's handle when a client first asks).
 */
function volumeExports(
  name: string,
  device: BlockDevice & SnapshotCapable,
  writable: boolean,
): NbdExportResolver {
  const snapshots = snapshotExports(name, device);
  const live: ResolvedNbdExport = { device, readOnly: !writable, description: `volume ${name}` };
  return Object.assign((requested: string) => (requested === name ? live : snapshots(requested)), {
    list: snapshots.list,
  });
}

/**
 * How each snapshot is announced: by name where the name is its own, by id
 * where several share it (a shared name would mean only the newest).
 */
function snapshotExportNames(name: string, snapshots: readonly SnapshotInfo[]): AnnouncedExport[] {
  return snapshots.map((s) => {
    const shared = snapshots.filter((o) => o.name === s.name).length > 1;
    const key = s.name === undefined || shared ? s.id : s.name;
    return { name: `${name}@${key}`, readOnly: true, what: `snapshot ${s.id}` };
  });
}

const serve: Command = {
  name: 'serve',
  summary:
    'serve a volume and each of its snapshots over NBD (qemu, nbdinfo, nbdcopy) until stopped',
  usage:
    '<volume> [--name NAME] [--host ADDR] [--port PORT | --socket PATH] [--tls-cert FILE --tls-key FILE | --tls-psk FILE] [--writable]',
  positionals: [1, 1],
  options: {
    ...LISTEN_OPTIONS,
    name: { type: 'string' },
    writable: { type: 'boolean' },
  },
  optionHelp: [
    [
      '--name NAME',
      "the export's name (default: the volume directory's name); snapshots are NAME@SNAP",
    ],
    ...LISTEN_HELP,
    ['--writable', 'let clients write the live volume (snapshots stay read-only)'],
  ],
  example:
    'blocksnap serve ./vm1 --port 10809 & qemu-img convert nbd://127.0.0.1:10809/vm1@nightly out.qcow2',
  async run([dir], values, context) {
    const name = exportName(values, dir!);
    const listen = await listenOptions(values);
    const writable = values.writable === true;
    return withVolume(dir!, async (volume) => {
      const announced: AnnouncedExport[] = [
        { name, readOnly: !writable, what: 'live volume' },
        ...snapshotExportNames(name, volume.top.listSnapshots()),
      ];
      const exports = volumeExports(name, volume.top, writable);
      await serveUntilStopped(dir!, exports, announced, listen, context);
      return stopped(dir!, context);
    });
  },
};

/**
 * Serves a journal's point-in-time view, read-only, as `name@pit-<seq>`
 * (the id `pit` gives its streams) until stopped; the caller closes the view.
 */
export async function servePointInTime(
  dir: string,
  view: PointInTime,
  values: OptionValues,
  context: CommandContext,
): Promise<CommandResult> {
  const name = `${exportName(values, dir)}@pit-${view.sequence}`;
  const listen = await listenOptions(values);
  const what = `point in time after record ${view.sequence} (${view.time.toISOString()})`;
  await serveUntilStopped(
    dir,
    new Map([[name, { device: view, readOnly: true, description: what }]]),
    [{ name, readOnly: true, what }],
    listen,
    context,
  );
  return stopped(dir, context);
}

/** What a serving command leaves once stopped: a note; its result went out when it started listening. */
function stopped(dir: string, context: CommandContext): CommandResult {
  context.note(`stopped serving ${dir}`);
  return { text: '', json: null, to: 'none' };
}

/** `serve`. */
export const serveCommands: readonly Command[] = [serve];
