/**
 * One table of the ledger API's stable codes and HTTP statuses
 * (`LEDGER_ERROR_STATUS`, src/errors.ts): SPEC.md §8.2 must list exactly
 * those codes with those statuses, and the ledger core's codes must all be in
 * it. The error body keeps the stable code and moves a check's own code to
 * `detail` (issue 12 point 3).
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { errorBody, LEDGER_ERROR_STATUS, LedgerApiCode, LedgerApiError } from '../src/errors.ts';
import { LedgerError, LedgerErrorCode } from '../src/ledger.ts';

const SPEC = readFileSync(fileURLToPath(new URL('../../protocol/SPEC.md', import.meta.url)), 'utf8');

/** The rows of the §8.2 table: code -> HTTP column text. */
function specTable(): Map<string, string> {
  const start = SPEC.indexOf('### 8.2 Ledger API codes');
  // The table ends at the next heading of any level (§8.3 follows it).
  const end = SPEC.slice(start + 1).search(/\n#{2,3} /) + start + 1;
  if (start < 0 || end < 0) throw new Error('SPEC §8.2 not found');
  const rows = new Map<string, string>();
  for (const line of SPEC.slice(start, end).split('\n')) {
    const m = /^\| `([A-Z_]+)` \| ([0-9 /]+) \|/.exec(line);
    if (m) {
      if (rows.has(m[1]!)) throw new Error(`SPEC §8.2 lists ${m[1]} twice`);
      rows.set(m[1]!, m[2]!.trim());
    }
  }
  return rows;
}

test('SPEC §8.2 lists exactly the codes of LEDGER_ERROR_STATUS, with the same HTTP statuses', (t) => {
  const spec = specTable();
  const table = new Map(Object.entries(LEDGER_ERROR_STATUS).map(([c, s]) => [c, s.join(' / ')]));
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

test('error bodies: the stable code is never replaced; a detail code goes to detail; statuses come from the table', (t) => {
  // What the ledger core throws for a value-creating sync history.
  const sync = errorBody(
    new LedgerError(400, LedgerErrorCode.SYNC_INVALID, 'history: VALUE_NOT_CONSERVED', { code: 'VALUE_NOT_CONSERVED', index: 2 }),
  );
  t.is(sync.status, 400);
  t.deepEqual(sync.body, {
    code: 'SYNC_INVALID',
    message: 'SYNC_INVALID: history: VALUE_NOT_CONSERVED',
    detail: 'VALUE_NOT_CONSERVED',
    index: 2,
  });
  // A status the table does not allow for a code becomes the table's.
  t.is(errorBody(new LedgerError(418, LedgerErrorCode.CARD_UNKNOWN, 'x')).status, 404);
  t.is(errorBody(new LedgerError(403, LedgerErrorCode.BAD_SIGNATURE, 'x')).status, 403);
  // An internal failure of the core is INTERNAL without details.
  t.deepEqual(errorBody(new LedgerError(500, LedgerErrorCode.BANK_UNKNOWN, 'books', { code: 'X' })), {
    status: 500,
    body: { code: 'INTERNAL', message: 'internal error' },
  });
  const auth = errorBody(new LedgerApiError(LedgerApiCode.ACQUIRER_AUTH, 'chain', 'CERT_EXPIRED'));
  t.deepEqual(auth, { status: 401, body: { code: 'ACQUIRER_AUTH', message: 'chain', detail: 'CERT_EXPIRED' } });
  t.is(new LedgerApiError(LedgerApiCode.BUSY, 'full').status, 503);
});
