/**
 * Voids and refunds at the ledger (SPEC.md §7.7.3), run on BOTH storage backends (SQLite and a
 * throwaway PostgreSQL cluster this file starts itself; it fails, never skips, without PostgreSQL):
 * a void in the batch of its payment, a void in a later batch before and after settlement, a void
 * of a transfer the ledger learnt only from history, partial refunds up to the amount, refunds
 * against the merchant's balance, byte-for-byte idempotency, id conflicts, forged adjustments,
 * another terminal's payment, a marked payment refunded, a refund redeemed at a defund. The books
 * balance after every step.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import {
  AdjustmentCode,
  AdjustmentKind,
  coseSign1,
  CURRENCY_KZT,
  encodeDeterministic,
  encodeMessage,
  encodeStruct,
  MarkSchema,
  MESSAGES,
  openSigned,
  OutcomeStatus,
  toHex,
  verifySigned,
  type Mark,
  type Outcome,
} from '@dt/protocol';
import { createTestLedger, type TestCard, type TestLedger, type TestTerminal } from '../src/testkit.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { openPostgresStorage } from '../src/storage/postgres.ts';
import { pgAvailable, startPgCluster, type PgCluster } from '../src/pg-cluster.ts';
import { signLoadOrder } from '../src/load.ts';
import type { LedgerStorage } from '../src/storage/types.ts';
import { MAX_PENDING_MARK_CLASSES } from '../src/ledger.ts';
import { outcomes, stateDigest } from './_helpers.ts';

let cluster: PgCluster | undefined;
let dbs = 0;

test.before(() => {
  if (!pgAvailable()) throw new Error('PostgreSQL server binaries not found (set PG_BIN); the storage suite must run on both backends');
  cluster = startPgCluster({ fsync: false });
});
test.after.always(() => cluster?.stop());

const BACKENDS: [string, () => Promise<LedgerStorage>][] = [
  ['sqlite', async () => openSqliteStorage(':memory:')],
  ['postgres', async () => openPostgresStorage(cluster!.createDatabase(`adjust_${process.pid}_${++dbs}`))],
];

const rnd16 = () => new Uint8Array(randomBytes(16));
const { VOID, REFUND } = AdjustmentKind;

/** The books after a step: the supply invariant holds and no balance is below its floor. */
async function books(t: ExecutionContext, k: TestLedger, step: string): Promise<void> {
  const a = await k.ledger.audit();
  t.true(a.ok, `${step}: ${JSON.stringify(a)}`);
}

async function withLedger(open: () => Promise<LedgerStorage>, t: ExecutionContext, fn: (k: TestLedger) => Promise<void>) {
  const k = await createTestLedger({ storage: await open() });
  try {
    await fn(k);
    await books(t, k, 'end');
  } finally {
    await k.storage.close();
  }
}

/** The outcome bytes of one batch. */
async function settle(k: TestLedger, batch: Uint8Array): Promise<Uint8Array[]> {
  const [out] = await k.ledger.settle([batch]);
  for (const b of out!) verifySigned('Outcome', b, k.pki.ledger.keys.publicKey);
  return out!;
}

const one = async (k: TestLedger, batch: Uint8Array): Promise<Outcome> => outcomes(await settle(k, batch)).at(-1)!;
const merchant = async (k: TestLedger, t: TestTerminal) => (await k.ledger.merchantBalances())[toHex(t.kid)] ?? 0;
const receiptOf = (k: TestLedger, bytes: Uint8Array) => verifySigned('SyncReceipt', bytes, k.pki.ledger.keys.publicKey).message;
const tokenTotal = (r: ReturnType<typeof receiptOf>) => r.tokens.reduce((s, x) => s + openSigned('Token', x).message.value, 0);

/** A void or refund of `p` (paid by `card`) by terminal `t`. */
function adj(
  k: TestLedger,
  t: TestTerminal,
  kind: AdjustmentKind,
  card: TestCard,
  p: { transferHash: Uint8Array },
  amount: number,
  id = rnd16(),
) {
  return k.adjustment(t, { kind, transfer: p.transferHash, card: card.identity.kid, amount, id });
}

