import test from 'ava';

import {
  BankPermission,
  CARD_TIME_AHEAD,
  Cvm,
  CURRENCY_KZT,
  ErrorCode,
  GENESIS_PREV,
  ReferenceWallet,
  Role,
  createTrustStore,
  decodeMessage,
  encodeMessage,
  coseSign1,
  MESSAGES,
  generateKeyPair,
  issueCertificate,
  keyPairSigner,
  openSigned,
  outputId,
  payloadHash,
  signMessage,
  validateHandover,
  completeHistory,
  handoverTransfers,
  decodeDeterministic,
  encodeDeterministic,
  bytesEqual as bytesEq,
  type ChainResume,
  type ExpectedRequest,
  type HandoverContext,
  type SpentCoin,
  type KeyPair,
  type Mark,
  type Signer,
  type Transfer,
} from '../src/index.ts';
import { nativeVerifier } from '../src/native.ts';

// ---------------------------------------------------------------- fixture
const rnd = (n: number) => crypto.getRandomValues(new Uint8Array(n));
const T0 = 1_800_000_000;
const YEAR = 365 * 86400;

interface Party {
  keys: KeyPair;
  signer: Signer;
  cert: Uint8Array;
}

function party(
  role: number,
  issuer: Signer | null,
  extra: Record<string, unknown> = {},
  validity = { nbf: T0 - YEAR, exp: T0 + YEAR },
): Party {
  const keys = generateKeyPair(rnd);
  const signer = keyPairSigner(keys);
  const cert = issueCertificate(
    { iss: 'dt', sub: `role-${role}`, iat: T0 - YEAR, ...validity, role: role as never, publicKey: keys.publicKey, ...extra } as never,
    issuer ?? signer,
  );
  return { keys, signer, cert };
}

const LIMITS = { perPayment: 50_000, offlineTotal: 100_000, offlineCount: 5, cvmLimit: 20_000 };

function world() {
  const root = party(Role.ISSUER, null);
  const ledger = party(Role.LEDGER, root.signer);
  const bank = party(Role.BANK, root.signer, { perms: BankPermission.ISSUING | BankPermission.ACQUIRING });
  const trust = createTrustStore({ root: root.cert, ledgerCert: ledger.cert, at: T0 });
  const card = (limits = LIMITS, validity?: { nbf: number; exp: number }, issuer = bank) => {
    const p = party(Role.CARD, issuer.signer, { limits }, validity);
    // Personalized (and given its tokens) just before T0: its certificate is a year old, and the
    // wallet's trusted time bounds its request times (SPEC §10.8).
    return { ...p, wallet: new ReferenceWallet({ signer: p.signer, chain: [p.cert, issuer.cert], personalizedAt: T0 - 100 }) };
  };
  const terminal = (merchant = 'shop-1', mcc = 5411) => {
    const p = party(Role.TERMINAL, bank.signer, { merchant: { id: merchant, mcc, name: merchant } });
    return { ...p, merchant, mcc };
  };
  let serialN = 0;
  const token = (owner: Uint8Array, value: number, mark?: Mark, signer = ledger.signer) => {
    const serial = new Uint8Array(16);
    serial[15] = ++serialN;
    serial[0] = 0xaa;
    return signMessage('Token', { serial, value, currency: CURRENCY_KZT, owner, issued: T0 - 100, ...(mark ? { mark } : {}) }, signer);
  };
  return { root, ledger, bank, trust, card, terminal, token };
}

function request(term: { signer: Signer; merchant: string; mcc: number }, amount: number, time = T0): ExpectedRequest {
  return { amount, currency: CURRENCY_KZT, terminal: term.signer.kid, merchant: term.merchant, mcc: term.mcc, nonce: rnd(16), time };
}

function ctx(w: ReturnType<typeof world>, extra: Partial<HandoverContext> = {}): HandoverContext {
  return { trust: w.trust, ...extra };
}

/** Re-encodes a handover with some fields replaced. */
function patch(handover: Uint8Array, f: (h: ReturnType<typeof decodeMessage<'Handover'>>) => void): Uint8Array {
  const h = decodeMessage('Handover', handover);
  f(h);
  return encodeMessage('Handover', h);
}

function resign(transferBytes: Uint8Array, signer: Signer, f: (t: Transfer) => void = () => {}): Uint8Array {
  const t = { ...openSigned('Transfer', transferBytes).message };
  f(t);
  return signMessage('Transfer', t, signer);
}

// ---------------------------------------------------------------- tests
test('a valid chained handover validates, with noble and native verifiers alike', (t) => {
  const w = world();
  const c = w.card();
  c.wallet.holdTokens([w.token(c.signer.kid, 30_000), w.token(c.signer.kid, 40_000)], w.ledger.keys.publicKey);
  const shop = w.terminal();
  const r1 = request(shop, 10_000);
  c.wallet.pay(r1);
  const r2 = request(shop, 25_000);
  const r3 = request(shop, 5_000);
  c.wallet.pay(r2, { cvm: Cvm.OFFLINE_PIN });
  const p3 = c.wallet.pay(r3);

  for (const verifier of [undefined, nativeVerifier]) {
    const res = validateHandover(p3.handover, ctx(w, { request: r3, verifier: verifier as never }));
    if (!res.ok) return t.fail(`${res.code} ${res.detail}`);
    t.is(res.chain.length, 3);
    t.is(res.offlineTotal, 40_000);
    t.is(res.offlineCount, 3);
    t.deepEqual(res.transferHash, p3.transferHash);
    t.deepEqual(res.cardKid, c.signer.kid);
    t.deepEqual(res.issuingBankKid, w.bank.signer.kid);
    t.is(res.transfer.counter, 3);
    t.is(
      res.inputs.reduce((s, x) => s + x.value, 0),
      res.transfer.outputs.reduce((s, o) => s + o.value, 0),
    );
  }
  // The handover carries exactly the tokens the chain derives from.
  const h = decodeMessage('Handover', p3.handover);
  t.is(h.history.length, 2);
  t.true((h.tokens?.length ?? 0) + (h.receiptTokens?.length ?? 0) >= 1);
});

test('HANDOVER_MALFORMED for bytes that are not a handover', (t) => {
  const w = world();
  const r = validateHandover(new Uint8Array([0xa0]), ctx(w));
  t.false(r.ok);
  if (!r.ok) t.is(r.code, ErrorCode.HANDOVER_MALFORMED);
  const r2 = validateHandover(new Uint8Array([1, 2, 3]), ctx(w));
  t.false(r2.ok);
  if (!r2.ok) t.is(r2.code, ErrorCode.HANDOVER_MALFORMED);
});

