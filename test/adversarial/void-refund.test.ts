/**
 * Adversarial group: voids and refunds (SPEC §7.7.3) against the ledger, by merchants who try to
 * pay a card twice, to refund more than they took, to replay a refund, to adjust another
 * merchant's payment or to forge another terminal's adjustment; and cards (the real firmware)
 * that get their value back at their next sync, exactly once.
 *
 * Payments are real taps of firmware cards at real kernels; the adjustments go to the ledger's
 * HTTP API in batches signed by the certified terminal key, in a settle request of an acquirer of
 * the bank (world.ts `ledgerVerdicts`), as a terminal's own batches would carry them. After every
 * step, the books: issued = cards + merchants + banks + redeemed + pending (loads, payee value,
 * refund credits), and no balance below its floor.
 */
import test, { type ExecutionContext } from 'ava';
import {
  AdjustmentKind,
  coseSign1,
  encodeMessage,
  getStatus,
  LIMITS,
  MESSAGES,
  openSigned,
  OutcomeStatus,
  selectApplet,
  signAdjustment,
  syncBeginCommand,
  syncCompleteCommand,
  toHex,
  transmitOk,
  type ApduTransport,
  type Outcome,
  type SyncReceipt,
} from '@dt/protocol';
import { httpRequest } from '@dt/protocol/http';
import type { PaymentRecord } from '@dt/terminal';
import {
  books,
  genuinePayment,
  ledgerVerdicts,
  newCard,
  newTerminal,
  nowSec,
  rnd16,
  settle,
  startWorld,
  tapCapturing,
  type BackOffice,
  type Terminal,
} from './world.ts';

/** An adjustment of `payment` signed by `term` (its key, its kid). */
function adjustment(term: Terminal, kind: AdjustmentKind, payment: PaymentRecord, amount: number, id = rnd16()): Uint8Array {
  return signAdjustment(
    {
      kind,
      id,
      terminal: term.identity.kid,
      transfer: payment.transferHash,
      card: payment.card,
      amount,
      currency: payment.currency,
      time: nowSec(),
    },
    term.identity.signer,
  );
}

/** The card syncs with the ledger over its HTTP API (SYNC BEGIN -> POST /v1/sync -> SYNC COMPLETE, the firmware checks the total). */
async function syncCard(bo: BackOffice, tr: ApduTransport): Promise<SyncReceipt> {
  await selectApplet(tr);
  const req = await transmitOk(tr, syncBeginCommand(rnd16()), { maxResponse: 1 << 20 });
  const receipt = (
    await httpRequest(`${bo.ledgerServer.url}/v1/sync`, {
      method: 'POST',
      headers: { 'content-type': 'application/cbor' },
      body: req,
      maxBytes: LIMITS.maxSyncSize,
    })
  ).body;
  await transmitOk(tr, syncCompleteCommand(receipt));
  return openSigned('SyncReceipt', receipt).message;
}

const balanceOf = async (tr: ApduTransport) => {
  await selectApplet(tr);
  return (await getStatus(tr)).balance;
};
const merchantOf = async (bo: BackOffice, term: Terminal) => (await bo.ledger.merchantBalances())[toHex(term.identity.kid)] ?? 0;

/** A tap that must be approved; its journal record and the handover the card answered. */
async function pay(t: ExecutionContext, term: Terminal, tr: ApduTransport, amount: number) {
  const { outcome, handover } = await tapCapturing(term, tr, amount);
  if (outcome.kind !== 'APPROVED' || !handover) throw new Error(`the tap: ${JSON.stringify(outcome)}`);
  t.pass(`approved ${amount}`);
  return { payment: outcome.payment, handover };
}

/** The world, and the genuine payment every group starts with (approved and settled). */
async function world(t: ExecutionContext): Promise<{ dir: string; bo: BackOffice }> {
  const w = await startWorld(t);
  await genuinePayment(t, w.bo, w.dir);
  return w;
}

const codes = (os: readonly Outcome[]) => os.map((o) => `${o.status}${o.code ? ` ${o.code}` : ''}`);

