/**
 * Typed row mapping (src/storage/rows.ts) on BOTH backends: after a run that
 * writes a row into every table (issuance, a load and sync, settlement, a
 * covered double spend, a revocation, an acquirer block), every stored row of
 * every table maps through its table's function without a type error; and a
 * mapping refuses a column of the wrong type instead of passing it on.
 */
import test from 'ava';
import { AdjustmentKind, toHex } from '@dt/protocol';
import { createTestLedger } from '../src/testkit.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { openPostgresStorage } from '../src/storage/postgres.ts';
import { pgAvailable, startPgCluster, type PgCluster } from '../src/pg-cluster.ts';
import { blockAcquirer } from '../src/acquirers.ts';
import { signCardBankRequest } from '../src/cardloss.ts';
import { aggregate, cardRow, RowTypeError, TABLE_ROWS, transferRow, verdictRow } from '../src/storage/rows.ts';
import type { LedgerStorage } from '../src/storage/types.ts';

let cluster: PgCluster | undefined;

test.before(() => {
  if (!pgAvailable()) throw new Error('PostgreSQL server binaries not found (set PG_BIN); the storage suite must run on both backends');
  cluster = startPgCluster({ fsync: false });
});
test.after.always(() => cluster?.stop());

const BACKENDS: [string, () => Promise<LedgerStorage>][] = [
  ['sqlite', async () => openSqliteStorage(':memory:')],
  ['postgres', async () => openPostgresStorage(cluster!.createDatabase(`rows_${process.pid}`))],
];

for (const [name, open] of BACKENDS) {
  test(`${name}: every stored row of every table maps through its typed row function`, async (t) => {
    const k = await createTestLedger({ storage: await open() });
    try {
      const card = await k.fundCard(10_000);
      const clone = card.wallet.clone();
      const a = k.newTerminal('shop-a');
      const b = k.newTerminal('shop-b');
      const pa = card.wallet.pay(k.request(a, 3_000));
      const pb = clone.pay(k.request(b, 4_000));
      await k.ledger.settle([k.batch(a, [pa.handover])]);
      // A refund (adjustments, refund_credits; SPEC §7.7.3).
      await k.ledger.settle([
        k.batch(a, [], {
          adjustments: [
            k.adjustment(a, { kind: AdjustmentKind.REFUND, transfer: pa.transferHash, card: card.identity.kid, amount: 1_000 }),
          ],
        }),
      ]);
      // A covered double spend: proofs, revocations, covers, cover_coins.
      await k.ledger.settle([k.batch(b, [pb.handover], { crlVersion: 0 })]);
      await blockAcquirer(k.storage, k.acquirer.kid, 'test', k.clock.now);
      // A card its bank blocked as lost (card_blocks, SPEC §7.9).
      const lost = await k.fundCard(1_000);
      await k.ledger.blockCard(signCardBankRequest('block', { card: lost.identity.kid, time: k.clock.now }, k.pki.bank.signer));
      const mapped: Record<string, unknown[]> = {};
      await k.storage.transaction(async (tx) => {
        for (const [table, { columns, map }] of Object.entries(TABLE_ROWS))
          mapped[table] = (await tx.all(`SELECT ${columns} FROM ${table}`)).map(map);
      });
      for (const [table, rows] of Object.entries(mapped)) t.true(rows.length > 0, `${table} has rows to map`);
      // The mapped values are the stored ones, typed: the card's anchor moved to its sync.
      const c = mapped.cards!.map((r) => r as ReturnType<typeof cardRow>).find((r) => toHex(r.kid) === toHex(card.identity.kid))!;
      t.is(c.anchorCounter, 1);
      t.true(c.anchorSync instanceof Uint8Array);
      const states = mapped.transfers!.map((r) => (r as ReturnType<typeof transferRow>).state).sort();
      t.deepEqual(states, ['settled']);
      const verdicts = mapped.verdicts!.map((r) => r as ReturnType<typeof verdictRow>);
      t.deepEqual(verdicts.map((v) => v.covered).sort(), [false, true]);
      const audit = await k.ledger.audit();
      t.true(audit.ok, JSON.stringify(audit));
    } finally {
      await k.storage.close();
    }
  });
}

test('a column of the wrong type is a RowTypeError naming the table and column, never a wrong value', (t) => {
  const blob = new Uint8Array(16);
  const card = { kid: blob, bank: blob, cert: blob, anchor: new Uint8Array(32), anchor_counter: 3, anchor_sync: null };
  t.is(cardRow(card).anchorCounter, 3);
  t.is(cardRow(card).anchorSync, null);
  t.throws(() => cardRow({ ...card, anchor_counter: '3' }), {
    instanceOf: RowTypeError,
    message: 'cards.anchor_counter: expected a safe integer',
  });
  t.throws(() => cardRow({ ...card, kid: 'ab' }), { instanceOf: RowTypeError, message: 'cards.kid: expected a blob' });
  t.throws(() => cardRow({ ...card, anchor_counter: 2 ** 53 }), { instanceOf: RowTypeError });
  const { anchor: _anchor, ...missing } = card;
  t.throws(() => cardRow(missing), { instanceOf: RowTypeError, message: 'cards.anchor: expected a blob' });
  const transfer = {
    hash: blob,
    card: blob,
    counter: 1,
    amount: 5,
    payee: blob,
    change_id: null,
    change_value: 0,
    mark: null,
    time: 1,
    state: 'recorded',
  };
  t.is(transferRow(transfer).state, 'recorded');
  t.throws(() => transferRow({ ...transfer, state: 'paid' }), { instanceOf: RowTypeError, message: /transfers\.state: expected one of/ });
  t.throws(() => transferRow({ ...transfer, mark: 7 }), { instanceOf: RowTypeError, message: 'transfers.mark: expected a blob or NULL' });
  // Aggregates: PostgreSQL's NUMERIC sums arrive as decimal strings; nothing else that is not an integer passes.
  t.is(aggregate({ s: '12345' }, 's'), 12345);
  t.is(aggregate({ s: 7 }, 's'), 7);
  t.throws(() => aggregate({ s: '1.5' }, 's'), { instanceOf: RowTypeError });
  t.throws(() => aggregate(undefined, 's'), { instanceOf: RowTypeError });
});
