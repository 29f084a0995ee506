import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { defineConfig } from 'tsup';

/**
 * Gives bundled classes their own names back. Bundling turns
 * `export class MemoryDevice` into `var MemoryDevice = class _MemoryDevice`,
 * so `constructor.name` (and the error messages built from it) read
 * `_MemoryDevice`. esbuild's `keepNames` fixes that by wrapping every
 * function in a naming call, closures made per I/O included, which costs a
 * quarter of FileDevice's read rate (bench fd-read). Renaming the inner
 * binding back is the same program: inside the class body both names are
 * the same class.
 */
async function keepClassNames(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !/\.(c?js)$/.test(entry.name)) continue;
    const file = join(entry.parentPath, entry.name);
    let code = await readFile(file, 'utf8');
    const renamed = [...code.matchAll(/\bvar (\w+) = class _\1\b/g)].map((m) => m[1]!);
    for (const name of renamed) code = code.replace(new RegExp(`\\b_${name}\\b`, 'g'), name);
    if (renamed.length > 0) await writeFile(file, code);
  }
}

export default defineConfig({
  // cli/main is the `blocksnap` command (package.json "bin"); its shebang is kept.
  entry: {
    index: 'src/index.ts',
    'testing/index': 'src/testing/index.ts',
    'nbd/index': 'src/nbd.ts',
    'cli/main': 'src/cli/main.ts',
    // VirtualVolume's worker processors start on this file, found beside the
    // chunk that starts them (src/volume/processor-host.ts, workerEntry).
    'volume-worker': 'src/volume/volume-worker.ts',
  },
  // import.meta.url in the CommonJS build too: it is how a worker finds its entry.
  shims: true,
  format: ['esm', 'cjs'],
  target: 'node20',
  // typed-emitter is a dev dependency: inline its types so users of the
  // published declarations never need it (or the rxjs it drags in).
  dts: { resolve: ['typed-emitter'] },
  clean: true,
  sourcemap: true,
  // One copy of each class shared by both entry points (instanceof and
  // private fields hold across 'blocksnap' and 'blocksnap/testing'), in CJS too.
  splitting: true,
  treeshake: true,
  // vitest is only referenced by type from the conformance suite; never bundle it.
  external: ['vitest'],
  onSuccess: () => keepClassNames('dist'),
});
