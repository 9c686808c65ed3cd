/**
 * The acquirer API's one code table (`AcquirerErrorCode`,
 * `ACQUIRER_ERROR_STATUS`, src/acquirer-codes.ts): SPEC.md §8.3 must list
 * exactly those codes, in the same order, with the same HTTP statuses.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { ACQUIRER_ERROR_STATUS, AcquirerErrorCode } from '../src/index.ts';

const SPEC = readFileSync(new URL('../SPEC.md', import.meta.url), 'utf8');

/** The rows of the §8.3 table: code -> HTTP column. */
function specTable(): Map<string, number> {
  const start = SPEC.indexOf('### 8.3 Acquirer API codes');
  const end = SPEC.indexOf('\n### ', start + 1);
  if (start < 0 || end < 0) throw new Error('SPEC §8.3 not found');
  const rows = new Map<string, number>();
  for (const line of SPEC.slice(start, end).split('\n')) {
    const m = /^\| `([A-Z_]+)` \| ([0-9]+) \|/.exec(line);
    if (!m) continue;
    if (rows.has(m[1]!)) throw new Error(`SPEC §8.3 lists ${m[1]} twice`);
    rows.set(m[1]!, Number(m[2]));
  }
  return rows;
}

test('SPEC §8.3 lists exactly the codes of ACQUIRER_ERROR_STATUS, in its order, with the same HTTP statuses', (t) => {
  const spec = specTable();
  t.true(spec.size > 15, 'the SPEC table was parsed');
  t.deepEqual([...spec.entries()], Object.entries(ACQUIRER_ERROR_STATUS));
});

test('every AcquirerErrorCode is its own wire string and has a status', (t) => {
  for (const [name, code] of Object.entries(AcquirerErrorCode)) {
    t.is(name, code);
    t.true(Number.isInteger(ACQUIRER_ERROR_STATUS[code]) && ACQUIRER_ERROR_STATUS[code] >= 400, code);
  }
  t.deepEqual(Object.values(AcquirerErrorCode).sort(), Object.keys(ACQUIRER_ERROR_STATUS).sort());
});
