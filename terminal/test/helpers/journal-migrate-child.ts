/**
 * Child process of test/journal-schema.test.ts: opens a journal with a
 * test migration list and reports what it saw, as one JSON line.
 *
 * argv: <file> <mode> [started] [gate]
 *   mode kill:    version 2 kills this process half way
 *   mode wait:    version 2 waits for <gate> after writing <started>
 *   mode second:  writes <started>, reads the version, then opens with the ordinary v2 list
 */
import Database from 'better-sqlite3';
import { writeFileSync } from 'node:fs';
import { Journal } from '../../src/index.ts';
import { KILLING_V2, LIST_V2, V1, waitingV2 } from './journal-migrations.ts';

const [file, mode, started, gate] = process.argv.slice(2) as [string, string, string?, string?];
let before: number | undefined;
const list = mode === 'kill' ? [...V1, KILLING_V2] : mode === 'wait' ? [...V1, waitingV2(started!, gate!)] : LIST_V2;
if (mode === 'second') {
  const peek = new Database(file, { readonly: true });
  before = peek.pragma('user_version', { simple: true }) as number;
  peek.close();
  writeFileSync(started!, '');
}
const j = Journal.open(file, { migrations: list });
const payments = j.listPayments().length;
j.close();
process.stdout.write(JSON.stringify({ mode, before, payments }) + '\n');
