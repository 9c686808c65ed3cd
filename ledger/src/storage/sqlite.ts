/**
 * SQLite backend (`better-sqlite3`): the embedded default. WAL journal and
 * `synchronous=FULL`, so a committed transaction survives power loss before
 * anyone is told about it.
 *
 * @module
 */
import Database from 'better-sqlite3';
import { migrateSqliteSchema } from '@dt/protocol/sqlite-migrate';
import { LEDGER_MIGRATIONS, sqlitePlan, type LedgerMigration } from './migrations.ts';
import { Mutex, type LedgerStorage, type Row, type SqlTx, type SqlValue } from './types.ts';

function bind(params: readonly SqlValue[]): unknown[] {
  return params.map((p) => (p instanceof Uint8Array ? Buffer.from(p.buffer, p.byteOffset, p.byteLength) : p));
}

function plainRow<T>(row: Record<string, unknown> | undefined): T | undefined {
  if (!row) return undefined;
  for (const k of Object.keys(row)) {
    const v = row[k];
    if (v instanceof Uint8Array)
      row[k] = new Uint8Array(v); // copy out of Buffer: the protocol works on plain Uint8Array
    else if (typeof v === 'bigint') row[k] = Number(v);
  }
  return row as T;
}

/**
 * Brings the ledger database in `db` to the latest version of `migrations`
 * (./migrations.ts), one `BEGIN IMMEDIATE` transaction per step with its
 * `PRAGMA user_version` bump (the write lock is taken before the version is
 * read, so a second process waits and then finds the new version), then checks
 * its tables against that version. Returns the versions before and after.
 *
 * @throws {LedgerSchemaError} NEWER or NOT_A_LEDGER; the database is left as it was.
 */
export function migrateSqlite(
  db: Database.Database,
  migrations: readonly LedgerMigration[] = LEDGER_MIGRATIONS,
): { from: number; to: number } {
  return migrateSqliteSchema(db, sqlitePlan(migrations));
}

/** Options of {@link openSqliteStorage}. */
export interface SqliteStorageOptions {
  /** The schema migrations (default `LEDGER_MIGRATIONS`); tests of the upgrade path pass a longer list. Version 1 must stay the ledger's own. */
  readonly migrations?: readonly LedgerMigration[];
}

/**
 * Opens (creating if needed) a SQLite ledger database at `path` (`:memory:` for
 * tests), bringing its schema to the latest version ({@link migrateSqlite}).
 *
 * @throws {LedgerSchemaError} the database is of a newer schema version or not a ledger's (left as it was);
 *   a SqliteError (SQLITE_NOTADB) when the file is no database.
 */
export function openSqliteStorage(path: string, options: SqliteStorageOptions = {}): LedgerStorage {
  const db = new Database(path);
  try {
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 10000');
    // Before the switch to WAL, so that a refused file is left as it was.
    migrateSqlite(db, options.migrations ?? LEDGER_MIGRATIONS);
    db.pragma('journal_mode = WAL');
    // A page cache that holds the hot part of a ledger of 100k cards and millions of claims (64 MiB,
    // the default is 2 MiB), and reads through a memory map of up to 1 GiB of the file. Durability is
    // unchanged: writes still go through the WAL with synchronous=FULL.
    db.pragma('cache_size = -65536');
    db.pragma('mmap_size = 1073741824');
  } catch (e) {
    db.close();
    throw e;
  }
  const cache = new Map<string, Database.Statement>();
  const stmt = (sql: string) => {
    let s = cache.get(sql);
    if (!s) {
      s = db.prepare(sql);
      cache.set(sql, s);
    }
    return s;
  };
  const tx: SqlTx = {
    async all<T extends Row>(sql: string, params: readonly SqlValue[] = []) {
      return (stmt(sql).all(...bind(params)) as Record<string, unknown>[]).map((r) => plainRow<T>(r)!);
    },
    async get<T extends Row>(sql: string, params: readonly SqlValue[] = []) {
      const s = stmt(sql);
      return plainRow<T>((s.reader ? s.get(...bind(params)) : (s.run(...bind(params)), undefined)) as Record<string, unknown> | undefined);
    },
    async run(sql: string, params: readonly SqlValue[] = []) {
      return stmt(sql).run(...bind(params)).changes;
    },
  };
  const mutex = new Mutex();
  let closed = false;
  return {
    kind: 'sqlite',
    transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T> {
      return mutex.run(async () => {
        if (closed) throw new Error('storage closed');
        db.exec('BEGIN IMMEDIATE');
        try {
          const out = await fn(tx);
          db.exec('COMMIT');
          return out;
        } catch (e) {
          if (db.inTransaction) db.exec('ROLLBACK');
          throw e;
        }
      });
    },
    async close() {
      await mutex.run(async () => {
        closed = true;
        db.close();
      });
    },
  };
}
