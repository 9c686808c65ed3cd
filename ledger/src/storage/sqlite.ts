/**
 * SQLite backend (`better-sqlite3`): the embedded default. WAL journal and
 * `synchronous=FULL`, so a committed transaction survives power loss before
 * anyone is told about it.
 *
 * @module
 */
import Database from 'better-sqlite3';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { migrateSqliteSchema } from '@dt/protocol/sqlite-migrate';
import { LEDGER_MIGRATIONS, sqlitePlan, type LedgerMigration } from './migrations.ts';
import { Mutex, type LedgerStorage, type Row, type SqlTx, type SqlValue } from './types.ts';

function bind(params: readonly SqlValue[]): unknown[] {
  return params.map((p) => (p instanceof Uint8Array ? Buffer.from(p.buffer, p.byteOffset, p.byteLength) : p));
}

function plainRow<T>(row: Record<string, unknown> | undefined): T | undefined {
  if (!row) return undefined;
  for (const k of Object.keys(row)) {
    const v = row[k];
    // The protocol works on plain Uint8Array: a view of the Buffer's own memory (better-sqlite3 gives each blob a
    // Buffer of its own, not a slice of a pool), so no bytes are copied; a Buffer that is a slice is copied.
    if (v instanceof Uint8Array)
      row[k] = v.byteOffset === 0 && v.byteLength === v.buffer.byteLength ? new Uint8Array(v.buffer) : new Uint8Array(v);
    else if (typeof v === 'bigint') row[k] = Number(v);
  }
  return row as T;
}

/**
 * Brings the ledger database in `db` to the latest version of `migrations`
 * (./migrations.ts), one `BEGIN IMMEDIATE` transaction per step with its
 * `PRAGMA user_version` bump (the write lock is taken before the version is
 * read, so a second process waits and then finds the new version), then checks
 * its tables against that version. Returns the versions before and after.
 *
 * @throws {LedgerSchemaError} NEWER or NOT_A_LEDGER; the database is left as it was.
 */
export function migrateSqlite(
  db: Database.Database,
  migrations: readonly LedgerMigration[] = LEDGER_MIGRATIONS,
): { from: number; to: number } {
  return migrateSqliteSchema(db, sqlitePlan(migrations));
}

/** Options of {@link openSqliteStorage}. */
export interface SqliteStorageOptions {
  /** The schema migrations (default `LEDGER_MIGRATIONS`); tests of the upgrade path pass a longer list. Version 1 must stay the ledger's own. */
  readonly migrations?: readonly LedgerMigration[];
  /**
   * Checkpoint the WAL from a background thread (default true for a file; see {@link startCheckpointer}).
   * false: SQLite's own automatic checkpoint, inside the committing call.
   */
  readonly backgroundCheckpoint?: boolean;
}

/** WAL frames (pages) after which a commit checkpoints in the calling thread anyway (the background thread fell behind): bounds the WAL at about 256 MiB. */
const WAL_FRAMES_MAX = 65_536;
/** How often the background thread checkpoints (ms). */
const CHECKPOINT_EVERY_MS = 100;

/**
 * The checkpointer thread's code: its own connection to the database, a PASSIVE checkpoint (it copies
 * committed WAL frames into the database file and never blocks the writer) every `every` ms until told to stop.
 */
const CHECKPOINTER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.path, { fileMustExist: true });
db.pragma('busy_timeout = 1000');
let stop = false;
parentPort.on('message', () => { stop = true; });
const tick = () => {
  if (stop) { db.close(); parentPort.postMessage('stopped'); return; }
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch (e) { parentPort.postMessage(String(e && e.message || e)); }
  setTimeout(tick, workerData.every);
};
tick();
`;

/**
 * Starts the background checkpointer of a WAL database at `path`. A commit with
 * `synchronous=FULL` is durable once its WAL frames are synced; copying them into
 * the database file (the checkpoint) is SQLite's housekeeping, which by default runs
 * inside the commit that crosses `wal_autocheckpoint` pages: with random-key B-trees
 * a settle call's commit then waits for tens of MiB of page writes and a second
 * fsync. Here a thread with its own connection checkpoints in PASSIVE mode (never
 * blocking the writer); the writer's own automatic checkpoint is off, and it
 * checkpoints itself only if the WAL grows past {@link WAL_FRAMES_MAX} frames.
 */
function startCheckpointer(path: string): { stop(): Promise<void> } {
  const worker = new Worker(CHECKPOINTER, {
    eval: true,
    workerData: { path, module: createRequire(import.meta.url).resolve('better-sqlite3'), every: CHECKPOINT_EVERY_MS },
  });
  worker.unref();
  // A failed checkpoint is retried at the next tick; the writer's bound keeps the WAL finite meanwhile.
  worker.on('error', () => undefined);
  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        worker.once('exit', () => resolve());
        worker.on('message', (m) => {
          if (m === 'stopped') void worker.terminate();
        });
        worker.postMessage('stop');
        // A thread stuck in a checkpoint is ended after a second; the next connection's checkpoint carries on.
        setTimeout(() => void worker.terminate(), 1000).unref();
      });
      return stopped;
    },
  };
}

/**
 * Opens (creating if needed) a SQLite ledger database at `path` (`:memory:` for
 * tests), bringing its schema to the latest version ({@link migrateSqlite}).
 *
 * @throws {LedgerSchemaError} the database is of a newer schema version or not a ledger's (left as it was);
 *   a SqliteError (SQLITE_NOTADB) when the file is no database.
 */
export function openSqliteStorage(path: string, options: SqliteStorageOptions = {}): LedgerStorage {
  const db = new Database(path);
  try {
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 10000');
    // Before the switch to WAL, so that a refused file is left as it was.
    migrateSqlite(db, options.migrations ?? LEDGER_MIGRATIONS);
    db.pragma('journal_mode = WAL');
    // A page cache that holds the hot part of a ledger of 100k cards and millions of claims (64 MiB,
    // the default is 2 MiB), and reads through a memory map of up to 1 GiB of the file. Durability is
    // unchanged: writes still go through the WAL with synchronous=FULL.
    db.pragma('cache_size = -65536');
    db.pragma('mmap_size = 1073741824');
  } catch (e) {
    db.close();
    throw e;
  }
  const background = (options.backgroundCheckpoint ?? true) && path !== ':memory:' && path !== '' && !db.memory;
  const checkpointer = background ? startCheckpointer(path) : undefined;
  if (checkpointer) db.pragma('wal_autocheckpoint = 0');
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
  // WAL frames not yet checkpointed (the `-wal` file's size is not it: SQLite reuses the file).
  const walFrames = (): number => {
    const r = db.pragma('wal_checkpoint(NOOP)') as { log: number; checkpointed: number }[] | undefined;
    return r?.[0] ? r[0].log - r[0].checkpointed : 0;
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
          if (checkpointer && walFrames() > WAL_FRAMES_MAX) db.pragma('wal_checkpoint(PASSIVE)');
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
        await checkpointer?.stop();
        db.close();
      });
    },
  };
}
