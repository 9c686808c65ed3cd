/**
 * Schema versions of the acquirer's database and its forward migrations.
 *
 * The version is SQLite's `PRAGMA user_version` (0 in a new file). Version 1
 * is the schema the store had before versions existed; such a file (version
 * 0 with the acquirer's tables and `meta.schema = '1'`) is recognised by
 * inspecting its tables and stamped 1. Each later migration runs in one
 * `BEGIN IMMEDIATE` transaction together with its version bump, so a crash
 * leaves the file at the previous version with its data, and two processes
 * opening the file at once never both migrate (the second waits for the write
 * lock, then re-reads the version). A file of a newer version than this code
 * knows is refused, never opened.
 *
 * `meta.schema` mirrors the version, so that the code of before versions
 * (which checks `meta.schema = '1'`) refuses a migrated file too.
 *
 * The runner is the one shared by the journal, the acquirer and the ledger
 * (`migrateSqliteSchema`, `@dt/protocol/sqlite-migrate`); this module gives it
 * the list, the better-sqlite3 handle and its errors.
 *
 * @module
 */
import Database from 'better-sqlite3';
import { migrateSqliteSchema } from '@dt/protocol/sqlite-migrate';

/** One forward migration of the acquirer's database: `up` runs inside the transaction that bumps the version to `version`. */
export interface AcquirerMigration {
  /** The version the file has after this migration (1, 2, ... in order). */
  readonly version: number;
  /** What changes, for people reading the list. */
  readonly description: string;
  /** Changes schema and data; throwing rolls the whole step back. */
  up(db: Database.Database): void;
}

/** Version 1: the acquirer's schema as it was before versions (the DDL is kept exactly as that code ran it). */
const V1_DDL = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terminals (
  kid BLOB PRIMARY KEY,
  chain BLOB NOT NULL,
  merchant TEXT NOT NULL,
  last_seq INTEGER NOT NULL,
  first_seen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  terminal BLOB NOT NULL,
  seq INTEGER NOT NULL,
  hash BLOB NOT NULL,
  bytes BLOB NOT NULL,
  handovers INTEGER NOT NULL,
  transfer_hashes BLOB NOT NULL,
  received_at INTEGER NOT NULL,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  settled_at INTEGER,
  reject_code TEXT,
  UNIQUE (terminal, seq)
);
CREATE INDEX IF NOT EXISTS batches_by_state ON batches (state, id);
CREATE TABLE IF NOT EXISTS outcomes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  terminal BLOB NOT NULL,
  batch_id INTEGER NOT NULL REFERENCES batches (id),
  idx INTEGER NOT NULL,
  status INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  UNIQUE (batch_id, idx)
);
CREATE INDEX IF NOT EXISTS outcomes_by_terminal ON outcomes (terminal, id);
CREATE TABLE IF NOT EXISTS revoked_terminals (
  kid BLOB PRIMARY KEY,
  revoked_at INTEGER NOT NULL,
  reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS crl (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  version INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  fetched_at INTEGER NOT NULL
);
`;

/** The acquirer's migrations, oldest first. Append only: a released step never changes. */
export const ACQUIRER_MIGRATIONS: readonly AcquirerMigration[] = [
  {
    version: 1,
    description: 'terminals, batches, outcomes, revoked terminals, revocation list (the schema before versions)',
    up(db) {
      db.exec(V1_DDL);
      db.prepare(`INSERT INTO meta (key, value) VALUES ('schema', '1') ON CONFLICT (key) DO NOTHING`).run();
    },
  },
];

/** Why a file cannot be used as the acquirer's database. */
export type SchemaProblem = 'NEWER' | 'NOT_AN_ACQUIRER_DB';

/** The file's schema is newer than this code, or the file is no acquirer database. */
export class AcquirerSchemaError extends Error {
  constructor(
    readonly problem: SchemaProblem,
    message: string,
    readonly version?: number,
  ) {
    super(message);
    this.name = 'AcquirerSchemaError';
  }
}

/**
 * Brings the acquirer's database in `db` to the latest version of `migrations` (creating it
 * in an empty file), one transaction per step, then checks that its tables are
 * exactly those of that version. Returns the versions before and after.
 *
 * @throws {AcquirerSchemaError} NEWER when the file's version is above the latest known one;
 *   NOT_AN_ACQUIRER_DB when the file holds tables that are not the acquirer's.
 */
export function migrateAcquirerStore(
  db: Database.Database,
  migrations: readonly AcquirerMigration[] = ACQUIRER_MIGRATIONS,
): { from: number; to: number } {
  return migrateSqliteSchema(db, {
    migrations,
    kind: 'acquirer',
    what: 'an acquirer database',
    columns: 'full',
    mirrorInMeta: true,
    apply: (d, m) => m.up(d),
    openMemory: () => new Database(':memory:'),
    newer: (v, latest) =>
      new AcquirerSchemaError(
        'NEWER',
        `the database has schema version ${v}, newer than this program knows (${latest}): use the newer dt-acquirer that wrote it`,
        v,
      ),
    foreign: (message) => new AcquirerSchemaError('NOT_AN_ACQUIRER_DB', message),
  });
}
