import { BlockDeviceError, type Extent } from '../index.js';

/*
 * What the command line reads and writes for people: sizes (`20G`, `512M`,
 * `4k`, binary multiples as qemu-img and rbd read them), ISO 8601 times, and
 * byte ranges. Every parse failure is `EINVAL` quoting what was given, before
 * anything is opened.
 */

const MULTIPLIERS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  p: 1024 ** 5,
  pib: 1024 ** 5,
};

/**
 * Reads a size or offset: a number of bytes, or a number with a binary
 * suffix (`k`, `M`, `G`, `T`, `P`, also `KiB` ...), case-insensitive.
 * A fraction is accepted when it makes whole bytes (`1.5G`).
 * @throws `EINVAL` naming `what` for anything else, a negative size, or one
 *   past 2^53 bytes.
 */
export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m?.[2]?.toLowerCase() ?? '';
  const multiplier = MULTIPLIERS[unit];
  if (m === null || multiplier === undefined) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: '${text}' is not a size (bytes, or a number with k, M, G, T: '20G', '512M', '4k')`,
    );
  }
  const bytes = Number(m[1]) * multiplier;
  if (!Number.isSafeInteger(bytes)) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: '${text}' is not a whole number of bytes below 8 PiB`,
    );
  }
  return bytes;
}

/** Bytes as people read them: `512 B`, `4.0 KiB`, `20.0 GiB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * Reads an ISO 8601 time (`2025-03-01T10:32:00Z`, `2025-03-01T10:32:00.250+01:00`;
 * a date alone is midnight UTC). A time without a zone is refused rather than
 * read in the local zone of whichever machine runs the command.
 * @throws `EINVAL` for anything else.
 */
export function parseTime(text: string, what: string): Date {
  const iso =
    /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2}))?$/i.test(text);
  const date = new Date(text);
  if (!iso || Number.isNaN(date.getTime())) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: '${text}' is not an ISO 8601 time with a zone (e.g. 2025-03-01T10:32:00Z)`,
    );
  }
  return date;
}

/**
 * Reads byte ranges `OFFSET:LENGTH[,OFFSET:LENGTH...]`, each a size
 * (`0:1M,8M:512k`); several options given are joined.
 * @throws `EINVAL` for a malformed range or one of no bytes.
 */
export function parseRanges(texts: readonly string[], what: string): Extent[] {
  const extents: Extent[] = [];
  for (const text of texts) {
    for (const part of text.split(',')) {
      const [offset, length, extra] = part.split(':');
      if (offset === undefined || length === undefined || extra !== undefined) {
        throw new BlockDeviceError(
          'EINVAL',
          `${what}: '${part}' is not OFFSET:LENGTH (e.g. 0:1M,8M:512k)`,
        );
      }
      const extent = { offset: parseSize(offset, what), length: parseSize(length, what) };
      if (extent.length === 0) throw new BlockDeviceError('EINVAL', `${what}: '${part}' is empty`);
      extents.push(extent);
    }
  }
  return extents;
}

/** Seconds as `m:ss` (or `h:mm:ss`) for an ETA. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}
