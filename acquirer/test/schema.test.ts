/**
 * Schema versions of the acquirer's database (src/schema.ts), tested on a file
 * the previous code wrote (test/fixtures/schema/acquirer-v1.sqlite.gz, made by
 * make-acquirer-fixture.ts at the last commit before versions): it opens as
 * version 1 with its data, upgrades to a test version 2 with its data, an
 * upgrade that throws or whose process dies leaves it at version 1 intact, two
 * processes opening it at once migrate it once, and a file of a newer version
 * or of another kind is refused and left as it was, also by `dt-acquirer` (exit 5).
 */
import test from 'ava';
import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { toHex } from '@dt/protocol';
import { ACQUIRER_MIGRATIONS, AcquirerSchemaError, AcquirerStore, BatchState } from '../src/index.ts';
import { ACQUIRER_FIXTURE } from './fixtures/schema/acquirer-fixture-data.ts';
import { LIST_V2, LIST_V3, THROWING_V2 } from './helpers/schema-migrations.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/schema/acquirer-v1.sqlite.gz', import.meta.url));
const CHILD = fileURLToPath(new URL('./helpers/schema-child.ts', import.meta.url));
const BIN = fileURLToPath(new URL('../bin/dt-acquirer.js', import.meta.url));

const dirs: string[] = [];
test.after.always(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** A copy of the previous version's database in a fresh directory. */
function previousFile(): string {
  const file = join(tempDir('dt-acquirer-schema-'), 'acquirer.sqlite');
  writeFileSync(file, gunzipSync(readFileSync(FIXTURE)));
  return file;
}

/** Reads the version, `meta.schema` and the columns of `terminals` without the store code. */
function inspect(file: string): { version: number; meta: string | undefined; columns: string[]; tables: string[] } {
  const db = new Database(file, { readonly: true });
  try {
    return {
      version: db.pragma('user_version', { simple: true }) as number,
      meta: (db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: string } | undefined)?.value,
      columns: (db.prepare(`SELECT name FROM pragma_table_info('terminals')`).all() as { name: string }[]).map((r) => r.name),
      tables: tables(file, db),
    };
  } finally {
    db.close();
  }
}