test('a void and its payment in one batch, and a refund of the same payment after: the card is paid back once, the merchant never credited', async (t) => {
  const { dir, bo } = await world(t);
  const shop = await newTerminal(t, bo, dir, 'KZ-SHOP');
  const { transport } = await newCard(bo);
  const start = await balanceOf(transport);
  const { payment, handover } = await pay(t, shop, transport, 250_000);
  await books(t, bo, 'the tap');
  // Void and refund together: the void is known before the handover is judged, the refund finds nothing settled.
  const out = await ledgerVerdicts(bo, shop, [handover], {
    adjustments: [adjustment(shop, AdjustmentKind.VOID, payment, 250_000), adjustment(shop, AdjustmentKind.REFUND, payment, 250_000)],
  });
  t.deepEqual(codes(out), [
    `${OutcomeStatus.VOIDED} MERCHANT_VOID`,
    `${OutcomeStatus.VOIDED} MERCHANT_VOID`,
    `${OutcomeStatus.INVALID} NOT_SETTLED`,
  ]);
  t.is(await merchantOf(bo, shop), 0);
  await books(t, bo, 'the void');
  // The terminal's own batch (through the acquirer) gets VOIDED too; a refund now is still NOT_SETTLED.
  await settle(shop, bo);
  t.is(await merchantOf(bo, shop), 0);
  t.deepEqual(codes(await ledgerVerdicts(bo, shop, [], { adjustments: [adjustment(shop, AdjustmentKind.REFUND, payment, 1)] })), [
    `${OutcomeStatus.INVALID} NOT_SETTLED`,
  ]);
  await books(t, bo, 'the late submission');
  const r = await syncCard(bo, transport);
  t.deepEqual(r.voided.map(toHex), [toHex(payment.transferHash)]);
  t.is(r.refunded, undefined);
  t.is(await balanceOf(transport), start);
  await books(t, bo, 'the card sync');
  // A second sync brings nothing more.
  const r2 = await syncCard(bo, transport);
  t.deepEqual(r2.voided, []);
  t.is(await balanceOf(transport), start);
  await books(t, bo, 'the second sync');
});

test('a colluding merchant tries to refund more than it took, to replay a refund and to void after settling: the card gets the amount at most, once', async (t) => {
  const { dir, bo } = await world(t);
  const shop = await newTerminal(t, bo, dir, 'KZ-SHOP');
  const { transport } = await newCard(bo);
  const start = await balanceOf(transport);
  const { payment } = await pay(t, shop, transport, 300_000);
  await settle(shop, bo);
  t.is(await merchantOf(bo, shop), 300_000);
  await books(t, bo, 'settled');
  t.deepEqual(codes(await ledgerVerdicts(bo, shop, [], { adjustments: [adjustment(shop, AdjustmentKind.VOID, payment, 300_000)] })), [
    `${OutcomeStatus.INVALID} VOID_TOO_LATE`,
  ]);
  await books(t, bo, 'the void too late');
  // One refund, replayed in three batches and twice in one: debited once.
  const r1 = adjustment(shop, AdjustmentKind.REFUND, payment, 200_000);
  const first = await ledgerVerdicts(bo, shop, [], { adjustments: [r1] });
  t.deepEqual(codes(first), [`${OutcomeStatus.REFUNDED}`]);
  for (let i = 0; i < 3; i++) {
    const again = await ledgerVerdicts(bo, shop, [], { adjustments: [r1, r1] });
    t.deepEqual(codes(again), [`${OutcomeStatus.REFUNDED}`, `${OutcomeStatus.REFUNDED}`]);
    await books(t, bo, `replay ${i}`);
  }
  t.is(await merchantOf(bo, shop), 100_000);
  // More than what is left, in one go or in pieces with fresh ids: only up to the amount.
  const more = await ledgerVerdicts(bo, shop, [], {
    adjustments: [
      adjustment(shop, AdjustmentKind.REFUND, payment, 100_001),
      adjustment(shop, AdjustmentKind.REFUND, payment, 60_000),
      adjustment(shop, AdjustmentKind.REFUND, payment, 60_000),
    ],
  });
  t.deepEqual(codes(more), [
    `${OutcomeStatus.INVALID} REFUND_EXCEEDS`,
    `${OutcomeStatus.REFUNDED}`,
    `${OutcomeStatus.INVALID} REFUND_EXCEEDS`,
  ]);
  t.is(await merchantOf(bo, shop), 40_000);
  t.is((await bo.ledger.audit()).pendingRefunds, 260_000);
  await books(t, bo, 'the refunds');
  // The id taken by the first refund, with another amount: ID_CONFLICT, nothing moves.
  const id = openSigned('Adjustment', r1).message.id;
  t.deepEqual(codes(await ledgerVerdicts(bo, shop, [], { adjustments: [adjustment(shop, AdjustmentKind.REFUND, payment, 40_000, id)] })), [
    `${OutcomeStatus.INVALID} ID_CONFLICT`,
  ]);
  t.is(await merchantOf(bo, shop), 40_000);
  // The card's next sync: 260 000 back in its tokens, the firmware checks the total.
  const r = await syncCard(bo, transport);
  t.is(r.refunded, 260_000);
  t.is(await balanceOf(transport), start - 300_000 + 260_000);
  t.is((await bo.ledger.audit()).pendingRefunds, 0);
  await books(t, bo, 'the card sync');
  t.is((await syncCard(bo, transport)).refunded, undefined, 'delivered once');
  t.is(await balanceOf(transport), start - 40_000);
});

