// Checks the built package (run after `npm run build`): both entry points
// share one copy of every class, in ESM and CJS alike, so `instanceof` and
// private fields hold across 'blocksnap' and 'blocksnap/testing'; class names
// survive bundling (errors say "MemoryDevice is closed"); and the testing
// declarations refer to the main entry's classes instead of redeclaring them.
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const failures = [];
const expect = (ok, what) => {
  if (!ok) failures.push(what);
};

async function checkEntries(kind, main, testing) {
  const memory = await main.MemoryDevice.create({ size: 4096, blockSize: 512 });
  const faulty = new testing.FaultyDevice(memory);
  expect(
    faulty instanceof main.AbstractBlockDevice,
    `${kind}: FaultyDevice is an AbstractBlockDevice of the main entry`,
  );
  for (const name of [
    'MemoryDevice',
    'FileDevice',
    'CowSnapshotDevice',
    'JournalDevice',
    'VirtualVolume',
    'BlockDeviceError',
  ]) {
    expect(main[name]?.name === name, `${kind}: ${name}.name is '${main[name]?.name}'`);
  }
  expect(testing.FaultyDevice.name === 'FaultyDevice', `${kind}: FaultyDevice.name`);
  await faulty.close();
  try {
    await faulty.read(0, 1);
    failures.push(`${kind}: a read after close resolved`);
  } catch (err) {
    expect(
      err instanceof main.BlockDeviceError,
      `${kind}: an error thrown by testing's device is the main entry's BlockDeviceError`,
    );
    expect(
      /FaultyDevice is closed/.test(err.message),
      `${kind}: error message '${err.message}' names the class`,
    );
  }
}

// VirtualVolume's worker processors start on dist/volume-worker.js (.cjs for
// the CommonJS build), found beside the chunk that starts them.
async function checkWorker(kind, main) {
  const store = await main.MemoryDevice.create({ size: 1 << 20, blockSize: 4096 });
  const partition = { origin: { memory: { size: 65536 } }, store: { memory: { size: 1 << 20 } } };
  try {
    const volume = await main.VirtualVolume.create({
      store,
      processors: 1,
      partitions: [partition],
    });
    await volume.write(0, new Uint8Array(4096).fill(7));
    const read = await volume.read(0, 4096);
    expect(read[4095] === 7, `${kind}: a VirtualVolume worker wrote and read back`);
    await volume.close();
  } catch (err) {
    failures.push(`${kind}: a VirtualVolume worker failed: ${err.message}`);
  }
}

await checkWorker('esm', await import('../dist/index.js'));
await checkWorker('cjs', require('../dist/index.cjs'));
await checkEntries(
  'esm',
  await import('../dist/index.js'),
  await import('../dist/testing/index.js'),
);
await checkEntries('cjs', require('../dist/index.cjs'), require('../dist/testing/index.cjs'));
for (const file of ['dist/testing/index.d.ts', 'dist/testing/index.d.cts']) {
  const dts = readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');
  expect(
    !/class (AbstractBlockDevice|BlockDeviceError|MemoryDevice)\b/.test(dts),
    `${file} redeclares a class of the main entry`,
  );
}

// blocksnap/nbd: the main entry's NBD classes (not copies), and the protocol's numbers.
async function checkNbdEntry(kind, main, nbd) {
  for (const name of ['NbdDevice', 'NbdServer', 'NbdServerError', 'serveNbd', 'snapshotExports']) {
    expect(
      nbd[name] !== undefined && nbd[name] === main[name],
      `${kind}: blocksnap/nbd's ${name} is the main entry's`,
    );
  }
  expect(
    nbd.NbdProtocol?.NBD_CMD_BLOCK_STATUS === 7,
    `${kind}: blocksnap/nbd's NbdProtocol.NBD_CMD_BLOCK_STATUS`,
  );
}
await checkNbdEntry('esm', await import('../dist/index.js'), await import('../dist/nbd/index.js'));
checkNbdEntry('cjs', require('../dist/index.cjs'), require('../dist/nbd/index.cjs'));

// What `npm install blocksnap` gets: the README links the stream format and
// the architecture map, and the TSDoc cites the latter.
const packed = JSON.parse(
  execFileSync('npm', ['pack', '--dry-run', '--json'], { encoding: 'utf8' }),
);
const packedFiles = new Set(packed[0].files.map((f) => f.path));
for (const file of [
  'docs/stream-format.md',
  'docs/ARCHITECTURE.md',
  'README.md',
  'dist/index.js',
  'dist/nbd/index.js',
  'dist/cli/main.js',
]) {
  expect(packedFiles.has(file), `the package does not ship ${file}`);
}

// The `blocksnap` command: package.json's bin names the built file, which
// starts with its shebang, is executable, and runs from the package.
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const bin = pkg.bin?.blocksnap;
expect(
  bin === './dist/cli/main.js',
  `package.json bin.blocksnap is '${bin}', not ./dist/cli/main.js`,
);
const binUrl = new URL(`../${bin ?? 'dist/cli/main.js'}`, import.meta.url);
expect(
  readFileSync(binUrl, 'utf8').startsWith('#!/usr/bin/env node\n'),
  `${bin} does not start with #!/usr/bin/env node`,
);
expect((statSync(binUrl).mode & 0o111) !== 0, `${bin} is not executable`);
const version = execFileSync(process.execPath, [binUrl.pathname, '--version'], {
  encoding: 'utf8',
});
expect(version.trim() === pkg.version, `blocksnap --version printed '${version.trim()}'`);

if (failures.length > 0) {
  console.error(`dist check failed:\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
console.log(
  'dist: one copy of each class across entry points (esm and cjs, blocksnap/nbd too), class names kept, volume workers start, docs shipped, the blocksnap command runs',
);
