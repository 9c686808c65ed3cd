/**
 * Schema versions of the ledger database (src/storage/migrations.ts), on both
 * backends, tested on databases the previous code wrote
 * (test/fixtures/schema/: `ledger-v1.sqlite.gz` and the `pg_dump` in
 * `ledger-v1.pg.sql.gz`, loaded into the test cluster; made by
 * make-ledger-fixtures.ts at the last commit before versions, with the PKI and
 * the money-state digest in `ledger-v1.json`): each opens as version 1 with its
 * money state and balanced books, upgrades to a test version 2 with its data, an
 * upgrade that fails or whose process is killed half way leaves version 1
 * intact, two openers at once migrate once, and a database of a newer version or
 * of another kind is refused and left as it was, also by `dt-ledger` (exit 4).
 */
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import pg from 'pg';
import { fromHex } from '@dt/protocol';
import {
  Ledger,
  LEDGER_MIGRATIONS,
  LedgerSchemaError,
  nativeSigner,
  openPostgresStorage,
  openSqliteStorage,
  pgAvailable,
  startPgCluster,
  type LedgerMigration,
  type LedgerStorage,
  type PgCluster,
  type PostgresConfig,
} from '../src/index.ts';
import { DEFAULT_PG_BIN } from '../src/pg-cluster.ts';
import { stateDigest } from './_helpers.ts';
import { LIST_V2, LIST_V3, NEXT, SLOW_PG_V2, THROWING_V2 } from './schema/migrations.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const FIXTURES = join(HERE, 'fixtures/schema');
const CHILD = join(HERE, 'schema/child.ts');
const BIN = fileURLToPath(new URL('../bin/dt-ledger.js', import.meta.url));

interface FixtureMeta {
  pki: { rootCert: string; ledgerCert: string; ledgerSecretKey: string; ledgerPublicKey: string; now: number };
  digest: string;
  supply: { issued: number; bankBalances: number; unspentChange: number; redeemed: number };
}
const META = JSON.parse(readFileSync(join(FIXTURES, 'ledger-v1.json'), 'utf8')) as { sqlite: FixtureMeta; postgres: FixtureMeta };

let cluster: PgCluster | undefined;
let dbs = 0;
const dirs: string[] = [];
test.before(() => {
  if (!pgAvailable()) throw new Error('PostgreSQL server binaries not found (set PG_BIN); the storage suite must run on both backends');
  cluster = startPgCluster({ fsync: false });
});
test.after.always(() => {
  cluster?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'dt-ledger-schema-'));
  dirs.push(d);
  return d;
}

/** One backend under test: how to get a copy of the previous version's database, open it and look inside without the ledger. */
interface Backend<T> {
  readonly name: 'sqlite' | 'postgres';
  readonly meta: FixtureMeta;
  previous(): Promise<T>;
  empty(): Promise<T>;
  open(target: T, migrations?: readonly LedgerMigration[]): Promise<LedgerStorage>;
  /** The version as stored (0 when none), the tables, the columns of `banks`. */
  inspect(target: T): Promise<{ version: number; tables: string[]; bankColumns: string[] }>;
  /** Runs raw SQL (setting up foreign databases). */
  exec(target: T, sql: string): Promise<void>;
  /** The `dt-ledger` storage option for `target`. */
  cliArgs(target: T): string[];
}

