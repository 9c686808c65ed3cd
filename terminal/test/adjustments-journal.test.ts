/**
 * The journal's voids and refunds (schema v4, src/journal/journal.ts): the terminal's own rules
 * are checked in the transaction that records the signed adjustment, a refusal records nothing,
 * a reference is an idempotency key, and adjustments travel in batches with (or after) their
 * payment's handover and take the ledger's outcome (Outcome key 10) without touching the payment.
 */
import test from 'ava';
import { Journal, MAX_BATCH_ADJUSTMENTS, type AdjustmentContent, type NewPayment } from '../src/index.ts';

let n = 0;
function payment(amount: number): NewPayment {
  n++;
  return {
    transferHash: new Uint8Array(32).fill(n),
    card: new Uint8Array(16).fill(0xc0),
    counter: n,
    amount,
    currency: 398,
    nonce: new Uint8Array(16).fill(n),
    time: 1_700_000_000,
    approvedAt: 1_700_000_000,
    cvm: 0,
    merchant: 'shop-1',
    mcc: 5411,
    handover: new Uint8Array([0xa0, n]),
    inputs: [new Uint8Array(32).fill(0x80 + n)],
  };
}

/** The journal stores what the signer returns: here the content itself, so a test can read it back. */
const seen: AdjustmentContent[] = [];
const sign = (c: AdjustmentContent): Uint8Array => {
  seen.push(c);
  return new Uint8Array([0xd2, ...c.id]);
};

function approved(j: Journal, amount: number): number {
  const r = j.recordApproval(payment(amount));
  if (r.kind !== 'recorded') throw new Error(r.kind);
  return r.payment.id;
}

function settle(j: Journal, id: number): void {
  const p = j.getPayment(id)!;
  j.applyOutcomes([{ transferHash: p.transferHash, state: 'settled', covered: false, bytes: new Uint8Array([1]) }], undefined);
}

test('void: allowed while the payment has no outcome, once per payment, of its whole amount', (t) => {
  const j = Journal.open(':memory:');
  const id = approved(j, 15_000);
  const r = j.recordAdjustment({ kind: 'void', paymentId: id }, sign);
  t.is(r.kind, 'recorded');
  if (r.kind !== 'recorded') return;
  t.like(r.adjustment, { kind: 'void', paymentId: id, amount: 15_000, state: 'pending', reference: undefined });
  t.deepEqual(r.adjustment.transferHash, j.getPayment(id)!.transferHash);
  t.deepEqual(seen.at(-1)!.card, j.getPayment(id)!.card);
  t.is(seen.at(-1)!.currency, 398);
  const again = j.recordAdjustment({ kind: 'void', paymentId: id }, sign);
  t.is(again.kind, 'existing', 'a second void of the payment is the first one');
  t.is(j.adjustmentsOf(id).length, 1);
  t.like(j.recordAdjustment({ kind: 'refund', paymentId: id, amount: 100 }, sign), { kind: 'refused', reason: 'NOT_SETTLED' });
  t.like(j.recordAdjustment({ kind: 'void', paymentId: 999 }, sign), { kind: 'refused', reason: 'NOT_FOUND' });

  const settled = approved(j, 5_000);
  settle(j, settled);
  t.like(j.recordAdjustment({ kind: 'void', paymentId: settled }, sign), { kind: 'refused', reason: 'ALREADY_SETTLED' });
  const other = approved(j, 5_000);
  t.like(j.recordAdjustment({ kind: 'void', paymentId: other, amount: 4_000 }, sign), { kind: 'refused', reason: 'INVALID_AMOUNT' });
  t.is(j.adjustmentsOf(settled).length + j.adjustmentsOf(other).length, 0, 'refusals record nothing');
  j.close();
});

test('refund: only of a settled payment, the local sum of refunds not refused never above the amount', (t) => {
  const j = Journal.open(':memory:');
  const id = approved(j, 10_000);
  settle(j, id);
  t.like(j.recordAdjustment({ kind: 'refund', paymentId: id, amount: 4_000, reference: 'r-1' }, sign), { kind: 'recorded' });
  t.like(j.recordAdjustment({ kind: 'refund', paymentId: id, amount: 7_000, reference: 'r-2' }, sign), {
    kind: 'refused',
    reason: 'REFUND_EXCEEDS',
    // In tenge, as the merchant types and reads amounts.
    message: `receipt #${id}: 70.00 KZT exceeds what is left to refund (60.00 KZT of 100.00 KZT)`,
  });
  t.like(j.recordAdjustment({ kind: 'refund', paymentId: id, amount: 0 }, sign), { kind: 'refused', reason: 'INVALID_AMOUNT' });
  // Default amount: what is left.
  const rest = j.recordAdjustment({ kind: 'refund', paymentId: id, reference: 'r-3' }, sign);
  t.like(rest, { kind: 'recorded', adjustment: { amount: 6_000 } });
  t.like(j.recordAdjustment({ kind: 'refund', paymentId: id }, sign), { kind: 'refused', reason: 'REFUND_EXCEEDS' });
  t.is(j.refundedOf(id), 10_000);
  // A refund the ledger refused no longer counts.
  const r1 = j.getAdjustmentByReference('r-1')!;
  j.applyOutcomes([], undefined, [
    { id: r1.id, transferHash: r1.transferHash, accepted: false, code: 'MERCHANT_FUNDS', bytes: new Uint8Array([2]) },
  ]);
  t.like(j.getAdjustment(r1.id), { state: 'refused', code: 'MERCHANT_FUNDS' });
  t.is(j.refundedOf(id), 6_000);
  t.like(j.recordAdjustment({ kind: 'refund', paymentId: id, amount: 4_000, reference: 'r-4' }, sign), { kind: 'recorded' });
  t.is(j.getPayment(id)!.state, 'settled', 'adjustment outcomes never change the payment');
  j.close();
});

