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
  splitting: false,
  treeshake: true,
  // vitest is only referenced by type from the conformance suite; never bundle it.
  external: ['vitest'],
});
