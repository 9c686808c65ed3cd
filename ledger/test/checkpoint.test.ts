/**
 * The SQLite backend's background checkpointer (storage/sqlite.ts): committed WAL frames are
 * copied into the database file by its own thread, the writer's automatic checkpoint is off,
 * close() ends the thread (a process that opened and closed a ledger exits by itself), and a
 * database written that way reopens with every committed row.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openSqliteStorage } from '../src/storage/sqlite.ts';

const fill = (n: number) => async (tx: { run(sql: string, p?: unknown[]): Promise<number> }) => {
  for (let i = 0; i < n; i++) await tx.run(`INSERT INTO objects (hash, bytes) VALUES (randomblob(32), randomblob(2000))`);
};

test('committed frames reach the database file from the background thread; the writer does not checkpoint', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-ckpt-'));
  const file = join(dir, 'ledger.db');
  const storage = openSqliteStorage(file);
  try {
    await storage.transaction(fill(400) as never);
    const probe = new Database(file, { readonly: false });
    try {
      // The writer's own automatic checkpoint is off (it would copy frames inside the commit).
      t.is(
        await storage.transaction(async (tx) =>
          Number((await tx.get<{ wal_autocheckpoint: number }>('PRAGMA wal_autocheckpoint'))?.wal_autocheckpoint),
        ),
        0,
      );
      // The thread copies every committed frame (NOOP only reads the WAL's state).
      let state = probe.pragma('wal_checkpoint(NOOP)') as { log: number; checkpointed: number }[];
      t.true(state[0]!.log > 0, 'the transaction went through the WAL');
      for (let i = 0; i < 200 && state[0]!.checkpointed < state[0]!.log; i++) {
        await new Promise((r) => setTimeout(r, 50));
        state = probe.pragma('wal_checkpoint(NOOP)') as { log: number; checkpointed: number }[];
      }
      t.is(state[0]!.checkpointed, state[0]!.log, 'every committed frame is in the database file');
    } finally {
      probe.close();
    }
  } finally {
    await storage.close();
  }
  const reopened = new Database(file, { readonly: true });
  t.is((reopened.prepare('SELECT COUNT(*) AS n FROM objects').get() as { n: number }).n, 400);
  reopened.close();
  rmSync(dir, { recursive: true, force: true });
});

test('without the background thread, SQLite checkpoints as usual', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-ckpt-'));
  const storage = openSqliteStorage(join(dir, 'ledger.db'), { backgroundCheckpoint: false });
  try {
    const v = await storage.transaction((tx) => tx.get<{ wal_autocheckpoint: number }>('PRAGMA wal_autocheckpoint'));
    t.is(Number(v?.wal_autocheckpoint), 1000);
  } finally {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a process that opens, writes and closes a file ledger exits by itself (the thread ends with close)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-ckpt-'));
  const script = join(dir, 'run.mts');
  writeFileSync(
    script,
    `import { openSqliteStorage } from ${JSON.stringify(new URL('../src/storage/sqlite.ts', import.meta.url).pathname)};
const s = openSqliteStorage(${JSON.stringify(join(dir, 'ledger.db'))});
await s.transaction((tx) => tx.run('INSERT INTO objects (hash, bytes) VALUES (randomblob(32), randomblob(100))'));
await s.close();
process.stdout.write('closed\\n');
`,
  );
  // close() waits for the thread to stop: a close that hung, or a thread holding the event loop, fails on the timeout.
  const out = execFileSync(process.execPath, ['--conditions=dt-source', '--import', 'tsx', script], { encoding: 'utf8', timeout: 60_000 });
  t.is(out.trim(), 'closed');
  rmSync(dir, { recursive: true, force: true });
});