const sqliteBackend: Backend<string> = {
  name: 'sqlite',
  meta: META.sqlite,
  async previous() {
    const file = join(tempDir(), 'ledger.db');
    writeFileSync(file, gunzipSync(readFileSync(join(FIXTURES, 'ledger-v1.sqlite.gz'))));
    return file;
  },
  async empty() {
    return join(tempDir(), 'ledger.db');
  },
  async open(file, migrations) {
    return openSqliteStorage(file, migrations ? { migrations } : {});
  },
  async inspect(file) {
    const db = new Database(file, { readonly: true });
    try {
      const names = (sql: string) => (db.prepare(sql).all() as { name: string }[]).map((r) => r.name);
      return {
        version: db.pragma('user_version', { simple: true }) as number,
        tables: names(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`),
        bankColumns: names(`SELECT name FROM pragma_table_info('banks')`),
      };
    } finally {
      db.close();
    }
  },
  async exec(file, sql) {
    const db = new Database(file);
    db.exec(sql);
    db.close();
  },
  cliArgs: (file) => ['--db', file],
};

async function withClient<R>(cfg: PostgresConfig, fn: (c: pg.Client) => Promise<R>): Promise<R> {
  const c = new pg.Client(cfg);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

function psql(cfg: PostgresConfig, input: string): void {
  const bin = process.env.PG_BIN ?? DEFAULT_PG_BIN;
  execFileSync(
    existsSync(join(bin, 'psql')) ? join(bin, 'psql') : 'psql',
    ['-h', String(cfg.host), '-p', String(cfg.port), '-U', 'postgres', '-d', String(cfg.database), '-q', '-v', 'ON_ERROR_STOP=1'],
    { input, stdio: ['pipe', 'ignore', 'pipe'] },
  );
}

const pgBackend: Backend<PostgresConfig> = {
  name: 'postgres',
  meta: META.postgres,
  async previous() {
    const cfg = cluster!.createDatabase(`schema_${process.pid}_${++dbs}`);
    psql(cfg, gunzipSync(readFileSync(join(FIXTURES, 'ledger-v1.pg.sql.gz'))).toString());
    return cfg;
  },
  async empty() {
    return cluster!.createDatabase(`schema_${process.pid}_${++dbs}`);
  },
  async open(cfg, migrations) {
    return openPostgresStorage(cfg, migrations ? { migrations } : {});
  },
  inspect: (cfg) =>
    withClient(cfg, async (c) => {
      const names = async (sql: string) => (await c.query<{ name: string }>(sql)).rows.map((r) => r.name);
      const tables = await names(
        `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
      );
      const version = tables.includes('schema_version')
        ? Number((await c.query('SELECT max(version) AS v FROM schema_version')).rows[0].v)
        : 0;
      return {
        version,
        tables: tables.filter((t) => t !== 'schema_version'),
        bankColumns: await names(
          `SELECT column_name AS name FROM information_schema.columns WHERE table_name = 'banks' ORDER BY ordinal_position`,
        ),
      };
    }),
  exec: (cfg, sql) => withClient(cfg, async (c) => void (await c.query(sql))),
  cliArgs: (cfg) => [
    '--pg',
    `postgresql://postgres@/${String(cfg.database)}?host=${encodeURIComponent(String(cfg.host))}&port=${String(cfg.port)}`,
  ],
};

/** The fixture's money state, read through the storage, and its books checked by the ledger itself. */
async function assertFixtureData<T>(t: ExecutionContext, b: Backend<T>, storage: LedgerStorage): Promise<void> {
  t.is(
    await stateDigest(storage),
    b.meta.digest,
    'every transfer, claim, verdict, balance, token, sync and load as the previous code left it',
  );
  const ledger = await Ledger.open({
    storage,
    signer: nativeSigner({ secretKey: fromHex(b.meta.pki.ledgerSecretKey), publicKey: fromHex(b.meta.pki.ledgerPublicKey) }),
    rootCert: fromHex(b.meta.pki.rootCert),
    ledgerCert: fromHex(b.meta.pki.ledgerCert),
    now: () => b.meta.pki.now,
  });
  const audit = await ledger.audit();
  t.true(audit.ok);
  t.like(audit, b.meta.supply);
}

function cli(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stderr }));
  });
}

