/*
 * Where a processor's worker starts (docs/ARCHITECTURE.md, "VirtualVolume",
 * "Processors and messages"): the built worker beside the chunk that
 * starts it, the TypeScript source behind tsx's loader, or a bundle the
 * test suites build once.
 */

/**
 * How to start a worker on the entry beside this module: the built
 * JavaScript in the package (`dist/volume-worker.js`, or `.cjs` for the
 * CommonJS build); from source (tests, examples run with tsx) the
 * TypeScript file, behind tsx's loader registered inside the worker first —
 * Node 20 cannot load `.ts` in a worker by itself, and ignores
 * `--import tsx` in a worker's execArgv.
 */
export function workerEntry(): { entry: URL | string; eval: boolean } {
  if (entryOverride !== undefined) return { entry: entryOverride, eval: false };
  const here = import.meta.url;
  if (!here.endsWith('.ts')) {
    const extension = here.endsWith('.cjs') ? '.cjs' : '.js';
    return { entry: new URL(`./volume-worker${extension}`, here), eval: false };
  }
  const source = new URL('./volume-worker.ts', here).href;
  // Resolved here, beside the source, when the runtime can; vitest's
  // transformed modules cannot, and the package is found from the working
  // directory instead.
  const tsx = typeof import.meta.resolve === 'function' ? resolveOr('tsx/esm/api') : 'tsx/esm/api';
  const code = `import(${JSON.stringify(tsx)}).then((api) => { api.register(); return import(${JSON.stringify(source)}); });`;
  return { entry: code, eval: true };
}

let entryOverride: URL | undefined;

/**
 * Starts workers on `entry` from now on (`undefined`: the default again).
 * For the test suites: a bundle of the worker built once starts in a tenth
 * of the time tsx takes to load the sources in every worker. @internal
 */
export function overrideWorkerEntry(entry: URL | undefined): void {
  entryOverride = entry;
}

function resolveOr(specifier: string): string {
  try {
    return import.meta.resolve(specifier);
  } catch {
    return specifier;
  }
}
