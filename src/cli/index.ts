/*
 * The `blocksnap` command (docs/ARCHITECTURE.md, "Layout": cli/ uses only
 * the public API, src/index.ts, and nothing imports cli/). The entry point
 * the package's "bin" runs is main.ts; this index names what tests and a
 * later subcommand need.
 */
export type { Command, CommandContext, CommandIO, CommandResult } from './command.js';
export { EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_STATUS } from './exit-status.js';
export { ProgressBar, type ProgressMode } from './progress.js';
export { COMMANDS, runCli } from './run.js';
export { formatBytes, parseRanges, parseSize, parseTime } from './units.js';
export { MANIFEST_NAME, type VolumeManifest } from './volume.js';