function child(args: string[]): {
  proc: ChildProcess;
  lines: string[];
  line(match: (l: string) => boolean): Promise<string>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; err: string }>;
} {
  const proc = spawn(process.execPath, ['--conditions=dt-source', '--import', 'tsx', CHILD, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters: { match: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  let buf = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(l);
      for (const w of waiters.filter((x) => x.match(l))) w.resolve(l);
    }
  });
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; err: string }>((resolve) =>
    proc.on('close', (code, signal) => resolve({ code, signal, err })),
  );
  return {
    proc,
    lines,
    done,
    line: (match) => {
      const hit = lines.find(match);
      return hit !== undefined ? Promise.resolve(hit) : new Promise((resolve) => waiters.push({ match, resolve }));
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True while another connection holds the SQLite file's write lock and the committed version is `version`. */
function sqliteLockedAt(file: string, version: number): boolean {
  const db = new Database(file, { timeout: 0 });
  try {
    if (db.pragma('user_version', { simple: true }) !== version) return false;
    try {
      db.exec('BEGIN IMMEDIATE');
      db.exec('ROLLBACK');
      return false;
    } catch (e) {
      if ((e as { code?: string }).code === 'SQLITE_BUSY') return true;
      throw e;
    }
  } finally {
    db.close();
  }
}

for (const b of [sqliteBackend, pgBackend] as Backend<unknown>[]) {
  test(`${b.name}: a new database is created at the latest version`, async (t) => {
    const target = await b.empty();
    await (await b.open(target)).close();
    const s = await b.inspect(target);
    t.is(s.version, LEDGER_MIGRATIONS.length);
    t.true(s.tables.includes('transfers'));
  });

  test(`${b.name}: the previous version's database opens as version 1 with its money state and balanced books`, async (t) => {
    const target = await b.previous();
    t.is((await b.inspect(target)).version, 0, 'the fixture predates versions');
    const storage = await b.open(target);
    try {
      await assertFixtureData(t, b, storage);
    } finally {
      await storage.close();
    }
    t.is((await b.inspect(target)).version, LEDGER_MIGRATIONS.length);
  });

  test(`${b.name}: a version-3 database (before voids and refunds) opens with the current code: its data kept, the new tables there`, async (t) => {
    const target = await b.previous();
    await (await b.open(target, LEDGER_MIGRATIONS.slice(0, 3))).close();
    const v3 = await b.inspect(target);
    t.is(v3.version, 3);
    t.false(v3.tables.includes('adjustments'));
    const storage = await b.open(target);
    try {
      await assertFixtureData(t, b, storage);
      t.deepEqual(await storage.transaction((tx) => tx.all('SELECT terminal FROM adjustments')), []);
      t.deepEqual(await storage.transaction((tx) => tx.all('SELECT card FROM refund_credits')), []);
    } finally {
      await storage.close();
    }
    const now = await b.inspect(target);
    t.is(now.version, LEDGER_MIGRATIONS.length);
    t.true(now.tables.includes('adjustments') && now.tables.includes('refund_credits') && now.tables.includes('chain_heads'));
  });

  test(`${b.name}: a version-4 database opens with the current code: chain_heads there and empty (no shortcut until the ledger settles set-based)`, async (t) => {
    const target = await b.previous();
    await (await b.open(target, LEDGER_MIGRATIONS.slice(0, 4))).close();
    t.false((await b.inspect(target)).tables.includes('chain_heads'));
    const storage = await b.open(target);
    try {
      await assertFixtureData(t, b, storage);
      t.deepEqual(await storage.transaction((tx) => tx.all('SELECT card FROM chain_heads')), []);
    } finally {
      await storage.close();
    }
    t.is((await b.inspect(target)).version, LEDGER_MIGRATIONS.length);
  });

  test(`${b.name}: the previous version's database upgrades to a test version after the real list, with its data`, async (t) => {
    const target = await b.previous();
    const storage = await b.open(target, LIST_V2);
    try {
      await assertFixtureData(t, b, storage);
      t.deepEqual(await storage.transaction((tx) => tx.all('SELECT DISTINCT note FROM banks')), [{ note: 'perms 3' }]);
      t.deepEqual(await storage.transaction((tx) => tx.all('SELECT version FROM migration_runs')), [{ version: NEXT }]);
    } finally {
      await storage.close();
    }
    t.is((await b.inspect(target)).version, NEXT);
    await (await b.open(target, LIST_V2)).close();
    const again = await b.open(target, LIST_V2);
    t.deepEqual(
      await again.transaction((tx) => tx.all('SELECT version FROM migration_runs')),
      [{ version: NEXT }],
      'opening again runs nothing',
    );
    await again.close();
  });

  test(`${b.name}: an upgrade step that fails leaves the previous version with its data`, async (t) => {
    const target = await b.previous();
    await t.throwsAsync(() => b.open(target, [...LEDGER_MIGRATIONS, THROWING_V2]), { any: true, message: /no_such_table/ });
    const s = await b.inspect(target);
    t.is(s.version, NEXT - 1, 'the stamping step committed, the failing one did not');
    t.false(s.bankColumns.includes('note'));
    t.false(s.tables.includes('migration_runs'));
    const storage = await b.open(target);
    try {
      await assertFixtureData(t, b, storage);
    } finally {
      await storage.close();
    }
  });

  test(`${b.name}: a database of a newer version is refused and left as it was; dt-ledger exits 4`, async (t) => {
    const target = await b.previous();
    await (await b.open(target, LIST_V3)).close();
    const before = await b.inspect(target);
    for (const migrations of [LEDGER_MIGRATIONS, LIST_V2]) {
      const e = await t.throwsAsync(() => b.open(target, migrations), { instanceOf: LedgerSchemaError });
      t.like(e, { problem: 'NEWER', version: NEXT + 1 });
      t.regex(e.message, new RegExp(`schema version ${NEXT + 1}, newer than this program knows \\(\\d\\)`));
    }
    const r = await cli(['acquirer-unblock', '-d', tempDir(), '--kid', '00'.repeat(16), ...b.cliArgs(target)]);
    t.is(r.code, 4, r.stderr);
    t.regex(r.stderr, new RegExp(`the ledger database has schema version ${NEXT + 1}, newer than this program knows`));
    t.deepEqual(await b.inspect(target), before);
    if (b.name === 'sqlite') t.is(new Database(target as string, { readonly: true }).pragma('journal_mode', { simple: true }), 'wal');
  });

  test(`${b.name}: a database of another kind is refused and left as it was; dt-ledger exits 4`, async (t) => {
    const other = await b.empty();
    await b.exec(other, `CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT); INSERT INTO customers (id, name) VALUES (1, 'x')`);
    const e = await t.throwsAsync(() => b.open(other), { instanceOf: LedgerSchemaError });
    t.is(e.problem, 'NOT_A_LEDGER');
    t.regex(e.message, /not a ledger database: it holds table\(s\) customers/);
    t.like(await b.inspect(other), { version: 0, tables: ['customers'] });
    const r = await cli(['acquirer-unblock', '-d', tempDir(), '--kid', '00'.repeat(16), ...b.cliArgs(other)]);
    t.is(r.code, 4, r.stderr);
    t.regex(r.stderr, /not a ledger database/);

    const odd = await b.empty();
    await b.exec(odd, `CREATE TABLE banks (kid BLOB PRIMARY KEY)`.replace('BLOB', b.name === 'postgres' ? 'BYTEA' : 'BLOB'));
    await t.throwsAsync(() => b.open(odd), { instanceOf: LedgerSchemaError, message: /table banks has other columns/ });
    t.like(await b.inspect(odd), { version: 0, tables: ['banks'] });
  });
}

test('sqlite: a file that is no database is refused; dt-ledger exits 4', async (t) => {
  const file = join(tempDir(), 'notes.txt');
  writeFileSync(file, 'hello, this is not a database at all, just some text that is long enough\n'.repeat(20));
  const before = readFileSync(file);
  t.throws(() => openSqliteStorage(file), { any: true, message: /not a database/ });
  const r = await cli(['acquirer-unblock', '-d', tempDir(), '--kid', '00'.repeat(16), '--db', file]);
  t.is(r.code, 4, r.stderr);
  t.regex(r.stderr, /not a ledger database: file is not a database/);
  t.deepEqual(readFileSync(file), before);
});

test('sqlite: a process killed during the upgrade leaves the previous version with its data; the next open upgrades', async (t) => {
  const file = (await sqliteBackend.previous()) as string;
  const c = child(['sqlite', file, 'hang']);
  // Killed while it holds the write lock with the stamping step committed: inside the v2 step.
  while (!sqliteLockedAt(file, NEXT - 1)) {
    if (c.proc.exitCode !== null) t.fail(`the child ended: ${(await c.done).err}`);
    await sleep(50);
  }
  c.proc.kill('SIGKILL');
  t.is((await c.done).signal, 'SIGKILL');
  const s = await sqliteBackend.inspect(file);
  t.is(s.version, NEXT - 1);
  t.false(s.bankColumns.includes('note'));
  const storage = await sqliteBackend.open(file);
  await assertFixtureData(t, sqliteBackend, storage);
  await storage.close();
  await (await sqliteBackend.open(file, LIST_V2)).close();
  t.is((await sqliteBackend.inspect(file)).version, NEXT);
});

test('postgres: a process killed during the upgrade leaves the previous version with its data; the next open upgrades', async (t) => {
  const cfg = (await pgBackend.previous()) as PostgresConfig;
  const c = child(['postgres', JSON.stringify(cfg), 'hang']);
  // Killed while its v2 step sleeps inside the transaction (after the ALTER, the UPDATE and the inserts).
  await withClient(cfg, async (probe) => {
    for (;;) {
      const r = await probe.query(
        `SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep(600)%' AND state = 'active'`,
        [cfg.database],
      );
      if (r.rowCount) break;
      if (c.proc.exitCode !== null) t.fail(`the child ended: ${(await c.done).err}`);
      await sleep(50);
    }
  });
  c.proc.kill('SIGKILL');
  t.is((await c.done).signal, 'SIGKILL');
  // The server ends the dead client's backend (and rolls its transaction back) when it notices the closed socket.
  await withClient(cfg, async (probe) => {
    while (
      (await probe.query(`SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep(600)%'`, [cfg.database]))
        .rowCount
    )
      await probe.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep(600)%'`,
        [cfg.database],
      );
  });
  const s = await pgBackend.inspect(cfg);
  t.is(s.version, NEXT - 1);
  t.false(s.bankColumns.includes('note'));
  const storage = await pgBackend.open(cfg);
  await assertFixtureData(t, pgBackend, storage);
  await storage.close();
  await (await pgBackend.open(cfg, LIST_V2)).close();
  t.is((await pgBackend.inspect(cfg)).version, NEXT);
});

test('postgres: two openers at once: one migrates under the advisory lock, the other waits and finds version 2', async (t) => {
  const cfg = (await pgBackend.previous()) as PostgresConfig;
  await (await pgBackend.open(cfg)).close(); // stamped 1
  const list = [...LEDGER_MIGRATIONS, SLOW_PG_V2];
  const [a, b2] = await Promise.all([pgBackend.open(cfg, list), pgBackend.open(cfg, list)]);
  t.deepEqual(await a.transaction((tx) => tx.all('SELECT version FROM migration_runs')), [{ version: NEXT }], 'the step ran once');
  await a.close();
  await b2.close();
  t.is((await pgBackend.inspect(cfg)).version, NEXT);
});

test('sqlite: two processes opening at once: one migrates, the other waits for the write lock and finds the new version', async (t) => {
  const file = (await sqliteBackend.previous()) as string;
  await (await sqliteBackend.open(file)).close(); // stamped and at the real list's last version
  const second = child(['sqlite', file, 'second']);
  await second.line((l) => l === 'ready');
  const first = child(['sqlite', file, 'slow']);
  while (!sqliteLockedAt(file, NEXT - 1)) {
    if (first.proc.exitCode !== null) break;
    await sleep(20);
  }
  second.proc.stdin!.write('go\n');
  const [ra, rb] = await Promise.all([first.done, second.done]);
  t.is(ra.code, 0, ra.err);
  t.is(rb.code, 0, rb.err);
  t.like(JSON.parse(second.lines.at(-1)!), { before: NEXT - 1, banks: 1 }, 'the second opener started while the first was migrating');
  const db = new Database(file, { readonly: true });
  t.deepEqual(db.prepare('SELECT version FROM migration_runs').all(), [{ version: NEXT }], 'the step ran once');
  db.close();
});
