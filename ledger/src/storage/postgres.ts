/**
 * PostgreSQL backend (`pg`). The same SQL as SQLite; `?` placeholders become
 * `$n`, `BLOB` becomes `BYTEA`, BIGINT is read back as a JS number (amounts
 * and counters never exceed 2^53-1). Transactions are SERIALIZABLE; in one
 * ledger process they also run one at a time.
 *
 * @module
 */
import pg from 'pg';
import {
  adoptionProblems,
  checkMigrationList,
  LEDGER_MIGRATIONS,
  LedgerSchemaError,
  newerError,
  referenceShape,
  shapeDifferences,
  type LedgerMigration,
  type SchemaShape,
} from './migrations.ts';
import { Mutex, type LedgerStorage, type Row, type SqlTx, type SqlValue } from './types.ts';

const INT8_OID = 20;

/** Named prepared statements one connection keeps at most. */
const PREPARED_MAX = 512;

function toPg(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

function bind(params: readonly SqlValue[]): unknown[] {
  return params.map((p) => (p instanceof Uint8Array ? Buffer.from(p.buffer, p.byteOffset, p.byteLength) : p));
}

function plainRow<T>(row: Record<string, unknown>): T {
  for (const k of Object.keys(row)) {
    const v = row[k];
    if (v instanceof Uint8Array) row[k] = new Uint8Array(v);
  }
  return row as T;
}

/** Connection settings: a `pg` client config (host may be a unix socket directory). */
export type PostgresConfig = pg.ClientConfig;

/** The key of the advisory lock that one migrating process holds (any fixed 64-bit number, the same for every ledger). */
const MIGRATION_LOCK = 0x44545f4c45444752n; // "DT_LEDGR"

/** The one-row table that holds the schema version (PostgreSQL has no file header for it). */
const VERSION_DDL = `CREATE TABLE schema_version (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), version BIGINT NOT NULL)`;

/** The ledger's shape in the connection's current schema (`schema_version` left out). */
async function pgShape(client: pg.Client): Promise<SchemaShape> {
  const cols = await client.query<{ t: string; c: string }>(
    `SELECT c.table_name AS t, c.column_name AS c FROM information_schema.columns c
       JOIN information_schema.tables x ON x.table_schema = c.table_schema AND x.table_name = c.table_name
     WHERE c.table_schema = current_schema() AND x.table_type = 'BASE TABLE' AND c.table_name <> 'schema_version'
     ORDER BY c.table_name, c.ordinal_position`,
  );
  const tables = new Map<string, string>();
  for (const r of cols.rows) tables.set(r.t, tables.has(r.t) ? `${tables.get(r.t)},${r.c}` : r.c);
  const idx = await client.query<{ n: string }>(`SELECT indexname AS n FROM pg_indexes WHERE schemaname = current_schema()`);
  return { tables, indexes: idx.rows.map((r) => r.n) };
}

/**
 * Brings the ledger database to the latest version of `migrations`
 * (./migrations.ts): one transaction per step, each taking the advisory lock
 * {@link MIGRATION_LOCK} before reading `schema_version`, so a second process
 * waits and then finds the new version. READ COMMITTED, not SERIALIZABLE: the
 * version read after the lock wait must see what the first process committed
 * (a serializable snapshot would be taken before the wait). PostgreSQL's DDL is
 * transactional, so a failing step or a dropped connection leaves the previous
 * version with its data.
 *
 * @throws {LedgerSchemaError} NEWER or NOT_A_LEDGER; the database is left as it was.
 */
export async function migratePostgres(
  client: pg.Client,
  migrations: readonly LedgerMigration[] = LEDGER_MIGRATIONS,
): Promise<{ from: number; to: number }> {
  checkMigrationList(migrations);
  const latest = migrations.length;
  let from: number | undefined;
  for (;;) {
    await client.query('BEGIN ISOLATION LEVEL READ COMMITTED');
    try {
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK.toString()]);
      const has = await client.query<{ r: string | null }>(`SELECT to_regclass('schema_version')::text AS r`);
      const hasTable = has.rows[0]?.r !== null && has.rows[0]?.r !== undefined;
      const v = hasTable ? Number((await client.query<{ v: string }>('SELECT max(version) AS v FROM schema_version')).rows[0]?.v ?? 0) : 0;
      from ??= v;
      if (v > latest) throw newerError(v, latest);
      if (v === latest) {
        await client.query('COMMIT');
        break;
      }
      if (v === 0) {
        const before = await pgShape(client);
        if (before.tables.size > 0) {
          const problems = adoptionProblems(before, referenceShape(migrations, 1));
          if (problems.length > 0) throw new LedgerSchemaError('NOT_A_LEDGER', `not a ledger database: ${problems.join(', ')}`);
        }
      }
      for (const s of migrations[v]!.statements) await client.query(s.replace(/\bBLOB\b/g, 'BYTEA'));
      if (!hasTable) await client.query(VERSION_DDL);
      await client.query('INSERT INTO schema_version (version) VALUES ($1) ON CONFLICT (one) DO UPDATE SET version = excluded.version', [
        v + 1,
      ]);
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  }
  const diff = shapeDifferences(await pgShape(client), referenceShape(migrations, latest));
  if (diff.length > 0) throw new LedgerSchemaError('NOT_A_LEDGER', `not a ledger database of schema version ${latest}: ${diff.join(', ')}`);
  return { from, to: latest };
}

