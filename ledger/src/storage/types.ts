/**
 * The ledger's storage interface: transactions over a small SQL dialect that
 * SQLite (3.35+) and PostgreSQL (and PostgreSQL-compatible distributed
 * engines: CockroachDB, YugabyteDB, Citus) all accept unchanged:
 * `?` placeholders (rewritten to `$n` for PostgreSQL), `BLOB` columns
 * (`BYTEA` on PostgreSQL), `BIGINT` amounts, natural primary keys only (no
 * sequences), and `INSERT ... ON CONFLICT DO NOTHING RETURNING` as the single
 * atomic statement of the notary's spent set.
 *
 * @module
 */

/** A value bound to or read from SQL. Blobs are plain `Uint8Array`, integers JS numbers (amounts never exceed 2^53-1). */
export type SqlValue = number | string | Uint8Array | null;
/** A result row. */
export type Row = Record<string, SqlValue>;

/** Statements inside one transaction. */
export interface SqlTx {
  /** All rows of a query. */
  all<T extends Row = Row>(sql: string, params?: readonly SqlValue[]): Promise<T[]>;
  /** The first row, or undefined. */
  get<T extends Row = Row>(sql: string, params?: readonly SqlValue[]): Promise<T | undefined>;
  /** Runs a statement; returns the number of changed rows. */
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
}

/** A storage backend. */
export interface LedgerStorage {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * Runs `fn` in one serializable, durable transaction: committed (and on disk)
   * when the promise resolves, rolled back when `fn` throws. Transactions of one
   * storage object run one at a time.
   */
  transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T>;
  /** Closes the backend. */
  close(): Promise<void>;
}

/** Serializes async critical sections (one transaction at a time per storage object). */
export class Mutex {
  #tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(fn, fn);
    this.#tail = next.catch(() => undefined);
    return next;
  }
}

/**
 * DDL shared by both backends; `BLOB` becomes `BYTEA` on PostgreSQL. This is
 * schema version 1 (`LEDGER_MIGRATIONS` in ./migrations.ts), frozen: a change
 * of the schema is a new migration there, never an edit here.
 */