test('HANDOVER_CHAIN: expired card, foreign root, bank without ISSUING, mismatched chain', (t) => {
  const w = world();
  const shop = w.terminal();
  // Card certificate expired before the transfer time.
  const old = w.card(LIMITS, { nbf: T0 - YEAR, exp: T0 - 10 });
  old.wallet.holdTokens([w.token(old.signer.kid, 1000)], w.ledger.keys.publicKey);
  const r1 = validateHandover(old.wallet.pay(request(shop, 100)).handover, ctx(w));
  t.like(r1, { ok: false, code: ErrorCode.HANDOVER_CHAIN, detail: ErrorCode.CERT_EXPIRED });

  // Bank that may only acquire.
  const acq = party(Role.BANK, w.root.signer, { perms: BankPermission.ACQUIRING });
  const c2 = w.card(LIMITS, undefined, acq);
  c2.wallet.holdTokens([w.token(c2.signer.kid, 1000)], w.ledger.keys.publicKey);
  t.like(validateHandover(c2.wallet.pay(request(shop, 100)).handover, ctx(w)), {
    ok: false,
    code: ErrorCode.HANDOVER_CHAIN,
    detail: ErrorCode.CERT_NOT_PERMITTED,
  });

  // A chain from another issuer root.
  const other = world();
  const c3 = other.card();
  c3.wallet.holdTokens([other.token(c3.signer.kid, 1000)], other.ledger.keys.publicKey);
  t.like(validateHandover(c3.wallet.pay(request(shop, 100)).handover, ctx(w)), { ok: false, code: ErrorCode.HANDOVER_CHAIN });

  // Another card's certificate in front of this card's transfer.
  const c4 = w.card();
  const c5 = w.card();
  c4.wallet.holdTokens([w.token(c4.signer.kid, 1000)], w.ledger.keys.publicKey);
  const h = patch(c4.wallet.pay(request(shop, 100)).handover, (x) => {
    x.chain = [c5.cert, w.bank.cert];
  });
  t.like(validateHandover(h, ctx(w)), { ok: false, code: ErrorCode.HANDOVER_CHAIN });
});

test('CARD_REVOKED when the revocation lookup names the card', (t) => {
  const w = world();
  const c = w.card();
  c.wallet.holdTokens([w.token(c.signer.kid, 1000)], w.ledger.keys.publicKey);
  const p = c.wallet.pay(request(w.terminal(), 100));
  t.like(validateHandover(p.handover, ctx(w, { isRevoked: (k) => k[0] === c.signer.kid[0] && k[1] === c.signer.kid[1] })), {
    ok: false,
    code: ErrorCode.CARD_REVOKED,
  });
  t.true(validateHandover(p.handover, ctx(w, { isRevoked: () => false })).ok);
});

test('TOKEN_INVALID: forged, foreign-owned, duplicated or expired token', (t) => {
  const w = world();
  const shop = w.terminal();
  const other = w.card();
  const forger = party(Role.LEDGER, w.root.signer);
  for (const [name, make] of [
    ['forged', (kid: Uint8Array) => w.token(kid, 1000, undefined, forger.signer)],
    ['foreign', (_kid: Uint8Array) => w.token(other.signer.kid, 1000)],
  ] as const) {
    const c = w.card();
    const tok = make(c.signer.kid);
    // Build the transfer by hand: the wallet would refuse foreign tokens.
    const serial = openSigned('Token', tok).message.serial;
    const tr = signMessage(
      'Transfer',
      {
        card: c.signer.kid,
        counter: 1,
        prev: GENESIS_PREV,
        inputs: [serial],
        outputs: [{ value: 1000, owner: shop.signer.kid }],
        amount: 1000,
        currency: CURRENCY_KZT,
        payee: shop.signer.kid,
        merchant: shop.merchant,
        mcc: shop.mcc,
        nonce: rnd(16),
        time: T0,
        cvm: 0,
      },
      c.signer,
    );
    const h = encodeMessage('Handover', { transfer: tr, chain: [c.cert, w.bank.cert], tokens: [tok], history: [] });
    t.like(validateHandover(h, ctx(w)), { ok: false, code: ErrorCode.TOKEN_INVALID, index: 0 }, name);
  }
  const c = w.card();
  const tok = w.token(c.signer.kid, 1000);
  c.wallet.holdTokens([tok], w.ledger.keys.publicKey);
  const p = c.wallet.pay(request(shop, 100));
  t.like(
    validateHandover(
      patch(p.handover, (x) => {
        x.tokens = [tok, tok];
      }),
      ctx(w),
    ),
    { ok: false, code: ErrorCode.TOKEN_INVALID, index: 1 },
  );

  const c2 = w.card();
  const serial = new Uint8Array(16).fill(7);
  const expiring = signMessage(
    'Token',
    { serial, value: 500, currency: CURRENCY_KZT, owner: c2.signer.kid, issued: T0 - 100, expires: T0 - 1 },
    w.ledger.signer,
  );
  c2.wallet.holdTokens([expiring], w.ledger.keys.publicKey);
  // Input selection (like the card's) skips a coin expired at the request time: name it as the input.
  t.like(validateHandover(c2.wallet.pay(request(shop, 100), { inputs: [serial] }).handover, ctx(w)), {
    ok: false,
    code: ErrorCode.TOKEN_INVALID,
    detail: 'token expired',
  });
});

test('TRANSFER_SIGNATURE and HISTORY_BROKEN over the chain', (t) => {
  const w = world();
  const shop = w.terminal();
  const c = w.card();
  c.wallet.holdTokens([w.token(c.signer.kid, 50_000)], w.ledger.keys.publicKey);
  c.wallet.pay(request(shop, 100));
  c.wallet.pay(request(shop, 200));
  const p = c.wallet.pay(request(shop, 300));
  const intruder = generateKeyPair(rnd);

  // The paying transfer re-signed by another key (same card field).
  const forged = patch(p.handover, (x) => {
    x.transfer = resign(x.transfer, keyPairSigner(intruder));
  });
  t.like(validateHandover(forged, ctx(w)), { ok: false, code: ErrorCode.TRANSFER_SIGNATURE, index: 2 });

  // A flipped signature bit.
  const flipped = patch(p.handover, (x) => {
    const b = x.transfer.slice();
    b[b.length - 1]! ^= 1;
    x.transfer = b;
  });
  t.like(validateHandover(flipped, ctx(w)), { ok: false, code: ErrorCode.TRANSFER_SIGNATURE });

  // A history transfer left out: the counter jumps.
  const gap = patch(p.handover, (x) => {
    x.history = [x.history[0]!];
  });
  t.like(validateHandover(gap, ctx(w)), { ok: false, code: ErrorCode.HISTORY_BROKEN, index: 1 });

  // History reordered.
  const swapped = patch(p.handover, (x) => {
    x.history = [x.history[1]!, x.history[0]!];
  });
  t.like(validateHandover(swapped, ctx(w)), { ok: false, code: ErrorCode.HISTORY_BROKEN });

  // A transfer with the right counter but a wrong prev (signed by the card: a fork).
  const fork = patch(p.handover, (x) => {
    x.transfer = resign(x.transfer, c.signer, (tr) => {
      tr.prev = new Uint8Array(32).fill(9);
    });
  });
  t.like(validateHandover(fork, ctx(w)), { ok: false, code: ErrorCode.HISTORY_BROKEN, index: 2 });
});

