import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDirs, writeFileDurable } from '../src/fs.ts';

test('makeDirs creates the missing parents, returns the first one it made, and nothing for a directory that exists', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-fs-'));
  try {
    const deep = join(dir, 'a', 'b', 'c');
    t.is(makeDirs(deep, 0o700), join(dir, 'a'));
    t.true(statSync(deep).isDirectory());
    t.is(statSync(deep).mode & 0o777, 0o700);
    t.is(makeDirs(deep), undefined);
    t.is(makeDirs(dir), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('makeDirs fails with the reason when a file is in the way', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-fs-'));
  try {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    t.throws(() => makeDirs(file), { code: 'EEXIST' });
    t.throws(() => makeDirs(join(file, 'sub')), { code: 'ENOTDIR' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("makeDirs under /proc fails at once with ENOENT (Node's recursive mkdir never returns there)", (t) => {
  // In a child with a deadline: a loop would otherwise hold this process.
  const code = `import { makeDirs } from ${JSON.stringify(new URL('../src/fs.ts', import.meta.url).href)};
try { makeDirs('/proc/dt-no-such/dir'); console.log('made'); } catch (e) { console.log(e.code); }`;
  const r = spawnSync(process.execPath, ['--conditions=dt-source', '--import', 'tsx', '--input-type=module', '-e', code], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  t.is(r.signal, null, 'returned before the deadline');
  t.is(r.stdout.trim(), 'ENOENT');
});

test('writeFileDurable replaces the file whole with the given mode, and leaves no temporary file when it fails', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-fs-'));
  try {
    const f = join(dir, 'sub', 'out.cbor');
    writeFileDurable(f, new Uint8Array([1, 2, 3]), 0o600);
    t.deepEqual([...readFileSync(f)], [1, 2, 3]);
    t.is(statSync(f).mode & 0o777, 0o600);
    writeFileDurable(f, 'again\n');
    t.is(readFileSync(f, 'utf8'), 'again\n');
    t.is(statSync(f).mode & 0o777, 0o644);
    // A directory where the file should go: the rename fails, nothing is left beside it.
    const blocked = join(dir, 'blocked');
    mkdirSync(join(blocked, 'inside'), { recursive: true });
    t.throws(() => writeFileDurable(blocked, 'x'));
    t.deepEqual(readdirSync(dir).sort(), ['blocked', 'sub']);
    t.deepEqual(readdirSync(join(dir, 'sub')), ['out.cbor']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
