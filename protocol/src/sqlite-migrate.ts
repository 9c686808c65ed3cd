/**
 * The one SQLite schema migration runner of the terminal journal, the acquirer's
 * database and the ledger's SQLite backend (`@dt/protocol/sqlite-migrate`).
 *
 * It works over an injected database handle ({@link SqliteHandle}: the part of a
 * `better-sqlite3` `Database` it uses), so this package needs no SQLite binding and
 * each caller keeps its own; it imports nothing and uses no platform API.
 *
 * The rules (docs/ARCHITECTURE.md, "Schema versions and migrations"):
 * - the version is `PRAGMA user_version` (0 in a new file);
 * - version 1 is the schema of before versions: a version-0 file with tables is
 *   adopted when its tables are those of version 1 (missing ones are created by
 *   step 1, as that code did at every open), otherwise refused;
 * - each step runs in one `BEGIN IMMEDIATE` transaction with its version bump: a
 *   crash or a failing step leaves the previous version with its data, and the
 *   write lock is taken before the version is read, so of two openers at once
 *   one migrates and the other then finds the new version;
 * - a file of a newer version than the list is refused and left unchanged;
 * - after migrating, the tables are checked against the list's latest version.
 *
 * @module
 */

/** A prepared statement of a {@link SqliteHandle}. */
export interface SqliteStatementLike {
  all(...params: unknown[]): unknown[];
  get(...params: unknown[]): unknown;
  run(...params: unknown[]): unknown;
}

/** The part of a SQLite database handle (a `better-sqlite3` `Database`) the runner uses. */
export interface SqliteHandle {
  exec(sql: string): unknown;
  prepare(sql: string): SqliteStatementLike;
  /** True while a transaction is open. */
  readonly inTransaction: boolean;
  close(): unknown;
}

/** One forward migration step: the version the database has after it (1, 2, ... in order). */
export interface SchemaStep {
  readonly version: number;
}

/**
 * Tables (name -> their columns, as a string) and index names: the shape that says
 * whether a database is the one of a given version.
 */
export interface SchemaShape {
  readonly tables: ReadonlyMap<string, string>;
  readonly indexes: readonly string[];
}

/**
 * What the shape compares of a column: `full` its name, type, `NOT NULL`, default and
 * primary-key position; `names` its name only (engine-neutral, so a PostgreSQL
 * database can be compared with the same reference).
 */
export type ColumnDetail = 'full' | 'names';

/** The shape of a SQLite database (SQLite's own tables and automatic indexes left out). */
export function sqliteShape(db: SqliteHandle, columns: ColumnDetail): SchemaShape {
  const rows = db.prepare(`SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name`).all() as {
    type: string;
    name: string;
  }[];
  const tables = new Map<string, string>();
  for (const r of rows.filter((x) => x.type === 'table')) {
    if (columns === 'full') {
      const cols = db.prepare(`SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid`).all(r.name);
      tables.set(r.name, JSON.stringify(cols));
    } else {
      const cols = db.prepare(`SELECT name FROM pragma_table_info(?) ORDER BY cid`).all(r.name) as { name: string }[];
      tables.set(r.name, cols.map((c) => c.name).join(','));
    }
  }
  return { tables, indexes: rows.filter((x) => x.type === 'index').map((x) => x.name) };
}

/** The differences of `actual` from `expected`, in words (empty when equal). Extra indexes are allowed. */
export function shapeDifferences(actual: SchemaShape, expected: SchemaShape): string[] {
  const out: string[] = [];
  for (const [t, cols] of expected.tables) {
    const a = actual.tables.get(t);
    if (a === undefined) out.push(`no table ${t}`);
    else if (a !== cols) out.push(`table ${t} has other columns`);
  }
  for (const t of actual.tables.keys()) if (!expected.tables.has(t)) out.push(`unknown table ${t}`);
  for (const i of expected.indexes) if (!actual.indexes.includes(i)) out.push(`no index ${i}`);
  return out;
}

/**
 * Why a version-0 database with these tables is not the one of before versions (empty
 * when it is): a table that is not of version 1, or a table of version 1 of another
 * shape. Tables of version 1 it lacks are fine (step 1 creates them).
 */
export function adoptionProblems(before: SchemaShape, v1: SchemaShape): string[] {
  const out: string[] = [];
  const foreign = [...before.tables.keys()].filter((t) => !v1.tables.has(t));
  if (foreign.length > 0) out.push(`it holds table(s) ${foreign.join(', ')}`);
  for (const [t, cols] of before.tables) if (v1.tables.has(t) && v1.tables.get(t) !== cols) out.push(`table ${t} has other columns`);
  return out;
}

/** Checks that `migrations` are numbered 1, 2, ... (`kind` names the list in the error: `journal`, `ledger`). */
export function checkMigrationList(migrations: readonly SchemaStep[], kind: string): void {
  if (migrations.length === 0) throw new Error(`no ${kind} migrations`);
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`${kind} migration ${i} has version ${m.version}, expected ${i + 1}`);
  });
}

