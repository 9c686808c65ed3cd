/**
 * PostgreSQL backend (`pg`). The same SQL as SQLite; `?` placeholders become
 * `$n`, `BLOB` becomes `BYTEA`, BIGINT is read back as a JS number (amounts
 * and counters never exceed 2^53-1). Transactions are SERIALIZABLE; in one
 * ledger process they also run one at a time.
 *
 * @module
 */
import pg from 'pg';
import { Mutex, SCHEMA, type LedgerStorage, type Row, type SqlTx, type SqlValue } from './types.ts';

const INT8_OID = 20;

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

/** Connects to PostgreSQL and creates the schema if needed. */
export async function openPostgresStorage(config: PostgresConfig): Promise<LedgerStorage> {
  const client = new pg.Client({
    ...config,
    types: {
      getTypeParser: ((oid: number, format?: string) =>
        oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as never)) as never,
    },
  });
  await client.connect();
  for (const ddl of SCHEMA) await client.query(ddl.replace(/\bBLOB\b/g, 'BYTEA'));
  const tx: SqlTx = {
    async all<T extends Row>(sql: string, params: readonly SqlValue[] = []) {
      const r = await client.query(toPg(sql), bind(params));
      return r.rows.map((x) => plainRow<T>(x));
    },
    async get<T extends Row>(sql: string, params: readonly SqlValue[] = []) {
      const r = await client.query(toPg(sql), bind(params));
      return r.rows[0] ? plainRow<T>(r.rows[0]) : undefined;
    },
    async run(sql: string, params: readonly SqlValue[] = []) {
      const r = await client.query(toPg(sql), bind(params));
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
