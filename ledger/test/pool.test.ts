import test from 'ava';
import { encodeMessage, decodeMessage, ErrorCode, OutcomeStatus, validateHandover, verifyRoot } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import { createPki, issueCard } from '../src/pki.ts';
import { createTestLedger, TEST_T0 } from '../src/testkit.ts';
import { createValidatorPool, type ValidatorPool } from '../src/pool.ts';
import { cachingCardChainVerifier, memoVerifier, type SettlementValidator } from '../src/validation.ts';
import { outcomes } from './_helpers.ts';

test('the worker pool validates like the in-thread validator and memoizes repeated signatures', async (t) => {
  const k = await createTestLedger({ workers: 2 });
  const plain = await createTestLedger();
  try {
    const card = await k.fundCard(100_000);
    const shop = k.newTerminal('shop');
    const hs: Uint8Array[] = [];
    for (let i = 0; i < 8; i++) hs.push(card.wallet.pay(k.request(shop, 100 + i)).handover);
    // One tampered handover: the pool must refuse it exactly as the reference does.
    const bad = decodeMessage('Handover', hs[3]!);
    const tr = bad.transfer.slice();
    tr[tr.length - 2]! ^= 0x40;
    const tampered = encodeMessage('Handover', { ...bad, transfer: tr });
    const jobs = [...hs, tampered].map((handover) => ({ handover, payee: shop.kid, notAfter: k.clock.now + 300 }));
    const viaPool = await k.pool!.validate(jobs);
    // The reference: no memo, no caches, the pure-JS verifier.
    const inThread = jobs.map((j) => validateHandover(j.handover, { trust: k.ledger.trust, payee: j.payee, notAfter: j.notAfter }));
    t.deepEqual(
      viaPool.map((r) => (r.ok ? 'ok' : r.code)),
      inThread.map((r) => (r.ok ? 'ok' : r.code)),
    );
    t.is(viaPool.filter((r) => !r.ok).length, 1);
    const [o] = await k.ledger.settle([k.batch(shop, [...hs, tampered])]);
    t.deepEqual(
      outcomes(o!).map((x) => x.status),
      [...hs.map(() => OutcomeStatus.SETTLED), OutcomeStatus.INVALID],
    );
    const st = await k.pool!.stats();
    // 8 chained handovers repeat the card chain, the token and the history: most checks hit the memo.
    t.true(st.memoHits > st.verifies, JSON.stringify(st));
    t.true((await k.ledger.audit()).ok);
  } finally {
    await k.close();
    await plain.close();
  }
});

test('the memo verifier only ever answers true for a pair the inner verifier accepted', (t) => {
  const calls: number[] = [];
  const inner = {
    verify: (s: Uint8Array, m: Uint8Array) => {
      calls.push(1);
      return s.length === 64 && m[0] === 1;
    },
  };
  const v = memoVerifier(inner);
  const sig = new Uint8Array(64).fill(7);
  const msg = new Uint8Array([1, 2, 3]);
  const pk = new Uint8Array(65).fill(4);
  t.true(v.verify(sig, msg, pk));
  t.true(v.verify(sig, msg, pk));
  t.is(calls.length, 1);
  // Moving a byte between signature and message must not hit the memo.
  t.false(v.verify(sig.subarray(0, 63), new Uint8Array([7, 1, 2, 3]), pk));
  t.false(v.verify(sig, new Uint8Array([2, 2, 3]), pk));
  t.is(calls.length, 3);
});

test('the card-chain cache reuses a verified chain only inside its validity window', (t) => {
  const now = 1_800_000_000;
  const pki = createPki({ now });
  const card = issueCard(pki.bank, { validity: { nbf: now - 100, exp: now + 100 } });
  const calls = { n: 0 };
  const counting = {
    verify: (s: Uint8Array, m: Uint8Array, p: Uint8Array) => {
      calls.n++;
      return nativeVerifier.verify(s, m, p);
    },
  };
  const verify = cachingCardChainVerifier(verifyRoot(pki.issuer.cert, now), counting);
  t.is(verify(card.chain, now)[0]!.claims.role, 4);
  const after = calls.n;
  t.true(after >= 2);
  verify(card.chain, now + 50);
  t.is(calls.n, after, 'a second use inside the window is served from the cache');
  t.throws(() => verify(card.chain, now + 101), { message: new RegExp(ErrorCode.CERT_EXPIRED) });
  t.throws(() => verify(card.chain, now - 101), { message: new RegExp(ErrorCode.CERT_NOT_YET_VALID) });
  // Under another root the same bytes never verify, cache or not.
  const foreign = cachingCardChainVerifier(verifyRoot(createPki({ now }).issuer.cert, now), counting);
  t.throws(() => foreign(card.chain, now));
});