function tables(file: string, open?: Database.Database): string[] {
  const db = open ?? new Database(file, { readonly: true });
  try {
    return (
      db.prepare(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`).all() as {
        name: string;
      }[]
    ).map((r) => r.name);
  } finally {
    if (!open) db.close();
  }
}

/** The fixture's data as the store reads it. */
function assertFixtureData(t: import('ava').ExecutionContext, store: AcquirerStore): void {
  const f = ACQUIRER_FIXTURE;
  const terminal = new Uint8Array(f.terminal);
  t.deepEqual(
    f.batches.map((b) => {
      const s = store.findBatch(terminal, b.seq)!;
      return [s.seq, s.state, s.handovers, s.transferHashes.length, s.attempts];
    }),
    [
      [1, BatchState.SETTLED, 2, 2, 0],
      [2, BatchState.REJECTED, 1, 1, 0],
      [3, BatchState.PENDING, 3, 3, 2],
    ],
  );
  t.is(store.lastSeq(terminal), 3);
  t.is(store.terminal(terminal)?.merchant, f.merchant);
  t.deepEqual(
    store.outcomesAfter(terminal, 0, 10).map((o) => [o.batchSeq, o.index, o.status, toHex(o.bytes)]),
    [
      [1, 0, 0, '8600'],
      [1, 1, 2, '8602'],
    ],
  );
  t.true(store.isTerminalRevoked(new Uint8Array(f.revoked)));
  t.is(store.crl()?.version, f.crlVersion);
  t.like(store.queueStats(), { pendingBatches: 1, pendingHandovers: 3, settledBatches: 1, rejectedBatches: 1, outcomes: 2 });
  // The (terminal, seq) rule still holds on the old rows.
  t.throws(
    () =>
      store.insertBatch({
        terminal,
        seq: 3,
        hash: new Uint8Array(32),
        bytes: new Uint8Array([1]),
        transferHashes: [],
        receivedAt: f.now,
        chain: new Uint8Array([1]),
        merchant: 'x',
      }),
    { any: true, message: /UNIQUE constraint failed: batches.terminal, batches.seq/ },
  );
}

function run(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=dt-source', '--import', 'tsx', CHILD, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, out, err }));
  });
}

test('a new database is created at the latest version, meta.schema mirroring it', (t) => {
  const file = join(tempDir('dt-acquirer-schema-'), 'acquirer.sqlite');
  new AcquirerStore(file).close();
  const s = inspect(file);
  t.is(s.version, ACQUIRER_MIGRATIONS.length);
  t.is(s.meta, String(ACQUIRER_MIGRATIONS.length));
});

test("the previous version's file opens as version 1 with all its data", (t) => {
  const file = previousFile();
  t.is(inspect(file).version, 0, 'the fixture predates versions');
  const store = new AcquirerStore(file);
  assertFixtureData(t, store);
  store.close();
  t.like(inspect(file), { version: 1, meta: '1' });
});

test("the previous version's file upgrades to a version 2 with its data", (t) => {
  const file = previousFile();
  const store = new AcquirerStore(file, { migrations: LIST_V2 });
  assertFixtureData(t, store);
  store.close();
  const s = inspect(file);
  t.is(s.version, 2);
  t.is(s.meta, '2', 'the code of before versions refuses the file: it wants meta.schema 1');
  t.true(s.columns.includes('note'));
  const db = new Database(file, { readonly: true });
  t.deepEqual(db.prepare('SELECT DISTINCT note FROM terminals').all(), [{ note: 'by fixture shop' }]);
  t.deepEqual(db.prepare('SELECT version FROM migration_runs').all(), [{ version: 2 }]);
  db.close();
  new AcquirerStore(file, { migrations: LIST_V2 }).close();
  const db2 = new Database(file, { readonly: true });
  t.is((db2.prepare('SELECT count(*) AS n FROM migration_runs').get() as { n: number }).n, 1, 'opening again does not run the step again');
  db2.close();
});

test('an upgrade step that throws leaves the file at version 1 with its data', (t) => {
  const file = previousFile();
  t.throws(() => new AcquirerStore(file, { migrations: [...ACQUIRER_MIGRATIONS, THROWING_V2] }), {
    message: /migration step failed on purpose/,
  });
  const s = inspect(file);
  t.like(s, { version: 1, meta: '1' });
  t.false(s.columns.includes('note'));
  t.false(s.tables.includes('migration_runs'));
  const store = new AcquirerStore(file);
  assertFixtureData(t, store);
  store.close();
});

test('a process killed during the upgrade leaves the file at version 1 with its data; the next open upgrades it', async (t) => {
  const file = previousFile();
  const r = await run([file, 'kill']);
  t.is(r.signal, 'SIGKILL', r.err);
  const s = inspect(file);
  t.like(s, { version: 1, meta: '1' });
  t.false(s.columns.includes('note'));
  const store = new AcquirerStore(file);
  assertFixtureData(t, store);
  store.close();
  new AcquirerStore(file, { migrations: LIST_V2 }).close();
  t.is(inspect(file).version, 2);
});

test('two processes opening a version 1 file at once: one migrates, the other waits and finds version 2', async (t) => {
  const file = previousFile();
  new AcquirerStore(file).close(); // stamped 1
  const dir = join(file, '..');
  const started = join(dir, 'a-started');
  const gate = join(dir, 'b-started');
  const a = run([file, 'wait', started, gate]);
  while (!existsSync(started)) await new Promise((r) => setTimeout(r, 20));
  const b = await run([file, 'second', gate]);
  const ra = await a;
  t.is(ra.code, 0, ra.err);
  t.is(b.code, 0, b.err);
  t.like(JSON.parse(b.out), { before: 1, pending: 1 }, 'the second opener started while the first was migrating');
  const db = new Database(file, { readonly: true });
  t.deepEqual(db.prepare('SELECT version FROM migration_runs').all(), [{ version: 2 }], 'the step ran once');
  t.is(db.pragma('user_version', { simple: true }), 2);
  db.close();
});

test('a file of a newer version is refused and left as it was; dt-acquirer exits 5', async (t) => {
  const file = previousFile();
  new AcquirerStore(file, { migrations: LIST_V3 }).close();
  const before = readFileSync(file);
  for (const migrations of [ACQUIRER_MIGRATIONS, LIST_V2]) {
    const e = t.throws(() => new AcquirerStore(file, { migrations }), { instanceOf: AcquirerSchemaError });
    t.like(e, { problem: 'NEWER', version: 3 });
    t.regex(e.message, /schema version 3, newer than this program knows \(\d\)/);
  }
  const r = await cli(['revoke-terminal', '--db', file, '--kid', '00'.repeat(16)]);
  t.is(r.code, 5, r.stderr);
  t.regex(r.stderr, /cannot open database: the database has schema version 3, newer than this program knows/);
  t.deepEqual(readFileSync(file), before);
  t.is(inspect(file).version, 3);
});

test('a file that is not a database, or a database of another kind, is refused and left as it was', async (t) => {
  const dir = tempDir('dt-acquirer-schema-');
  const text = join(dir, 'notes.txt');
  writeFileSync(text, 'hello, this is not a database at all, just some text that is long enough\n'.repeat(20));
  t.throws(() => new AcquirerStore(text), { any: true, message: /not a database/ });
  const r = await cli(['revoke-terminal', '--db', text, '--kid', '00'.repeat(16)]);
  t.is(r.code, 5, r.stderr);
  t.regex(r.stderr, /cannot open database: file is not a database/);

  const other = join(dir, 'other.sqlite');
  const db = new Database(other);
  db.exec(`CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('x')`);
  db.close();
  const before = readFileSync(other);
  const e2 = t.throws(() => new AcquirerStore(other), { instanceOf: AcquirerSchemaError });
  t.is(e2.problem, 'NOT_AN_ACQUIRER_DB');
  t.regex(e2.message, /not an acquirer database: it holds table\(s\) customers/);
  t.deepEqual(readFileSync(other), before);

  const odd = join(dir, 'odd.sqlite');
  const db2 = new Database(odd);
  db2.exec(`CREATE TABLE batches (id INTEGER PRIMARY KEY)`);
  db2.close();
  t.throws(() => new AcquirerStore(odd), { message: /table batches has other columns/ });
  t.deepEqual(tables(odd), ['batches']);
});

function cli(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stderr }));
  });
}
