/**
 * The set-based settlement path (`Ledger` option `setBased`, default on) against the
 * per-handover path it shortcuts: the same ledger database is copied, one copy is opened
 * set-based and the other handover by handover, the same settle calls go to both, and every
 * outcome (all but the ledger's signature, which is randomised) and the whole state after each
 * call (claims, objects, value records, verdicts, balances, proofs, revocations) must be equal.
 * The calls mix what the set-based path takes (batches of valid, new payments, with and without
 * history the ledger already holds) with everything it must hand back (a card paying twice in a
 * batch, replays, forks, invalid handovers, voids), and the test checks which path each took.
 */
import test from 'ava';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdjustmentKind, decodeMessage, encodeMessage, openSigned, toHex, verifySigned, type Outcome } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import { createTestLedger, type TestLedger } from '../src/testkit.ts';
import { Ledger } from '../src/ledger.ts';
import { nativeSigner } from '../src/native-signer.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import type { LedgerStorage } from '../src/storage/types.ts';
import { stateDigest } from './_helpers.ts';

const hex = (v: unknown) => (v instanceof Uint8Array ? toHex(v) : String(v));

/** Everything of an outcome but its signature. */
const content = (bytes: Uint8Array, ledgerKey: Uint8Array): Record<string, string> => {
  const o: Outcome = verifySigned('Outcome', bytes, ledgerKey, nativeVerifier).message;
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Array.isArray(v) ? v.map(hex).join(',') : hex(v)]));
};

/** The whole ledger state, evidence included (objects, proofs, covers, outcomes' batches). */
async function fullState(storage: LedgerStorage): Promise<string> {
  const extra = await storage.transaction(async (tx) => {
    const q = async (sql: string) => (await tx.all(sql)).map((r) => Object.values(r).map(hex).join(':')).sort();
    return {
      objects: await q(`SELECT hash, bytes FROM objects`),
      transfers: await q(`SELECT hash, card, counter, amount, payee, change_id, change_value, mark, time, state FROM transfers`),
      verdicts: await q(`SELECT transfer, status, covered, code, time, card, terminal, amount FROM verdicts`),
      proofs: await q(`SELECT first, second, card, time FROM proofs`),
      covers: await q(`SELECT transfer, bank, terminal, card, counter, amount FROM covers`),
      outcomes: await q(`SELECT batch, idx FROM outcomes`),
      batches: await q(`SELECT hash, terminal, seq, count, time FROM batches`),
      adjustments: await q(`SELECT terminal, id, status, code FROM adjustments`),
    };
  });
  return (await stateDigest(storage)) + JSON.stringify(extra);
}

