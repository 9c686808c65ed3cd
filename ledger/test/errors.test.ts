/**
 * One table of the ledger API's stable codes and HTTP statuses
 * (`LEDGER_ERROR_STATUS`, src/errors.ts): SPEC.md §8.2 must list exactly
 * those codes with those statuses (and the detail that selects a code's other
 * status), and the ledger core's codes must all be in it. Throws name a code,
 * never a status. The error body keeps the stable code and moves a check's
 * own code to `detail` (issue 12 point 3).
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  errorBody,
  LEDGER_ERROR_STATUS,
  LedgerApiCode,
  LedgerApiError,
  LedgerError,
  LedgerErrorCode,
  statusOf,
  type ErrorStatus,
} from '../src/errors.ts';

const SPEC = readFileSync(fileURLToPath(new URL('../../protocol/SPEC.md', import.meta.url)), 'utf8');

/** The rows of the §8.2 table: code -> HTTP column text. */
function specTable(): Map<string, string> {
  const start = SPEC.indexOf('### 8.2 Ledger API codes');
  // The table ends at the next heading of any level (§8.3 follows it).
  const end = SPEC.slice(start + 1).search(/\n#{2,3} /) + start + 1;
  if (start < 0 || end < 0) throw new Error('SPEC §8.2 not found');
  const rows = new Map<string, string>();
  for (const line of SPEC.slice(start, end).split('\n')) {
    const m = /^\| `([A-Z_]+)` \| ([^|]+) \|/.exec(line);
    if (m) {
      if (rows.has(m[1]!)) throw new Error(`SPEC §8.2 lists ${m[1]} twice`);
      rows.set(m[1]!, m[2]!.trim());
    }
  }
  return rows;
}

/** How the SPEC writes a table entry: `400`, or `400 / 409 (`CONCURRENT_SYNC`)` for a code whose detail selects another status. */
const specCell = (s: ErrorStatus) => [String(s.status), ...Object.entries(s.byDetail ?? {}).map(([d, x]) => `${x} (\`${d}\`)`)].join(' / ');

test('SPEC §8.2 lists exactly the codes of LEDGER_ERROR_STATUS, with the same HTTP statuses', (t) => {
  const spec = specTable();
  const table = new Map(Object.entries(LEDGER_ERROR_STATUS).map(([c, s]) => [c, specCell(s)]));
  t.true(spec.size > 20, 'the SPEC table was parsed');
  t.deepEqual([...spec.keys()].sort(), [...table.keys()].sort());
  for (const [code, status] of table) t.is(spec.get(code), status, code);
  // And in the SPEC's order, so that the table is read the same way in both places.
  t.deepEqual([...spec.keys()], Object.keys(LEDGER_ERROR_STATUS));
});

test('every code of the ledger core and of LedgerApiCode has a status', (t) => {
  for (const c of Object.values(LedgerErrorCode)) t.truthy(LEDGER_ERROR_STATUS[c], c);
  t.deepEqual(Object.values(LedgerApiCode).sort(), Object.keys(LEDGER_ERROR_STATUS).sort());
});

test('no throw in the ledger sources names an HTTP status: errors carry a code and a detail', (t) => {
  const dir = fileURLToPath(new URL('../src/', import.meta.url));
  const files = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  let throws = 0;
  for (const f of files) {
    const src = readFileSync(dir + f, 'utf8');
    throws += [...src.matchAll(/new Ledger(?:Api)?Error\(/g)].length;
    t.deepEqual([...src.matchAll(/new Ledger(?:Api)?Error\(\s*\d/g)].length, 0, f);
    t.deepEqual([...src.matchAll(/\.code\(\s*\d{3}\s*\)/g)].length, 0, `${f}: a reply status written as a number`);
  }
  t.true(throws > 30, 'the throws were found');
});

test('error bodies: the stable code is never replaced; a detail code goes to detail; statuses come from the table', (t) => {
  // What the ledger core throws for a value-creating sync history.
  const sync = errorBody(
    new LedgerError(LedgerErrorCode.SYNC_INVALID, 'history: VALUE_NOT_CONSERVED', { detail: 'VALUE_NOT_CONSERVED', index: 2 }),
  );
  t.is(sync.status, 400);
  t.deepEqual(sync.body, {
    code: 'SYNC_INVALID',
    message: 'SYNC_INVALID: history: VALUE_NOT_CONSERVED',
    detail: 'VALUE_NOT_CONSERVED',
    index: 2,
  });
  // The one case of a code with another status is named by its detail.
  t.is(errorBody(new LedgerError(LedgerErrorCode.SYNC_INVALID, 'x', { detail: 'CONCURRENT_SYNC' })).status, 409);
  t.is(new LedgerError(LedgerErrorCode.BAD_SIGNATURE, 'x').status, 400);
  t.is(new LedgerError(LedgerErrorCode.BAD_SIGNATURE, 'x', { detail: 'LOAD_ORDER' }).status, 403);
  t.is(new LedgerError(LedgerErrorCode.BANK_UNKNOWN, 'x').status, 404);
  t.is(new LedgerError(LedgerErrorCode.BANK_UNKNOWN, 'x', { detail: 'LOAD_ORDER' }).status, 403);
  t.is(statusOf(LedgerApiCode.CARD_UNKNOWN, 'LOAD_ORDER'), 404, 'a detail selects another status only where the table says so');
  t.is(statusOf(LedgerApiCode.SYNC_INVALID, 'toString'), 400, 'only the table’s own detail names');
  // INTERNAL is INTERNAL without details.
  t.deepEqual(errorBody(new LedgerApiError(LedgerApiCode.INTERNAL, 'books', 'X')), {
    status: 500,
    body: { code: 'INTERNAL', message: 'internal error' },
  });
  const auth = errorBody(new LedgerApiError(LedgerApiCode.ACQUIRER_AUTH, 'chain', 'CERT_EXPIRED'));
  t.deepEqual(auth, { status: 401, body: { code: 'ACQUIRER_AUTH', message: 'chain', detail: 'CERT_EXPIRED' } });
  t.is(new LedgerApiError(LedgerApiCode.BUSY, 'full').status, 503);
});