/** How one database's list is run: its steps, how a step is applied, and its errors. */
export interface MigrationPlan<H extends SqliteHandle, M extends SchemaStep> {
  /** The steps, oldest first (numbered 1, 2, ...). */
  readonly migrations: readonly M[];
  /** Names the list in a programming error about it (`journal migration 1 has version 3`). */
  readonly kind: string;
  /** What a refused database is not, after "not ": `a terminal journal`, `a ledger database`. */
  readonly what: string;
  /** What the shape compares of a column. */
  readonly columns: ColumnDetail;
  /**
   * The version is mirrored in `meta.schema` (a `meta (key, value)` table of version 1): set
   * with each bump above 1, and a version-0 file whose `meta.schema` is not `'1'` is refused.
   */
  readonly mirrorInMeta: boolean;
  /** Runs one step on `db` (inside its transaction; throwing rolls the step back). */
  apply(db: H, step: M): void;
  /** Runs the part of a step that makes the shape, on an empty in-memory database (default {@link apply}). */
  applyShape?(db: H, step: M): void;
  /** A new empty in-memory database (the reference shapes are built there, then it is closed). */
  openMemory(): H;
  /** The error for a database of `version` when the list goes up to `latest`. */
  newer(version: number, latest: number): Error;
  /** The error for a database that is not this one (`message` starts with "not "). */
  foreign(message: string): Error;
}

/** The shape a database of `version` has: the steps up to it applied to an empty database. */
export function referenceShape<H extends SqliteHandle, M extends SchemaStep>(plan: MigrationPlan<H, M>, version: number): SchemaShape {
  const ref = plan.openMemory();
  try {
    for (const m of plan.migrations.slice(0, version)) (plan.applyShape ?? plan.apply)(ref, m);
    return sqliteShape(ref, plan.columns);
  } finally {
    ref.close();
  }
}

function userVersion(db: SqliteHandle): number {
  return (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
}

/**
 * Brings the database in `db` to the latest version of `plan.migrations` (creating it in an
 * empty file), one `BEGIN IMMEDIATE` transaction per step with its `user_version` bump, then
 * checks its tables against that version. Returns the versions before and after.
 *
 * @throws the plan's `newer` error when the file's version is above the latest known one, its
 *   `foreign` error when the file holds tables that are not this database's; a refused file is
 *   left as it was (except for the final check, which runs after the steps committed).
 */
export function migrateSqliteSchema<H extends SqliteHandle, M extends SchemaStep>(
  db: H,
  plan: MigrationPlan<H, M>,
): { from: number; to: number } {
  const { migrations } = plan;
  checkMigrationList(migrations, plan.kind);
  const latest = migrations.length;
  let from: number | undefined;
  for (;;) {
    db.exec('BEGIN IMMEDIATE');
    try {
      const v = userVersion(db);
      from ??= v;
      if (v > latest) throw plan.newer(v, latest);
      if (v === latest) {
        db.exec('COMMIT');
        break;
      }
      const before = v === 0 ? sqliteShape(db, plan.columns) : undefined;
      if (before && before.tables.size > 0) adopt(db, plan, before);
      else plan.apply(db, migrations[v]!);
      const next = v + 1;
      db.exec(`PRAGMA user_version = ${next}`);
      if (plan.mirrorInMeta && next > 1) db.prepare(`UPDATE meta SET value = ? WHERE key = 'schema'`).run(String(next));
      db.exec('COMMIT');
    } catch (e) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw e;
    }
  }
  const diff = shapeDifferences(sqliteShape(db, plan.columns), referenceShape(plan, latest));
  if (diff.length > 0) throw plan.foreign(`not ${plan.what} of schema version ${latest}: ${diff.join(', ')}`);
  return { from, to: latest };
}

/** A version-0 file with tables: step 1 over it if they are version 1's (and `meta.schema` says 1); refused otherwise. */
function adopt<H extends SqliteHandle, M extends SchemaStep>(db: H, plan: MigrationPlan<H, M>, before: SchemaShape): void {
  const expected = referenceShape(plan, 1);
  const problems = adoptionProblems(before, expected);
  if (problems.length > 0) throw plan.foreign(`not ${plan.what}: ${problems.join(', ')}`);
  if (plan.mirrorInMeta && before.tables.has('meta')) {
    const row = db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: unknown } | undefined;
    if (row !== undefined && row.value !== '1') throw plan.foreign(`not ${plan.what}: meta.schema is ${String(row.value)}`);
  }
  plan.apply(db, plan.migrations[0]!);
  const diff = shapeDifferences(sqliteShape(db, plan.columns), expected);
  if (diff.length > 0) throw plan.foreign(`not ${plan.what}: ${diff.join(', ')}`);
}