test('the receipt anchors the chain', (t) => {
  const w = world();
  const shop = w.terminal();
  const c = w.card();
  // Sync through a hand-made ledger receipt.
  const req = c.wallet.beginSync(rnd(16));
  const sr = openSigned('SyncRequest', req);
  const tok = w.token(c.signer.kid, 5000);
  const receipt = signMessage(
    'SyncReceipt',
    { card: c.signer.kid, counter: sr.message.counter, request: payloadHash(sr.cose), tokens: [tok], time: T0, loaded: 5000, voided: [] },
    w.ledger.signer,
  );
  c.wallet.completeSync(receipt, w.ledger.keys.publicKey);
  t.is(c.wallet.balance, 5000);
  const p = c.wallet.pay(request(shop, 100));
  t.true(validateHandover(p.handover, ctx(w)).ok);
  t.is(openSigned('Transfer', p.transfer).message.counter, 2);
  // A receipt of another sync does not anchor this chain (even one carrying the same token, which the handover names).
  const otherReceipt = signMessage(
    'SyncReceipt',
    { card: c.signer.kid, counter: 1, request: new Uint8Array(32), tokens: [tok], time: T0, loaded: 0, voided: [] },
    w.ledger.signer,
  );
  t.like(
    validateHandover(
      patch(p.handover, (x) => {
        x.receipt = otherReceipt;
      }),
      ctx(w),
    ),
    { ok: false, code: ErrorCode.HISTORY_BROKEN },
  );
  // A receipt not signed by the ledger.
  const fake = signMessage('SyncReceipt', openSigned('SyncReceipt', receipt).message, c.signer);
  t.like(
    validateHandover(
      patch(p.handover, (x) => {
        x.receipt = fake;
      }),
      ctx(w),
    ),
    { ok: false, code: ErrorCode.HISTORY_BROKEN },
  );
  // A receipt that does not add up is refused by the wallet.
  const c2 = w.card();
  const req2 = openSigned('SyncRequest', c2.wallet.beginSync(rnd(16)));
  const bad = signMessage(
    'SyncReceipt',
    {
      card: c2.signer.kid,
      counter: req2.message.counter,
      request: payloadHash(req2.cose),
      tokens: [w.token(c2.signer.kid, 10)],
      time: T0,
      loaded: 5,
      voided: [],
    },
    w.ledger.signer,
  );
  t.throws(() => c2.wallet.completeSync(bad, w.ledger.keys.publicKey), { message: /VALUE_NOT_CONSERVED/ });
});

test('a redeeming receipt (revoked card): tokens + redeemed must equal what the card handed in; all redeemed empties the card', (t) => {
  const w = world();
  const c = w.card();
  c.wallet.holdTokens([w.token(c.signer.kid, 1000)], w.ledger.keys.publicKey);
  const sr = openSigned('SyncRequest', c.wallet.beginSync(rnd(16)));
  const rc = (redeemed: number, tokens: Uint8Array[] = []) =>
    signMessage(
      'SyncReceipt',
      {
        card: c.signer.kid,
        counter: sr.message.counter,
        request: payloadHash(sr.cose),
        tokens,
        time: T0,
        loaded: 0,
        voided: [],
        redeemed,
      },
      w.ledger.signer,
    );
  t.throws(() => c.wallet.completeSync(rc(1001), w.ledger.keys.publicKey), { message: /VALUE_NOT_CONSERVED/ }, 'more redeemed than held');
  t.throws(() => c.wallet.completeSync(rc(999), w.ledger.keys.publicKey), { message: /VALUE_NOT_CONSERVED/ }, 'one tiyn lost');
  t.throws(
    () => c.wallet.completeSync(rc(1000, [w.token(c.signer.kid, 1)]), w.ledger.keys.publicKey),
    { message: /VALUE_NOT_CONSERVED/ },
    'value created',
  );
  t.is(c.wallet.balance, 1000, 'refusals change nothing');
  c.wallet.completeSync(rc(1000), w.ledger.keys.publicKey);
  t.is(c.wallet.balance, 0);
  t.deepEqual(openSigned('SyncRequest', c.wallet.beginSync(rnd(16))).message.history, []);
});

test('VALUE_NOT_CONSERVED: missing provenance, inflated outputs, input reused', (t) => {
  const w = world();
  const shop = w.terminal();
  const c = w.card();
  c.wallet.holdTokens([w.token(c.signer.kid, 1000)], w.ledger.keys.publicKey);
  const p1 = c.wallet.pay(request(shop, 100));
  const p2 = c.wallet.pay(request(shop, 100));
  // The schema requires at least one token; a token unrelated to the chain leaves the first input unknown.
  t.throws(
    () =>
      patch(p2.handover, (x) => {
        x.tokens = [];
      }),
    { message: /SCHEMA_OUT_OF_RANGE/ },
  );
  const other = w.token(c.signer.kid, 5);
  t.like(
    validateHandover(
      patch(p2.handover, (x) => {
        x.tokens = [other];
      }),
      ctx(w),
    ),
    { ok: false, code: ErrorCode.VALUE_NOT_CONSERVED, index: 0 },
  );
  // The card signs more change than it had.
  const inflated = patch(p1.handover, (x) => {
    x.transfer = resign(x.transfer, c.signer, (tr) => {
      tr.outputs = [tr.outputs[0]!, { ...tr.outputs[1]!, value: tr.outputs[1]!.value + 1 }];
    });
  });
  t.like(validateHandover(inflated, ctx(w)), { ok: false, code: ErrorCode.VALUE_NOT_CONSERVED });
  // The second transfer spends the token the first already spent.
  const p1t = openSigned('Transfer', p1.transfer).message;
  const reuse = patch(p2.handover, (x) => {
    x.transfer = resign(x.transfer, c.signer, (tr) => {
      tr.inputs = [p1t.inputs[0]!];
      tr.outputs = [tr.outputs[0]!, { value: 900, owner: c.signer.kid }];
    });
  });
  t.like(validateHandover(reuse, ctx(w)), { ok: false, code: ErrorCode.VALUE_NOT_CONSERVED, index: 1 });
  // The payee output pays someone else than the named payee.
  const diverted = patch(p1.handover, (x) => {
    x.transfer = resign(x.transfer, c.signer, (tr) => {
      tr.outputs = [{ ...tr.outputs[0]!, owner: c.signer.kid }, tr.outputs[1]!];
    });
  });
  t.like(validateHandover(diverted, ctx(w)), { ok: false, code: ErrorCode.VALUE_NOT_CONSERVED });
});

