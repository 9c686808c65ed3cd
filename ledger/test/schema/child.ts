/**
 * Child process of test/schema.test.ts: opens a ledger database with a test
 * migration list and prints one JSON line.
 *
 * argv: sqlite <file> <hang|slow|second> | postgres <json config> hang
 *   hang:   version 2 does its work, then runs until the test kills this process
 *   slow:   version 2 holds the write lock a while after its work
 *   second: prints "ready", waits for a line on stdin, reads the version, then opens with the plain v2 list
 */
import Database from 'better-sqlite3';
import { createInterface } from 'node:readline';
import { LEDGER_MIGRATIONS, openPostgresStorage, openSqliteStorage } from '../../src/index.ts';
import { HANGING_PG_V2, HANGING_SQLITE_V2, LIST_V2, SLOW_SQLITE_V2 } from './migrations.ts';

const [engine, target, mode] = process.argv.slice(2) as [string, string, string];
if (engine === 'postgres') {
  process.stdout.write('opening\n');
  await openPostgresStorage(JSON.parse(target) as object, { migrations: [...LEDGER_MIGRATIONS, HANGING_PG_V2] });
  throw new Error('the hanging migration finished');
}
let before: number | undefined;
if (mode === 'second') {
  process.stdout.write('ready\n');
  const rl = createInterface({ input: process.stdin });
  await new Promise<void>((resolve) => rl.once('line', () => resolve()));
  rl.close();
  const peek = new Database(target, { readonly: true });
  before = peek.pragma('user_version', { simple: true }) as number;
  peek.close();
}
const list =
  mode === 'hang' ? [...LEDGER_MIGRATIONS, HANGING_SQLITE_V2] : mode === 'slow' ? [...LEDGER_MIGRATIONS, SLOW_SQLITE_V2] : LIST_V2;
const storage = openSqliteStorage(target, { migrations: list });
const banks = await storage.transaction((tx) => tx.get<{ n: number }>('SELECT count(*) AS n FROM banks'));
await storage.close();
process.stdout.write(JSON.stringify({ mode, before, banks: banks?.n }) + '\n');
