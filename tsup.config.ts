import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts' },
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
  // Class names survive bundling: errors say 'MemoryDevice is closed', and
  // constructor.name is what the user wrote.
  keepNames: true,
  treeshake: true,
  // vitest is only referenced by type from the conformance suite; never bundle it.
  external: ['vitest'],
});