test('MARK_VIOLATION: marked value only where the mark allows, and never into unmarked change', (t) => {
  const w = world();
  const canteen = w.terminal('canteen-1', 5812);
  const shop = w.terminal('shop-1', 5411);
  const c = w.card();
  const mark: Mark = { mccs: [5812], hops: 1 };
  const meal = w.token(c.signer.kid, 2000, mark);
  c.wallet.holdTokens([meal, w.token(c.signer.kid, 3000)], w.ledger.keys.publicKey);
  // Allowed at the canteen: the wallet prefers the purpose-bound coin, payee output loses the mark at hops 1.
  const ok = c.wallet.pay(request(canteen, 500));
  const res = validateHandover(ok.handover, ctx(w));
  t.true(res.ok);
  if (res.ok) {
    t.deepEqual(res.inputs[0]!.mark, mark);
    t.is(res.transfer.outputs[0]!.mark, undefined);
    t.deepEqual(res.transfer.outputs[1]!.mark, mark);
  }
  // Paying the shop with the (marked) change is refused.
  const mealSerial = outputId(ok.transferHash, 1);
  const bad = c.wallet.clone().pay(request(shop, 100), { inputs: [mealSerial] });
  t.like(validateHandover(bad.handover, ctx(w)), { ok: false, code: ErrorCode.MARK_VIOLATION, index: 1 });
  // The change stripped of its mark.
  const stripped = patch(ok.handover, (x) => {
    x.transfer = resign(x.transfer, c.signer, (tr) => {
      tr.outputs = [tr.outputs[0]!, { value: tr.outputs[1]!.value, owner: c.signer.kid }];
    });
  });
  t.like(validateHandover(stripped, ctx(w)), { ok: false, code: ErrorCode.MARK_VIOLATION });
});

test('WRONG_PAYEE, REQUEST_MISMATCH and the torn-tap retry', (t) => {
  const w = world();
  const shop = w.terminal();
  const thief = w.terminal('shop-2');
  const c = w.card();
  c.wallet.holdTokens([w.token(c.signer.kid, 10_000)], w.ledger.keys.publicKey);
  const r = request(shop, 700);
  const p = c.wallet.pay(r);
  t.true(validateHandover(p.handover, ctx(w, { request: r })).ok);
  t.like(validateHandover(p.handover, ctx(w, { request: { ...r, terminal: thief.signer.kid } })), {
    ok: false,
    code: ErrorCode.WRONG_PAYEE,
  });
  t.like(validateHandover(p.handover, ctx(w, { payee: thief.signer.kid })), { ok: false, code: ErrorCode.WRONG_PAYEE });
  t.like(validateHandover(p.handover, ctx(w, { request: { ...r, amount: 701 } })), { ok: false, code: ErrorCode.REQUEST_MISMATCH });
  t.like(validateHandover(p.handover, ctx(w, { request: { ...r, nonce: rnd(16) } })), { ok: false, code: ErrorCode.REQUEST_MISMATCH });
  t.like(validateHandover(p.handover, ctx(w, { request: { ...r, time: r.time + 1 } })), { ok: false, code: ErrorCode.REQUEST_MISMATCH });
  t.like(validateHandover(p.handover, ctx(w, { notAfter: r.time - 1 })), { ok: false, code: ErrorCode.TRANSFER_TIME });

  // Retry: same handover back, nothing new signed; validates against [new request, interrupted request].
  const retry = { ...request(shop, 700, T0 + 5), retryOf: r.nonce };
  const again = c.wallet.pay(retry);
  t.true(again.retried);
  t.deepEqual(again.handover, p.handover);
  t.is(c.wallet.state.counter, 1);
  t.like(validateHandover(again.handover, ctx(w, { request: retry })), { ok: false, code: ErrorCode.REQUEST_MISMATCH });
  t.true(validateHandover(again.handover, ctx(w, { request: [retry, r] })).ok);
  // A nonce already signed is refused by the card.
  t.throws(() => c.wallet.pay(r), { message: /nonce already signed/ });
});

test('LIMIT_EXCEEDED and CVM_REQUIRED from the certified limits', (t) => {
  const w = world();
  const shop = w.terminal();
  const c = w.card({ perPayment: 1000, offlineTotal: 1500, offlineCount: 2, cvmLimit: 300 });
  c.wallet.holdTokens([w.token(c.signer.kid, 10_000)], w.ledger.keys.publicKey);
  const over = c.wallet.clone().pay(request(shop, 1001), { enforceLimits: false, cvm: Cvm.ON_DEVICE });
  t.like(validateHandover(over.handover, ctx(w)), { ok: false, code: ErrorCode.LIMIT_EXCEEDED, detail: 'perPayment' });
  t.throws(() => c.wallet.clone().pay(request(shop, 1001), { cvm: Cvm.ON_DEVICE }), { message: /LIMIT_EXCEEDED/ });
  const nocvm = c.wallet.clone().pay(request(shop, 301), { enforceLimits: false });
  t.like(validateHandover(nocvm.handover, ctx(w)), { ok: false, code: ErrorCode.CVM_REQUIRED });
  t.true(validateHandover(c.wallet.clone().pay(request(shop, 300)).handover, ctx(w)).ok);
  c.wallet.pay(request(shop, 900), { cvm: Cvm.OFFLINE_PIN });
  const total = c.wallet.clone().pay(request(shop, 700), { enforceLimits: false, cvm: Cvm.OFFLINE_PIN });
  t.like(validateHandover(total.handover, ctx(w)), { ok: false, code: ErrorCode.LIMIT_EXCEEDED, detail: 'offlineTotal' });
  c.wallet.pay(request(shop, 100));
  const count = c.wallet.pay(request(shop, 100), { enforceLimits: false });
  t.like(validateHandover(count.handover, ctx(w)), { ok: false, code: ErrorCode.LIMIT_EXCEEDED, detail: 'offlineCount' });
});

test('no single-byte corruption of a handover validates', (t) => {
  const w = world();
  const shop = w.terminal();
  const c = w.card();
  c.wallet.holdTokens([w.token(c.signer.kid, 10_000)], w.ledger.keys.publicKey);
  c.wallet.pay(request(shop, 100));
  const p = c.wallet.pay(request(shop, 100));
  // Step through the encoding (every 7th byte keeps the test fast with the pure-JS verifier).
  let checked = 0;
  for (let i = 0; i < p.handover.length; i += 7) {
    const b = p.handover.slice();
    b[i]! ^= 0x01;
    const r = validateHandover(b, ctx(w, { verifier: nativeVerifier }));
    t.false(r.ok, `byte ${i}`);
    checked++;
  }
  t.true(checked > 50);
});

// ---------------------------------------------------------------- issue 12: every chain is anchored
/** A card synced once through a hand-made ledger receipt, holding one token of `value`. */
function syncedCard(w: ReturnType<typeof world>, value: number, limits = LIMITS) {
  const c = w.card(limits);
  const sr = openSigned('SyncRequest', c.wallet.beginSync(rnd(16)));
  const tok = w.token(c.signer.kid, value);
  const receipt = signMessage(
    'SyncReceipt',
    { card: c.signer.kid, counter: sr.message.counter, request: payloadHash(sr.cose), tokens: [tok], time: T0, loaded: value, voided: [] },
    w.ledger.signer,
  );
  c.wallet.completeSync(receipt, w.ledger.keys.publicKey);
  return { c, receipt, tok };
}

