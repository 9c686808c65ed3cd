/**
 * Schema versions of the terminal journal and its forward migrations.
 *
 * The version is SQLite's `PRAGMA user_version` (0 in a new file). Version 1
 * is the schema the journal had before versions existed; such a file (version
 * 0 with the journal's tables and `meta.schema = '1'`) is recognised by
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

/** One forward migration: `up` runs inside the transaction that bumps the version to `version`. */
export interface JournalMigration {
  /** The version the file has after this migration (1, 2, ... in order). */
  readonly version: number;
  /** What changes, for people reading the list. */
  readonly description: string;
  /** Changes schema and data; throwing rolls the whole step back. */
  up(db: Database.Database): void;
}

/** Version 1: the journal's schema as it was before versions (the DDL is kept exactly as that code ran it). */
const V1_DDL = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS attempts (
  nonce BLOB PRIMARY KEY CHECK (length(nonce) = 16),
  created INTEGER NOT NULL,
  amount INTEGER NOT NULL CHECK (amount > 0),
  time INTEGER NOT NULL,
  card BLOB,
  retry_of BLOB,
  request BLOB NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('sent','approved','declined','torn','closed'))
) STRICT;
CREATE INDEX IF NOT EXISTS attempts_state ON attempts (state, created);
CREATE TABLE IF NOT EXISTS payments (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  transfer_hash BLOB NOT NULL UNIQUE CHECK (length(transfer_hash) = 32),
  card BLOB NOT NULL,
  counter INTEGER NOT NULL,
  amount INTEGER NOT NULL CHECK (amount > 0),
  currency INTEGER NOT NULL,
  nonce BLOB NOT NULL,
  time INTEGER NOT NULL,
  approved_at INTEGER NOT NULL,
  cvm INTEGER NOT NULL,
  merchant TEXT NOT NULL,
  mcc INTEGER NOT NULL,
  handover BLOB NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending','submitted','settled','rejected','double_spent')),
  covered INTEGER,
  outcome BLOB,
  outcome_code TEXT,
  batch_seq INTEGER,
  crl_version INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (card, counter)
) STRICT;
CREATE INDEX IF NOT EXISTS payments_state ON payments (state, id);
CREATE TABLE IF NOT EXISTS spent_inputs (
  input BLOB PRIMARY KEY,
  payment_id INTEGER NOT NULL REFERENCES payments (id)
) STRICT;
CREATE TABLE IF NOT EXISTS batches (
  seq INTEGER PRIMARY KEY CHECK (seq > 0),
  created INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('built','acked')),
  acked_at INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS crl (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  version INTEGER NOT NULL,
  issued INTEGER NOT NULL,
  fetched_at INTEGER NOT NULL,
  bytes BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS revoked (kid BLOB PRIMARY KEY) STRICT;
`;

/** The journal's migrations, oldest first. Append only: a released step never changes. */
export const JOURNAL_MIGRATIONS: readonly JournalMigration[] = [
  {
    version: 1,
    description: 'attempts, payments, spent inputs, batches, revocation list (the schema before versions)',
    up(db) {
      db.exec(V1_DDL);
      db.prepare(`INSERT INTO meta (key, value) VALUES ('schema', '1') ON CONFLICT (key) DO NOTHING`).run();
    },
  },
  {
    version: 2,
    description: "dt-pos serve: the cash register's orders (by its reference, linked to their payment) and the day closes",
    up(db) {
      db.exec(`
CREATE TABLE ecr_orders (
  reference TEXT PRIMARY KEY CHECK (length(reference) BETWEEN 1 AND 64),
  amount INTEGER NOT NULL CHECK (amount > 0),
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('started','approved','declined','online_required','ended','cancelled','interrupted')),
  reason TEXT,
  detail TEXT,
  payment_id INTEGER UNIQUE REFERENCES payments (id)
) STRICT;
CREATE INDEX ecr_orders_created ON ecr_orders (created, reference);
CREATE TABLE day_closes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  closed_at INTEGER NOT NULL,
  through_payment INTEGER NOT NULL,
  count INTEGER NOT NULL,
  amount INTEGER NOT NULL
) STRICT;
`);
    },
  },
  {
    version: 3,
    description: 'issuing-bank certificates held (verified under the root), named in payment requests (SPEC §3.6 banks)',
    up(db) {
      db.exec(`
CREATE TABLE bank_certs (
  kid BLOB PRIMARY KEY CHECK (length(kid) = 16),
  cert BLOB NOT NULL,
  nbf INTEGER NOT NULL,
  exp INTEGER NOT NULL,
  added INTEGER NOT NULL,
  last_used INTEGER NOT NULL
) STRICT;
CREATE INDEX bank_certs_used ON bank_certs (last_used DESC, kid);
`);
    },
  },
  {
    version: 4,
    description: 'voids and refunds: the terminal-signed adjustments of payments (SPEC §3, §7.7.3), their batch and ledger outcome',
    up(db) {
      db.exec(`
ALTER TABLE batches ADD COLUMN adjustments INTEGER NOT NULL DEFAULT 0 CHECK (adjustments >= 0);
CREATE TABLE adjustments (
  id BLOB PRIMARY KEY CHECK (length(id) = 16),
  kind TEXT NOT NULL CHECK (kind IN ('void','refund')),
  payment_id INTEGER NOT NULL REFERENCES payments (id),
  transfer_hash BLOB NOT NULL CHECK (length(transfer_hash) = 32),
  amount INTEGER NOT NULL CHECK (amount > 0),
  reference TEXT CHECK (reference IS NULL OR length(reference) BETWEEN 1 AND 64),
  signed BLOB NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending','submitted','accepted','refused')),
  code TEXT,
  outcome BLOB,
  batch_seq INTEGER,
  time INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX adjustments_payment ON adjustments (payment_id, time);
CREATE INDEX adjustments_state ON adjustments (state, batch_seq);
CREATE UNIQUE INDEX adjustments_one_void ON adjustments (payment_id) WHERE kind = 'void';
CREATE UNIQUE INDEX adjustments_reference ON adjustments (reference) WHERE reference IS NOT NULL;
`);
    },
  },
];

/** Why a journal file cannot be used as one. */
export type SchemaProblem = 'NEWER' | 'NOT_A_JOURNAL';

/** The file's schema is newer than this code, or the file is no journal. */
export class JournalSchemaError extends Error {
  constructor(
    readonly problem: SchemaProblem,
    message: string,
    readonly version?: number,
  ) {
    super(message);
    this.name = 'JournalSchemaError';
  }
}

/**
 * Brings the journal in `db` to the latest version of `migrations` (creating it
 * in an empty file), one transaction per step, then checks that its tables are
 * exactly those of that version. Returns the versions before and after.
 *
 * @throws {JournalSchemaError} NEWER when the file's version is above the latest known one;
 *   NOT_A_JOURNAL when the file holds tables that are not the journal's.
 */
export function migrateJournal(
  db: Database.Database,
  migrations: readonly JournalMigration[] = JOURNAL_MIGRATIONS,
): { from: number; to: number } {
  return migrateSqliteSchema(db, {
    migrations,
    kind: 'journal',
    what: 'a terminal journal',
    columns: 'full',
    mirrorInMeta: true,
    apply: (d, m) => m.up(d),
    openMemory: () => new Database(':memory:'),
    newer: (v, latest) =>
      new JournalSchemaError(
        'NEWER',
        `the journal has schema version ${v}, newer than this program knows (${latest}): use the newer dt-pos that wrote it`,
        v,
      ),
    foreign: (message) => new JournalSchemaError('NOT_A_JOURNAL', message),
  });
}
