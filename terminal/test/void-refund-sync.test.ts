/**
 * Voids and refunds end to end in process: payments taken by the kernel from a firmware card,
 * voided and refunded through the terminal's one signing path (adjustPayment), sent by the sync
 * client to the real acquirer and ledger, answered by the ledger's outcomes (Outcome key 10), and
 * the card's next sync: the card gets the voided and refunded value back, the merchant is never
 * credited the voided payment and is debited the refund, and the supply invariant holds.
 */
import test from 'ava';
import { join } from 'node:path';
import { getStatus, selectApplet, toHex } from '@dt/protocol';
import { adjustPayment, AdjustmentRefusedError, CardSyncClient, Journal, PaymentKernel, SyncClient } from '../src/index.ts';
import { readerFor, tempDir, TEST_POLICY } from './helpers/fixtures.ts';
import { startWorld, worldCard, worldTerminal } from './helpers/world.ts';

test('charge, void, charge, sync, refund part, sync, card sync: balances right, retries never double-refund', async (t) => {
  const { dir, cleanup } = tempDir();
  const w = await startWorld(dir);
  t.teardown(async () => {
    await w.close();
    cleanup();
  });
  const identity = worldTerminal(w);
  const journal = Journal.open(join(dir, 'j.sqlite'));
  t.teardown(() => journal.close());
  const client = (): SyncClient =>
    new SyncClient({ identity, journal, acquirerUrl: w.acquirer.url, retry: { attempts: 2, baseMs: 10, maxMs: 50, timeoutMs: 5000 } });
  t.deepEqual((await client().sync()).problems, []);
  const kernel = new PaymentKernel({ identity, journal, policy: TEST_POLICY });
  const card = await worldCard(w, 1_000_000);
  const balance = async (): Promise<number> => {
    await selectApplet(card.transport);
    return (await getStatus(card.transport)).balance;
  };
  const merchant = async (): Promise<number> => (await w.tl.ledger.merchantBalances())[toHex(identity.kid)] ?? 0;

  const a = await kernel.charge(readerFor(card.transport), 100_000);
  if (a.kind !== 'APPROVED') return t.fail(a.kind);
  const v = adjustPayment(journal, identity, { kind: 'void', paymentId: a.payment.id });
  t.false(v.existing);
  t.is(v.adjustment.amount, 100_000);
  t.true(adjustPayment(journal, identity, { kind: 'void', paymentId: a.payment.id }).existing, 'one void per payment');
  const b = await kernel.charge(readerFor(card.transport), 250_000);
  if (b.kind !== 'APPROVED') return t.fail(b.kind);
  t.throws(() => adjustPayment(journal, identity, { kind: 'refund', paymentId: b.payment.id, amount: 1 }), {
    instanceOf: AdjustmentRefusedError,
    message: /not settled/,
  });

  // One batch: both handovers and the void.
  const s1 = await client().sync();
  t.deepEqual(s1.problems, []);
  t.deepEqual(
    s1.batches.map((x) => [x.count, x.total, x.adjustments]),
    [[2, 350_000, 1]],
  );
  await w.acquirer.forwardNow();
  const s2 = await client().sync();
  t.deepEqual(s2.problems, []);
  t.like(s2.outcomes.adjustments, { accepted: 1, refused: 0 });
  t.like(journal.getPayment(a.payment.id), { state: 'rejected', outcomeCode: 'MERCHANT_VOID' });
  t.like(journal.getAdjustment(v.adjustment.id), { state: 'accepted', code: 'MERCHANT_VOID' });
  t.like(journal.getPayment(b.payment.id), { state: 'settled' });
  t.is(await merchant(), 250_000, 'the voided payment is never credited');
  t.throws(() => adjustPayment(journal, identity, { kind: 'void', paymentId: b.payment.id }), { message: /refund it instead/ });

  // Refund part of the settled one; a retry with the same reference is the same refund.
  const r = adjustPayment(journal, identity, { kind: 'refund', paymentId: b.payment.id, amount: 60_000, reference: 'ret-1' });
  t.true(adjustPayment(journal, identity, { kind: 'refund', paymentId: b.payment.id, amount: 60_000, reference: 'ret-1' }).existing);
  t.throws(() => adjustPayment(journal, identity, { kind: 'refund', paymentId: b.payment.id, amount: 190_001 }), {
    message: /exceeds what is left/,
  });
  const s3 = await client().sync();
  t.deepEqual(
    s3.batches.map((x) => [x.count, x.adjustments]),
    [[0, 1]],
  );
  await w.acquirer.forwardNow();
  const s4 = await client().sync();
  t.deepEqual(s4.problems, []);
  t.like(journal.getAdjustment(r.adjustment.id), { state: 'accepted' });
  t.is(await merchant(), 190_000, 'settled net of the refund');

  // The card's next sync: the voided and the refunded value come back.
  t.is(await balance(), 1_000_000 - 350_000);
  const sync = await new CardSyncClient({ ledgerUrl: w.ledgerServer.url }).sync(card.transport);
  if (!sync.ok) return t.fail(JSON.stringify(sync));
  t.is(await balance(), 1_000_000 - 250_000 + 60_000);
  const audit = await w.tl.ledger.audit();
  t.true(audit.ok, JSON.stringify(audit));
  t.is(audit.difference, 0);
  t.is(audit.pendingRefunds, 0);
});