test('a handover that leaves out its receipt (and history) is HISTORY_BROKEN: only genesis is anchored without one', (t) => {
  const w = world();
  const shop = w.terminal();
  const { c } = syncedCard(w, 50_000);
  const p = c.wallet.pay(request(shop, 1000));
  t.true(validateHandover(p.handover, ctx(w)).ok);
  // The attack of issue 12: strip the receipt; the chain then starts nowhere the validator can check.
  const stripped = patch(p.handover, (x) => {
    delete x.receipt;
  });
  t.like(validateHandover(stripped, ctx(w)), { ok: false, code: ErrorCode.HISTORY_BROKEN, index: 0 });
  // A second payment with its history and receipt stripped cannot get past the offline count either.
  const c2 = syncedCard(w, 50_000, { ...LIMITS, offlineCount: 1 }).c;
  c2.wallet.pay(request(shop, 100));
  const second = c2.wallet.pay(request(shop, 100), { enforceLimits: false });
  t.like(validateHandover(second.handover, ctx(w)), { ok: false, code: ErrorCode.LIMIT_EXCEEDED, detail: 'offlineCount' });
  const hidden = patch(second.handover, (x) => {
    delete x.receipt;
    x.history = [];
  });
  t.like(validateHandover(hidden, ctx(w)), { ok: false, code: ErrorCode.HISTORY_BROKEN });
  // A genesis chain (counter 1, prev GENESIS_PREV) needs no receipt.
  const g = w.card();
  g.wallet.holdTokens([w.token(g.signer.kid, 5000)], w.ledger.keys.publicKey);
  const gp = g.wallet.pay(request(shop, 100));
  const gv = validateHandover(gp.handover, ctx(w));
  t.true(gv.ok);
  if (gv.ok) {
    t.is(gv.anchorCounter, 0);
    t.is(gv.offlineCount, 1);
    t.deepEqual(openSigned('Transfer', gp.transfer).message.prev, GENESIS_PREV);
  }
});

test('text content types (objects signed before content formats, SPEC §4.1) validate like the current form, at terminal and ledger alike', (t) => {
  const w = world();
  const shop = w.terminal();
  const { c } = syncedCard(w, 50_000);
  const req = request(shop, 1000);
  const p = c.wallet.pay(req);
  const legacyTransfer = coseSign1(openSigned('Transfer', p.transfer).cose.payload, MESSAGES.Transfer.contentType, c.signer);
  t.is(payloadHash(openSigned('Transfer', legacyTransfer).cose).length, 32);
  const legacy = patch(p.handover, (x) => {
    x.transfer = legacyTransfer;
  });
  t.true(legacy.length > p.handover.length + 20, 'the text form is longer');
  for (const v of [validateHandover(legacy, ctx(w, { request: req })), validateHandover(legacy, ctx(w, { payee: shop.signer.kid }))]) {
    if (!v.ok) return t.fail(`${v.code} ${v.detail}`);
    // The same transfer by name: its payload hash does not depend on the header form.
    t.deepEqual(v.transferHash, p.transferHash);
  }
});

test('receiptTokens: a synced card names its tokens by index in the receipt; the inline form stays valid; bad references fail', (t) => {
  const w = world();
  const shop = w.terminal();
  const { c, tok } = syncedCard(w, 50_000);
  const p = c.wallet.pay(request(shop, 1000));
  const h = decodeMessage('Handover', p.handover);
  t.is(h.tokens, undefined, 'no token repeated');
  t.deepEqual(h.receiptTokens, [0]);
  const v = validateHandover(p.handover, ctx(w));
  if (!v.ok) return t.fail(`${v.code} ${v.detail}`);
  t.deepEqual(
    v.tokens.map((x) => x.bytes),
    [tok],
    'the provenance token is the one in the receipt',
  );
  // The form before receiptTokens: every token inline, as an old card sends it.
  const inline = patch(p.handover, (x) => {
    delete x.receiptTokens;
    x.tokens = [tok];
  });
  t.true(inline.length > p.handover.length + tok.length, 'the inline form repeats the token');
  t.true(validateHandover(inline, ctx(w)).ok);
  // An index the receipt does not have.
  const beyond = patch(p.handover, (x) => {
    x.receiptTokens = [1];
  });
  t.like(validateHandover(beyond, ctx(w)), { ok: false, code: ErrorCode.TOKEN_INVALID, index: 0 });
  // The same token named twice.
  const twice = patch(p.handover, (x) => {
    x.receiptTokens = [0, 0];
  });
  t.like(validateHandover(twice, ctx(w)), { ok: false, code: ErrorCode.TOKEN_INVALID, index: 1 });
  // Named and carried inline: given twice.
  const both = patch(p.handover, (x) => {
    x.tokens = [tok];
  });
  t.like(validateHandover(both, ctx(w)), { ok: false, code: ErrorCode.TOKEN_INVALID, index: 1 });
  // Named in a receipt the handover does not carry: no anchor.
  const noReceipt = patch(p.handover, (x) => {
    delete x.receipt;
  });
  t.like(validateHandover(noReceipt, ctx(w)), { ok: false, code: ErrorCode.HISTORY_BROKEN, index: 0 });
  // A token re-signed by another key, inline in place of the named one: the token check still runs.
  const forged = signMessage('Token', openSigned('Token', tok).message, c.signer);
  const resigned = patch(p.handover, (x) => {
    delete x.receiptTokens;
    x.tokens = [forged];
  });
  t.like(validateHandover(resigned, ctx(w)), { ok: false, code: ErrorCode.TOKEN_INVALID, index: 0 });
});

test('offline count and anchor come from the counters; isIssuedToken is the ledger-only token check', (t) => {
  const w = world();
  const shop = w.terminal();
  const { c, receipt, tok } = syncedCard(w, 50_000);
  c.wallet.pay(request(shop, 100));
  const p = c.wallet.pay(request(shop, 200));
  const v = validateHandover(p.handover, ctx(w));
  t.true(v.ok);
  const rc = openSigned('SyncReceipt', receipt).message.counter;
  if (v.ok) {
    t.is(v.anchorCounter, rc);
    t.is(v.offlineCount, 2);
    t.is(v.offlineTotal, 300);
  }
  const serial = openSigned('Token', tok).message.serial;
  t.true(validateHandover(p.handover, ctx(w, { isIssuedToken: (k) => bytesEq(k.serial, serial) })).ok);
  t.like(validateHandover(p.handover, ctx(w, { isIssuedToken: () => false })), { ok: false, code: ErrorCode.TOKEN_INVALID, index: 0 });
});