export const SCHEMA: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BIGINT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS allocations (id BLOB PRIMARY KEY, bank BLOB NOT NULL, amount BIGINT NOT NULL, time BIGINT NOT NULL)`,
  // credit_line: how far below zero the issuer lets the bank's balance go (its floor is -credit_line; SPEC §7.6.2).
  `CREATE TABLE IF NOT EXISTS banks (kid BLOB PRIMARY KEY, cert BLOB NOT NULL, perms BIGINT NOT NULL, balance BIGINT NOT NULL, credit_line BIGINT NOT NULL DEFAULT 0)`,
  `CREATE TABLE IF NOT EXISTS cards (kid BLOB PRIMARY KEY, bank BLOB NOT NULL, cert BLOB NOT NULL, anchor BLOB NOT NULL, anchor_counter BIGINT NOT NULL, anchor_sync BLOB)`,
  `CREATE TABLE IF NOT EXISTS loads (id BLOB PRIMARY KEY, card BLOB NOT NULL, bank BLOB NOT NULL, amount BIGINT NOT NULL, state TEXT NOT NULL, sync BLOB, time BIGINT NOT NULL)`,
  `CREATE INDEX IF NOT EXISTS loads_card ON loads (card, state)`,
  `CREATE TABLE IF NOT EXISTS tokens (serial BLOB PRIMARY KEY, card BLOB NOT NULL, value BIGINT NOT NULL, sync BLOB NOT NULL, bytes BLOB NOT NULL)`,
  `CREATE INDEX IF NOT EXISTS tokens_sync ON tokens (sync)`,
  // The notary's claims (SPEC §7.7 step E): per card, input id (token serial or output id) -> the first
  // card-signed object (transfer or sync request) that named it. A second object is a fork. Claims are
  // evidence and move no value: a coin's value is spent when its claim holder is a value record
  // (a row of \`transfers\`) or a completed sync (a row of \`syncs\`).
  `CREATE TABLE IF NOT EXISTS spent (card BLOB NOT NULL, id BLOB NOT NULL, by_hash BLOB NOT NULL, PRIMARY KEY (card, id))`,
  // One signed object per card counter: a second one is a fork.
  `CREATE TABLE IF NOT EXISTS counters (card BLOB NOT NULL, counter BIGINT NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (card, counter))`,
  // Every evidence object (card-signed transfer or sync request) by its payload hash.
  `CREATE TABLE IF NOT EXISTS objects (hash BLOB PRIMARY KEY, bytes BLOB NOT NULL)`,
  // state: recorded (known, payee not yet paid) | settled | voided
  `CREATE TABLE IF NOT EXISTS transfers (hash BLOB PRIMARY KEY, card BLOB NOT NULL, counter BIGINT NOT NULL, amount BIGINT NOT NULL, payee BLOB NOT NULL,
     change_id BLOB, change_value BIGINT NOT NULL, mark BLOB, time BIGINT NOT NULL, state TEXT NOT NULL)`,
  `CREATE INDEX IF NOT EXISTS transfers_card ON transfers (card, state)`,
  // The first verdict on a transfer a terminal submitted (replays answer from it).
  `CREATE TABLE IF NOT EXISTS verdicts (transfer BLOB PRIMARY KEY, status BIGINT NOT NULL, covered BIGINT NOT NULL, code TEXT, time BIGINT NOT NULL,
     card BLOB NOT NULL, terminal BLOB NOT NULL, amount BIGINT NOT NULL, proof1 BLOB, proof2 BLOB)`,
  `CREATE TABLE IF NOT EXISTS outcomes (batch BLOB NOT NULL, idx BIGINT NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (batch, idx))`,
  `CREATE TABLE IF NOT EXISTS batches (hash BLOB PRIMARY KEY, terminal BLOB NOT NULL, seq BIGINT NOT NULL, count BIGINT NOT NULL, time BIGINT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS merchants (kid BLOB PRIMARY KEY, balance BIGINT NOT NULL)`,
  // Cover paid for a double spend: at most once per (terminal, card, counter) and per coin (SPEC §7.7).
  `CREATE TABLE IF NOT EXISTS covers (transfer BLOB PRIMARY KEY, bank BLOB NOT NULL, terminal BLOB NOT NULL, card BLOB NOT NULL, counter BIGINT NOT NULL, amount BIGINT NOT NULL)`,
  `CREATE UNIQUE INDEX IF NOT EXISTS covers_once ON covers (terminal, card, counter)`,
  `CREATE INDEX IF NOT EXISTS covers_card ON covers (card)`,
  `CREATE TABLE IF NOT EXISTS cover_coins (card BLOB NOT NULL, id BLOB NOT NULL, transfer BLOB NOT NULL, PRIMARY KEY (card, id))`,
  `CREATE TABLE IF NOT EXISTS proofs (first BLOB NOT NULL, second BLOB NOT NULL, card BLOB NOT NULL, time BIGINT NOT NULL, PRIMARY KEY (first, second))`,
  `CREATE TABLE IF NOT EXISTS revocations (card BLOB PRIMARY KEY, version BIGINT NOT NULL, time BIGINT NOT NULL)`,
  // Every revocation list the ledger signed, with its issue time: the cover rule checks declared versions against it.
  `CREATE TABLE IF NOT EXISTS crls (version BIGINT PRIMARY KEY, issued BIGINT NOT NULL, bytes BLOB NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS syncs (request BLOB PRIMARY KEY, card BLOB NOT NULL, receipt BLOB NOT NULL)`,
  // Acquirer keys the operator blocked (`dt-ledger acquirer-block`): their settle requests are refused (SPEC §7.7.2).
  // Cards their issuing bank blocked as lost or stolen (SPEC §7.9); restored: payload hash of the restitution record (a row of `syncs`).
  `CREATE TABLE IF NOT EXISTS card_blocks (card BLOB PRIMARY KEY, bank BLOB NOT NULL, time BIGINT NOT NULL, restored BLOB)`,
  `CREATE TABLE IF NOT EXISTS acquirer_blocks (kid BLOB PRIMARY KEY, reason TEXT NOT NULL, time BIGINT NOT NULL)`,
];
