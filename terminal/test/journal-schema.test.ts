/**
 * Schema versions of the journal (src/journal/schema.ts), tested on a file the
 * previous code wrote (test/fixtures/schema/journal-v1.sqlite.gz, made by
 * make-journal-fixture.ts at the last commit before versions): it opens as
 * version 1 with its data, upgrades to a test version 2 with its data, an
 * upgrade that throws or whose process dies leaves it at version 1 intact, two
 * processes opening it at once migrate it once, and a file of a newer version
 * or of another kind is refused and left as it was.
 */
import test from 'ava';
import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { Journal, JOURNAL_MIGRATIONS, TerminalError, TerminalErrorCode } from '../src/index.ts';
import { JOURNAL_FIXTURE } from './fixtures/schema/journal-fixture-data.ts';
import { LIST_NEWER, LIST_V2, NEWER_VERSION, THROWING_V2, V1 } from './helpers/journal-migrations.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/schema/journal-v1.sqlite.gz', import.meta.url));
const CHILD = fileURLToPath(new URL('./helpers/journal-migrate-child.ts', import.meta.url));
const BIN = fileURLToPath(new URL('../bin/dt-pos.js', import.meta.url));

const dirs: string[] = [];
test.after.always(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** A copy of the previous version's journal in a fresh directory. */
function previousFile(): string {
  const file = join(tempDir('dt-journal-schema-'), 'journal.sqlite');
  writeFileSync(file, gunzipSync(readFileSync(FIXTURE)));
  return file;
}

/** Reads the version, `meta.schema` and the columns of `payments` without the journal code. */
function inspect(file: string): { version: number; meta: string | undefined; columns: string[]; tables: string[] } {
  const db = new Database(file, { readonly: true });
  try {
    return {
      version: db.pragma('user_version', { simple: true }) as number,
      meta: (db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: string } | undefined)?.value,
      columns: (db.prepare(`SELECT name FROM pragma_table_info('payments')`).all() as { name: string }[]).map((r) => r.name),
      tables: (db.prepare(`SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`).all() as { name: string }[]).map(
        (r) => r.name,
      ),
    };
  } finally {
    db.close();
  }
}

/** The fixture's data as the journal reads it. */
function assertFixtureData(t: import('ava').ExecutionContext, j: Journal): void {
  const f = JOURNAL_FIXTURE;
  const payments = j.listPayments();
  t.deepEqual(
    payments.map((p) => [p.counter, p.amount, p.state, p.batchSeq ?? null]),
    [
      [1, 15050, 'settled', 1],
      [2, 2000, 'submitted', 1],
      [3, 70000, 'pending', null],
    ],
  );
  t.deepEqual(j.pendingSummary(), { count: 2, amount: 72000, since: f.now });
  t.is(j.getMeta('outcomeCursor'), f.cursor);
  t.is(j.crl()?.version, f.crlVersion);
  t.true(j.isRevoked(new Uint8Array(f.revoked[0])));
  t.is(j.tornAttempts().length, 1);
  t.is(j.getBatch(1)?.state, 'acked');
  // The spent-input rule still holds on the old rows: the same coin again is a conflict.
  const again = j.recordApproval({
    transferHash: new Uint8Array(32).fill(9),
    card: new Uint8Array(f.card),
    counter: 9,
    amount: 1,
    currency: 398,
    nonce: new Uint8Array(16),
    time: f.now,
    approvedAt: f.now,
    cvm: 0,
    merchant: 'x',
    mcc: 1,
    handover: new Uint8Array([1]),
    inputs: [new Uint8Array(16).fill(0x41)],
  });
  t.is(again.kind, 'conflict');
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

test('a new journal is created at the latest version, meta.schema mirroring it', (t) => {
  const file = join(tempDir('dt-journal-schema-'), 'journal.sqlite');
  Journal.open(file).close();
  const s = inspect(file);
  t.is(s.version, JOURNAL_MIGRATIONS.length);
  t.is(s.meta, String(JOURNAL_MIGRATIONS.length));
});

test("the previous version's file opens as version 1 with all its data", (t) => {
  const file = previousFile();
  t.is(inspect(file).version, 0, 'the fixture predates versions');
  const j = Journal.open(file, { migrations: V1 });
  assertFixtureData(t, j);
  j.close();
  t.like(inspect(file), { version: 1, meta: '1' });
});

test("the previous version's file upgrades to the real latest version (the cash register's orders, the issuing-bank certificates) with its data", (t) => {
  const file = previousFile();
  const j = Journal.open(file);
  assertFixtureData(t, j);
  t.deepEqual(j.createOrder('till-1', 500), { created: true, order: j.getOrder('till-1')! });
  j.close();
  const s = inspect(file);
  t.like(s, { version: JOURNAL_MIGRATIONS.length, meta: String(JOURNAL_MIGRATIONS.length) });
  t.true(s.tables.includes('ecr_orders') && s.tables.includes('day_closes'));
});

test("the previous version's file upgrades to a version 2 with its data", (t) => {
  const file = previousFile();
  const j = Journal.open(file, { migrations: LIST_V2 });
  assertFixtureData(t, j);
  j.close();
  const s = inspect(file);
  t.is(s.version, 2);
  t.is(s.meta, '2', 'the code of before versions refuses the file: it wants meta.schema 1');
  t.true(s.columns.includes('note'));
  const db = new Database(file, { readonly: true });
  t.deepEqual(db.prepare('SELECT DISTINCT note FROM payments').all(), [{ note: 'by fixture shop' }]);
  t.deepEqual(db.prepare('SELECT version FROM migration_runs').all(), [{ version: 2 }]);
  db.close();
  // Opening again under v2 does not run the step again.
  Journal.open(file, { migrations: LIST_V2 }).close();
  const db2 = new Database(file, { readonly: true });
  t.is((db2.prepare('SELECT count(*) AS n FROM migration_runs').get() as { n: number }).n, 1);
  db2.close();
});

test('an upgrade step that throws leaves the file at version 1 with its data', (t) => {
  const file = previousFile();
  const e = t.throws(() => Journal.open(file, { migrations: [...V1, THROWING_V2] }), { instanceOf: TerminalError });
  t.is(e.code, TerminalErrorCode.JOURNAL);
  t.regex(e.message, /migration step failed on purpose/);
  const s = inspect(file);
  t.like(s, { version: 1, meta: '1' });
  t.false(s.columns.includes('note'));
  t.false(s.tables.includes('migration_runs'));
  const j = Journal.open(file);
  assertFixtureData(t, j);
  j.close();
});

test('a process killed during the upgrade leaves the file at version 1 with its data; the next open upgrades it', async (t) => {
  const file = previousFile();
  const r = await run([file, 'kill']);
  t.is(r.signal, 'SIGKILL', r.err);
  const s = inspect(file);
  t.like(s, { version: 1, meta: '1' });
  t.false(s.columns.includes('note'));
  const j = Journal.open(file, { migrations: V1 });
  assertFixtureData(t, j);
  j.close();
  Journal.open(file, { migrations: LIST_V2 }).close();
  t.is(inspect(file).version, 2);
});

test('two processes opening a version 1 file at once: one migrates, the other waits and finds version 2', async (t) => {
  const file = previousFile();
  Journal.open(file, { migrations: V1 }).close(); // stamped 1
  const dir = join(file, '..');
  const started = join(dir, 'a-started');
  const gate = join(dir, 'b-started');
  const a = run([file, 'wait', started, gate]);
  while (!existsSync(started)) await new Promise((r) => setTimeout(r, 20));
  const b = await run([file, 'second', gate]);
  const ra = await a;
  t.is(ra.code, 0, ra.err);
  t.is(b.code, 0, b.err);
  t.like(JSON.parse(b.out), { before: 1, payments: 3 }, 'the second opener started while the first was migrating');
  const db = new Database(file, { readonly: true });
  t.deepEqual(db.prepare('SELECT version FROM migration_runs').all(), [{ version: 2 }], 'the step ran once');
  t.is(db.pragma('user_version', { simple: true }), 2);
  db.close();
});

function dtPos(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stderr }));
  });
}