test('handoverTransfers finds every card-signed transfer, even in a handover that does not decode', (t) => {
  const w = world();
  const shop = w.terminal();
  const { c } = syncedCard(w, 50_000);
  const p1 = c.wallet.pay(request(shop, 100));
  const p2 = c.wallet.pay(request(shop, 200));
  const found = handoverTransfers(p2.handover);
  t.deepEqual(found, [p1.transfer, p2.transfer]);
  // Break the container: an unknown key makes it fail the strict decode, the transfers are still found.
  const h = decodeDeterministic(p2.handover) as Map<number, unknown>;
  h.set(99, 1);
  const broken = encodeDeterministic(h as never);
  t.throws(() => decodeMessage('Handover', broken));
  t.deepEqual(handoverTransfers(broken), [p1.transfer, p2.transfer]);
  t.deepEqual(handoverTransfers(new Uint8Array([0xff, 0x00])), []);
  t.deepEqual(handoverTransfers(encodeDeterministic(new Map([[1, 5]]) as never)), []);
});

test('ReferenceWallet time bound (SPEC §10.7 step 2a): TRANSFER_TIME beyond CARD_TIME_AHEAD after the trusted time, nothing signed; the receipt time raises it; retries are bound too', (t) => {
  const w = world();
  const shop = w.terminal();
  const c = w.card(); // personalizedAt T0 - 100
  c.wallet.holdTokens([w.token(c.signer.kid, 50_000)], w.ledger.keys.publicKey);
  t.is(c.wallet.state.trusted, T0 - 100);
  const bound = T0 - 100 + CARD_TIME_AHEAD;
  const before = c.wallet.state;
  t.throws(() => c.wallet.pay(request(shop, 1_000, bound + 1)), { code: ErrorCode.TRANSFER_TIME });
  t.deepEqual(c.wallet.state, before, 'a refusal changes nothing');
  const atBound = request(shop, 1_000, bound);
  const p = c.wallet.pay(atBound);
  t.true(validateHandover(p.handover, ctx(w, { request: atBound })).ok);
  t.is(c.wallet.state.trusted, T0 - 100, 'a request time is never trusted');
  t.throws(
    () => c.wallet.pay({ ...request(shop, 1_000, bound + 1), retryOf: atBound.nonce }),
    { code: ErrorCode.TRANSFER_TIME },
    'retry beyond the bound',
  );
  t.true(c.wallet.pay({ ...request(shop, 1_000, bound), retryOf: atBound.nonce }).retried);
  // The sync's receipt time is the new trusted time.
  const sr = openSigned('SyncRequest', c.wallet.beginSync(rnd(16)));
  const synced = bound + 86_400;
  const receipt = signMessage(
    'SyncReceipt',
    {
      card: c.signer.kid,
      counter: sr.message.counter,
      request: payloadHash(sr.cose),
      tokens: [w.token(c.signer.kid, 49_000)],
      time: synced,
      loaded: 0,
      voided: [],
    },
    w.ledger.signer,
  );
  c.wallet.completeSync(receipt, w.ledger.keys.publicKey);
  t.is(c.wallet.state.trusted, synced);
  t.throws(() => c.wallet.pay(request(shop, 1_000, synced + CARD_TIME_AHEAD + 1)), { code: ErrorCode.TRANSFER_TIME });
  t.false(c.wallet.pay(request(shop, 1_000, synced + CARD_TIME_AHEAD)).retried);
  // Without personalizedAt, a fresh wallet's trusted time is its card certificate's iat; a given state keeps its own.
  const p2 = party(Role.CARD, w.bank.signer, { limits: LIMITS });
  const fresh = new ReferenceWallet({ signer: p2.signer, chain: [p2.cert, w.bank.cert] });
  t.is(fresh.state.trusted, openSigned('Certificate', p2.cert).message.iat);
  t.is(new ReferenceWallet({ signer: p2.signer, chain: [p2.cert, w.bank.cert], state: { ...fresh.state, trusted: 42 } }).state.trusted, 42);
  t.is(c.wallet.clone().state.trusted, synced, 'a clone has the same trusted time');
  // A broken or cloned card signs whatever it is asked: tests build such transfers with enforceLimits off.
  const far = request(shop, 1_000, synced + 200 * 86_400);
  t.is(openSigned('Transfer', c.wallet.clone().pay(far, { enforceLimits: false }).transfer).message.time, far.time);
});

test("ReferenceWallet input selection is the applet's (SPEC §10.7): coins expired at max(request time, floor) are skipped; change keeps the earliest expiry", (t) => {
  const w = world();
  const shop = w.terminal();
  const c = w.card();
  const expiring = (value: number, expires: number, n: number) => {
    const serial = new Uint8Array(16).fill(n);
    return {
      serial,
      bytes: signMessage(
        'Token',
        { serial, value, currency: CURRENCY_KZT, owner: c.signer.kid, issued: T0 - 100, expires },
        w.ledger.signer,
      ),
    };
  };
  const big = expiring(30_000, T0 + 50, 1); // the largest coin, expiring first
  const mid = expiring(8_000, T0 + 5_000, 2);
  const small = w.token(c.signer.kid, 3_000); // no expiry
  c.wallet.holdTokens([big.bytes, mid.bytes, small], w.ledger.keys.publicKey);
  t.deepEqual(
    c.wallet.state.holdings.map((h) => h.expires),
    [T0 + 50, T0 + 5_000, undefined],
    "the wallet keeps each token's expiry",
  );
  // Before the expiry the largest coin pays, as before.
  const first = c.wallet.pay(request(shop, 1_000, T0 + 10));
  t.deepEqual(openSigned('Transfer', first.transfer).message.inputs, [big.serial]);
  const change = c.wallet.state.holdings.find((h) => h.value === 29_000)!;
  t.is(change.expires, T0 + 50, 'the change coin expires with its input');
  // After it, the expired change is skipped: the 8_000 coin pays, though 29_000 is larger.
  const second = c.wallet.pay(request(shop, 1_000, T0 + 60));
  t.deepEqual(openSigned('Transfer', second.transfer).message.inputs, [mid.serial]);
  // More than the unexpired coins hold: refused, though the expired change would cover it.
  t.throws(() => c.wallet.pay(request(shop, 11_000, T0 + 70)), { code: ErrorCode.VALUE_NOT_CONSERVED });
  // The floor (raised to T0 + 60 by the last payment) decides, not an earlier request time.
  t.is(c.wallet.state.floor, T0 + 60);
  t.throws(
    () => c.wallet.pay(request(shop, 11_000, T0 + 20)),
    { code: ErrorCode.VALUE_NOT_CONSERVED },
    'dated before the expiry, after the floor',
  );
  t.true(
    c.wallet.state.holdings.some((h) => h.value === 29_000),
    'the expired coin is still held (the ledger settles it at the next sync)',
  );
});

