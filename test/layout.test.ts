import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

/*
 * The layout rules of docs/ARCHITECTURE.md ("Layout"), checked on the source
 * text: each folder under src/ is a subsystem whose index.ts is the only file
 * another folder may import, and folders depend on each other only downwards.
 */

const SRC = path.resolve(import.meta.dirname, '../src');

/** Which folders each folder may import (through their index.ts). */
const MAY_IMPORT: Readonly<Record<string, readonly string[]>> = {
  base: [],
  checksum: [],
  store: ['base', 'checksum'],
  snapshot: ['base'],
  nbd: ['base'],
  devices: ['base', 'nbd'],
  cow: ['base', 'checksum', 'store', 'snapshot'],
  journal: ['base', 'checksum', 'store', 'snapshot'],
  stream: ['base', 'checksum', 'snapshot'],
  copy: ['base', 'checksum', 'store', 'stream'],
  testing: ['base', 'snapshot'],
  volume: ['base', 'checksum', 'store', 'snapshot', 'cow', 'devices'],
  // The command uses only the public API: src/index.ts (checked below).
  cli: [],
};
/** Files at the top of src/ that every folder may import. */
const CONTRACT = new Set(['device.ts', 'errors.ts']);

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

/** Every relative module specifier in `text`: static imports, re-exports and dynamic imports. */
function relativeSpecifiers(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(
    /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g,
  )) {
    found.push(m[2]!);
  }
  return found;
}

/** The folder of a file under src/, or undefined for a file at the top of src/. */
function folderOf(file: string): string | undefined {
  const parts = path.relative(SRC, file).split(path.sep);
  return parts.length > 1 ? parts[0] : undefined;
}

/** What is wrong with one import from `file`, or undefined if it keeps the rules. */
function layoutViolation(file: string, specifier: string): string | undefined {
  const target = path.resolve(path.dirname(file), specifier).replace(/\.js$/, '.ts');
  const where = `${path.relative(SRC, file)} imports ${specifier}`;
  if (!target.startsWith(SRC + path.sep)) return `${where}: outside src/`;
  const from = folderOf(file);
  const to = folderOf(target);
  if (to === 'cli' && from !== 'cli') return `${where}: nothing imports the command (cli/)`;
  if (from === 'cli' && to !== 'cli') {
    return target === path.join(SRC, 'index.ts')
      ? undefined
      : `${where}: cli/ uses only the public API (import ../index.js)`;
  }
  if (to === undefined) {
    const name = path.basename(target);
    if (CONTRACT.has(name)) return undefined;
    return from === undefined ? undefined : `${where}: only src/index.ts may import ${name}`;
  }
  if (from === to) return undefined;
  if (path.relative(path.join(SRC, to), target) !== 'index.ts') {
    return `${where}: a private file of ${to}/ (import ${to}/index.js)`;
  }
  if (from === undefined) return undefined; // src/index.ts: the public surface
  if (!(MAY_IMPORT[from] ?? []).includes(to)) {
    return `${where}: ${from}/ may not depend on ${to}/ (docs/ARCHITECTURE.md, "Layout")`;
  }
  return undefined;
}

describe('source layout', () => {
  const files = sourceFiles(SRC);

  it('every folder under src/ is a known subsystem with an index.ts', () => {
    const folders = fs
      .readdirSync(SRC, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
    expect(folders).toEqual(Object.keys(MAY_IMPORT).sort());
    for (const folder of folders)
      expect(fs.existsSync(path.join(SRC, folder, 'index.ts'))).toBe(true);
  });

  it('no file imports another folder’s private file, nor a folder below it may not use', () => {
    const violations = files.flatMap((file) =>
      relativeSpecifiers(fs.readFileSync(file, 'utf8'))
        .map((spec) => layoutViolation(file, spec))
        .filter((v): v is string => v !== undefined),
    );
    expect(violations).toEqual([]);
  });

  it('the check catches each kind of violation (it can fail)', () => {
    const cow = path.join(SRC, 'cow', 'cow-store.ts');
    const base = path.join(SRC, 'base', 'range.ts');
    expect(layoutViolation(cow, '../journal/journal-core.js')).toMatch(/private file of journal/);
    expect(layoutViolation(cow, '../journal/index.js')).toMatch(/may not depend on journal/);
    expect(layoutViolation(base, '../cow/index.js')).toMatch(/may not depend on cow/);
    expect(layoutViolation(base, '../index.js')).toMatch(/only src\/index.ts may import/);
    expect(layoutViolation(cow, '../store/index.js')).toBeUndefined();
    expect(layoutViolation(cow, './cow-state.js')).toBeUndefined();
    const cli = path.join(SRC, 'cli', 'run.ts');
    expect(layoutViolation(cli, '../cow/index.js')).toMatch(/only the public API/);
    expect(layoutViolation(cli, '../errors.js')).toMatch(/only the public API/);
    expect(layoutViolation(cli, '../index.js')).toBeUndefined();
    expect(layoutViolation(cli, './units.js')).toBeUndefined();
    expect(layoutViolation(path.join(SRC, 'index.ts'), './cli/index.js')).toMatch(
      /nothing imports the command/,
    );
    expect(
      relativeSpecifiers(
        "import { a } from './x.js';\nexport * from '../y/z.js';\nawait import('./w.js');",
      ),
    ).toEqual(['./x.js', '../y/z.js', './w.js']);
  });

  it('comments cite docs/ARCHITECTURE.md, never a file outside the repository', () => {
    const outside = files.filter((file) =>
      /DESIGN\.md|\.\.\/shared\//.test(fs.readFileSync(file, 'utf8')),
    );
    expect(outside.map((f) => path.relative(SRC, f))).toEqual([]);
  });

  it('a file over 400 lines is named, with its reason, in docs/ARCHITECTURE.md', () => {
    const doc = fs.readFileSync(path.resolve(SRC, '../docs/ARCHITECTURE.md'), 'utf8');
    // Only the section counts: the doc names most files elsewhere too.
    const section = doc.split('### Files over 400 lines')[1]?.split(/\n##+ /)[0] ?? '';
    const long = files
      .filter((file) => fs.readFileSync(file, 'utf8').split('\n').length > 400)
      .map((file) => path.relative(SRC, file).split(path.sep).join('/'));
    expect(long.filter((name) => !section.includes(`src/${name}`))).toEqual([]);
  });
});
