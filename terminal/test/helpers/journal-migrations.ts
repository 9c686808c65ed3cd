/**
 * Test-only migration lists for the journal's upgrade tests: the real list
 * up to version 1 plus a test version 2 (and 3) that change schema and data, so a test can prove
 * what an upgrade does with a file of the previous version.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { JOURNAL_MIGRATIONS, type JournalMigration } from '../../src/index.ts';

/** v2: a column filled from existing rows, and a table that counts how often the step ran. */
export const TEST_V2: JournalMigration = {
  version: 2,
  description: 'test: payments.note from the merchant, migration_runs',
  up(db) {
    db.exec(`ALTER TABLE payments ADD COLUMN note TEXT`);
    db.exec(`UPDATE payments SET note = 'by ' || merchant`);
    db.exec(`CREATE TABLE IF NOT EXISTS migration_runs (version INTEGER NOT NULL) STRICT`);
    db.exec(`INSERT INTO migration_runs (version) VALUES (2)`);
  },
};

/** v3: one more table (only to make a file newer than the code under test). */
export const TEST_V3: JournalMigration = {
  version: 3,
  description: 'test: a table of version 3',
  up(db) {
    db.exec(`CREATE TABLE v3_only (x INTEGER) STRICT`);
  },
};

/** A v2 that does part of its work, then throws: the step must roll back. */
export const THROWING_V2: JournalMigration = {
  version: 2,
  description: 'test: fails half way',
  up(db) {
    TEST_V2.up(db);
    throw new Error('migration step failed on purpose');
  },
};

/** A v2 that does part of its work, then kills its own process (a crash during the upgrade). */
export const KILLING_V2: JournalMigration = {
  version: 2,
  description: 'test: the process dies half way',
  up(db) {
    TEST_V2.up(db);
    process.kill(process.pid, 'SIGKILL');
    // SIGKILL is delivered asynchronously; never go on to commit.
    for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
  },
};

/** A v2 that, before its work, waits until `gate` exists (so a second process can start opening meanwhile). */
export function waitingV2(started: string, gate: string): JournalMigration {
  return {
    version: 2,
    description: 'test: waits for a second opener',
    up(db) {
      writeFileSync(started, '');
      const cell = new Int32Array(new SharedArrayBuffer(4));
      while (!existsSync(gate)) Atomics.wait(cell, 0, 0, 20);
      // Give the second process time to reach the write lock (the assertion does not depend on it).
      Atomics.wait(cell, 0, 0, 300);
      TEST_V2.up(db);
    },
  };
}

/**
 * The real list up to version 1 (the schema of before versions): the test versions 2 and 3
 * build on it, whatever real versions came after.
 */
export const V1: readonly JournalMigration[] = JOURNAL_MIGRATIONS.slice(0, 1);
export const LIST_V2 = [...V1, TEST_V2];
export const LIST_V3 = [...V1, TEST_V2, TEST_V3];
/** The version of a file newer than this code: one past the real list. */
export const NEWER_VERSION = JOURNAL_MIGRATIONS.length + 1;
/** Test versions 2, 3, then one more table per version up to {@link NEWER_VERSION}: a file newer than the real list. */
export const LIST_NEWER: readonly JournalMigration[] = [
  ...LIST_V3,
  ...Array.from({ length: Math.max(0, NEWER_VERSION - 3) }, (_, i) => ({
    version: i + 4,
    description: `test: a table of version ${i + 4}`,
    up(db: Parameters<JournalMigration['up']>[0]) {
      db.exec(`CREATE TABLE v${i + 4}_only (x INTEGER) STRICT`);
    },
  })),
];