test("a hostile terminal cannot adjust another merchant's payment, nor forge that merchant's adjustment", async (t) => {
  const { dir, bo } = await world(t);
  const shop = await newTerminal(t, bo, dir, 'KZ-SHOP');
  const hostile = await newTerminal(t, bo, dir, 'KZ-HOSTILE');
  const { transport } = await newCard(bo);
  const { payment } = await pay(t, shop, transport, 120_000);
  await settle(shop, bo);
  await books(t, bo, 'settled');
  const before = await bo.ledger.merchantBalances();
  // Its own adjustments of the shop's payment: NOT_PAYEE.
  t.deepEqual(
    codes(
      await ledgerVerdicts(bo, hostile, [], {
        adjustments: [
          adjustment(hostile, AdjustmentKind.REFUND, payment, 120_000),
          adjustment(hostile, AdjustmentKind.VOID, payment, 120_000),
        ],
      }),
    ),
    [`${OutcomeStatus.INVALID} NOT_PAYEE`, `${OutcomeStatus.INVALID} NOT_PAYEE`],
  );
  // The shop's refund content signed with the hostile key, in the hostile's batch and in one signed as the shop:
  // ADJUSTMENT_INVALID (the batch's terminal key does not verify it, or it names another terminal).
  const content = {
    kind: AdjustmentKind.REFUND,
    id: rnd16(),
    terminal: shop.identity.kid,
    transfer: payment.transferHash,
    card: payment.card,
    amount: 120_000,
    currency: payment.currency,
    time: nowSec(),
  };
  const forged = coseSign1(encodeMessage('Adjustment', content), MESSAGES.Adjustment.contentFormat, hostile.identity.signer);
  for (const term of [hostile, shop])
    t.deepEqual(codes(await ledgerVerdicts(bo, term, [], { adjustments: [forged] })), [`${OutcomeStatus.INVALID} ADJUSTMENT_INVALID`]);
  t.deepEqual(await bo.ledger.merchantBalances(), before);
  t.is((await bo.ledger.audit()).pendingRefunds, 0);
  await books(t, bo, 'the attempts');
});

test('a void of a payment the ledger learnt from the card (history only): the terminal that voids it is never paid, the card gets it back', async (t) => {
  const { dir, bo } = await world(t);
  const shop = await newTerminal(t, bo, dir, 'KZ-SHOP');
  const other = await newTerminal(t, bo, dir, 'KZ-OTHER');
  const { transport } = await newCard(bo);
  const start = await balanceOf(transport);
  const a = await pay(t, shop, transport, 70_000);
  const b = await pay(t, other, transport, 30_000); // carries a in its history
  await settle(other, bo);
  t.is((await bo.ledger.audit()).pendingPayee, 70_000);
  t.deepEqual(codes(await ledgerVerdicts(bo, shop, [], { adjustments: [adjustment(shop, AdjustmentKind.VOID, a.payment, 70_000)] })), [
    `${OutcomeStatus.VOIDED} MERCHANT_VOID`,
  ]);
  await books(t, bo, 'the void');
  await settle(shop, bo);
  t.is(await merchantOf(bo, shop), 0);
  t.is(await merchantOf(bo, other), 30_000);
  const r = await syncCard(bo, transport);
  t.deepEqual(r.voided.map(toHex), [toHex(a.payment.transferHash)]);
  t.is(await balanceOf(transport), start - 30_000);
  t.is(b.payment.amount, 30_000);
  await books(t, bo, 'the card sync');
  // The card pays on: the voided value is spendable once.
  const c = await tapCapturing(shop, transport, 70_000);
  t.is(c.outcome.kind, 'APPROVED');
  await settle(shop, bo);
  t.is(await merchantOf(bo, shop), 70_000);
  await books(t, bo, 'the next payment');
});
