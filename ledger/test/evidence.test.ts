/**
 * Issue 12 at the ledger: every fork becomes evidence (whatever else is wrong with the
 * handover around it), cover is bounded and earned once, no balance below its floor, a
 * future-dated payment returns to the card, and the revocation list stays fresh.
 * Everything real: PKI, signatures, SQLite storage, reference wallets.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { decodeMessage, encodeMessage, ErrorCode, openSigned, OutcomeStatus, payloadHash, toHex, type Outcome } from '@dt/protocol';
import { createTestLedger, type TestCard, type TestLedger, type TestTerminal } from '../src/testkit.ts';
import { LedgerError, CRL_REFRESH_SECONDS } from '../src/ledger.ts';
import { outcomes } from './_helpers.ts';

const rnd16 = () => new Uint8Array(randomBytes(16));
const LIMITS = { perPayment: 1_000_000, offlineTotal: 1_000_000, offlineCount: 10, cvmLimit: 1_000_000 };

/** A handover with its receipt (and history) left out: the clone's trick of issue 12. */
function stripped(handover: Uint8Array): Uint8Array {
  const h = decodeMessage('Handover', handover);
  delete h.receipt;
  h.history = [];
  return encodeMessage('Handover', h);
}

async function settleOne(k: TestLedger, term: TestTerminal, handover: Uint8Array, crlVersion = 0): Promise<Outcome> {
  const [o] = await k.ledger.settle([k.batch(term, [handover], { crlVersion })]);
  return outcomes(o!)[0]!;
}

async function books(t: import('ava').ExecutionContext, k: TestLedger): Promise<void> {
  const a = await k.ledger.audit();
  t.is(a.difference, 0, 'issued = banks + cards + merchants + pending');
  t.deepEqual(a.floorBreaches, []);
  t.deepEqual(a.coverBreaches, []);
  t.true(a.ok);
}

test('a clone that strips its receipts cannot hide a fork: one token spent at 5 terminals gives 1 INVALID, 4 DOUBLE_SPEND with proof, the card revoked, no cover', async (t) => {
  const k = await createTestLedger();
  try {
    const card: TestCard = await k.fundCard(1_000_000, { limits: LIMITS });
    // A genuine payment first: the suite must be able to fail.
    const honest = k.newTerminal('honest');
    t.is((await settleOne(k, honest, card.wallet.clone().pay(k.request(honest, 10)).handover)).status, OutcomeStatus.SETTLED);
    const card2 = await k.fundCard(1_000_000, { limits: LIMITS });
    const shops = [0, 1, 2, 3, 4].map((i) => k.newTerminal(`shop-${i}`));
    const got: Outcome[] = [];
    for (const shop of shops) got.push(await settleOne(k, shop, stripped(card2.wallet.clone().pay(k.request(shop, 900_000)).handover)));
    t.deepEqual(
      got.map((o) => o.status),
      [OutcomeStatus.INVALID, ...Array(4).fill(OutcomeStatus.DOUBLE_SPEND)],
    );
    t.is(got[0]!.code, ErrorCode.HISTORY_BROKEN);
    for (const o of got.slice(1)) {
      t.false(o.covered);
      t.is(o.proof?.length, 2);
      t.true(o.code === 'COUNTER_REUSED' || o.code === 'INPUT_SPENT');
      // The proof is two card-signed transfers with the same counter.
      const [p1, p2] = o.proof!.map((b) => openSigned('Transfer', b).message);
      t.is(p1!.counter, p2!.counter);
      t.deepEqual(p1!.card, card2.identity.kid);
    }
    const audit = await k.ledger.audit();
    t.true(audit.revocations.some((r) => r.card === toHex(card2.identity.kid)));
    t.is(audit.covered, 0);
    // Nothing was paid to the five shops.
    const merchants = await k.ledger.merchantBalances();
    for (const s of shops) t.is(merchants[toHex(s.kid)] ?? 0, 0);
    // The revoked card syncs: its value goes to its bank for the owner, nothing frozen, nothing created.
    await books(t, k);
  } finally {
    await k.close();
  }
});