test('a reference is an idempotency key: the same request returns the recorded refund, another one is a conflict', (t) => {
  const j = Journal.open(':memory:');
  const a = approved(j, 10_000);
  const b = approved(j, 10_000);
  settle(j, a);
  settle(j, b);
  const first = j.recordAdjustment({ kind: 'refund', paymentId: a, amount: 1_000, reference: 'till-1:r9' }, sign);
  t.is(first.kind, 'recorded');
  const again = j.recordAdjustment({ kind: 'refund', paymentId: a, amount: 1_000, reference: 'till-1:r9' }, sign);
  t.is(again.kind, 'existing');
  if (first.kind === 'recorded' && again.kind === 'existing') t.deepEqual(again.adjustment.id, first.adjustment.id);
  t.like(j.recordAdjustment({ kind: 'refund', paymentId: a, amount: 2_000, reference: 'till-1:r9' }, sign), {
    kind: 'refused',
    reason: 'REFERENCE_CONFLICT',
  });
  t.like(j.recordAdjustment({ kind: 'refund', paymentId: b, amount: 1_000, reference: 'till-1:r9' }, sign), {
    kind: 'refused',
    reason: 'REFERENCE_CONFLICT',
  });
  t.is(j.refundedOf(a), 1_000, 'retries never refund twice');
  j.close();
});

test('batches: a void travels with its unbatched handover; later adjustments alone; ack and outcomes', (t) => {
  const j = Journal.open(':memory:');
  const p1 = approved(j, 1_000);
  const p2 = approved(j, 2_000);
  const v = j.recordAdjustment({ kind: 'void', paymentId: p2 }, sign);
  const built: { handovers: number; adjustments: number }[] = [];
  const build = (seq: number, h: Uint8Array[], _crl: number, a: Uint8Array[]): Uint8Array => {
    built.push({ handovers: h.length, adjustments: a.length });
    return new Uint8Array([seq, h.length, a.length]);
  };
  const b1 = j.nextBatch(500, build)!;
  t.like(b1, { seq: 1, count: 2, total: 3_000, adjustments: 1 });
  t.deepEqual(built, [{ handovers: 2, adjustments: 1 }], 'the voided payment\u2019s handover goes too, with its void');
  t.is(j.nextBatch(500, build)!.seq, 1, 'one batch in flight');
  j.ackBatch(1);
  if (v.kind === 'recorded') t.is(j.getAdjustment(v.adjustment.id)!.state, 'submitted');
  t.is(j.nextBatch(500, build), undefined, 'nothing pending');

  settle(j, p1);
  const r = j.recordAdjustment({ kind: 'refund', paymentId: p1, amount: 500 }, sign);
  const b2 = j.nextBatch(500, build)!;
  t.like(b2, { seq: 2, count: 0, adjustments: 1 });
  j.ackBatch(2);
  if (r.kind !== 'recorded' || v.kind !== 'recorded') return t.fail();
  const res = j.applyOutcomes(
    [{ transferHash: v.adjustment.transferHash, state: 'rejected', covered: false, code: 'MERCHANT_VOID', bytes: new Uint8Array([3]) }],
    '7',
    [
      { id: v.adjustment.id, transferHash: v.adjustment.transferHash, accepted: true, code: 'MERCHANT_VOID', bytes: new Uint8Array([4]) },
      { id: r.adjustment.id, transferHash: r.adjustment.transferHash, accepted: true, bytes: new Uint8Array([5]) },
      { id: new Uint8Array(16).fill(9), transferHash: r.adjustment.transferHash, accepted: true, bytes: new Uint8Array([6]) },
    ],
  );
  t.deepEqual(res, { applied: 3, unknown: 1 });
  t.like(j.getPayment(p2), { state: 'rejected', outcomeCode: 'MERCHANT_VOID' });
  t.like(j.getAdjustment(r.adjustment.id), { state: 'accepted' });
  const tot = j.adjustmentTotals();
  t.like(tot.void.accepted, { count: 1, amount: 2_000 });
  t.like(tot.refund.accepted, { count: 1, amount: 500 });
  j.close();
});

test('a void of a payment in a batch not yet acknowledged waits for the next batch; at most MAX_BATCH_ADJUSTMENTS a batch', (t) => {
  const j = Journal.open(':memory:');
  const p = approved(j, 1_000);
  const build = (seq: number, h: Uint8Array[], _c: number, a: Uint8Array[]): Uint8Array => new Uint8Array([seq, h.length, a.length]);
  j.nextBatch(500, build);
  j.recordAdjustment({ kind: 'void', paymentId: p }, sign);
  t.like(j.nextBatch(500, build), { seq: 1, adjustments: 0 }, 'the built batch is resent as it was');
  j.ackBatch(1);
  t.like(j.nextBatch(500, build), { seq: 2, count: 0, adjustments: 1 });
  t.is(MAX_BATCH_ADJUSTMENTS, 1000);
  j.close();
});
