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
 * @module
 */
import Database from 'better-sqlite3';

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

interface Shape {
  readonly tables: ReadonlyMap<string, string>;
  readonly indexes: readonly string[];
}

/** Tables (name -> column list) and index names of `db`, SQLite's own excluded. */
function shapeOf(db: Database.Database): Shape {
  const rows = db.prepare(`SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name`).all() as {
    type: string;
    name: string;
  }[];
  const tables = new Map<string, string>();
  for (const r of rows.filter((x) => x.type === 'table')) {
    const cols = db.prepare(`SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid`).all(r.name);
    tables.set(r.name, JSON.stringify(cols));
  }
  return { tables, indexes: rows.filter((x) => x.type === 'index').map((x) => x.name) };
}

/** The shape a file of `version` must have: the migrations up to it applied to an empty database. */
function referenceShape(migrations: readonly AcquirerMigration[], version: number): Shape {
  const ref = new Database(':memory:');
  try {
    for (const m of migrations.slice(0, version)) m.up(ref);
    return shapeOf(ref);
  } finally {
    ref.close();
  }
}

/** The differences of `actual` from `expected`, in words (empty when equal). */
function differences(actual: Shape, expected: Shape): string[] {
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

function checkList(migrations: readonly AcquirerMigration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`acquirer migration ${i} has version ${m.version}, expected ${i + 1}`);
  });
  if (migrations.length === 0) throw new Error('no acquirer migrations');
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
  checkList(migrations);
  const latest = migrations.length;
  let from: number | undefined;
  for (;;) {
    db.exec('BEGIN IMMEDIATE');
    try {
      const v = db.pragma('user_version', { simple: true }) as number;
      from ??= v;
      if (v > latest) {
        throw new AcquirerSchemaError(
          'NEWER',
          `the database has schema version ${v}, newer than this program knows (${latest}): use the newer dt-acquirer that wrote it`,
          v,
        );
      }
      if (v === latest) {
        db.exec('COMMIT');
        break;
      }
      if (v === 0 && shapeOf(db).tables.size > 0) adoptV1(db, migrations);
      else migrations[v]!.up(db);
      const next = v + 1;
      db.pragma(`user_version = ${next}`);
      if (next > 1) db.prepare(`UPDATE meta SET value = ? WHERE key = 'schema'`).run(String(next));
      db.exec('COMMIT');
    } catch (e) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw e;
    }
  }
  const diff = differences(shapeOf(db), referenceShape(migrations, latest));
  if (diff.length > 0)
    throw new AcquirerSchemaError('NOT_AN_ACQUIRER_DB', `not an acquirer database of schema version ${latest}: ${diff.join(', ')}`);
  return { from, to: latest };
}

/**
 * A version-0 file with tables: the acquirer's database of before versions if its tables
 * are the acquirer's (those missing are created, as that code did at every
 * open) and `meta.schema` says 1; anything else is refused.
 */
function adoptV1(db: Database.Database, migrations: readonly AcquirerMigration[]): void {
  const expected = referenceShape(migrations, 1);
  const before = shapeOf(db);
  const foreign = [...before.tables.keys()].filter((t) => !expected.tables.has(t));
  if (foreign.length > 0)
    throw new AcquirerSchemaError('NOT_AN_ACQUIRER_DB', `not an acquirer database: it holds table(s) ${foreign.join(', ')}`);
  const changed = [...before.tables].filter(([t, cols]) => expected.tables.get(t) !== cols).map(([t]) => `table ${t} has other columns`);
  if (changed.length > 0) throw new AcquirerSchemaError('NOT_AN_ACQUIRER_DB', `not an acquirer database: ${changed.join(', ')}`);
  if (before.tables.has('meta')) {
    const row = db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: unknown } | undefined;
    if (row !== undefined && row.value !== '1')
      throw new AcquirerSchemaError('NOT_AN_ACQUIRER_DB', `not an acquirer database: meta.schema is ${String(row.value)}`);
  }
  migrations[0]!.up(db);
  const diff = differences(shapeOf(db), expected);
  if (diff.length > 0) throw new AcquirerSchemaError('NOT_AN_ACQUIRER_DB', `not an acquirer database: ${diff.join(', ')}`);
}