test('in any order: a valid transfer settled first, then a stripped fork of it, is DOUBLE_SPEND; the reverse too', async (t) => {
  const k = await createTestLedger();
  try {
    for (const validFirst of [true, false]) {
      const card = await k.fundCard(500_000, { limits: LIMITS });
      const a = k.newTerminal('a');
      const b = k.newTerminal('b');
      const good = card.wallet.clone().pay(k.request(a, 100_000)).handover;
      const fork = stripped(card.wallet.clone().pay(k.request(b, 200_000)).handover);
      if (validFirst) {
        t.is((await settleOne(k, a, good)).status, OutcomeStatus.SETTLED);
        const o = await settleOne(k, b, fork);
        t.is(o.status, OutcomeStatus.DOUBLE_SPEND);
        t.false(o.covered, 'a stripped handover is never covered');
      } else {
        t.is((await settleOne(k, b, fork)).status, OutcomeStatus.INVALID);
        const o = await settleOne(k, a, good);
        t.is(o.status, OutcomeStatus.DOUBLE_SPEND);
        // Merchant a followed every rule and could not know: covered by the issuing bank.
        t.true(o.covered);
      }
      t.true((await k.ledger.audit()).revocations.some((r) => r.card === toHex(card.identity.kid)));
    }
    await books(t, k);
  } finally {
    await k.close();
  }
});

test('cover is earned once: a colluding merchant resubmitting forks with CRL version 0 gets one cover per counter and coin, never above offlineTotal, never after the revocation is due', async (t) => {
  const k = await createTestLedger();
  try {
    const card = await k.fundCard(1_000_000, { limits: LIMITS });
    const honest = k.newTerminal('honest');
    const evil = k.newTerminal('evil');
    const other = k.newTerminal('other');
    // The genuine payment settles.
    t.is((await settleOne(k, honest, card.wallet.clone().pay(k.request(honest, 900_000)).handover)).status, OutcomeStatus.SETTLED);
    // The merchant holding a clone submits five forks with the same counter and coin, each batch declaring version 0.
    const evilOut: Outcome[] = [];
    for (let i = 0; i < 5; i++) evilOut.push(await settleOne(k, evil, card.wallet.clone().pay(k.request(evil, 900_000)).handover, 0));
    t.true(evilOut.every((o) => o.status === OutcomeStatus.DOUBLE_SPEND));
    t.deepEqual(
      evilOut.map((o) => o.covered),
      [true, false, false, false, false],
      'one cover per (terminal, card, counter)',
    );
    // Another terminal, same coin: already covered once.
    t.false((await settleOne(k, other, card.wallet.clone().pay(k.request(other, 900_000)).handover, 0)).covered, 'one cover per coin');
    const audit = await k.ledger.audit();
    t.is(audit.covered, 900_000);
    t.true(audit.covered <= LIMITS.offlineTotal);
    // Bank: loaded 1,000,000, paid 900,000 to honest and 900,000 of cover: its balance never below zero.
    const banks = await k.ledger.bankBalances();
    t.true(banks[toHex(k.pki.bank.kid)]! >= 0);
    await books(t, k);
  } finally {
    await k.close();
  }
});

test("the cover bound: forks on different counters and coins are covered only up to the card's certified offlineTotal", async (t) => {
  const k = await createTestLedger();
  try {
    const limits = { ...LIMITS, offlineTotal: 250_000 };
    const card = await k.fundCard(300_000, { limits });
    const genuine = k.newTerminal('genuine');
    const forks: Outcome[] = [];
    // The genuine card pays 60,000 three times; before each payment a clone of its state pays 100,000 elsewhere.
    for (let i = 0; i < 3; i++) {
      const clone = card.wallet.clone();
      const shop = k.newTerminal(`fork-${i}`);
      t.is((await settleOne(k, genuine, card.wallet.pay(k.request(genuine, 60_000)).handover)).status, OutcomeStatus.SETTLED);
      forks.push(await settleOne(k, shop, clone.pay(k.request(shop, 100_000)).handover));
    }
    t.true(forks.every((o) => o.status === OutcomeStatus.DOUBLE_SPEND));
    // 100,000 + 100,000 fit in 250,000; the third would not.
    t.deepEqual(
      forks.map((o) => o.covered),
      [true, true, false],
    );
    const a = await k.ledger.audit();
    t.is(a.covered, 200_000);
    await books(t, k);
  } finally {
    await k.close();
  }
});

