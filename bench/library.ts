/**
 * Which build of blocksnap the benchmark measures: the TypeScript sources run
 * through tsx (what `npm run bench` does by default), or with `BENCH_LIB=dist`
 * the bundle tsup builds (`npm run build` first), which is what users get.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type * as Blocksnap from '../src/index.js';

export type Library = typeof Blocksnap;

export interface LoadedLibrary {
  lib: Library;
  /** Human-readable: which build was loaded. */
  description: string;
}

export async function loadLibrary(): Promise<LoadedLibrary> {
  const which = process.env.BENCH_LIB ?? 'src';
  if (which !== 'src' && which !== 'dist') {
    throw new Error(`BENCH_LIB=${which}: expected "src" or "dist"`);
  }
  const specifier = which === 'dist' ? '../dist/index.js' : '../src/index.js';
  const url = new URL(specifier, import.meta.url);
  if (which === 'dist' && !fs.existsSync(fileURLToPath(url))) {
    throw new Error('BENCH_LIB=dist but dist/index.js is missing: run `npm run build` first');
  }
  // A computed specifier: the type checker must not require dist/ to exist.
  const lib = (await import(url.href)) as Library;
  return {
    lib,
    description:
      which === 'dist'
        ? 'dist/index.js (the tsup bundle users get)'
        : 'src/ through tsx (esbuild transform; its keepNames helper wraps every function expression)',
  };
}