for (const [name, open] of BACKENDS) {
  test(`${name}: a void in the batch of its payment: VOIDED (MERCHANT_VOID), never credited, the value back at the card's next sync`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const p = card.wallet.pay(k.request(a, 1_200));
      const id = rnd16();
      const batch = k.batch(a, [p.handover], { adjustments: [adj(k, a, VOID, card, p, 1_200, id)] });
      const out = await settle(k, batch);
      const [h, v] = outcomes(out);
      t.like(h, { status: OutcomeStatus.VOIDED, code: AdjustmentCode.MERCHANT_VOID, amount: 1_200 });
      t.is(h!.adjustment, undefined);
      t.like(v, { status: OutcomeStatus.VOIDED, code: AdjustmentCode.MERCHANT_VOID, amount: 1_200, covered: false });
      t.is(toHex(v!.adjustment!), toHex(id));
      t.is(toHex(v!.transfer), toHex(p.transferHash));
      t.is(await merchant(k, a), 0);
      t.is((await k.ledger.audit()).pendingPayee, 1_200);
      await books(t, k, 'after the void');
      // The same batch again: its outcomes byte for byte; the handover in another batch: VOIDED again.
      t.deepEqual((await settle(k, batch)).map(toHex), out.map(toHex));
      t.like(await one(k, k.batch(a, [p.handover])), { status: OutcomeStatus.VOIDED, code: AdjustmentCode.MERCHANT_VOID });
      t.is(await merchant(k, a), 0);
      const r = receiptOf(k, await k.sync(card));
      t.deepEqual(r.voided.map(toHex), [toHex(p.transferHash)]);
      t.is(tokenTotal(r), 10_000);
      t.is(card.wallet.balance, 10_000);
      t.is((await k.ledger.audit()).pendingPayee, 0);
      await books(t, k, 'after the sync');
    }));

  test(`${name}: a void in a later batch: VOID_TOO_LATE once settled; a resend of a refusal is the same refusal`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const p = card.wallet.pay(k.request(a, 2_000));
      // Before the ledger knows the payment: TRANSFER_UNKNOWN (the refusal is the id's answer for good).
      const early = adj(k, a, VOID, card, p, 2_000);
      const refused = await settle(k, k.batch(a, [], { adjustments: [early] }));
      t.like(outcomes(refused)[0], { status: OutcomeStatus.INVALID, code: AdjustmentCode.TRANSFER_UNKNOWN, amount: 2_000 });
      t.like(await one(k, k.batch(a, [p.handover])), { status: OutcomeStatus.SETTLED });
      t.deepEqual((await settle(k, k.batch(a, [], { adjustments: [early] }))).map(toHex), refused.map(toHex));
      // Settled: too late to void (refund it instead); nothing changes.
      const before = await stateDigest(k.storage);
      t.like(await one(k, k.batch(a, [], { adjustments: [adj(k, a, VOID, card, p, 2_000)] })), {
        status: OutcomeStatus.INVALID,
        code: AdjustmentCode.VOID_TOO_LATE,
      });
      t.is(await stateDigest(k.storage), before);
      t.is(await merchant(k, a), 2_000);
      await books(t, k, 'after VOID_TOO_LATE');
    }));

  test(`${name}: a void of a transfer the ledger holds only from history: accepted; its terminal's later submission VOIDED`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const b = k.newTerminal('shop-b');
      const pa = card.wallet.pay(k.request(a, 1_000));
      const pb = card.wallet.pay(k.request(b, 500)); // carries pa in its history
      t.like(await one(k, k.batch(b, [pb.handover])), { status: OutcomeStatus.SETTLED });
      t.is((await k.ledger.audit()).pendingPayee, 1_000);
      // Refunding it is NOT_SETTLED (no verdict); voiding it is accepted.
      t.like(await one(k, k.batch(a, [], { adjustments: [adj(k, a, REFUND, card, pa, 1_000)] })), {
        status: OutcomeStatus.INVALID,
        code: AdjustmentCode.NOT_SETTLED,
      });
      t.like(await one(k, k.batch(a, [], { adjustments: [adj(k, a, VOID, card, pa, 1_000)] })), {
        status: OutcomeStatus.VOIDED,
        code: AdjustmentCode.MERCHANT_VOID,
      });
      await books(t, k, 'after the void');
      t.like(await one(k, k.batch(a, [pa.handover])), { status: OutcomeStatus.VOIDED, code: AdjustmentCode.MERCHANT_VOID });
      t.is(await merchant(k, a), 0);
      // A second void (another id) of a voided transfer is accepted again.
      t.like(await one(k, k.batch(a, [], { adjustments: [adj(k, a, VOID, card, pa, 1_000)] })), { status: OutcomeStatus.VOIDED });
      const r = receiptOf(k, await k.sync(card));
      t.deepEqual(r.voided.map(toHex), [toHex(pa.transferHash)]);
      t.is(tokenTotal(r), 10_000 - 500);
      t.is(card.wallet.balance, 9_500);
      await books(t, k, 'after the sync');
    }));

  test(`${name}: refunds: two partial refunds, then one that would exceed the amount (REFUND_EXCEEDS); credited at the next sync`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const p = card.wallet.pay(k.request(a, 5_000));
      t.like(await one(k, k.batch(a, [p.handover])), { status: OutcomeStatus.SETTLED });
      const r1 = adj(k, a, REFUND, card, p, 2_000);
      const o1 = await one(k, k.batch(a, [], { adjustments: [r1] }));
      t.like(o1, { status: OutcomeStatus.REFUNDED, amount: 2_000, covered: false });
      t.is(toHex(o1.transfer), toHex(p.transferHash));
      t.is(toHex(o1.card), toHex(card.identity.kid));
      t.is(toHex(o1.adjustment!), toHex(openSigned('Adjustment', r1).message.id));
      t.is(await merchant(k, a), 3_000);
      t.is((await k.ledger.audit()).pendingRefunds, 2_000);
      await books(t, k, 'after refund 1');
      const [o2, o3] = outcomes(
        await settle(k, k.batch(a, [], { adjustments: [adj(k, a, REFUND, card, p, 2_000), adj(k, a, REFUND, card, p, 1_001)] })),
      );
      t.like(o2, { status: OutcomeStatus.REFUNDED, amount: 2_000 });
      t.like(o3, { status: OutcomeStatus.INVALID, code: AdjustmentCode.REFUND_EXCEEDS, amount: 1_001 });
      t.is(await merchant(k, a), 1_000);
      t.is((await k.ledger.audit()).pendingRefunds, 4_000);
      await books(t, k, 'after refund 2 and the refused 3');
      t.like(await k.ledger.cardInfo(card.identity.kid), { pendingRefunds: 4_000 });
      // The rest exactly is still allowed.
      t.like(await one(k, k.batch(a, [], { adjustments: [adj(k, a, REFUND, card, p, 1_000)] })), { status: OutcomeStatus.REFUNDED });
      t.is(await merchant(k, a), 0);
      const r = receiptOf(k, await k.sync(card));
      t.is(r.refunded, 5_000);
      t.is(tokenTotal(r), 10_000);
      t.is(card.wallet.balance, 10_000);
      t.is((await k.ledger.audit()).pendingRefunds, 0);
      // Delivered once: the next sync carries no refund.
      t.is(receiptOf(k, await k.sync(card)).refunded, undefined);
      await books(t, k, 'after the syncs');
    }));

  test(`${name}: a refund above the merchant's balance is MERCHANT_FUNDS and changes nothing`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const p = card.wallet.pay(k.request(a, 3_000));
      t.like(await one(k, k.batch(a, [p.handover])), { status: OutcomeStatus.SETTLED });
      // The merchant's settled balance was paid out to its bank account (outside the ledger): move it to the issuing bank
      // by hand so the books still balance, leaving 500.
      await k.storage.transaction(async (tx) => {
        await tx.run(`UPDATE merchants SET balance = 500 WHERE kid = ?`, [a.kid]);
        await tx.run(`UPDATE banks SET balance = balance + 2500 WHERE kid = ?`, [k.pki.bank.kid]);
      });
      await books(t, k, 'after the payout');
      const before = await stateDigest(k.storage);
      t.like(await one(k, k.batch(a, [], { adjustments: [adj(k, a, REFUND, card, p, 501)] })), {
        status: OutcomeStatus.INVALID,
        code: AdjustmentCode.MERCHANT_FUNDS,
      });
      t.is(await stateDigest(k.storage), before);
      t.is((await k.ledger.audit()).pendingRefunds, 0);
      t.like(await one(k, k.batch(a, [], { adjustments: [adj(k, a, REFUND, card, p, 500)] })), { status: OutcomeStatus.REFUNDED });
      t.is(await merchant(k, a), 0);
      await books(t, k, 'after the refund of 500');
    }));

  test(`${name}: idempotency: the same adjustment again gets its outcome byte for byte and moves nothing; another content under its id is ID_CONFLICT`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const p = card.wallet.pay(k.request(a, 4_000));
      t.like(await one(k, k.batch(a, [p.handover])), { status: OutcomeStatus.SETTLED });
      const id = rnd16();
      const r1 = adj(k, a, REFUND, card, p, 1_500, id);
      const first = await settle(k, k.batch(a, [], { adjustments: [r1] }));
      const digest = await stateDigest(k.storage);
      // In a new batch, and twice in one batch: the stored outcome, nothing debited again.
      const again = await settle(k, k.batch(a, [], { adjustments: [r1, r1] }));
      t.deepEqual(again.map(toHex), [toHex(first[0]!), toHex(first[0]!)]);
      t.is(await stateDigest(k.storage), digest);
      t.is(await merchant(k, a), 2_500);
      // The same id, another amount: ID_CONFLICT, state unchanged.
      const conflict = await one(k, k.batch(a, [], { adjustments: [adj(k, a, REFUND, card, p, 1_000, id)] }));
      t.like(conflict, { status: OutcomeStatus.INVALID, code: AdjustmentCode.ID_CONFLICT, amount: 1_000 });
      t.is(toHex(conflict.adjustment!), toHex(id));
      t.is(await stateDigest(k.storage), digest);
      t.is((await k.ledger.audit()).pendingRefunds, 1_500);
      // A void under the refund's id is a conflict too.
      t.like(await one(k, k.batch(a, [], { adjustments: [adj(k, a, VOID, card, p, 4_000, id)] })), {
        code: AdjustmentCode.ID_CONFLICT,
      });
      // The id is the terminal's: another terminal may use it.
      await books(t, k, 'after the replays');
    }));

  test(`${name}: forged adjustments (signed by another terminal, or naming another) are ADJUSTMENT_INVALID; another terminal's payment is NOT_PAYEE`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const b = k.newTerminal('shop-b');
      const p = card.wallet.pay(k.request(a, 3_000));
      t.like(await one(k, k.batch(a, [p.handover])), { status: OutcomeStatus.SETTLED });
      const digest = await stateDigest(k.storage);
      const content = {
        kind: REFUND,
        id: rnd16(),
        terminal: a.kid,
        transfer: p.transferHash,
        card: card.identity.kid,
        amount: 3_000,
        currency: CURRENCY_KZT,
        time: k.clock.now,
      };
      // A's refund, signed with B's key: it does not verify with A's certified key.
      const forged = coseSign1(encodeMessage('Adjustment', content), MESSAGES.Adjustment.contentFormat, b.signer);
      // B's own refund of A's payment, slipped into A's batch: not the batch's terminal.
      const foreign = adj(k, b, REFUND, card, p, 3_000);
      const out = outcomes(await settle(k, k.batch(a, [], { adjustments: [forged, foreign, new Uint8Array(20).fill(1)] })));
      for (const o of out) t.like(o, { status: OutcomeStatus.INVALID, code: AdjustmentCode.ADJUSTMENT_INVALID, adjustment: undefined });
      t.is(toHex(out[0]!.transfer), toHex(p.transferHash));
      t.is(out[2]!.amount, 0);
      t.is(await stateDigest(k.storage), digest);
      // B refunding (or voiding) A's payment in B's own batch: NOT_PAYEE.
      const [r, v] = outcomes(
        await settle(k, k.batch(b, [], { adjustments: [adj(k, b, REFUND, card, p, 3_000), adj(k, b, VOID, card, p, 3_000)] })),
      );
      t.like(r, { status: OutcomeStatus.INVALID, code: AdjustmentCode.NOT_PAYEE });
      t.like(v, { status: OutcomeStatus.INVALID, code: AdjustmentCode.NOT_PAYEE });
      // Another card or currency, or a void of another amount: ADJUSTMENT_MISMATCH.
      const other = await k.fundCard(0);
      const mism = outcomes(
        await settle(
          k,
          k.batch(a, [], {
            adjustments: [
              k.adjustment(a, { kind: REFUND, transfer: p.transferHash, card: other.identity.kid, amount: 1 }),
              k.adjustment(a, { kind: REFUND, transfer: p.transferHash, card: card.identity.kid, amount: 1, currency: 840 }),
              k.adjustment(a, { kind: VOID, transfer: p.transferHash, card: card.identity.kid, amount: 2_999 }),
              k.adjustment(a, { kind: REFUND, transfer: new Uint8Array(32).fill(9), card: card.identity.kid, amount: 1 }),
            ],
          }),
        ),
      );
      t.deepEqual(
        mism.map((o) => o.code),
        [
          AdjustmentCode.ADJUSTMENT_MISMATCH,
          AdjustmentCode.ADJUSTMENT_MISMATCH,
          AdjustmentCode.ADJUSTMENT_MISMATCH,
          AdjustmentCode.TRANSFER_UNKNOWN,
        ],
      );
      t.is(await merchant(k, a), 3_000);
      t.is((await k.ledger.audit()).pendingRefunds, 0);
    }));

  test(`${name}: a void of a double-spent transfer is NOT_VOIDABLE; a covered double spend is not refundable (NOT_SETTLED)`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const clone = card.wallet.clone();
      const a = k.newTerminal('shop-a');
      const b = k.newTerminal('shop-b');
      const pa = card.wallet.pay(k.request(a, 3_000));
      const pb = clone.pay(k.request(b, 4_000));
      t.like(await one(k, k.batch(a, [pa.handover])), { status: OutcomeStatus.SETTLED });
      t.like(await one(k, k.batch(b, [pb.handover], { crlVersion: 0 })), { status: OutcomeStatus.DOUBLE_SPEND, covered: true });
      const [v, r] = outcomes(
        await settle(k, k.batch(b, [], { adjustments: [adj(k, b, VOID, card, pb, 4_000), adj(k, b, REFUND, card, pb, 4_000)] })),
      );
      t.like(v, { status: OutcomeStatus.INVALID, code: AdjustmentCode.NOT_VOIDABLE });
      t.like(r, { status: OutcomeStatus.INVALID, code: AdjustmentCode.NOT_SETTLED });
      t.is(await merchant(k, b), 4_000);
    }));

  test(`${name}: a refunded marked payment comes back with its mark`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(1_000);
      const pharmacy: Mark = { merchants: ['pharmacy'], hops: 1 };
      await k.ledger.load(
        signLoadOrder({ card: card.identity.kid, amount: 3_000, id: rnd16(), time: k.clock.now, mark: pharmacy }, k.pki.bank.signer),
      );
      await k.sync(card);
      const ph = k.newTerminal('pharmacy', 5912);
      const p = card.wallet.pay(k.request(ph, 2_500)); // the marked token pays; hops 1: the pharmacy gets unmarked value
      t.like(await one(k, k.batch(ph, [p.handover])), { status: OutcomeStatus.SETTLED });
      t.like(await one(k, k.batch(ph, [], { adjustments: [adj(k, ph, REFUND, card, p, 2_000)] })), { status: OutcomeStatus.REFUNDED });
      await books(t, k, 'after the refund');
      const r = receiptOf(k, await k.sync(card));
      t.is(r.refunded, 2_000);
      const hex = (m: Mark | undefined) => (m ? toHex(encodeDeterministic(encodeStruct(MarkSchema, m))) : 'unmarked');
      t.deepEqual(
        r.tokens
          .map((x) => openSigned('Token', x).message)
          .map((x) => [hex(x.mark), x.value])
          .sort(),
        [
          ['unmarked', 1_000],
          [hex(pharmacy), 500 + 2_000],
        ].sort(),
      );
      // The refunded value is still bound to the pharmacy.
      const grocery = k.newTerminal('grocery', 5411);
      t.throws(() => card.wallet.pay(k.request(grocery, 1_001)), { message: /insufficient funds for this payee/ });
      await books(t, k, 'after the sync');
    }));

  test(`${name}: a card's pending refund credits carry at most MAX_PENDING_MARK_CLASSES distinct marks (REFUND_MARKS)`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(1_000);
      const pharmacy: Mark = { merchants: ['pharmacy'], hops: 2 };
      await k.ledger.load(
        signLoadOrder({ card: card.identity.kid, amount: 3_000, id: rnd16(), time: k.clock.now, mark: pharmacy }, k.pki.bank.signer),
      );
      await k.sync(card);
      const ph = k.newTerminal('pharmacy', 5912);
      const marked = card.wallet.pay(k.request(ph, 2_000));
      const grocery = k.newTerminal('grocery', 5411);
      const plain = card.wallet.pay(k.request(grocery, 1_000)); // the unmarked 1 000: the mark does not allow a grocery
      t.like(await one(k, k.batch(ph, [marked.handover])), { status: OutcomeStatus.SETTLED });
      t.like(await one(k, k.batch(grocery, [plain.handover])), { status: OutcomeStatus.SETTLED });
      // The card already waits for refunds of 16 other marks (seeded; the bank's balance pays for them, so the books balance).
      await k.storage.transaction(async (tx) => {
        for (let i = 0; i < MAX_PENDING_MARK_CLASSES; i++) {
          const mark = encodeDeterministic(encodeStruct(MarkSchema, { merchants: [`shop-${i}`], hops: 1 }));
          await tx.run(
            `INSERT INTO refund_credits (adjustment, card, amount, mark, state, sync, time) VALUES (?, ?, 1, ?, 'pending', NULL, ?)`,
            [rnd16(), card.identity.kid, mark, k.clock.now],
          );
        }
        await tx.run(`UPDATE banks SET balance = balance - ? WHERE kid = ?`, [MAX_PENDING_MARK_CLASSES, k.pki.bank.kid]);
      });
      await books(t, k, 'seeded');
      t.like(await one(k, k.batch(ph, [], { adjustments: [adj(k, ph, REFUND, card, marked, 500)] })), {
        status: OutcomeStatus.INVALID,
        code: AdjustmentCode.REFUND_MARKS,
      });
      t.like(
        await one(k, k.batch(grocery, [], { adjustments: [adj(k, grocery, REFUND, card, plain, 500)] })),
        { status: OutcomeStatus.REFUNDED },
        'unmarked value is a class of its own',
      );
      t.is(await merchant(k, ph), 2_000);
      t.is(await merchant(k, grocery), 500);
      t.is(k.ledger.stats.refunds, 1);
    }));

  test(`${name}: a refund pending at a defund goes with redeemed to the issuing bank; the receipt says refunded`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const p = card.wallet.pay(k.request(a, 4_000));
      t.like(await one(k, k.batch(a, [p.handover])), { status: OutcomeStatus.SETTLED });
      t.like(await one(k, k.batch(a, [], { adjustments: [adj(k, a, REFUND, card, p, 1_000)] })), { status: OutcomeStatus.REFUNDED });
      const bankBefore = (await k.ledger.bankBalances())[toHex(k.pki.bank.kid)]!;
      const receipt = await k.ledger.defund(card.wallet.beginSync(rnd16()));
      const r = receiptOf(k, receipt);
      t.is(r.refunded, 1_000);
      t.is(r.redeemed, 6_000 + 1_000);
      t.deepEqual(r.tokens, []);
      card.wallet.completeSync(receipt, k.pki.ledger.keys.publicKey);
      t.is(card.wallet.balance, 0);
      t.is((await k.ledger.bankBalances())[toHex(k.pki.bank.kid)], bankBefore + 7_000);
      t.is((await k.ledger.audit()).pendingRefunds, 0);
    }));
}
