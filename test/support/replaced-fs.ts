import nodeFs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

/** A node:fs function, as a replacement sees it. */
export type FsFunction = (...args: unknown[]) => unknown;

/** The node:fs functions a test can replace. */
export type ReplaceableFs = 'open' | 'close' | 'write' | 'writev';

/** The node:fs/promises functions a test can replace. */
export type ReplaceablePromises = 'link';

/** Replacements: each gets the real function and returns the one to use instead. */
export interface FsReplacements {
  fs?: Partial<Record<ReplaceableFs, (real: FsFunction) => FsFunction>>;
  promises?: Partial<Record<ReplaceablePromises, (real: FsFunction) => FsFunction>>;
}

/**
 * Runs `body` with node:fs functions replaced, for tests of what a device
 * does when the file system misbehaves in ways a real disk rarely shows (a
 * lost race, a zero-byte write). ESM imports of node:fs see the change
 * (`syncBuiltinESMExports`); `fs.promises` is one object shared by every
 * importer. Everything is restored after, whatever `body` does.
 */
export async function withReplacedFs<T>(
  replacements: FsReplacements,
  body: () => Promise<T>,
): Promise<T> {
  const fs = nodeFs as unknown as Record<string, FsFunction>;
  const promises = nodeFs.promises as unknown as Record<string, FsFunction>;
  const undo: (() => void)[] = [];
  const replace = (
    target: Record<string, FsFunction>,
    table: Partial<Record<string, (real: FsFunction) => FsFunction>> | undefined,
  ) => {
    for (const [name, make] of Object.entries(table ?? {})) {
      const real = target[name]!;
      target[name] = make!(real);
      undo.push(() => {
        target[name] = real;
      });
    }
  };
  replace(fs, replacements.fs);
  replace(promises, replacements.promises);
  syncBuiltinESMExports();
  try {
    return await body();
  } finally {
    for (const restore of undo) restore();
    syncBuiltinESMExports();
  }
}