test('a declared CRL version is believed only as the ledger can check it: unpublished, stale under the certified policy, or after the revocation: no cover', async (t) => {
  const k = await createTestLedger();
  try {
    const check = async (declare: (crl: number) => number, expectCovered: boolean, advance = 0, label = '') => {
      const card = await k.fundCard(500_000, { limits: LIMITS });
      const a = k.newTerminal('a');
      const b = k.newTerminal('b');
      t.is((await settleOne(k, a, card.wallet.clone().pay(k.request(a, 1000)).handover)).status, OutcomeStatus.SETTLED);
      k.clock.now += advance;
      const crl = openSigned('RevocationList', await k.ledger.crl()).message.version;
      const o = await settleOne(k, b, card.wallet.clone().pay(k.request(b, 1000)).handover, declare(crl));
      t.is(o.status, OutcomeStatus.DOUBLE_SPEND, label);
      t.is(o.covered, expectCovered, label);
    };
    await check((v) => v, true, 0, 'the current version');
    await check((v) => v + 100, false, 0, 'a version the ledger never published');
    // Version 0 was issued at the ledger's start; 4 days later it is older than the default 3-day policy allows.
    await check(() => 0, false, 4 * 86400, 'a list older than the terminal may accept with');
    await books(t, k);
  } finally {
    await k.close();
  }
});

test('a bank never goes below its floor: cover beyond its balance is refused unless the issuer grants a credit line', async (t) => {
  const k = await createTestLedger({ allocation: 200_000 });
  const bankBalance = async () => (await k.ledger.bankBalances())[toHex(k.pki.bank.kid)]!;
  try {
    const forked = async () => {
      const card = await k.fundCard(100_000, { limits: LIMITS });
      const a = k.newTerminal('a');
      const b = k.newTerminal('b');
      t.is((await settleOne(k, a, card.wallet.clone().pay(k.request(a, 100_000)).handover)).status, OutcomeStatus.SETTLED);
      return settleOne(k, b, card.wallet.clone().pay(k.request(b, 100_000)).handover);
    };
    t.true((await forked()).covered, "paid from the bank's 100,000");
    t.is(await bankBalance(), 0);
    await k.ledger.allocate(k.pki.bank.kid, 100_000, rnd16());
    t.false((await forked()).covered, 'the bank holds nothing: no cover below its floor of 0');
    t.is(await bankBalance(), 0);
    // A credit line lets the bank pay cover below zero, down to the line.
    await k.ledger.setCreditLine(k.pki.bank.kid, 1_000_000);
    await k.ledger.allocate(k.pki.bank.kid, 100_000, rnd16());
    t.true((await forked()).covered);
    t.is(await bankBalance(), -100_000);
    await books(t, k);
    // Removing the line now would leave the bank below its floor: refused.
    await t.throwsAsync(k.ledger.setCreditLine(k.pki.bank.kid, 0), { instanceOf: LedgerError });
    // audit fails when a balance breaks its floor (forced here behind the ledger's back).
    await k.storage.transaction((tx) => tx.run(`UPDATE banks SET balance = -5000000 WHERE kid = ?`, [k.pki.bank.kid]));
    const broken = await k.ledger.audit();
    t.false(broken.ok);
    t.is(broken.floorBreaches[0]?.kind, 'bank');
  } finally {
    await k.close();
  }
});