test('the set-based path gives the outcomes and the state of the per-handover path, and takes only what it may', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-set-based-'));
  const base = join(dir, 'base.db');
  const k: TestLedger = await createTestLedger({ storage: openSqliteStorage(base) });
  const copies: { ledger: Ledger; storage: LedgerStorage }[] = [];
  try {
    const a = k.newTerminal('shop-a');
    const b = k.newTerminal('shop-b');
    const c = k.newTerminal('shop-c');
    const cards = await Promise.all(Array.from({ length: 8 }, () => k.fundCard(20_000)));
    // History the ledger holds: cards 0..3 paid before, and those payments are settled.
    const earlier = cards.slice(0, 4).map((x, i) => x.wallet.pay(k.request(a, 100 + i)).handover);
    await k.ledger.settle([k.batch(a, earlier)]);
    // And history it does not hold: card 4 paid at b, not submitted yet.
    const unsubmitted = cards[4]!.wallet.pay(k.request(b, 250)).handover;
    await k.storage.close();

    // Two copies of this database: one set-based (the default), one handover by handover.
    for (const [i, setBased] of [true, false].entries()) {
      const file = join(dir, `copy-${i}.db`);
      copyFileSync(base, file);
      const storage = openSqliteStorage(file);
      const ledger = await Ledger.open({
        storage,
        signer: nativeSigner(k.pki.ledger.keys),
        rootCert: k.pki.issuer.cert,
        ledgerCert: k.pki.ledger.cert,
        now: () => k.clock.now,
        setBased,
      });
      copies.push({ ledger, storage });
    }
    const ledgerKey = k.pki.ledger.keys.publicKey;
    /** Sends one settle call to both copies; checks equal outcomes and state; returns how many batches went set-based. */
    const both = async (what: string, batches: Uint8Array[]): Promise<number> => {
      k.clock.now += 5;
      const before = copies[0]!.ledger.stats.batchesSetBased;
      const [fast, slow] = await Promise.all(copies.map((x) => x.ledger.settle(batches)));
      t.deepEqual(
        fast!.map((bs) => bs.map((o) => content(o, ledgerKey))),
        slow!.map((bs) => bs.map((o) => content(o, ledgerKey))),
        `${what}: outcomes`,
      );
      t.is(await fullState(copies[0]!.storage), await fullState(copies[1]!.storage), `${what}: state`);
      t.is(copies[1]!.ledger.stats.batchesSetBased, 0);
      return copies[0]!.ledger.stats.batchesSetBased - before;
    };
    const statuses = async (batch: Uint8Array) =>
      (await copies[0]!.ledger.settle([batch]))[0]!.map((o) => openSigned('Outcome', o).message.status);

    // 1. Valid, new payments of distinct cards, with held history (0..3), unheld history (4) and none (5..7): set-based.
    const p1 = cards.map((x, i) => x.wallet.pay(k.request(b, 1_000 + i)).handover);
    const batch1 = k.batch(b, p1);
    t.is(await both('distinct cards', [batch1]), 1);
    // 2. The same batch again, and a new batch holding one of its payments again: replays, per handover.
    t.is(await both('replays', [batch1, k.batch(b, [p1[0]!])]), 0);
    // 3. A card paying twice in one batch (the first payment is the second's history): per handover.
    const twice = [cards[5]!.wallet.pay(k.request(c, 300)).handover, cards[5]!.wallet.pay(k.request(c, 400)).handover];
    t.is(await both('one card twice', [k.batch(c, twice)]), 0);
    // 4. Card 4's earlier payment at b, now submitted after the ledger learnt it from history: set-based (held, recorded).
    t.is(await both('held before', [k.batch(b, [unsubmitted, cards[6]!.wallet.pay(k.request(b, 50)).handover])]), 1);
    // 5. A fork: a clone of card 7 spends the same coins at c, in a batch with a good payment: per handover.
    const clone = cards[7]!.wallet.clone();
    const good = cards[7]!.wallet.pay(k.request(a, 700)).handover;
    t.is(await both('good one first', [k.batch(a, [good, cards[0]!.wallet.pay(k.request(a, 10)).handover])]), 1);
    const forked = clone.pay(k.request(c, 800)).handover;
    t.is(await both('fork', [k.batch(c, [cards[1]!.wallet.pay(k.request(c, 20)).handover, forked])]), 0);
    // 6. An invalid handover (a flipped signature bit) with a valid one: per handover.
    const h = decodeMessage('Handover', cards[2]!.wallet.clone().pay(k.request(a, 30)).handover);
    const tr = h.transfer.slice();
    tr[tr.length - 1]! ^= 1;
    const broken = encodeMessage('Handover', { ...h, transfer: tr });
    t.is(await both('invalid', [k.batch(a, [cards[3]!.wallet.pay(k.request(a, 40)).handover, broken])]), 0);
    // 7. A void in the batch of its payment: per handover.
    const paid = cards[6]!.wallet.pay(k.request(c, 90));
    const voidAdj = k.adjustment(c, { kind: AdjustmentKind.VOID, transfer: paid.transferHash, card: cards[6]!.identity.kid, amount: 90 });
    t.is(await both('void', [k.batch(c, [paid.handover], { adjustments: [voidAdj] })]), 0);
    // 8. Many batches of one call, each valid and new: each set-based, later ones seeing the earlier ones' records.
    const many = [a, b, c].map((term, j) => k.batch(term, [cards[j + 3]!.wallet.pay(k.request(term, 60 + j)).handover]));
    t.is(await both('several batches', many), 3);
    // The set-based copy's audit holds, and it answered what it settled as the reference did.
    t.true((await copies[0]!.ledger.audit()).ok);
    t.deepEqual(
      await statuses(batch1),
      (await copies[1]!.ledger.settle([batch1]))[0]!.map((o) => openSigned('Outcome', o).message.status),
    );
  } finally {
    for (const x of copies) await x.storage.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