test('bank certificate by reference (SPEC §3.8): a [card] chain validates with the held bank; unheld, forged or wrong banks fail closed', (t) => {
  const w = world();
  const c = w.card();
  c.wallet.holdTokens([w.token(c.signer.kid, 30_000)], w.ledger.keys.publicKey);
  const shop = w.terminal();
  const held = new Map([[Buffer.from(w.bank.signer.kid).toString('hex'), w.bank.cert]]);
  const lookup = (kid: Uint8Array) => held.get(Buffer.from(kid).toString('hex'));
  // The request names the card's bank: the card leaves its certificate out.
  const r1 = { ...request(shop, 1_000), banks: [rnd(16), w.bank.signer.kid] };
  const p1 = c.wallet.pay(r1);
  const h1 = decodeMessage('Handover', p1.handover);
  t.is(h1.chain.length, 1);
  t.deepEqual(h1.chain[0], c.cert);
  const ok = validateHandover(p1.handover, ctx(w, { request: r1, bankCertificate: lookup }));
  if (!ok.ok) return t.fail(`${ok.code} ${ok.detail}`);
  t.deepEqual(ok.issuingBankKid, w.bank.signer.kid);
  t.deepEqual(ok.cardChain[1]!.bytes, w.bank.cert);
  // The same handover with the bank certificate carried is the form before the reference: still valid.
  const full = patch(p1.handover, (h) => (h.chain = [c.cert, w.bank.cert]));
  t.true(validateHandover(full, ctx(w, { request: r1 })).ok);

  // A validator that does not hold the bank (or was given no lookup): HANDOVER_CHAIN, CERT_CHAIN_BROKEN, index 1.
  for (const bankCertificate of [undefined, () => undefined]) {
    const r = validateHandover(p1.handover, ctx(w, { request: r1, ...(bankCertificate ? { bankCertificate } : {}) }));
    t.like(r, { ok: false, code: ErrorCode.HANDOVER_CHAIN, detail: ErrorCode.CERT_CHAIN_BROKEN, index: 1 });
  }
  // A request that does not name the bank: the card carries it.
  const r2 = request(shop, 1_000);
  const p2 = c.wallet.pay(r2);
  t.is(decodeMessage('Handover', p2.handover).chain.length, 2);
  // A forged bank certificate in the store (same key, not signed by the root) fails the chain.
  const forger = party(Role.ISSUER, null);
  const forged = issueCertificate(
    {
      ...openSigned('Certificate', w.bank.cert).message,
      role: Role.BANK,
      perms: BankPermission.ISSUING,
      publicKey: w.bank.keys.publicKey,
    } as never,
    forger.signer,
  );
  const p3 = c.wallet.pay({ ...request(shop, 1_000, T0 + 10), banks: [w.bank.signer.kid] });
  const rf = validateHandover(p3.handover, ctx(w, { bankCertificate: () => forged }));
  t.like(rf, { ok: false, code: ErrorCode.HANDOVER_CHAIN });
  // Another bank's (genuine) certificate under the asked kid: the card certificate does not verify under it.
  const other = party(Role.BANK, w.root.signer, { perms: BankPermission.ISSUING });
  const ro = validateHandover(p3.handover, ctx(w, { bankCertificate: () => other.cert }));
  t.like(ro, { ok: false, code: ErrorCode.HANDOVER_CHAIN });
  // A bank without the ISSUING permission cannot complete a card chain either.
  const acq = party(Role.BANK, w.root.signer, { perms: BankPermission.ACQUIRING });
  const c2 = w.card(LIMITS, undefined, acq);
  c2.wallet.holdTokens([w.token(c2.signer.kid, 5_000)], w.ledger.keys.publicKey);
  const p4 = c2.wallet.pay({ ...request(shop, 1_000), banks: [acq.signer.kid] });
  t.is(decodeMessage('Handover', p4.handover).chain.length, 1);
  t.like(validateHandover(p4.handover, ctx(w, { bankCertificate: () => acq.cert })), {
    ok: false,
    code: ErrorCode.HANDOVER_CHAIN,
    detail: ErrorCode.CERT_NOT_PERMITTED,
  });
});

test('history by reference (SPEC §3.8 after): validated as the whole chain with the held history; not held, wrong or not named fails closed; limits count it all', (t) => {
  const w = world();
  const c = w.card({ ...LIMITS, offlineTotal: 30_000 });
  c.wallet.holdTokens([w.token(c.signer.kid, 40_000)], w.ledger.keys.publicKey);
  const shop = w.terminal();
  // What the terminal journals: the complete handover of each payment it accepted.
  const journal = new Map<string, Uint8Array[]>();
  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
  const accept = (handover: Uint8Array, r: ExpectedRequest & { held?: Uint8Array }) => {
    const v = validateHandover(handover, ctx(w, { request: r, heldHistory: (h) => journal.get(hex(h)) }));
    if (!v.ok) throw new Error(`${v.code} ${v.detail}`);
    const full = completeHistory(v);
    journal.set(hex(v.transferHash), [...full.history, full.transfer]);
    return { v, full };
  };
  const r1 = request(shop, 10_000);
  const p1 = c.wallet.pay(r1);
  accept(p1.handover, r1);
  const r2 = { ...request(shop, 5_000, T0 + 10), held: p1.transferHash };
  const p2 = c.wallet.pay(r2);
  const h2 = decodeMessage('Handover', p2.handover);
  t.is(h2.history.length, 0, 'the card left out what the terminal holds');
  t.deepEqual(h2.after, p1.transferHash);
  const { v: v2, full: f2 } = accept(p2.handover, r2);
  t.is(v2.chain.length, 2);
  t.is(v2.offlineTotal, 15_000);
  t.is(v2.offlineCount, 2);
  t.deepEqual(f2.history, [p1.transfer]);
  t.is(f2.after, undefined);
  // The complete form validates without any held history (what the ledger gets).
  t.true(validateHandover(encodeMessage('Handover', f2), ctx(w, { request: r2 })).ok);
  // Naming an older transfer: the card sends the links after it.
  const r3 = { ...request(shop, 1_000, T0 + 20), held: p1.transferHash };
  const p3 = c.wallet.pay(r3);
  t.is(decodeMessage('Handover', p3.handover).history.length, 1);
  t.true(validateHandover(p3.handover, ctx(w, { request: r3, heldHistory: (h) => journal.get(hex(h)) })).ok);
  // A held hash the card does not know: the card sends its whole history.
  const r4 = { ...request(shop, 1_000, T0 + 30), held: rnd(32) };
  const p4 = c.wallet.pay(r4);
  const h4 = decodeMessage('Handover', p4.handover);
  t.is(h4.history.length, 3);
  t.is(h4.after, undefined);

  // Not held (no lookup, or it answers nothing): HISTORY_BROKEN at index 0.
  for (const heldHistory of [undefined, () => undefined, () => []]) {
    t.like(validateHandover(p2.handover, ctx(w, { request: r2, ...(heldHistory ? { heldHistory } : {}) })), {
      ok: false,
      code: ErrorCode.HISTORY_BROKEN,
      index: 0,
    });
  }
  // A wrong held chain (another card's, or this card's cut short) does not link: HISTORY_BROKEN.
  const other = w.card();
  other.wallet.holdTokens([w.token(other.signer.kid, 40_000)], w.ledger.keys.publicKey);
  const po = other.wallet.pay(request(shop, 1_000));
  t.like(validateHandover(p2.handover, ctx(w, { request: r2, heldHistory: () => [po.transfer] })), { ok: false });
  t.like(validateHandover(p3.handover, ctx(w, { request: r3, heldHistory: () => [] })), { ok: false, code: ErrorCode.HISTORY_BROKEN });
  // The offline total counts the held history: a payment over the limit with the history left out is still refused.
  const r5 = { ...request(shop, 20_000, T0 + 40), held: p4.transferHash };
  journal.set(hex(p4.transferHash), [...h4.history, h4.transfer]);
  const p5 = c.wallet.pay(r5, { enforceLimits: false });
  t.is(decodeMessage('Handover', p5.handover).history.length, 0);
  t.like(validateHandover(p5.handover, ctx(w, { request: r5, heldHistory: (h) => journal.get(hex(h)) })), {
    ok: false,
    code: ErrorCode.LIMIT_EXCEEDED,
    detail: 'offlineTotal',
  });
});