test('a validator thread that dies mid-settle fails that settle call with nothing committed, and is replaced', async (t) => {
  // The pool needs the ledger's PKI, which createTestLedger makes: the ledger calls it through a reference set below.
  const ref: { pool?: ValidatorPool } = {};
  const k = await createTestLedger({ validator: { settle: (jobs) => ref.pool!.settle(jobs) } });
  const pool = (ref.pool = await createValidatorPool({
    rootCert: k.pki.issuer.cert,
    ledgerCert: k.pki.ledger.cert,
    at: TEST_T0,
    workers: 1,
    testHooks: true,
  }));
  try {
    const card = await k.fundCard(10_000);
    const shop = k.newTerminal('shop');
    const batch = k.batch(shop, [card.wallet.pay(k.request(shop, 700)).handover]);
    const before = await k.ledger.counts();
    const merchantsBefore = await k.ledger.merchantBalances();
    pool.crashForTest(0);
    await t.throwsAsync(k.ledger.settle([batch]), { message: /validator worker 0 exited \(code 70\)/ });
    t.deepEqual(await k.ledger.counts(), before, 'the settle call committed nothing');
    t.deepEqual(await k.ledger.merchantBalances(), merchantsBefore);
    t.is(pool.restarts, 1);
    // The replacement settles the same batch.
    const [o] = await k.ledger.settle([batch]);
    t.deepEqual(
      outcomes(o!).map((x) => x.status),
      [OutcomeStatus.SETTLED],
    );
    t.true((await k.ledger.audit()).ok);
  } finally {
    await pool.close();
    await k.storage.close();
  }
});

test('evidence for a card the dispatch had no key for is found in the write transaction (a fork is still proven)', async (t) => {
  const ref: { pool?: ValidatorPool } = {};
  // A validator that withholds every registered key: every answer comes back with its cards unkeyed.
  const keyless: SettlementValidator = { settle: (jobs) => ref.pool!.settle(jobs.map((j) => ({ ...j, keys: new Map() }))) };
  const k = await createTestLedger({ validator: keyless });
  const pool = (ref.pool = await createValidatorPool({
    rootCert: k.pki.issuer.cert,
    ledgerCert: k.pki.ledger.cert,
    at: TEST_T0,
    workers: 2,
  }));
  try {
    const card = await k.fundCard(10_000);
    const clone = card.wallet.clone();
    const a = k.newTerminal('shop-a');
    const b = k.newTerminal('shop-b');
    const [oa] = await k.ledger.settle([k.batch(a, [card.wallet.pay(k.request(a, 3_000)).handover])]);
    t.is(outcomes(oa!)[0]!.status, OutcomeStatus.SETTLED);
    // The clone's payment, broken after the transfer (a tampered chain): invalid, but its card-signed transfer is evidence.
    const pb = clone.pay(k.request(b, 4_000));
    const h = decodeMessage('Handover', pb.handover);
    const chain = h.chain.map((c) => c.slice());
    chain[0]![chain[0]!.length - 3]! ^= 0x01;
    const [ob] = await k.ledger.settle([k.batch(b, [encodeMessage('Handover', { ...h, chain })])]);
    const o = outcomes(ob!)[0]!;
    t.is(o.status, OutcomeStatus.DOUBLE_SPEND);
    t.is(o.code, 'COUNTER_REUSED');
    t.is((await k.ledger.audit()).proofs.length, 1);
    t.true((await k.ledger.audit()).ok);
  } finally {
    await pool.close();
    await k.storage.close();
  }
});
