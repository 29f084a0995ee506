import type { ParseArgsConfig } from 'node:util';
import type { ProgressBar, ProgressMode, ProgressStream } from './progress.js';

/*
 * What every subcommand is: its options for `util.parseArgs`, its help (a
 * usage line, each option, an example), and a `run` that returns what to
 * print — once as text for people, once as a JSON value for scripts. The
 * dispatcher (run.ts) owns parsing, `--help`, `--json`, errors and exit
 * statuses, so a new subcommand (`serve`) is one more entry in the table.
 */

/** The options `util.parseArgs` takes. */
export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

/** The values `util.parseArgs` gives back for them. */
export type OptionValues = Readonly<
  Record<string, string | boolean | (string | boolean)[] | undefined>
>;

/** Where a command reads and writes: the process's streams, or a test's. */
export interface CommandIO {
  readonly stdout: NodeJS.WritableStream & { readonly isTTY?: boolean | undefined };
  readonly stderr: ProgressStream & { readonly isTTY?: boolean | undefined };
  readonly stdin: NodeJS.ReadableStream & { readonly isTTY?: boolean | undefined };
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** What a command gets besides its arguments. */
export interface CommandContext {
  readonly io: CommandIO;
  /** `--json`: the result is printed as JSON. */
  readonly json: boolean;
  /** `--quiet`: no progress, no text result (errors still go to stderr). */
  readonly quiet: boolean;
  /** Aborted by Ctrl-C (SIGINT) or SIGTERM: passed to every API call that takes one. */
  readonly signal: AbortSignal;
  /** A progress display for one long operation, on stderr, as `--quiet` and the terminal allow. */
  progress(label: string, unit?: string): ProgressBar;
  /**
   * Prints a note on stderr for people (`resuming from the map ...`),
   * unless `--quiet` or `--json`.
   */
  note(text: string): void;
}

/** What a command printed: text for people, a JSON value for scripts. */
export interface CommandResult {
  readonly text: string;
  readonly json: unknown;
  /**
   * Where the result goes: stdout, or stderr when stdout carries the
   * command's data (`export -o -`, `read -o -`). @default 'stdout'
   */
  readonly to?: 'stdout' | 'stderr' | undefined;
}

/** One subcommand. */
export interface Command {
  /** The words that name it: `create`, `snapshot ls`. */
  readonly name: string;
  /** One line: what it does. */
  readonly summary: string;
  /** Its arguments after the name: `<dir> --size SIZE [--journal SIZE]`. */
  readonly usage: string;
  /** Positional arguments it takes: at least, at most. */
  readonly positionals: readonly [number, number];
  /** Its own options (`--json`, `--quiet` and `--help` are every command's). */
  readonly options: OptionSpec;
  /** Help for each option: `['--size SIZE', 'bytes of the volume (20G, 512M)']`. */
  readonly optionHelp: readonly (readonly [string, string])[];
  /** A command line showing it in use. */
  readonly example: string;
  run(
    positionals: readonly string[],
    values: OptionValues,
    context: CommandContext,
  ): Promise<CommandResult>;
}

/**
 * The error a command throws when Ctrl-C stopped it, saying what state it
 * left and how to resume; exit status 130.
 */
export class Interrupted extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Interrupted';
  }
}

/** The progress mode for stderr: a bar on a terminal, lines on a file or pipe, nothing with `--quiet`. */
export function progressMode(io: CommandIO, quiet: boolean): ProgressMode {
  if (quiet) return 'off';
  return io.stderr.isTTY === true ? 'bar' : 'lines';
}

/** The drawing interval `BLOCKSNAP_PROGRESS_INTERVAL` sets (milliseconds), if it is a number. */
export function progressInterval(io: CommandIO): number | undefined {
  const text = io.env.BLOCKSNAP_PROGRESS_INTERVAL;
  const value = text === undefined ? Number.NaN : Number(text);
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}

/** A string option's value, or undefined. */
export function stringOption(values: OptionValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

/** A repeatable string option's values (none: empty). */
export function stringsOption(values: OptionValues, name: string): string[] {
  const v = values[name];
  if (v === undefined || typeof v === 'boolean') return [];
  return (Array.isArray(v) ? v : [v]).filter((x): x is string => typeof x === 'string');
}
