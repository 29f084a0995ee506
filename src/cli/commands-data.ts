import { type BlockDevice, BlockDeviceError } from '../index.js';
import { type Command, stringOption } from './command.js';
import { openInput, outputOf, writeOutput } from './stream-io.js';
import { findSnapshot, parseRef } from './targets.js';
import { formatBytes, parseSize } from './units.js';
import { openVolume } from './volume.js';

/** Bytes `read` asks the device for at once. */
const PIECE = 1 << 20;

const write: Command = {
  name: 'write',
  summary: 'write bytes from a file or stdin into a volume at an offset, then flush',
  usage: '<volume> [--offset SIZE] [-i FILE|-]',
  positionals: [1, 1],
  options: { offset: { type: 'string' }, input: { type: 'string', short: 'i' } },
  optionHelp: [
    ['--offset SIZE', 'where the first byte goes (default 0)'],
    ['-i, --input FILE|-', 'what to write (default stdin)'],
  ],
  example: "printf 'v2' | blocksnap write ./vm1 --offset 1M",
  async run([dir], values, context) {
    const offset = parseSize(stringOption(values, 'offset') ?? '0', '--offset');
    const input = await openInput(stringOption(values, 'input') ?? '-', context.io, context.signal);
    const volume = await openVolume(dir!);
    let at = offset;
    try {
      for await (const chunk of input) {
        await volume.top.write(at, chunk);
        at += chunk.length;
      }
      await volume.top.flush();
    } finally {
      await volume.close();
    }
    const bytes = at - offset;
    return {
      text: `wrote ${formatBytes(bytes)} at ${offset}`,
      json: { volume: dir, offset, bytes },
    };
  },
};

const read: Command = {
  name: 'read',
  summary: 'read bytes of a volume or of one of its snapshots',
  usage: '<volume>[@<snapshot>] [--offset SIZE] [--length SIZE] [-o FILE|-]',
  positionals: [1, 1],
  options: {
    offset: { type: 'string' },
    length: { type: 'string' },
    output: { type: 'string', short: 'o' },
  },
  optionHelp: [
    ['--offset SIZE', 'first byte (default 0)'],
    ['--length SIZE', 'bytes to read (default to the end)'],
    ['-o, --output FILE|-', 'where they go (- is stdout)'],
  ],
  example: 'blocksnap read ./vm1@nightly --offset 1M --length 2 -o -',
  async run([text], values, context) {
    const ref = await parseRef(text!);
    const offset = parseSize(stringOption(values, 'offset') ?? '0', '--offset');
    const lengthText = stringOption(values, 'length');
    const output = outputOf(stringOption(values, 'output'), context.io, 'read');
    const volume = await openVolume(ref.volume);
    let device: BlockDevice = volume.top;
    try {
      if (ref.snapshot !== undefined) {
        const info = findSnapshot(volume.top, ref.snapshot, ref.volume);
        device = await volume.top.openSnapshot(info.id);
      }
      const length =
        lengthText === undefined ? device.size - offset : parseSize(lengthText, '--length');
      if (offset > device.size || offset + length > device.size) {
        throw new BlockDeviceError(
          'ERANGE',
          `[${offset}, +${length}) is outside ${text} (${device.size} bytes)`,
        );
      }
      const from = device;
      const pieces = async function* () {
        for (let at = offset; at < offset + length; at += PIECE) {
          yield await from.read(at, Math.min(PIECE, offset + length - at));
        }
      };
      const bytes = await writeOutput(pieces(), output, context.io, context.signal);
      return {
        text: `read ${formatBytes(bytes)} at ${offset}`,
        json: { source: text, offset, bytes, output },
        to: output === '-' ? 'stderr' : 'stdout',
      };
    } finally {
      if (device !== volume.top) await device.close();
      await volume.close();
    }
  },
};

/** `write`, `read`: moving bytes in and out, for scripts and the README's story. */
export const dataCommands: readonly Command[] = [write, read];
