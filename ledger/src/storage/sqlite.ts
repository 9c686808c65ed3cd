/**
 * SQLite backend (`better-sqlite3`): the embedded default. WAL journal and
 * `synchronous=FULL`, so a committed transaction survives power loss before
 * anyone is told about it.
 *
 * @module
 */
import Database from 'better-sqlite3';
import { Mutex, SCHEMA, type LedgerStorage, type Row, type SqlTx, type SqlValue } from './types.ts';

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

/** Opens (creating if needed) a SQLite ledger database at `path` (`:memory:` for tests). */
export function openSqliteStorage(path: string): LedgerStorage {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 10000');
  for (const ddl of SCHEMA) db.exec(ddl);
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