test('a payment the ledger rejects for its time returns to the card at its next sync, not frozen', async (t) => {
  const k = await createTestLedger();
  try {
    const card = await k.fundCard(50_000, { limits: LIMITS });
    const shop = k.newTerminal('shop');
    const future = { ...k.request(shop, 20_000), time: k.clock.now + 200 * 86400 };
    const fp = card.wallet.pay(future, { enforceLimits: false });
    const o = await settleOne(k, shop, fp.handover);
    t.is(o.status, OutcomeStatus.INVALID);
    t.is(o.code, ErrorCode.TRANSFER_TIME);
    t.is(card.wallet.balance, 30_000);
    // The next sync hands in the chain; the future-dated transfer is voided and its value comes back now.
    const receipt = openSigned('SyncReceipt', await k.sync(card)).message;
    t.is(receipt.voided.length, 1);
    t.is(card.wallet.balance, 50_000);
    // Submitted again once its date has come, it is VOIDED: never paid twice.
    k.clock.now += 201 * 86400;
    t.is((await settleOne(k, shop, fp.handover)).status, OutcomeStatus.VOIDED);
    await books(t, k);
  } finally {
    await k.close();
  }
});

test("evidence in syncs: a clone's transfer recorded first makes the genuine sync a fork (409, revoked); a refused sync keeps its claims", async (t) => {
  const k = await createTestLedger();
  try {
    const card = await k.fundCard(50_000, { limits: LIMITS });
    const shop = k.newTerminal('shop');
    const clone = card.wallet.clone();
    t.is((await settleOne(k, shop, clone.pay(k.request(shop, 10_000)).handover)).status, OutcomeStatus.SETTLED);
    // The genuine card never paid: its sync request claims the same counter and holds the coin the clone spent.
    const e = await t.throwsAsync(k.sync(card), { instanceOf: LedgerError });
    t.is(e!.code, 'DOUBLE_SPEND');
    const audit = await k.ledger.audit();
    t.true(audit.revocations.some((r) => r.card === toHex(card.identity.kid)));
    t.is(audit.proofs.length, 1);
    await books(t, k);
  } finally {
    await k.close();
  }
});

test("a card that names another card's coin as its input forks nothing of the other card", async (t) => {
  const k = await createTestLedger();
  try {
    const victim = await k.fundCard(50_000, { limits: LIMITS });
    const attacker = await k.fundCard(50_000, { limits: LIMITS });
    const shop = k.newTerminal('shop');
    const victimToken = victim.wallet.state.holdings[0]!.id;
    // The attacker signs a transfer that spends the victim's token (re-signed with its own key).
    const p = attacker.wallet.clone().pay(k.request(shop, 1000));
    const h = decodeMessage('Handover', p.handover);
    const tr = openSigned('Transfer', h.transfer).message;
    const forged = { ...tr, inputs: [victimToken] };
    const { signMessage } = await import('@dt/protocol');
    h.transfer = signMessage('Transfer', forged, attacker.identity.signer);
    t.is((await settleOne(k, shop, encodeMessage('Handover', h))).status, OutcomeStatus.INVALID);
    // The victim pays normally and is not revoked.
    t.is((await settleOne(k, shop, victim.wallet.pay(k.request(shop, 2000)).handover)).status, OutcomeStatus.SETTLED);
    t.false((await k.ledger.audit()).revocations.some((r) => r.card === toHex(victim.identity.kid)));
    await books(t, k);
  } finally {
    await k.close();
  }
});

test('the revocation list is signed anew at least hourly (new version, nextUpdate), and every version keeps its issue time', async (t) => {
  const k = await createTestLedger();
  try {
    const first = openSigned('RevocationList', await k.ledger.crl()).message;
    t.is(first.nextUpdate, first.issued + CRL_REFRESH_SECONDS);
    t.deepEqual(await k.ledger.crl(), await k.ledger.crl());
    k.clock.now += CRL_REFRESH_SECONDS;
    const second = openSigned('RevocationList', await k.ledger.crl()).message;
    t.is(second.version, first.version + 1);
    t.is(second.issued, k.clock.now);
    t.deepEqual(second.revoked, first.revoked);
    const rows = await k.storage.transaction((tx) => tx.all(`SELECT version, issued FROM crls ORDER BY version`));
    t.deepEqual(
      rows.map((r) => Number(r.issued)),
      [first.issued, second.issued],
    );
    void payloadHash;
  } finally {
    await k.close();
  }
});
