import { rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import {
  type ApplyReport,
  applyStream,
  BlockDeviceError,
  type ChangeTracking,
  exportStream,
  type PointInTime,
  StreamApplyError,
} from '../index.js';
import { type Command, type CommandContext, Interrupted, stringOption } from './command.js';
import { withVolume } from './commands-snapshot.js';
import { PointInTimeSource } from './point-in-time-source.js';
import { openInput, outputOf, writeOutput } from './stream-io.js';
import { findSnapshot, openTarget } from './targets.js';
import { formatBytes, parseTime } from './units.js';
import { isVolume } from './volume.js';

/** Header bytes `apply` reads before opening its target: signature, then size (16) and block size (24). */
const HEADER_PEEK = 28;
const SIGNATURE = [0x89, 0x42, 0x53, 0x4e, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * Exports snapshot `to` (and `from`) of `device` into `output`, with a bar;
 * an interrupted export leaves no output file (stream-io.ts).
 */
async function exportTo(
  device: ChangeTracking,
  to: string,
  from: string | undefined,
  output: string,
  context: CommandContext,
): Promise<{ streamBytes: number; coveredBytes: number }> {
  const bar = context.progress('export');
  let covered = 0;
  try {
    const stream = exportStream(device, {
      to,
      from,
      signal: context.signal,
      onProgress: (e) => {
        covered = e.total;
        bar.update(e.done, e.total);
      },
    });
    const streamBytes = await writeOutput(
      Readable.fromWeb(stream),
      output,
      context.io,
      context.signal,
    );
    bar.finish();
    return { streamBytes, coveredBytes: covered };
  } catch (err) {
    if (context.signal.aborted) {
      bar.stop('interrupted');
      throw new Interrupted(
        output === '-'
          ? 'export stopped: the stream on stdout is cut short (apply refuses it); run the same command again'
          : `export stopped: nothing was written to ${output}; run the same command again`,
      );
    }
    bar.stop('failed');
    throw err;
  }
}

const exportCommand: Command = {
  name: 'export',
  summary: 'write a snapshot (or what changed since another) as a verified stream',
  usage: '<volume> --snapshot SNAP [--since SNAP] [-o FILE|-]',
  positionals: [1, 1],
  options: {
    snapshot: { type: 'string' },
    since: { type: 'string' },
    output: { type: 'string', short: 'o' },
  },
  optionHelp: [
    ['--snapshot SNAP', 'the snapshot the stream brings a target to (name or id)'],
    ['--since SNAP', 'an incremental stream: only what changed since this snapshot'],
    [
      '-o, --output FILE|-',
      'where the stream goes (- is stdout; the default when it is not a terminal)',
    ],
  ],
  example: 'blocksnap export ./vm1 --snapshot tuesday --since monday -o tue.bsnap',
  async run([dir], values, context) {
    const snapshot = stringOption(values, 'snapshot');
    if (snapshot === undefined)
      throw new BlockDeviceError('EINVAL', 'export needs --snapshot SNAP');
    const output = outputOf(stringOption(values, 'output'), context.io, 'export');
    const since = stringOption(values, 'since');
    return withVolume(dir!, async (volume) => {
      const to = findSnapshot(volume.top, snapshot, dir!);
      const from = since === undefined ? undefined : findSnapshot(volume.top, since, dir!);
      const { streamBytes, coveredBytes } = await exportTo(
        volume.top,
        to.id,
        from?.id,
        output,
        context,
      );
      const json = {
        volume: dir,
        snapshot: to.id,
        since: from?.id ?? null,
        incremental: from !== undefined,
        output,
        streamBytes,
        coveredBytes,
      };
      const text = `exported ${to.name ?? to.id}${from === undefined ? '' : ` since ${from.name ?? from.id}`} to ${output}: ${formatBytes(streamBytes)} of stream for ${formatBytes(coveredBytes)} of volume`;
      return { text, json, to: output === '-' ? 'stderr' : 'stdout' };
    });
  },
};

/**
 * Reads the first bytes of a stream (to size a new target file) and gives
 * back an iterable that yields them again, then the rest; stopping it early
 * stops the source.
 */
async function peekHeader(
  input: AsyncIterable<Uint8Array>,
  where: string,
): Promise<{ size: number; blockSize: number; stream: AsyncIterable<Uint8Array> }> {
  const iterator = input[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let have = 0;
  let ended = false;
  while (have < HEADER_PEEK) {
    const next = await iterator.next();
    if (next.done === true) {
      ended = true;
      break;
    }
    head.push(next.value);
    have += next.value.length;
  }
  const bytes = Buffer.concat(head);
  if (bytes.length < HEADER_PEEK || SIGNATURE.some((b, i) => bytes[i] !== b)) {
    await iterator.return?.();
    throw new BlockDeviceError('ECORRUPT', `${where} is not a blocksnap stream (no stream header)`);
  }
  const stream = (async function* () {
    try {
      yield* head;
      if (ended) return;
      for (;;) {
        const next = await iterator.next();
        if (next.done === true) return;
        yield next.value;
      }
    } finally {
      await iterator.return?.();
    }
  })();
  return {
    size: Number(bytes.readBigUInt64LE(16)),
    blockSize: bytes.readUInt32LE(24),
    stream,
  };
}

const apply: Command = {
  name: 'apply',
  summary: 'check a stream and write it to a volume or an image file (resumable: run it again)',
  usage: '<stream|-> <target> [--snapshot NAME]',
  positionals: [2, 2],
  options: { snapshot: { type: 'string' } },
  optionHelp: [
    [
      '--snapshot NAME',
      'a volume target: take a snapshot with this name once the stream is in (the base for the next incremental)',
    ],
  ],
  example: 'blocksnap apply tue.bsnap ./replica --snapshot tuesday',
  async run([streamPath, targetPath], values, context) {
    const snapshotName = stringOption(values, 'snapshot');
    const targetIsVolume = await isVolume(targetPath!);
    if (snapshotName !== undefined && !targetIsVolume) {
      throw new BlockDeviceError(
        'EINVAL',
        `--snapshot needs a volume target; ${targetPath} is a file`,
      );
    }
    const input = await openInput(streamPath!, context.io, context.signal);
    const header = await peekHeader(input, streamPath === '-' ? 'stdin' : streamPath!);
    const target = await openTarget(targetPath!, header);
    const bar = context.progress('apply');
    let reached = 0;
    let report: ApplyReport;
    try {
      try {
        report = await applyStream(header.stream, target.device, {
          signal: context.signal,
          onProgress: (e) => {
            reached = e.done;
            bar.update(e.done, e.total);
          },
        });
        bar.finish();
        if (snapshotName !== undefined) {
          const handle = await target.volume!.top.snapshot({ name: snapshotName });
          await handle.close();
        }
      } finally {
        await target.close();
      }
    } catch (err) {
      if (target.created && reached === 0) await rm(targetPath!, { force: true });
      if (context.signal.aborted) {
        bar.stop('interrupted');
        throw new Interrupted(
          `apply stopped at ${formatBytes(reached)}; run the same command again with the whole stream to finish (what the target holds already is checked, not written again)`,
        );
      }
      bar.stop('failed');
      if (err instanceof StreamApplyError && err.applied.frames > 0) {
        throw new BlockDeviceError(
          err.code,
          `${err.message.slice(err.code.length + 2)} (${err.applied.frames} frames, ${formatBytes(err.applied.bytes)} applied; apply the whole stream again to finish)`,
          { cause: err },
        );
      }
      throw err;
    }
    const json = {
      stream: streamPath,
      target: targetPath,
      ...report,
      snapshot: snapshotName ?? null,
    };
    const text = `applied ${report.incremental ? 'incremental' : 'full'} stream ${report.to} to ${targetPath}: ${report.frames} frames, ${formatBytes(report.bytesWritten)} written${report.framesSkipped > 0 ? `, ${report.framesSkipped} frames already there` : ''}`;
    return { text, json };
  },
};

/** Reads `view` whole into `output` (a raw image), with a bar. */
async function rawTo(view: PointInTime, output: string, context: CommandContext): Promise<number> {
  const bar = context.progress('pit');
  const piece = 1 << 20;
  const pieces = async function* () {
    for (let at = 0; at < view.size; at += piece) {
      yield await view.read(at, Math.min(piece, view.size - at));
      bar.update(Math.min(at + piece, view.size), view.size);
    }
  };
  try {
    const bytes = await writeOutput(pieces(), output, context.io, context.signal);
    bar.finish();
    return bytes;
  } catch (err) {
    if (context.signal.aborted) {
      bar.stop('interrupted');
      throw new Interrupted(
        `pit stopped: nothing was written to ${output}; run the same command again`,
      );
    }
    bar.stop('failed');
    throw err;
  }
}

const pit: Command = {
  name: 'pit',
  summary:
    "export a journaled volume as it was after a record or at a time (the journal's history)",
  usage: '<volume> --at SEQ|TIME [-o FILE|-] [--raw]',
  positionals: [1, 1],
  options: {
    at: { type: 'string' },
    output: { type: 'string', short: 'o' },
    raw: { type: 'boolean' },
  },
  optionHelp: [
    [
      '--at SEQ|TIME',
      'a record sequence number, or an ISO 8601 time (the last record written by then)',
    ],
    ['-o, --output FILE|-', 'where it goes (- is stdout)'],
    ['--raw', 'a raw image instead of a stream'],
  ],
  example: 'blocksnap pit ./vm1 --at 2025-03-01T10:32:00Z -o before.bsnap',
  async run([dir], values, context) {
    const atText = stringOption(values, 'at');
    if (atText === undefined) throw new BlockDeviceError('EINVAL', 'pit needs --at SEQ|TIME');
    const at = /^\d+$/.test(atText) ? Number(atText) : parseTime(atText, '--at');
    const output = outputOf(stringOption(values, 'output'), context.io, 'pit');
    const raw = values.raw === true;
    return withVolume(dir!, async (volume) => {
      if (volume.journal === undefined) {
        throw new BlockDeviceError(
          'EINVAL',
          `${dir} has no journal (create --journal SIZE): it keeps no history`,
        );
      }
      const view = await volume.journal.pointInTime(at);
      try {
        const source = new PointInTimeSource(view);
        const bytes = raw
          ? await rawTo(view, output, context)
          : (await exportTo(source, source.id, undefined, output, context)).streamBytes;
        const json = {
          volume: dir,
          sequence: view.sequence,
          time: view.time.toISOString(),
          format: raw ? 'raw' : 'stream',
          output,
          bytes,
        };
        const text = `${dir} after record ${view.sequence} (${json.time}) to ${output}: ${formatBytes(bytes)} ${json.format}`;
        return { text, json, to: output === '-' ? 'stderr' : 'stdout' };
      } finally {
        await view.close();
      }
    });
  },
};

/** `export`, `apply`, `pit`. */
export const streamCommands: readonly Command[] = [exportCommand, apply, pit];
