/**
 * Schema versions of the ledger database and its forward migrations, for both
 * backends. A migration is a list of statements in the shared dialect
 * (./types.ts: `BLOB` becomes `BYTEA` on PostgreSQL), so one list serves SQLite
 * and PostgreSQL alike.
 *
 * Where the version lives: on SQLite `PRAGMA user_version` (in the file
 * header), on PostgreSQL the one-row table `schema_version` (PostgreSQL has no
 * such header). Version 1 is the schema of before versions; such a database
 * (version 0, or no `schema_version` table, but the ledger's tables) is
 * recognised by its tables and stamped 1. Each later step runs in one
 * transaction with its version bump, under the engine's write lock taken before
 * the version is read (SQLite `BEGIN IMMEDIATE`, PostgreSQL a transaction-level
 * advisory lock), so a crash leaves the previous version with its data and two
 * processes opening at once migrate once. A database of a newer version than the
 * code knows, or one whose tables are not the ledger's, is refused.
 *
 * @module
 */
import Database from 'better-sqlite3';
import {
  checkMigrationList as checkSteps,
  referenceShape as planShape,
  type MigrationPlan,
  type SchemaShape,
} from '@dt/protocol/sqlite-migrate';
import { SCHEMA } from './types.ts';

/** One forward migration: its statements run in the transaction that bumps the version to `version`. */
export interface LedgerMigration {
  /** The version the database has after this migration (1, 2, ... in order). */
  readonly version: number;
  /** What changes, for people reading the list. */
  readonly description: string;
  /** Statements in the shared dialect (./types.ts), run in order; one failing rolls the step back. */
  readonly statements: readonly string[];
}

/** The ledger's migrations, oldest first. Append only: a released step never changes. */
export const LEDGER_MIGRATIONS: readonly LedgerMigration[] = [
  {
    version: 1,
    description: 'the schema of before versions (banks, cards, loads, tokens, claims, transfers, verdicts, covers, revocations, ...)',
    statements: SCHEMA,
  },
  {
    version: 2,
    description: 'card_blocks: cards their issuing bank blocked as lost or stolen (SPEC §7.9)',
    // restored: payload hash of the restitution record (a row of `syncs`).
    statements: [`CREATE TABLE card_blocks (card BLOB PRIMARY KEY, bank BLOB NOT NULL, time BIGINT NOT NULL, restored BLOB)`],
  },
  {
    version: 3,
    description: 'loads.mark: the mark (SPEC §3.4) of a marked bank load order, NULL for an unmarked one (SPEC §7.6.1)',
    // mark: the deterministic CBOR encoding of the order's Mark, as tokens and transfers store it.
    statements: [`ALTER TABLE loads ADD COLUMN mark BLOB`],
  },
  {
    version: 4,
    description:
      'adjustments (voids and refunds of terminals, SPEC §7.7.3) with their stored outcomes, and refund_credits: refunded value pending for a card until its next sync',
    statements: [
      // One row per answered adjustment of a terminal (idempotency on (terminal, id)): hash = its payload hash,
      // status/code = its Outcome's, outcome = the signed Outcome returned again for the same adjustment.
      `CREATE TABLE adjustments (terminal BLOB NOT NULL, id BLOB NOT NULL, hash BLOB NOT NULL, kind BIGINT NOT NULL, transfer BLOB NOT NULL,
         card BLOB NOT NULL, amount BIGINT NOT NULL, status BIGINT NOT NULL, code TEXT, outcome BLOB NOT NULL, time BIGINT NOT NULL,
         PRIMARY KEY (terminal, id))`,
      `CREATE INDEX adjustments_transfer ON adjustments (transfer, kind, status)`,
      // adjustment: payload hash of the accepted refund; state pending | delivered (at a sync) | redeemed (to the issuing bank).
      `CREATE TABLE refund_credits (adjustment BLOB PRIMARY KEY, card BLOB NOT NULL, amount BIGINT NOT NULL, mark BLOB, state TEXT NOT NULL,
         sync BLOB, time BIGINT NOT NULL)`,
      `CREATE INDEX refund_credits_card ON refund_credits (card, state)`,
    ],
  },
  {
    version: 5,
    description:
      "chain_heads: per card, the newest transfer the ledger settled set-based with its whole chain's claims its own (SPEC §7.7 step E): that chain's objects need no claim reads again",
    // hash: payload hash of the transfer; counter: its counter. Only ever moves to a higher counter.
    statements: [`CREATE TABLE chain_heads (card BLOB PRIMARY KEY, counter BIGINT NOT NULL, hash BLOB NOT NULL)`],
  },
  {
    version: 6,
    description:
      'chain_heads.state: the chain state at the head (its digest from the anchor, the coins and amounts it leaves): a later handover carrying that chain byte for byte is validated from the head on (SPEC §7.7)',
    // NULL for heads recorded before (their cards' next handovers are validated whole, then recorded with a state).
    statements: [`ALTER TABLE chain_heads ADD COLUMN state BLOB`],
  },
];

/** Why a database cannot be used as the ledger's. */
export type LedgerSchemaProblem = 'NEWER' | 'NOT_A_LEDGER';

/** The database's schema is newer than this code, or the database is not a ledger's. */
export class LedgerSchemaError extends Error {
  constructor(
    readonly problem: LedgerSchemaProblem,
    message: string,
    readonly version?: number,
  ) {
    super(message);
    this.name = 'LedgerSchemaError';
  }
}

/**
 * Tables (name -> column names in order) and index names: the engine-neutral
 * shape that says whether a database is the ledger's of a given version.
 */
export type { SchemaShape } from '@dt/protocol/sqlite-migrate';
export { adoptionProblems, shapeDifferences } from '@dt/protocol/sqlite-migrate';

/** Checks that `migrations` are numbered 1, 2, ... */
export function checkMigrationList(migrations: readonly LedgerMigration[]): void {
  checkSteps(migrations, 'ledger');
}

/** Statements that change the shape (the others only move data). */
const DDL = /^\s*(CREATE|ALTER|DROP)\b/i;

/**
 * How the ledger's list runs on SQLite (`@dt/protocol/sqlite-migrate`): the statements of a
 * step in order; the reference shapes from the DDL statements alone, on an empty SQLite database
 * (the shape is engine-neutral, and the shared dialect runs on both engines).
 */
export function sqlitePlan(migrations: readonly LedgerMigration[]): MigrationPlan<Database.Database, LedgerMigration> {
  return {
    migrations,
    kind: 'ledger',
    what: 'a ledger database',
    columns: 'names',
    mirrorInMeta: false,
    apply: (db, m) => {
      for (const s of m.statements) db.exec(s);
    },
    applyShape: (db, m) => {
      for (const s of m.statements) if (DDL.test(s)) db.exec(s);
    },
    openMemory: () => new Database(':memory:'),
    newer: newerError,
    foreign: (message) => new LedgerSchemaError('NOT_A_LEDGER', message),
  };
}

/** The shape a ledger database of `version` has: the DDL statements of the list up to it, applied to an empty SQLite database. */
export function referenceShape(migrations: readonly LedgerMigration[], version: number): SchemaShape {
  return planShape(sqlitePlan(migrations), version);
}

/** The error for a database of `version` when the code knows up to `latest`. */
export function newerError(version: number, latest: number): LedgerSchemaError {
  return new LedgerSchemaError(
    'NEWER',
    `the ledger database has schema version ${version}, newer than this program knows (${latest}): use the newer dt-ledger that wrote it`,
    version,
  );
}
