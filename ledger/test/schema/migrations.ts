/**
 * Test-only migration lists for the ledger's upgrade tests: the real list plus a
 * version 2 (and 3) that change schema and data, and steps that fail or hang
 * half way, so a test can prove what an upgrade does with a database of the
 * previous version.
 */
import { LEDGER_MIGRATIONS, type LedgerMigration } from '../../src/index.ts';

/** v2: a column filled from existing rows, and a table that counts how often the step ran. */
export const TEST_V2: LedgerMigration = {
  version: 2,
  description: 'test: banks.note, migration_runs',
  statements: [
    `ALTER TABLE banks ADD COLUMN note TEXT`,
    `UPDATE banks SET note = 'perms ' || CAST(perms AS TEXT)`,
    `CREATE TABLE migration_runs (version BIGINT NOT NULL)`,
    `INSERT INTO migration_runs (version) VALUES (2)`,
  ],
};

/** v3: one more table (only to make a database newer than the code under test). */
export const TEST_V3: LedgerMigration = {
  version: 3,
  description: 'test: a table of version 3',
  statements: [`CREATE TABLE v3_only (x BIGINT)`],
};

/** A v2 whose last statement fails: the step must roll back. */
export const THROWING_V2: LedgerMigration = {
  ...TEST_V2,
  description: 'test: fails half way',
  statements: [...TEST_V2.statements, `INSERT INTO no_such_table (x) VALUES (1)`],
};

/** Counts to `n` in SQL: a statement that keeps SQLite busy (and its write lock held) for a while. */
export const sqliteBusy = (n: number) =>
  `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${n}) SELECT count(*) FROM c`;

/** A v2 that does its work, then runs for a very long time (the test kills its process meanwhile). */
export const HANGING_SQLITE_V2: LedgerMigration = { ...TEST_V2, statements: [...TEST_V2.statements, sqliteBusy(2_000_000_000)] };
/** The same on PostgreSQL. */
export const HANGING_PG_V2: LedgerMigration = { ...TEST_V2, statements: [...TEST_V2.statements, `SELECT pg_sleep(600)`] };

/** A v2 that holds the write lock a little while after its work (two openers at once). */
export const SLOW_SQLITE_V2: LedgerMigration = { ...TEST_V2, statements: [...TEST_V2.statements, sqliteBusy(3_000_000)] };
export const SLOW_PG_V2: LedgerMigration = { ...TEST_V2, statements: [...TEST_V2.statements, `SELECT pg_sleep(1)`] };

export const LIST_V2 = [...LEDGER_MIGRATIONS, TEST_V2];
export const LIST_V3 = [...LEDGER_MIGRATIONS, TEST_V2, TEST_V3];