/** Options of {@link openPostgresStorage}. */
export interface PostgresStorageOptions {
  /** The schema migrations (default `LEDGER_MIGRATIONS`); tests of the upgrade path pass a longer list. Version 1 must stay the ledger's own. */
  readonly migrations?: readonly LedgerMigration[];
}

/**
 * Connects to PostgreSQL and brings the ledger's schema to the latest version
 * ({@link migratePostgres}).
 *
 * @throws {LedgerSchemaError} the database is of a newer schema version or not a ledger's (left as it was);
 *   the `pg` error when the server cannot be reached.
 */
export async function openPostgresStorage(config: PostgresConfig, options: PostgresStorageOptions = {}): Promise<LedgerStorage> {
  const client = new pg.Client({
    ...config,
    types: {
      getTypeParser: ((oid: number, format?: string) =>
        oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as never)) as never,
    },
  });
  await client.connect();
  try {
    await migratePostgres(client, options.migrations ?? LEDGER_MIGRATIONS);
  } catch (e) {
    await client.end().catch(() => undefined);
    throw e;
  }
  // Every statement of the ledger is a named prepared statement of this connection: parsed and planned once, then only
  // bound and executed (the ledger's statements are a fixed set: the store's texts, multi-row ones in a few lengths).
  // Past PREPARED_MAX texts, further ones run unnamed.
  const prepared = new Map<string, { name: string; text: string }>();
  const query = (sql: string, params: readonly SqlValue[]) => {
    let p = prepared.get(sql);
    if (!p && prepared.size < PREPARED_MAX) prepared.set(sql, (p = { name: `dt${prepared.size}`, text: toPg(sql) }));
    return p ? client.query({ name: p.name, text: p.text, values: bind(params) }) : client.query(toPg(sql), bind(params));
  };
  const tx: SqlTx = {
    async all<T extends Row>(sql: string, params: readonly SqlValue[] = []) {
      const r = await query(sql, params);
      return r.rows.map((x) => plainRow<T>(x));
    },
    async get<T extends Row>(sql: string, params: readonly SqlValue[] = []) {
      const r = await query(sql, params);
      return r.rows[0] ? plainRow<T>(r.rows[0]) : undefined;
    },
    async run(sql: string, params: readonly SqlValue[] = []) {
      const r = await query(sql, params);
      return r.rowCount ?? 0;
    },
  };
  const mutex = new Mutex();
  return {
    kind: 'postgres',
    transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T> {
      return mutex.run(async () => {
        await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        try {
          const out = await fn(tx);
          await client.query('COMMIT');
          return out;
        } catch (e) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw e;
        }
      });
    },
    async close() {
      await mutex.run(() => client.end());
    },
  };
}
