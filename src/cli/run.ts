import { parseArgs } from 'node:util';
import type { BlockDeviceError } from '../index.js';
import {
  type Command,
  type CommandContext,
  type CommandIO,
  Interrupted,
  type OptionSpec,
  type OptionValues,
  progressInterval,
  progressMode,
} from './command.js';
import { copyCommands } from './commands-copy.js';
import { dataCommands } from './commands-data.js';
import { snapshotCommands } from './commands-snapshot.js';
import { streamCommands } from './commands-stream.js';
import { volumeCommands } from './commands-volume.js';
import {
  asBlockDeviceError,
  EXIT_INTERNAL,
  EXIT_INTERRUPTED,
  EXIT_STATUS,
  exitStatusTable,
} from './exit-status.js';
import { ProgressBar } from './progress.js';

/** Every subcommand, in the order `--help` lists them. */
export const COMMANDS: readonly Command[] = [
  ...volumeCommands,
  ...snapshotCommands,
  ...streamCommands,
  ...copyCommands,
  ...dataCommands,
];

/** The options every command takes. */
const COMMON: OptionSpec = {
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
};

const COMMON_HELP = [
  ['--json', 'print the result as JSON (errors too, on stderr)'],
  ['-q, --quiet', 'no progress and no result text'],
  ['-h, --help', 'this help'],
] as const;

/** The version `--version` prints, set by main.ts from package.json. */
export interface RunOptions {
  readonly version: string;
  readonly signal: AbortSignal;
}

/** The whole help: every command and the exit statuses. */
export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'blocksnap: snapshot-capable volumes from the shell',
    '',
    'usage: blocksnap <command> [arguments] [--json] [--quiet]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'A volume is a directory made by `create`; name a snapshot as <volume>@<name or id>.',
    'Sizes: bytes or 20G, 512M, 4k (binary). Times: ISO 8601 with a zone.',
    'Long work shows progress on stderr; Ctrl-C stops it cleanly and says how to resume.',
    'BLOCKSNAP_PROGRESS_INTERVAL=MS sets how often progress is drawn.',
    '',
    'exit status:',
    exitStatusTable(),
    '',
    'blocksnap <command> --help shows its options and an example.',
  ].join('\n');
}

/** One command's help: usage, options, example. */
export function commandHelp(command: Command): string {
  const rows = [...command.optionHelp, ...COMMON_HELP];
  const width = Math.max(...rows.map(([o]) => o.length));
  return [
    `usage: blocksnap ${command.name} ${command.usage}`,
    '',
    command.summary,
    '',
    'options:',
    ...rows.map(([o, what]) => `  ${o.padEnd(width)}  ${what}`),
    '',
    'example:',
    `  ${command.example}`,
    '',
    'exit status: 0 on success; see blocksnap --help for the table.',
  ].join('\n');
}

/** The command `argv` names, and the arguments after its name. */
function findCommand(argv: readonly string[]): { command: Command; rest: string[] } | undefined {
  for (const words of [2, 1]) {
    const name = argv.slice(0, words).join(' ');
    const command = COMMANDS.find((c) => c.name === name);
    if (command !== undefined) return { command, rest: argv.slice(words) };
  }
  return undefined;
}

/**
 * Runs one command line and resolves with its exit status: the result on
 * stdout (text, or JSON with `--json`), progress and errors on stderr, an
 * error as one line `blocksnap: CODE: message` (with `--json`, one JSON
 * line `{"error": {code, message, exitStatus}}`), the status by code
 * (exit-status.ts). Never rejects.
 */
export async function runCli(
  argv: readonly string[],
  io: CommandIO,
  options: RunOptions,
): Promise<number> {
  const json = argv.includes('--json');
  const fail = (code: string, message: string, status: number) => {
    const line = message.replace(/\s*\n\s*/g, ' ');
    io.stderr.write(
      json
        ? `${JSON.stringify({ error: { code, message: line, exitStatus: status } })}\n`
        : `blocksnap: ${line.startsWith(`${code}: `) ? line : `${code}: ${line}`}\n`,
    );
    return status;
  };
  if (argv.length === 0) {
    io.stderr.write(`${mainHelp()}\n`);
    return EXIT_STATUS.EINVAL;
  }
  if (argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.stdout.write(`${mainHelp()}\n`);
    return 0;
  }
  if (argv[0] === '--version' || argv[0] === '-V') {
    io.stdout.write(`${options.version}\n`);
    return 0;
  }
  const found = findCommand(argv);
  if (found === undefined) {
    const group = COMMANDS.filter((c) => c.name.startsWith(`${argv[0]} `)).map((c) => c.name);
    const hint =
      group.length > 0 ? `: one of ${group.join(', ')}` : ' (blocksnap --help lists them)';
    return fail(
      'EINVAL',
      `unknown command '${argv.slice(0, group.length > 0 ? 2 : 1).join(' ')}'${hint}`,
      EXIT_STATUS.EINVAL,
    );
  }
  const { command, rest } = found;
  let values: OptionValues;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      options: { ...COMMON, ...command.options },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    const detail = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    return fail(
      'EINVAL',
      `${command.name}: ${detail} (blocksnap ${command.name} --help)`,
      EXIT_STATUS.EINVAL,
    );
  }
  if (values.help === true) {
    io.stdout.write(`${commandHelp(command)}\n`);
    return 0;
  }
  const [min, max] = command.positionals;
  if (positionals.length < min || positionals.length > max) {
    return fail(
      'EINVAL',
      `usage: blocksnap ${command.name} ${command.usage} (got ${positionals.length} argument(s))`,
      EXIT_STATUS.EINVAL,
    );
  }
  const quiet = values.quiet === true;
  const mode = progressMode(io, quiet);
  const interval = progressInterval(io);
  let openBar: ProgressBar | undefined;
  const context: CommandContext = {
    io,
    json,
    quiet,
    signal: options.signal,
    progress: (label, unit) => {
      openBar = new ProgressBar(io.stderr, mode, label, interval, unit);
      return openBar;
    },
    note: (text) => {
      if (!quiet && !json) io.stderr.write(`${text}\n`);
    },
  };
  try {
    const result = await command.run(positionals, values, context);
    const out = result.to === 'stderr' ? io.stderr : io.stdout;
    if (json) out.write(`${JSON.stringify(result.json)}\n`);
    else if (!quiet && result.text !== '') out.write(`${result.text}\n`);
    return 0;
  } catch (err) {
    // A bar left mid-line would swallow the start of the error line.
    if (openBar?.open === true) openBar.stop('stopped');
    if (err instanceof Interrupted) return fail('interrupted', err.message, EXIT_INTERRUPTED);
    if (options.signal.aborted) {
      return fail(
        'interrupted',
        `${command.name} stopped part way; run it again`,
        EXIT_INTERRUPTED,
      );
    }
    const known = asBlockDeviceError(err);
    if (known !== undefined)
      return fail(known.code, `${command.name}: ${stripCode(known)}`, EXIT_STATUS[known.code]);
    const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
    return fail('internal', `${command.name}: ${detail}`, EXIT_INTERNAL);
  }
}

/** The message without the `CODE: ` BlockDeviceError puts in front (the line leads with the code). */
function stripCode(err: BlockDeviceError): string {
  return err.message.startsWith(`${err.code}: `)
    ? err.message.slice(err.code.length + 2)
    : err.message;
}