test('dt-pos refuses a journal of a newer version and a journal that is no database: exit 6, files as they were', async (t) => {
  const file = previousFile();
  Journal.open(file, { migrations: LIST_NEWER }).close();
  const before = readFileSync(file);
  const r = await dtPos(['report', '--data-dir', join(file, '..')]);
  t.is(r.code, 6, r.stderr);
  t.regex(
    r.stderr,
    new RegExp(`JOURNAL: cannot open the journal at .*: the journal has schema version ${NEWER_VERSION}, newer than this program knows`),
  );
  t.deepEqual(readFileSync(file), before);

  const dir = tempDir('dt-journal-schema-');
  writeFileSync(join(dir, 'journal.sqlite'), 'not a journal\n'.repeat(100));
  const r2 = await dtPos(['report', '--data-dir', dir]);
  t.is(r2.code, 6, r2.stderr);
  t.regex(r2.stderr, /JOURNAL: cannot open the journal at .*: file is not a database/);
});

test('a file of a newer version is refused and left as it was', (t) => {
  const file = previousFile();
  Journal.open(file, { migrations: LIST_NEWER }).close();
  const before = readFileSync(file);
  for (const migrations of [JOURNAL_MIGRATIONS, LIST_V2]) {
    const e = t.throws(() => Journal.open(file, { migrations }), { instanceOf: TerminalError });
    t.is(e.code, TerminalErrorCode.JOURNAL);
    t.like(e.details, { problem: 'NEWER', version: NEWER_VERSION });
    t.regex(e.message, new RegExp(`schema version ${NEWER_VERSION}, newer than this program knows \\(\\d\\)`));
  }
  t.deepEqual(readFileSync(file), before);
  t.is(inspect(file).version, NEWER_VERSION);
});

test('a file that is not a database, or a database of another kind, is refused and left as it was', (t) => {
  const dir = tempDir('dt-journal-schema-');
  const text = join(dir, 'notes.txt');
  writeFileSync(text, 'hello, this is not a database at all, just some text that is long enough\n'.repeat(20));
  const e1 = t.throws(() => Journal.open(text), { instanceOf: TerminalError });
  t.is(e1.code, TerminalErrorCode.JOURNAL);
  t.regex(e1.message, /not a database/);

  const other = join(dir, 'other.sqlite');
  const db = new Database(other);
  db.exec(`CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('x')`);
  db.close();
  const before = readFileSync(other);
  const e2 = t.throws(() => Journal.open(other), { instanceOf: TerminalError });
  t.like(e2.details, { problem: 'NOT_A_JOURNAL' });
  t.regex(e2.message, /not a terminal journal: it holds table\(s\) customers/);
  t.deepEqual(readFileSync(other), before);
  t.deepEqual(inspect2(other), ['customers']);

  // A journal table whose columns are not the journal's.
  const odd = join(dir, 'odd.sqlite');
  const db2 = new Database(odd);
  db2.exec(`CREATE TABLE payments (id INTEGER PRIMARY KEY)`);
  db2.close();
  const e3 = t.throws(() => Journal.open(odd), { instanceOf: TerminalError });
  t.regex(e3.message, /table payments has other columns/);
  t.deepEqual(inspect2(odd), ['payments']);
});

function inspect2(file: string): string[] {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare(`SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`).all() as { name: string }[]).map((r) => r.name);
  } finally {
    db.close();
  }
}
