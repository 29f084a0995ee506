import { formatBytes, formatDuration } from './units.js';

/** Where progress goes: a bar redrawn in place, plain periodic lines, or nowhere. */
export type ProgressMode = 'bar' | 'lines' | 'off';

/** The stream progress is written to (stderr): a terminal's has `columns`. */
export interface ProgressStream {
  write(text: string): unknown;
  readonly columns?: number | undefined;
}

/** How often progress is drawn, in milliseconds: a bar 10 times a second, a line every 2 s. */
const INTERVAL_MS: Readonly<Record<Exclude<ProgressMode, 'off'>, number>> = {
  bar: 100,
  lines: 2000,
};

/**
 * Progress of one long operation in bytes: a bar with bytes done, rate and
 * ETA, redrawn in place on a terminal; plain lines, one per interval, when
 * stderr is a file or pipe (a log keeps them); nothing when off.
 *
 * Guarantees: draws at most once per interval (the first update and the
 * last always), so a fast operation costs no terminal writes per MiB; after
 * {@link ProgressBar.finish} or {@link ProgressBar.stop} the bar's line is
 * complete and ends in a newline, so whatever the command prints next starts
 * on a clean line.
 */
export class ProgressBar {
  readonly #out: ProgressStream;
  readonly #mode: ProgressMode;
  readonly #label: string;
  readonly #intervalMs: number;
  readonly #format: (n: number) => string;
  readonly #started = performance.now();
  #lastDraw = Number.NEGATIVE_INFINITY;
  #done = 0;
  #total = 0;
  #ended = false;
  /** Whether a bar is on screen without its newline yet. */
  #open = false;

  /**
   * @param intervalMs - overrides the drawing interval (the command takes
   *   `BLOCKSNAP_PROGRESS_INTERVAL` from the environment); `undefined`: the
   *   mode's own.
   * @param unit - what is counted: bytes (shown as KiB, MiB ...), or a
   *   noun for a count (`'blocks'`, `'pieces'`).
   */
  constructor(
    out: ProgressStream,
    mode: ProgressMode,
    label: string,
    intervalMs?: number,
    unit = 'bytes',
  ) {
    this.#out = out;
    this.#format = unit === 'bytes' ? formatBytes : (n) => `${Math.round(n)} ${unit}`;
    // A log gets its first line one interval in: an operation shorter than
    // that logs only its final line.
    if (mode === 'lines') this.#lastDraw = this.#started;
    this.#mode = mode;
    this.#label = label;
    this.#intervalMs = intervalMs ?? (mode === 'off' ? 0 : INTERVAL_MS[mode]);
  }

  /** Records `done` of `total` bytes; draws if the interval has passed. */
  update(done: number, total: number): void {
    if (this.#ended) return;
    this.#done = done;
    this.#total = total;
    const now = performance.now();
    if (this.#mode === 'off' || now - this.#lastDraw < this.#intervalMs) return;
    this.#lastDraw = now;
    this.#draw(false, '');
  }

  /** Draws the final state (100 % if `done` reached `total`) and ends the line. */
  finish(): void {
    this.#end('');
  }

  /** Ends the line where the operation stopped, saying why (`interrupted`, `failed`). */
  stop(why: string): void {
    this.#end(why);
  }

  #end(why: string): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#mode !== 'off') this.#draw(true, why);
  }

  #draw(final: boolean, why: string): void {
    const seconds = (performance.now() - this.#started) / 1000;
    const rate = seconds > 0 ? this.#done / seconds : 0;
    const percent = this.#total > 0 ? Math.floor((this.#done / this.#total) * 100) : 100;
    const amount = `${this.#format(this.#done)} / ${this.#format(this.#total)}`;
    const speed = `${this.#format(Math.round(rate))}/s`;
    let tail: string;
    if (final && why === '') tail = `${amount} in ${seconds.toFixed(1)} s, ${speed}`;
    else if (final) tail = `${amount}, ${why}`;
    else {
      const eta = rate > 0 ? formatDuration((this.#total - this.#done) / rate) : '?';
      tail = `${amount}  ${speed}  ETA ${eta}`;
    }
    if (this.#mode === 'lines') {
      this.#out.write(`${this.#label}: ${String(percent).padStart(3)}%  ${tail}\n`);
      return;
    }
    const head = `${this.#label} ${String(percent).padStart(3)}% `;
    const width = Math.max(
      10,
      Math.min(40, (this.#out.columns ?? 80) - head.length - tail.length - 5),
    );
    const filled = Math.min(width, Math.floor((percent / 100) * width));
    const bar = `[${'='.repeat(filled)}${filled < width ? '>' : ''}${' '.repeat(Math.max(0, width - filled - 1))}]`;
    // \r and erase-to-end-of-line: each frame replaces the last in place,
    // and a shorter frame leaves none of the longer one behind.
    this.#out.write(`\r${head}${bar} ${tail}\x1b[K${final ? '\n' : ''}`);
    this.#open = !final;
  }

  /** Whether a bar is drawn and its line not ended yet (an error message then needs a newline first). */
  get open(): boolean {
    return this.#open;
  }
}