/** The resume point a validator records after a whole-chain result (what the ledger keeps with a card's chain head, SPEC §7.7). */
function pointAfter(v: Extract<ReturnType<typeof validateHandover>, { ok: true }>): ChainResume {
  const change = new Map<string, SpentCoin>();
  const spentTokens: SpentCoin[] = [];
  let amounts = 0;
  v.chain.forEach((x, i) => {
    for (const c of v.chainInputs[i]!) {
      const k = Buffer.from(c.id).toString('hex');
      if (!change.delete(k)) spentTokens.push(c);
    }
    const out = x.transfer.outputs[1];
    if (out) change.set(Buffer.from(outputId(x.hash, 1)).toString('hex'), { id: outputId(x.hash, 1), value: out.value });
    amounts += x.transfer.amount;
  });
  const last = v.chain[v.chain.length - 1]!;
  return {
    count: v.chain.length,
    hash: last.hash,
    counter: last.transfer.counter,
    currency: v.transfer.currency,
    amounts,
    spentTokens,
    change: [...change.values()],
  };
}

test('resumed chains (SPEC §7.7): from a recorded point the result is the whole chain’s; a point that does not fit, or a tail that fails, gives the whole-chain answer', (t) => {
  const w = world();
  const c = w.card();
  c.wallet.holdTokens([w.token(c.signer.kid, 40_000)], w.ledger.keys.publicKey);
  const shop = w.terminal();
  const pays = [10_000, 5_000, 1_000, 1_000, 1_000, 1_000].map((amount, i) => {
    const r = request(shop, amount, T0 + 10 * i);
    return { r, p: c.wallet.pay(r, { enforceLimits: false }) };
  });
  const whole = (i: number) => validateHandover(pays[i]!.p.handover, ctx(w, { request: pays[i]!.r }));
  const points = pays.slice(0, 5).map((_, i) => {
    const v = whole(i);
    if (!v.ok) throw new Error(`payment ${i}: ${v.code}`);
    return pointAfter(v);
  });
  const resumed = (i: number, point: ChainResume | undefined, seen?: unknown[]) =>
    validateHandover(
      pays[i]!.p.handover,
      ctx(w, {
        request: pays[i]!.r,
        resumeChain: (card, anchor, history) => {
          seen?.push({ card, anchor, n: history.length });
          return point;
        },
      }),
    );
  // Payment 3 (history 0..2) from the point after payment 2 (count 3) and after payment 0 (count 1).
  const full3 = whole(3);
  const seen: unknown[] = [];
  const r3 = resumed(3, points[2], seen);
  t.true(full3.ok && r3.ok);
  if (!full3.ok || !r3.ok) return;
  t.deepEqual(seen, [{ card: c.signer.kid, anchor: { prev: GENESIS_PREV, counter: 0 }, n: 3 }]);
  t.is(r3.resumed, 3);
  t.is(r3.chain.length, 1);
  t.deepEqual(r3.chain, full3.chain.slice(3));
  t.deepEqual(r3.chainInputs, full3.chainInputs.slice(3));
  t.deepEqual(r3.inputs, full3.inputs);
  t.is(r3.offlineTotal, full3.offlineTotal);
  t.is(r3.offlineCount, full3.offlineCount);
  t.is(full3.resumed, undefined);
  const from0 = resumed(3, points[0]);
  t.like(from0, { ok: true, resumed: 1, offlineTotal: 17_000 });
  t.is(from0.ok && from0.chain.length, 3);
  // A point that does not fit the handover: the whole chain is validated (no `resumed`, the same result).
  const token = points[0]!.spentTokens[0]!;
  const misfits: ChainResume[] = [
    { ...points[2]!, spentTokens: [{ ...token, id: rnd(16) }] },
    { ...points[2]!, spentTokens: [{ ...token, value: token.value + 1 }] },
    { ...points[2]!, spentTokens: [{ ...token, mark: { hops: 1 } }] },
    { ...points[2]!, currency: points[2]!.currency + 1 },
    { ...points[2]!, count: 4 },
    { ...points[2]!, count: 0 },
    // The tail spends change the point does not have: the tail fails, so the whole chain is checked.
    { ...points[0]!, change: [] },
  ];
  for (const [i, m] of misfits.entries()) t.deepEqual(resumed(3, m), full3, `misfit ${i}`);
  t.deepEqual(resumed(3, undefined), full3);
  // A tail that fails gives the whole chain's code and index (the paying transfer is index 3 of the whole chain).
  const bad = patch(pays[3]!.p.handover, (h) => {
    const tr = h.transfer.slice();
    tr[tr.length - 1]! ^= 1;
    h.transfer = tr;
  });
  const badWhole = validateHandover(bad, ctx(w, { request: pays[3]!.r }));
  t.like(badWhole, { ok: false, code: ErrorCode.TRANSFER_SIGNATURE, index: 3 });
  t.deepEqual(validateHandover(bad, ctx(w, { request: pays[3]!.r, resumeChain: () => points[2] })), badWhole);
  // Limits count the prefix: payment 5 is the sixth since genesis (offlineCount 5).
  const full5 = whole(5);
  t.like(full5, { ok: false, code: ErrorCode.LIMIT_EXCEEDED, detail: 'offlineCount' });
  t.deepEqual(resumed(5, points[4]), full5);
  // Not with `after`: a handover leaving out its history is validated with the held chain, never resumed.
  const r2 = { ...request(shop, 500, T0 + 100), held: pays[4]!.p.transferHash };
  const after = c.wallet.pay(r2, { enforceLimits: false });
  const held = decodeMessage('Handover', pays[4]!.p.handover);
  let asked = 0;
  const va = validateHandover(
    after.handover,
    ctx(w, {
      request: r2,
      skipLimits: true,
      heldHistory: () => [...held.history, held.transfer],
      resumeChain: () => {
        asked++;
        return points[4];
      },
    }),
  );
  t.like(va, { ok: true, resumed: undefined });
  t.is(va.ok && va.chain.length, 7);
  t.is(asked, 0);
});
