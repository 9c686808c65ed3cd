/**
 * Every command and every status word of the applet, through the in-process
 * transport (raw APDUs and the protocol's reader-side exchange).
 */
import test from 'ava';
import {
  CARD_TIME_AHEAD,
  CLA,
  CURRENCY_KZT,
  Cvm,
  DT_AID,
  INS,
  SW_TABLE,
  swHex,
  PERSONALIZE_P1,
  SYNC_P1,
  createTrustStore,
  decodeDeterministic,
  encodeDeterministic,
  toHex,
  type CborValue,
  decodeMessage,
  encodeMessage,
  encodeCommand,
  keyPairSigner,
  openSigned,
  payloadHash,
  ReferenceWallet,
  signMessage,
  subjectKey,
  validateHandover,
  verifySigned,
  type Mark,
  Capability,
  CardStatusSchema,
  ChangePinSchema,
  decodeFormat,
  encodeFormat,
  SelectResponseSchema,
  UnblockPinSchema,
  WriteCertificatesSchema,
  type CardStatus,
  concatBytes,
  fromHex,
  keyId,
  P256_N,
  sha256,
} from '@dt/protocol';
import {
  Applet,
  AppletBusyError,
  AppletHaltedError,
  AppletPowerLostError,
  ATR,
  encodeState,
  legacyTrustedTime,
  MemoryStorage,
  ShadowJournal,
  type CardState,
} from '../src/index.ts';
import { Host, Ledger, PIN, PUK, T0, load, makePki, newCard, observedSw, paymentRequest, personalize, seededRandom } from './fixtures.ts';

const pki = makePki('applet-tests');
const ledger = new Ledger(pki);
const trust = createTrustStore({ root: pki.root.cert, ledgerCert: pki.ledger.cert, at: T0 });
const enc = (s: string) => new TextEncoder().encode(s);

async function status(host: Host): Promise<CardStatus> {
  const r = await host.status();
  if (r.sw !== 0x9000) throw new Error(`status ${r.sw.toString(16)}`);
  return decodeFormat(CardStatusSchema, r.data);
}

/** A personalized card loaded with `values` (sum loaded), selected. */
async function readyCard(
  values: number[] = [60_000, 30_000, 10_000],
  opts: { seed?: string; limits?: typeof pki.limits; marks?: (Mark | undefined)[] } = {},
) {
  const c = newCard(new MemoryStorage(), opts.seed ?? 'card');
  await personalize(c.host, pki, opts.limits ? { limits: opts.limits } : {});
  await load(
    c.host,
    ledger,
    values.reduce((a, b) => a + b, 0),
    { values, ...(opts.marks ? { marks: opts.marks } : {}) },
  );
  return c;
}

function validate(handover: Uint8Array, request: Uint8Array) {
  return validateHandover(handover, { trust, request: openSigned('PaymentRequest', request).message });
}

test('ATR is ISO 7816-3 well formed: TS 3B, 8 historical bytes "DTWALLET", TCK', (t) => {
  t.is(ATR[0], 0x3b);
  t.is(ATR[1]! & 0x0f, 8);
  t.is(new TextDecoder().decode(ATR.slice(4, 12)), 'DTWALLET');
  let x = 0;
  for (const b of ATR.slice(1)) x ^= b;
  t.is(x, 0, 'T0..TCK XOR to zero');
  t.is(ATR.length, 13);
});

test('SELECT answers version and capabilities; wrong AID 6A82, wrong P1 6A86', async (t) => {
  const { host } = newCard();
  const r = await host.select();
  t.is(r.sw, 0x9000);
  const sel = decodeFormat(SelectResponseSchema, r.data);
  t.is(sel.applet, 1);
  t.is(sel.protocol, 1);
  t.false(sel.locked);
  t.truthy(sel.capabilities & Capability.PAY);
  t.falsy(sel.capabilities & Capability.ON_DEVICE_CONFIRM);
  t.is(sel.card, undefined);
  const bad = DT_AID.slice();
  bad[9] = 2;
  t.is((await host.send({ cla: 0, ins: INS.SELECT, p1: 4, p2: 0, data: bad, le: 256 })).sw, 0x6a82);
  // After a failed SELECT the applet is deselected.
  t.is((await host.status()).sw, 0x6986);
  t.is((await host.send({ cla: 0, ins: INS.SELECT, p1: 0, p2: 0, data: DT_AID })).sw, 0x6a86);
});

test('CLA, INS, not selected, malformed APDU, GET RESPONSE with nothing pending, broken chain', async (t) => {
  const { host } = newCard();
  t.is((await host.raw(Uint8Array.of(0x80, INS.GET_STATUS, 0, 0, 0))).sw, 0x6986, 'not selected');
  await host.select();
  t.is((await host.raw(Uint8Array.of(0x84, INS.GET_STATUS, 0, 0, 0))).sw, 0x6e00, 'unknown CLA');
  t.is((await host.raw(Uint8Array.of(0x80, 0x99, 0, 0, 0))).sw, 0x6d00, 'unknown INS');
  t.is((await host.raw(Uint8Array.of(0x00, 0xb0, 0, 0, 0))).sw, 0x6d00, 'ISO INS other than SELECT');
  t.is((await host.raw(Uint8Array.of(0x80, INS.GET_STATUS, 1, 0, 0))).sw, 0x6a86, 'wrong P1');
  t.is((await host.raw(Uint8Array.of(0x80, INS.PERSONALIZE, 0x07, 0))).sw, 0x6a86, 'unknown PERSONALIZE P1');
  t.is((await host.raw(Uint8Array.of(0x80, INS.SYNC, 0x03, 0))).sw, 0x6a86, 'unknown SYNC P1');
  t.is((await host.raw(Uint8Array.of(0x80, 0x10, 0))).sw, 0x6700, 'short APDU');
  t.is((await host.raw(Uint8Array.of(0x80, 0x10, 0, 0, 5, 1))).sw, 0x6700, 'Lc inconsistent');
  t.is((await host.raw(Uint8Array.of(0x00, 0xc0, 0, 0, 0))).sw, 0x6985, 'GET RESPONSE, nothing pending');
  t.is((await host.raw(Uint8Array.of(0x90, INS.PAY, 0, 0, 1, 0xaa))).sw, 0x9000, 'chained block accepted');
  t.is((await host.raw(Uint8Array.of(0x80, INS.GET_STATUS, 0, 0, 0))).sw, 0x6883, 'chain interrupted');
  t.is((await host.status()).sw, 0x9000, 'works after the broken chain');
});

test('personalization: order, errors, lock; GET STATUS and GET CERTIFICATES', async (t) => {
  const { host } = newCard();
  await host.select();
  t.is((await host.cmd(INS.GET_CERTIFICATES)).sw, 0x6985, 'no certificates yet');
  t.is((await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.LOCK, undefined, false)).sw, 0x6985, 'lock before key');
  t.is(
    (await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.WRITE_CERTIFICATES, Uint8Array.of(0xa0), false)).sw,
    0x6985,
    'certificates before key',
  );
  t.is((await host.cmd(INS.VERIFY_PIN, 0, enc(PIN), false)).sw, 0x6985, 'PIN before personalization');
  t.is((await host.cmd(INS.PAY, 0, Uint8Array.of(1), false)).sw, 0x6985, 'PAY before personalization');
  t.is((await host.cmd(INS.SYNC, SYNC_P1.BEGIN, new Uint8Array(16))).sw, 0x6985, 'SYNC before personalization');
  const k1 = await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.GENERATE_KEY);
  t.is(k1.sw, 0x9000);
  t.is(k1.data.length, 65);
  t.is((await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.GENERATE_KEY, Uint8Array.of(1))).sw, 0x6700);
  const k2 = await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.GENERATE_KEY);
  t.not(toHex(k1.data), toHex(k2.data), 'key regenerated before certificates are written');
  const w = (chain: Uint8Array[], time = T0, root = pki.root.cert) =>
    host.cmd(
      INS.PERSONALIZE,
      PERSONALIZE_P1.WRITE_CERTIFICATES,
      encodeFormat(WriteCertificatesSchema, { chain, root, ledger: pki.ledger.cert, time }),
      false,
    );
  t.is((await w(pki.issueCard(k1.data))).sw, 0x6a80, 'certificate for another key');
  t.is((await w(pki.issueCard(k2.data), T0 + 10 * 365 * 86400)).sw, 0x6a80, 'expired at the given time');
  t.is((await w([pki.terminal.cert, pki.acquiring.cert])).sw, 0x6a80, 'not a card chain');
  t.is((await w(pki.issueCard(k2.data), T0, pki.issuing.cert)).sw, 0x6a80, 'root not self-signed issuer');
  t.is((await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.WRITE_CERTIFICATES, Uint8Array.of(1, 2), false)).sw, 0x6a80, 'garbage');
  const chain = pki.issueCard(k2.data);
  t.is((await w(chain)).sw, 0x9000);
  t.is((await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.GENERATE_KEY)).sw, 0x6985, 'key fixed once certified');
  t.is((await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.LOCK, undefined, false)).sw, 0x6985, 'lock before PIN');
  const setPin = (pin: string, puk: string) =>
    host.cmd(
      INS.PERSONALIZE,
      PERSONALIZE_P1.SET_PIN,
      encodeDeterministic(
        new Map<number, CborValue>([
          [1, enc(pin)],
          [2, enc(puk)],
          [3, 5],
        ]),
      ),
      false,
    );
  t.is((await setPin('12a4', PUK)).sw, 0x6a80, 'PIN not digits');
  t.is((await setPin(PIN, '1234')).sw, 0x6a80, 'PUK too short');
  t.is((await setPin(PIN, PUK)).sw, 0x9000);
  t.is(
    (await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.SET_CONFIG, Uint8Array.of(0xa1, 0x09, 0x01), false)).sw,
    0x6a80,
    'unknown config key',
  );
  t.is((await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.LOCK, Uint8Array.of(1), false)).sw, 0x6700);
  let st = await status(host);
  t.is(st.personalized, 0x07);
  t.false(st.locked);
  t.is(st.pinTries, 5);
  t.is((await host.cmd(INS.PERSONALIZE, PERSONALIZE_P1.LOCK, undefined, false)).sw, 0x9000);
  for (const p1 of Object.values(PERSONALIZE_P1)) {
    t.is((await host.cmd(INS.PERSONALIZE, p1, undefined, false)).sw, 0x6986, `PERSONALIZE ${p1} after lock`);
  }
  st = await status(host);
  t.true(st.locked);
  t.deepEqual(st.limits, pki.limits);
  t.is(st.balance, 0);
  t.is(st.counter, 0);
  t.is(st.currency, 398);
  const certs = await host.cmd(INS.GET_CERTIFICATES);
  t.is(certs.sw, 0x9000);
  t.deepEqual((decodeDeterministic(certs.data) as Uint8Array[]).map(toHex), chain.map(toHex));
  const sel = decodeFormat(SelectResponseSchema, (await host.select()).data);
  t.true(sel.locked);
  t.is(toHex(sel.card!), toHex(openSigned('Certificate', chain[0]!).message.cnf.coseKey.kid));
});

test('LOAD and PAY: the handover passes validateHandover; balance, counter, offline totals; 61xx/GET RESPONSE and chaining used', async (t) => {
  const { host, applet } = await readyCard();
  let st = await status(host);
  t.is(st.balance, 100_000);
  t.is(st.counter, 1, 'the load request consumed counter 1');
  t.is(st.coins, 3);
  const req = paymentRequest(pki, pki.terminal, { amount: 5_000 });
  t.true(req.length > 255, 'the request needs command chaining');
  // Count APDUs to prove chaining and GET RESPONSE happened.
  const seen: number[] = [];
  const orig = applet.process.bind(applet);
  const counting = new Host({
    process: async (a: Uint8Array) => {
      seen.push(a[1]!);
      return orig(a);
    },
  } as never);
  const r = await counting.pay(req);
  t.is(r.sw, 0x9000);
  t.true(seen.filter((i) => i === INS.PAY).length >= 2, 'chained');
  t.true(seen.includes(INS.GET_RESPONSE), 'long response through GET RESPONSE');
  const v = validate(r.data, req);
  t.true(v.ok, JSON.stringify(v));
  if (!v.ok) return;
  t.is(v.transfer.counter, 2);
  t.is(v.transfer.cvm, Cvm.NONE);
  t.deepEqual(
    v.transfer.outputs.map((o) => o.value),
    [5_000, 55_000],
    'largest coin first, change back',
  );
  st = await status(host);
  t.is(st.balance, 95_000);
  t.is(st.offlineValue, 5_000);
  t.is(st.offlineCount, 1);
  t.is(st.counter, 2);
  t.is(st.coins, 3);
  // A second payment spends the change output; the handover carries the history.
  const req2 = paymentRequest(pki, pki.terminal, { amount: 50_000, time: T0 + 60 });
  await host.verifyPin(PIN);
  const r2 = await host.pay(req2);
  t.is(r2.sw, 0x9000);
  const v2 = validate(r2.data, req2);
  t.true(v2.ok, JSON.stringify(v2));
  if (v2.ok) {
    t.is(v2.handover.history.length, 1);
    t.is(v2.transfer.cvm, Cvm.OFFLINE_PIN);
    t.is(v2.inputs[0]!.id.length, 32, 'the change output of the first transfer');
  }
  t.is((await status(host)).floor, T0 + 60, 'floor raised by the verified request time');
});

test('firmware handovers are byte-identical to the protocol ReferenceWallet for the same key, state and requests', async (t) => {
  const values = [20_000, 7_000, 7_000, 3_000];
  const { host, applet } = await readyCard(values, { seed: 'twin' });
  const st = applet.committedState;
  const wallet = new ReferenceWallet({ signer: keyPairSigner({ secretKey: st.secretKey!, publicKey: st.publicKey! }), chain: st.chain! });
  // Bring the wallet to the same state through the same receipt.
  const challenge = new Uint8Array(16);
  const walletReq = wallet.beginSync(challenge);
  t.is(openSigned('SyncRequest', walletReq).message.counter, 1);
  // The card's receipt answers the card's own request; rebuild the same for the wallet from the card's state.
  const receipt = st.receipt!;
  const w2 = new ReferenceWallet({
    signer: keyPairSigner({ secretKey: st.secretKey!, publicKey: st.publicKey! }),
    chain: st.chain!,
    state: {
      counter: st.counter,
      prev: st.prev,
      history: [],
      holdings: st.coins.map((c) => ({ id: c.id, value: c.value })),
      tokens: Object.fromEntries(st.tokens.map((b) => [Buffer.from(openSigned('Token', b).message.serial).toString('hex'), b])),
      receipt,
      nonces: [],
      // The card's trusted time (its last receipt's, SPEC §10.8) is part of the state too.
      trusted: st.trusted!,
    },
  });
  for (const [i, amount] of [9_000, 14_000, 2_000, 500, 6_000].entries()) {
    const req = paymentRequest(pki, i % 2 ? pki.canteen : pki.terminal, { amount, time: T0 + i });
    const pin = amount > pki.limits.cvmLimit;
    if (pin) t.is((await host.verifyPin(PIN)).sw, 0x9000);
    const card = await host.pay(req);
    t.is(card.sw, 0x9000);
    const ref = w2.pay(openSigned('PaymentRequest', req).message, { cvm: pin ? Cvm.OFFLINE_PIN : Cvm.NONE });
    t.is(toHex(card.data), toHex(ref.handover), `payment ${i}`);
    t.true(validate(card.data, req).ok);
  }
  // The sync requests agree too.
  t.is(toHex((await host.syncBegin(challenge)).data), toHex(w2.beginSync(challenge)));
});

test('firmware and ReferenceWallet select the same inputs with expiring coins: a coin expired at max(request time, floor) is skipped by both', async (t) => {
  const c = newCard(new MemoryStorage(), 'twin-expiry');
  await personalize(c.host, pki);
  // A receipt by hand: one token per expiry (the fixture ledger gives all tokens one expiry).
  const begin = await c.host.syncBegin(pki.rng(16), true);
  t.is(begin.sw, 0x9000);
  const req = openSigned('SyncRequest', begin.data);
  const coin = (value: number, expires?: number) =>
    signMessage(
      'Token',
      {
        serial: pki.rng(16),
        value,
        currency: CURRENCY_KZT,
        owner: req.message.card,
        issued: T0,
        ...(expires !== undefined ? { expires } : {}),
      },
      pki.ledger.signer,
    );
  const tokens = [coin(1_000, T0 + 50), coin(20_000), coin(7_000, T0 + 10_000)];
  const receipt = signMessage(
    'SyncReceipt',
    { card: req.message.card, counter: req.message.counter, request: payloadHash(req.cose), tokens, time: T0, loaded: 28_000, voided: [] },
    pki.ledger.signer,
  );
  t.is((await c.host.syncComplete(receipt, true)).sw, 0x9000);
  const st = c.applet.committedState;
  const wallet = new ReferenceWallet({
    signer: keyPairSigner({ secretKey: st.secretKey!, publicKey: st.publicKey! }),
    chain: st.chain!,
    state: {
      counter: st.counter,
      prev: st.prev,
      history: [],
      holdings: st.coins.map((x) => ({
        id: x.id,
        value: x.value,
        ...(x.mark ? { mark: x.mark } : {}),
        ...(x.expires !== undefined ? { expires: x.expires } : {}),
      })),
      tokens: Object.fromEntries(st.tokens.map((b) => [toHex(openSigned('Token', b).message.serial), b])),
      receipt: st.receipt!,
      nonces: [],
      trusted: st.trusted!,
      floor: st.floor,
    },
  });
  // [amount, time, both pay?]: the 1_000 coin expires at T0 + 50.
  const steps: [number, number, boolean][] = [
    [5_000, T0 + 10, true], // the 20_000 coin; change 15_000
    [2_000, T0 + 20, true], // the change; change 13_000
    [20_500, T0 + 60, false], // 13_000 + 7_000 fall short; the expired 1_000 would have covered it
    [19_000, T0 + 70, true], // 13_000 + 7_000; change 1_000 keeps the 7_000 coin's expiry
    [500, T0 + 80, true], // the 1_000 change
    [1_000, T0 + 40, false], // dated before the expiry, but the floor is T0 + 80: the 1_000 coin stays expired
  ];
  for (const [i, [amount, time, pays]] of steps.entries()) {
    const request = paymentRequest(pki, pki.terminal, { amount, time });
    const pin = amount > pki.limits.cvmLimit;
    if (pin) t.is((await c.host.verifyPin(PIN)).sw, 0x9000);
    const card = await c.host.pay(request);
    const cvm = pin ? Cvm.OFFLINE_PIN : Cvm.NONE;
    if (!pays) {
      t.is(card.sw, 0x6985, `step ${i}: the card refuses`);
      t.throws(
        () => wallet.pay(openSigned('PaymentRequest', request).message, { cvm }),
        { message: /insufficient funds/ },
        `step ${i}: the wallet refuses`,
      );
      continue;
    }
    t.is(card.sw, 0x9000, `step ${i}`);
    t.is(toHex(card.data), toHex(wallet.pay(openSigned('PaymentRequest', request).message, { cvm }).handover), `step ${i}: same handover`);
    t.true(validate(card.data, request).ok);
  }
  t.is(
    toHex(wallet.state.holdings.find((h) => h.value === 500)!.id),
    toHex(c.applet.committedState.coins.find((x) => x.value === 500)!.id),
  );
  t.is(wallet.state.holdings.find((h) => h.value === 500)!.expires, T0 + 10_000, 'the change keeps the earliest expiry of its inputs');
  const challenge = new Uint8Array(16).fill(9);
  t.is(toHex((await c.host.syncBegin(challenge)).data), toHex(wallet.beginSync(challenge)));
});

test('limits: per payment, offline total, offline count -> 6985; CVM limit -> 6982 until VERIFY PIN; the verification is consumed by one PAY', async (t) => {
  const limits = { perPayment: 30_000, offlineTotal: 50_000, offlineCount: 3, cvmLimit: 10_000 };
  const { host } = await readyCard([40_000, 40_000], { limits });
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 30_001 }))).sw, 0x6985, 'per payment');
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 10_001 }))).sw, 0x6982, 'CVM needed');
  t.is((await host.verifyPin(PIN)).sw, 0x9000);
  t.is((await status(host)).pinVerified, true);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 30_000 }))).sw, 0x9000);
  t.is((await status(host)).pinVerified, false, 'consumed');
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 10_001 }))).sw, 0x6982, 'consumed: PIN needed again');
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 10_000 }))).sw, 0x9000, 'at the CVM limit: no PIN');
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 10_001 }))).sw, 0x6985, 'offline total would be 50_001');
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 5_000 }))).sw, 0x9000, 'third payment');
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 1 }))).sw, 0x6985, 'offline count 3 reached');
  // A sync resets the offline totals.
  const begin = await host.syncBegin(new Uint8Array(16));
  t.is((await host.syncComplete(ledger.receipt(begin.data))).sw, 0x9000);
  const st = await status(host);
  t.is(st.offlineCount, 0);
  t.is(st.offlineValue, 0);
  t.is(st.balance, 80_000 - 45_000);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 1 }))).sw, 0x9000);
});

test('PIN: 63Cx counts down, 6983 when blocked, VERIFY without data reports tries, UNBLOCK with the PUK, CHANGE PIN', async (t) => {
  const { host } = await readyCard([1_000]);
  t.is((await host.cmd(INS.VERIFY_PIN, 0, undefined, false)).sw, 0x63c3, 'query: 3 tries');
  t.is((await host.verifyPin('0000')).sw, 0x63c2);
  t.is((await host.verifyPin('12a4')).sw, 0x6a80, 'bad format costs no try');
  t.is((await host.verifyPin('1')).sw, 0x6a80, 'too short');
  t.is((await host.verifyPin('0000')).sw, 0x63c1);
  t.is((await host.verifyPin(PIN)).sw, 0x9000, 'right PIN resets the counter');
  t.is((await host.cmd(INS.VERIFY_PIN, 0, undefined, false)).sw, 0x9000, 'query while verified');
  t.is((await status(host)).pinTries, 3);
  for (const left of [2, 1, 0]) t.is((await host.verifyPin('9999')).sw, 0x63c0 | left);
  t.is((await host.verifyPin(PIN)).sw, 0x6983, 'blocked: even the right PIN');
  t.is((await host.cmd(INS.VERIFY_PIN, 0, undefined, false)).sw, 0x6983);
  t.is(
    (await host.pay(paymentRequest(pki, pki.terminal, { amount: 500 }))).sw,
    0x9000,
    'below the CVM limit a blocked PIN does not matter',
  );
  const unblock = (puk: string, next: string) =>
    host.cmd(INS.UNBLOCK_PIN, 0, encodeFormat(UnblockPinSchema, { puk: enc(puk), next: enc(next) }), false);
  t.is((await unblock('00000000', '4321')).sw, 0x63c9, 'wrong PUK: 9 of 10 left');
  t.is((await unblock(PUK, '43a1')).sw, 0x6a80, 'new PIN malformed');
  t.is((await host.cmd(INS.UNBLOCK_PIN, 0, Uint8Array.of(0xff), false)).sw, 0x6a80);
  t.is((await unblock(PUK, '4321')).sw, 0x9000);
  const st = await status(host);
  t.is(st.pinTries, 3);
  t.is(st.pukTries, 10, 'PUK counter reset by the right PUK');
  t.is((await host.verifyPin(PIN)).sw, 0x63c2, 'old PIN gone');
  t.is((await host.verifyPin('4321')).sw, 0x9000);
  const change = (current: string, next: string) =>
    host.cmd(INS.CHANGE_PIN, 0, encodeFormat(ChangePinSchema, { current: enc(current), next: enc(next) }), false);
  t.is((await change('0000', '5555')).sw, 0x63c2);
  t.is((await change('4321', '55')).sw, 0x6a80);
  t.is((await change('4321', '5555')).sw, 0x9000);
  t.is((await host.verifyPin('4321')).sw, 0x63c2);
  t.is((await host.verifyPin('5555')).sw, 0x9000);
});

test('PIN: the PUK blocks for good after its tries', async (t) => {
  const { host } = await readyCard([1_000]);
  const unblock = (puk: string) =>
    host.cmd(INS.UNBLOCK_PIN, 0, encodeFormat(UnblockPinSchema, { puk: enc(puk), next: enc('1111') }), false);
  for (let left = 9; left >= 0; left--) t.is((await unblock('87654321')).sw, 0x63c0 | left);
  t.is((await unblock(PUK)).sw, 0x6983);
});

test('PIN: the retry counter is committed before the comparison (power cut right after the decrement keeps the try spent)', async (t) => {
  const storage = new MemoryStorage();
  const c = newCard(storage);
  await personalize(c.host, pki);
  // Cut the power at the write AFTER the decrement (the one that would restore the counter).
  let writes = 0;
  let cutAt = -1;
  const cutting = {
    read: (s: number) => storage.read(s),
    write: (s: number, d: Uint8Array) => {
      writes++;
      if (writes === cutAt) throw new Error('power cut');
      storage.write(s, d);
    },
  };
  const card = newCard(cutting, 'card2');
  await card.host.select();
  cutAt = writes + 2;
  await t.throwsAsync(card.host.verifyPin(PIN), { message: 'power cut' });
  card.applet.powerOn();
  await card.host.select();
  t.is((await status(card.host)).pinTries, 2, 'the decrement is durable although the PIN was right');
  t.is((await card.host.verifyPin(PIN)).sw, 0x9000);
  t.is((await status(card.host)).pinTries, 3);
});

test('power-on clears the PIN verification, the selection and a pending GET RESPONSE', async (t) => {
  const { host, applet } = await readyCard();
  t.is((await host.verifyPin(PIN)).sw, 0x9000);
  const rsp = await host.raw(encodeCommand({ cla: 0x80, ins: INS.GET_CERTIFICATES, p1: 0, p2: 0, le: 16 }));
  t.is(rsp.sw & 0xff00, 0x6100);
  applet.powerOn();
  t.is((await host.raw(Uint8Array.of(0x00, 0xc0, 0, 0, 0))).sw, 0x6985);
  t.is((await host.status()).sw, 0x6986, 'not selected after power-on');
  await host.select();
  t.false((await status(host)).pinVerified);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 20_000 }))).sw, 0x6982);
});

test('a terminal without an acquiring bank certificate, a foreign root, a bad signature or a merchant mismatch gets 6A80 and nothing signed', async (t) => {
  const { host } = await readyCard();
  t.is((await host.pay(paymentRequest(pki, pki.rogue, { amount: 100 }))).sw, 0x6a80, 'bank lacks ACQUIRING');
  t.is((await host.pay(paymentRequest(pki, pki.foreign, { amount: 100 }))).sw, 0x6a80, 'other root');
  const good = paymentRequest(pki, pki.terminal, { amount: 100 });
  const forged = good.slice();
  forged[forged.length - 5] ^= 1;
  t.is((await host.pay(forged)).sw, 0x6a80, 'signature');
  t.is(
    (await host.pay(paymentRequest(pki, pki.terminal, { amount: 100, merchant: 'school-7' }))).sw,
    0x6a80,
    'merchant not the certified one',
  );
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 100, mcc: 5814 }))).sw, 0x6a80, 'mcc not the certified one');
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 100, currency: 840 }))).sw, 0x6a80, 'currency');
  t.is(
    (await host.pay(paymentRequest(pki, pki.terminal, { amount: 100, time: T0 + 20 * 365 * 86400 }))).sw,
    0x6a80,
    'terminal chain expired at its own time',
  );
  // A request signed by another key than the certified terminal's.
  const other = signMessage('PaymentRequest', { ...openSigned('PaymentRequest', good).message }, pki.canteen.signer);
  t.is((await host.pay(other)).sw, 0x6a80, 'signed by another terminal');
  t.is((await host.pay(Uint8Array.of(1, 2, 3))).sw, 0x6a80, 'garbage');
  t.is((await host.cmd(INS.PAY, 0, undefined)).sw, 0x6a80, 'no data');
  const st = await status(host);
  t.is(st.counter, 1, 'nothing signed');
  t.is(st.balance, 100_000);
  t.is((await host.pay(good)).sw, 0x9000);
});

test('certificate memo: a PAY remembers the terminal chain it verified (SHA-256 of issuer kid and certificate bytes); a certificate changed in any byte is verified afresh and refused', async (t) => {
  const { host, applet } = await readyCard();
  t.deepEqual(applet.committedState.certMemo ?? [], [], 'nothing remembered before the first PAY');
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 100 }))).sw, 0x9000);
  const entry = (issuer: Uint8Array, cert: Uint8Array) => toHex(sha256(concatBytes(keyId(issuer), cert)));
  const bank = entry(pki.acquiring.keys.publicKey, pki.terminal.cert);
  const acq = entry(pki.root.keys.publicKey, pki.acquiring.cert);
  t.deepEqual(
    (applet.committedState.certMemo ?? []).map(toHex),
    [acq, bank],
    'the bank certificate (root-signed) first, then the terminal',
  );
  // The same claims with another signature (one bit): other bytes, so verified and refused.
  const flip = (b: Uint8Array) => {
    const c = b.slice();
    c[c.length - 5] ^= 1;
    return c;
  };
  const badLeaf = { ...pki.terminal, chain: [flip(pki.terminal.cert), pki.acquiring.cert] };
  t.is((await host.pay(paymentRequest(pki, badLeaf, { amount: 100 }))).sw, 0x6a80, 'terminal certificate with a broken signature');
  const badBank = { ...pki.terminal, chain: [pki.terminal.cert, flip(pki.acquiring.cert)] };
  t.is((await host.pay(paymentRequest(pki, badBank, { amount: 100 }))).sw, 0x6a80, 'bank certificate with a broken signature');
  t.is((await status(host)).counter, 2, 'nothing signed for them');
  // Another terminal of the same bank: its certificate is added, the bank's entry moves to the end.
  t.is((await host.pay(paymentRequest(pki, pki.canteen, { amount: 100 }))).sw, 0x9000);
  const canteen = entry(pki.acquiring.keys.publicKey, pki.canteen.cert);
  t.deepEqual((applet.committedState.certMemo ?? []).map(toHex), [bank, acq, canteen]);
  // Committed with the PAY: it survives a power cycle and a sync.
  applet.powerOn();
  t.deepEqual((applet.committedState.certMemo ?? []).map(toHex), [bank, acq, canteen]);
  await host.select();
  const begin = await host.syncBegin(new Uint8Array(16));
  t.is((await host.syncComplete(ledger.receipt(begin.data))).sw, 0x9000);
  t.deepEqual((applet.committedState.certMemo ?? []).map(toHex), [bank, acq, canteen]);
  // Still every other check: an expired terminal chain is refused although its signatures are remembered.
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 100, time: T0 + 20 * 365 * 86400 }))).sw, 0x6a80);
});

test('a card that stays powered prepares a terminal key at its second request and verifies with it: the same answers, forged and high-S requests refused; another terminal and a power-on forget it', async (t) => {
  const { host, applet } = await readyCard();
  const kid = (x: { keys: { publicKey: Uint8Array } }) => toHex(keyId(x.keys.publicKey));
  const prepared = () => (applet.preparedTerminal ? toHex(applet.preparedTerminal) : undefined);
  t.is(prepared(), undefined);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 100 }))).sw, 0x9000);
  t.is(prepared(), undefined, 'one request from the terminal: nothing prepared');
  // The second request's chain verifies, so its key is prepared, and the prepared key refuses the forgery.
  const good = paymentRequest(pki, pki.terminal, { amount: 100, time: T0 + 1 });
  const forged = good.slice();
  forged[forged.length - 5]! ^= 1;
  t.is((await host.pay(forged)).sw, 0x6a80, 'a changed signature');
  t.is(prepared(), kid(pki.terminal));
  // The COSE_Sign1 ends with r || s: the high-S twin of a valid signature is refused as the reference refuses it.
  const s = BigInt('0x' + toHex(good.subarray(good.length - 32)));
  const twin = good.slice();
  twin.set(fromHex((P256_N - s).toString(16).padStart(64, '0')), good.length - 32);
  t.is((await host.pay(twin)).sw, 0x6a80, 'the high-S twin');
  const other = signMessage('PaymentRequest', { ...openSigned('PaymentRequest', good).message }, pki.canteen.signer);
  t.is((await host.pay(other)).sw, 0x6a80, 'the same request signed by another key');
  t.is((await status(host)).counter, 2, 'nothing signed for them');
  t.is((await host.pay(good)).sw, 0x9000, 'the valid request, verified with the prepared key');
  t.is(prepared(), kid(pki.terminal));
  t.is((await status(host)).counter, 3);
  // Another terminal: verified by the reference; the prepared key is dropped (one key, the last terminal's).
  t.is((await host.pay(paymentRequest(pki, pki.canteen, { amount: 100, time: T0 + 2 }))).sw, 0x9000);
  t.is(prepared(), undefined);
  t.is((await host.pay(paymentRequest(pki, pki.canteen, { amount: 100, time: T0 + 3 }))).sw, 0x9000);
  t.is(prepared(), kid(pki.canteen));
  // RAM only: a power-on forgets it.
  applet.powerOn();
  t.is(prepared(), undefined);
  await host.select();
  t.is((await host.pay(paymentRequest(pki, pki.canteen, { amount: 100, time: T0 + 4 }))).sw, 0x9000);
  t.is(prepared(), undefined, 'the first request of a power session is verified by the reference');
  t.is((await status(host)).counter, 6);
});

test('a replayed nonce gets 6984 (in the history and after a sync, from the nonce memory)', async (t) => {
  const { host } = await readyCard();
  const nonce = pki.rng(16);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 100, nonce }))).sw, 0x9000);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 100, nonce, time: T0 + 5 }))).sw, 0x6984);
  t.is((await host.pay(paymentRequest(pki, pki.canteen, { amount: 100, nonce }))).sw, 0x6984, 'from another terminal too');
  const begin = await host.syncBegin(new Uint8Array(16));
  t.is((await host.syncComplete(ledger.receipt(begin.data))).sw, 0x9000);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 100, nonce }))).sw, 0x6984, 'remembered across the sync');
});

test('torn tap: a retry naming the last nonce gets the same handover byte for byte and nothing new is signed', async (t) => {
  const { host } = await readyCard();
  const first = paymentRequest(pki, pki.terminal, { amount: 2_500 });
  const r1 = await host.pay(first);
  t.is(r1.sw, 0x9000);
  const counter = (await status(host)).counter;
  const firstNonce = openSigned('PaymentRequest', first).message.nonce;
  const retry = paymentRequest(pki, pki.terminal, { amount: 2_500, retryOf: firstNonce, time: T0 + 3 });
  const r2 = await host.pay(retry);
  t.is(r2.sw, 0x9000);
  t.is(toHex(r2.data), toHex(r1.data));
  const st = await status(host);
  t.is(st.counter, counter);
  t.is(st.balance, 100_000 - 2_500);
  // The terminal accepts it against the interrupted request.
  const v = validateHandover(r2.data, {
    trust,
    request: [openSigned('PaymentRequest', retry).message, openSigned('PaymentRequest', first).message],
  });
  t.true(v.ok);
  // The same retry from another terminal is a new payment (its nonce is fresh).
  const stolen = paymentRequest(pki, pki.canteen, { amount: 2_500, retryOf: firstNonce });
  const r3 = await host.pay(stolen);
  t.is(r3.sw, 0x9000);
  t.not(toHex(r3.data), toHex(r1.data));
  t.is((await status(host)).counter, counter + 1);
  // retryOf naming an older transfer is no retry: its own nonce is new, so it pays.
  const r4 = await host.pay(paymentRequest(pki, pki.terminal, { amount: 100, retryOf: firstNonce }));
  t.is(r4.sw, 0x9000);
  t.is((await status(host)).counter, counter + 2);
});

test('marks: marked value pays only where allowed, is preferred there, keeps its mark in change, hops decrease', async (t) => {
  const meal: Mark = { mccs: [5814], hops: 2 };
  const { host } = await readyCard([10_000, 3_000], { marks: [undefined, meal] });
  // At the canteen the marked 3_000 token is used first.
  const r1 = await host.pay(paymentRequest(pki, pki.canteen, { amount: 1_000 }));
  t.is(r1.sw, 0x9000);
  const t1 = openSigned('Transfer', decodeMessage('Handover', r1.data).transfer).message;
  t.deepEqual(t1.outputs[0]!.mark, { mccs: [5814], hops: 1 });
  t.deepEqual(t1.outputs[1]!.mark, meal, 'change keeps the mark');
  t.is(t1.outputs[1]!.value, 2_000);
  // At the grocery only unmarked value may be used: 10_000 is there.
  const r2 = await host.pay(paymentRequest(pki, pki.terminal, { amount: 9_000 }));
  t.is(r2.sw, 0x9000);
  t.is(openSigned('Transfer', decodeMessage('Handover', r2.data).transfer).message.outputs[0]!.mark, undefined);
  // 2_000 marked + 1_000 unmarked remain: 1_500 at the grocery cannot be paid (marked value not allowed there).
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 1_500 }))).sw, 0x6985);
  t.is((await status(host)).balance, 3_000);
  // One mark class per transfer: 2_500 at the canteen needs both classes -> refused.
  t.is((await host.pay(paymentRequest(pki, pki.canteen, { amount: 2_500 }))).sw, 0x6985);
  const r3 = await host.pay(paymentRequest(pki, pki.canteen, { amount: 2_000 }));
  t.is(r3.sw, 0x9000);
  const t3 = openSigned('Transfer', decodeMessage('Handover', r3.data).transfer).message;
  t.deepEqual(t3.outputs[0]!.mark, { mccs: [5814], hops: 1 });
  t.true(validate(r3.data, paymentRequest(pki, pki.canteen, { amount: 2_000, nonce: t3.nonce, time: t3.time })).ok);
});

test('time bound after personalization: a request dated more than CARD_TIME_AHEAD after the trusted time is 6985, nothing signed, the floor unmoved; at the bound 9000', async (t) => {
  const c = newCard(new MemoryStorage(), 'time-perso');
  await personalize(c.host, pki); // WRITE CERTIFICATES and SET CONFIG at T0 - 100
  const personalized = T0 - 100;
  t.is((await status(c.host)).trusted, personalized, 'personalization time is the first trusted time');
  // A receipt dated before the personalization leaves the trusted time where it is (it never goes back).
  await load(c.host, ledger, 50_000, { time: T0 - 10_000 });
  t.is((await status(c.host)).trusted, personalized);
  const bound = personalized + CARD_TIME_AHEAD;
  const before = await status(c.host);
  const state = toHex(encodeState(c.applet.committedState));
  const late = paymentRequest(pki, pki.terminal, { amount: 1_000, time: bound + 1 });
  t.is((await c.host.pay(late)).sw, 0x6985, 'one second beyond the bound');
  t.deepEqual(await status(c.host), before, 'counter, floor, balance, last nonce unchanged');
  t.is(toHex(encodeState(c.applet.committedState)), state, 'nothing committed');
  const atBound = paymentRequest(pki, pki.terminal, { amount: 1_000, time: bound });
  const r = await c.host.pay(atBound);
  t.is(r.sw, 0x9000, 'exactly at the bound');
  t.true(validate(r.data, atBound).ok);
  const after = await status(c.host);
  t.is(after.floor, bound, 'the paid request raised the floor');
  t.is(after.trusted, personalized, "a terminal's time is never trusted");
  t.is(
    (await c.host.pay(paymentRequest(pki, pki.terminal, { amount: 1_000, time: bound + 1 }))).sw,
    0x6985,
    'a raised floor does not extend the bound',
  );
});

test("time bound after a sync: the applied receipt's time is the trusted time; a torn-tap retry dated beyond it is refused too", async (t) => {
  const { host } = await readyCard([40_000, 40_000], { seed: 'time-sync' });
  t.is((await status(host)).trusted, T0, "the load receipt's time");
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 1_000, time: T0 + CARD_TIME_AHEAD + 1 }))).sw, 0x6985);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 1_000, time: T0 + 60 }))).sw, 0x9000);
  const synced = T0 + 20 * 86_400;
  const begin = await host.syncBegin(new Uint8Array(16));
  t.is((await host.syncComplete(ledger.receipt(begin.data, { time: synced }))).sw, 0x9000);
  t.is((await status(host)).trusted, synced, 'raised by the sync');
  const bound = synced + CARD_TIME_AHEAD;
  const counter = (await status(host)).counter;
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 2_000, time: bound + 1 }))).sw, 0x6985);
  t.is((await status(host)).counter, counter, 'nothing signed');
  const nonce = pki.rng(16);
  const ok = await host.pay(paymentRequest(pki, pki.terminal, { amount: 2_000, time: bound, nonce }));
  t.is(ok.sw, 0x9000, 'at the bound');
  t.is(
    (await host.pay(paymentRequest(pki, pki.terminal, { amount: 2_000, time: bound + 1, retryOf: nonce }))).sw,
    0x6985,
    'retry beyond the bound',
  );
  const retry = await host.pay(paymentRequest(pki, pki.terminal, { amount: 2_000, time: bound, retryOf: nonce }));
  t.is(retry.sw, 0x9000);
  t.is(toHex(retry.data), toHex(ok.data), 'the stored handover at the bound');
});

test("a state record written before the trusted time existed still loads: trusted = the kept receipt's time, else the card certificate's iat", async (t) => {
  const legacy = (st: CardState) => {
    const { trusted: _t, ...old } = st;
    const body = encodeState(old);
    t.false((decodeDeterministic(body) as Map<number, unknown>).has(30), 'no key 30 in the old record');
    const storage = new MemoryStorage();
    const j = new ShadowJournal(storage);
    j.load();
    j.commit(body);
    const applet = new Applet({ storage, random: seededRandom('legacy') });
    return { applet, host: new Host(applet) };
  };
  // Synced card: the receipt's time.
  const synced = await readyCard([30_000], { seed: 'legacy-1' });
  const old = legacy(synced.applet.committedState);
  await old.host.select();
  const st = await status(old.host);
  t.is(st.trusted, T0, "the kept receipt's time");
  t.is(st.balance, 30_000);
  t.is((await old.host.pay(paymentRequest(pki, pki.terminal, { amount: 1_000, time: T0 + CARD_TIME_AHEAD + 1 }))).sw, 0x6985);
  t.is((await old.host.pay(paymentRequest(pki, pki.terminal, { amount: 1_000, time: T0 + CARD_TIME_AHEAD }))).sw, 0x9000);
  t.is(old.applet.committedState.trusted, T0, 'committed with the next state change');
  // Never synced: the card certificate's iat (the fixtures issue it a year before T0).
  const fresh = newCard(new MemoryStorage(), 'legacy-2');
  await personalize(fresh.host, pki);
  const st2 = fresh.applet.committedState;
  const iat = openSigned('Certificate', st2.chain![0]!).message.iat;
  t.is(legacyTrustedTime(st2), iat);
  const old2 = legacy(st2);
  await old2.host.select();
  t.is((await status(old2.host)).trusted, iat);
});

test('insufficient funds and expired tokens: 6985', async (t) => {
  const c = newCard(new MemoryStorage(), 'exp');
  await personalize(c.host, pki);
  t.is((await c.host.pay(paymentRequest(pki, pki.terminal, { amount: 1 }))).sw, 0x6985, 'empty card');
  await load(c.host, ledger, 5_000, { expires: T0 + 100 });
  t.is((await c.host.pay(paymentRequest(pki, pki.terminal, { amount: 5_001 }))).sw, 0x6985);
  t.is(
    (await c.host.pay(paymentRequest(pki, pki.terminal, { amount: 1_000, time: T0 + 101 }))).sw,
    0x6985,
    'token expired at the request time',
  );
  t.is((await c.host.pay(paymentRequest(pki, pki.terminal, { amount: 1_000, time: T0 + 50 }))).sw, 0x9000);
});

test('SYNC/LOAD: repeated BEGIN returns the pending request; PAY refused while pending; receipt checks; voided orphans come back', async (t) => {
  const { host, applet } = await readyCard([50_000, 50_000]);
  const r = await host.pay(paymentRequest(pki, pki.terminal, { amount: 7_000 }));
  t.is(r.sw, 0x9000);
  t.is((await host.syncComplete(Uint8Array.of(1), false)).sw, 0x6985, 'COMPLETE without BEGIN');
  t.is((await host.syncBegin(new Uint8Array(15))).sw, 0x6700, 'challenge must be 16 bytes');
  const b1 = await host.syncBegin(new Uint8Array(16).fill(1));
  t.is(b1.sw, 0x9000);
  const cardKey = subjectKey(openSigned('Certificate', applet.committedState.chain![0]!).message).publicKey;
  const req = verifySigned('SyncRequest', b1.data, cardKey).message;
  t.is(req.counter, 3);
  t.is(req.history.length, 1);
  t.is(req.balance, 93_000);
  t.is((await host.syncBegin(new Uint8Array(16).fill(2))).data.length, b1.data.length);
  t.is(toHex((await host.syncBegin(new Uint8Array(16).fill(2))).data), toHex(b1.data), 'same pending request, no new counter');
  t.is((await status(host)).counter, 3);
  t.true((await status(host)).syncPending);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 1 }))).sw, 0x6985, 'PAY while a sync is pending');
  // Wrong receipts.
  const other = signMessage('SyncReceipt', { ...openSigned('SyncReceipt', ledger.receipt(b1.data)).message }, pki.issuing.signer);
  t.is((await host.syncComplete(other)).sw, 0x6a80, 'not signed by the ledger');
  const wrongCounter = ledger.receipt(b1.data);
  const wc = openSigned('SyncReceipt', wrongCounter).message;
  t.is((await host.syncComplete(signMessage('SyncReceipt', { ...wc, counter: wc.counter + 1 }, pki.ledger.signer))).sw, 0x6a80, 'counter');
  t.is(
    (await host.syncComplete(signMessage('SyncReceipt', { ...wc, request: new Uint8Array(32) }, pki.ledger.signer))).sw,
    0x6a80,
    'request hash',
  );
  t.is((await host.syncComplete(ledger.receipt(b1.data, { values: [93_000, 1] }))).sw, 0x6a80, 'value created');
  t.is((await host.syncComplete(ledger.receipt(b1.data, { values: [92_999] }))).sw, 0x6a80, 'value lost');
  t.is((await host.syncComplete(ledger.receipt(b1.data, { loaded: 0 }), true)).sw, 0x6a80, 'LOAD needs loaded > 0');
  t.is(
    (await host.syncComplete(ledger.receipt(b1.data, { voided: [new Uint8Array(32)] }))).sw,
    0x6a80,
    'voided hash not in the history, and no value for it',
  );
  const tok = openSigned('Token', wc.tokens[0]!).message;
  const foreignTok = signMessage('Token', { ...tok, owner: new Uint8Array(16) }, pki.ledger.signer);
  t.is(
    (await host.syncComplete(signMessage('SyncReceipt', { ...wc, tokens: [foreignTok] }, pki.ledger.signer))).sw,
    0x6a80,
    'token of another owner',
  );
  const held = applet.committedState.coins[0]!;
  const dupTok = signMessage('Token', { ...tok, serial: held.id.length === 16 ? held.id : tok.serial }, pki.ledger.signer);
  if (held.id.length === 16) {
    t.is(
      (await host.syncComplete(signMessage('SyncReceipt', { ...wc, tokens: [dupTok] }, pki.ledger.signer))).sw,
      0x6a80,
      'serial already held',
    );
  }
  t.is((await host.syncComplete(Uint8Array.of(0xa0))).sw, 0x6a80, 'garbage');
  t.true((await status(host)).syncPending, 'still pending after the refusals');
  // The orphan transfer is voided: its 7_000 come back.
  const orphan = payloadHash(openSigned('Transfer', req.history[0]!).cose);
  const good = ledger.receipt(b1.data, { voided: [orphan], loaded: 1_000, values: [50_000, 51_000] });
  t.is((await host.syncComplete(good, true)).sw, 0x9000);
  const st = await status(host);
  t.is(st.balance, 101_000);
  t.false(st.syncPending);
  t.is(st.offlineCount, 0);
  t.is((await host.syncComplete(good)).sw, 0x6985, 'the receipt cannot be applied twice');
  // The chain restarts from the receipt: the next handover is anchored on it.
  const req2 = paymentRequest(pki, pki.terminal, { amount: 1_000 });
  const p = await host.pay(req2);
  t.is(p.sw, 0x9000);
  const v = validate(p.data, req2);
  t.true(v.ok, JSON.stringify(v));
  if (v.ok) t.is(toHex(v.transfer.prev), toHex(payloadHash(openSigned('SyncReceipt', good).cose)));
});

test('SYNC: an orphan voided after the sync that reported it (not in the current history) comes back as extra value', async (t) => {
  const { host } = await readyCard([50_000]);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 7_000 }))).sw, 0x9000);
  // First sync: the transfer is reported, the ledger keeps it waiting for the terminal.
  const b1 = await host.syncBegin(new Uint8Array(16).fill(3));
  const r1 = openSigned('SyncRequest', b1.data).message;
  const orphan = payloadHash(openSigned('Transfer', r1.history[0]!).cose);
  t.is((await host.syncComplete(ledger.receipt(b1.data))).sw, 0x9000);
  // Second sync, after the void window: the orphan is voided; the card no longer holds it.
  const b2 = await host.syncBegin(new Uint8Array(16).fill(4));
  t.is(openSigned('SyncRequest', b2.data).message.history.length, 0);
  t.is(
    (await host.syncComplete(ledger.receipt(b2.data, { voided: [orphan], values: [43_000] }))).sw,
    0x6a80,
    'no value for the voided orphan',
  );
  t.is(
    (await host.syncComplete(ledger.receipt(b2.data, { voided: [orphan, orphan], values: [50_000] }))).sw,
    0x6a80,
    'duplicate voided hash',
  );
  t.is((await host.syncComplete(ledger.receipt(b2.data, { voided: [orphan], values: [50_000] }))).sw, 0x9000);
  t.is((await status(host)).balance, 50_000);
});

test("SYNC: a revoked card's receipt redeems its value to the bank: no tokens, balance 0, history cleared; a redeemed above the value is 6A80", async (t) => {
  const { host } = await readyCard([50_000]);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 7_000 }))).sw, 0x9000);
  const b1 = await host.syncBegin(new Uint8Array(16).fill(5));
  const req = openSigned('SyncRequest', b1.data).message;
  t.is(req.balance, 43_000);
  t.is(req.history.length, 1);
  const orphan = payloadHash(openSigned('Transfer', req.history[0]!).cose);
  // Refusals leave the request pending.
  t.is((await host.syncComplete(ledger.receipt(b1.data, { redeemed: 43_001, values: [] }))).sw, 0x6a80, 'redeemed above the balance');
  t.is(
    (await host.syncComplete(ledger.receipt(b1.data, { redeemed: 42_999, values: [] }))).sw,
    0x6a80,
    'value lost: 1 tiyn neither redeemed nor in tokens',
  );
  t.is(
    (await host.syncComplete(ledger.receipt(b1.data, { redeemed: 43_000, values: [1] }))).sw,
    0x6a80,
    'value created next to the redeemed value',
  );
  t.is(
    (await host.syncComplete(ledger.receipt(b1.data, { voided: [orphan], redeemed: 50_001, values: [] }))).sw,
    0x6a80,
    'redeemed above balance + voided value',
  );
  t.is((await host.syncComplete(ledger.receipt(b1.data, { redeemed: 43_000 }), true)).sw, 0x6a80, 'LOAD needs loaded > 0');
  t.true((await status(host)).syncPending);
  // Balance plus the voided orphan, all redeemed: no tokens, the card is empty and its history cleared.
  const good = ledger.receipt(b1.data, { voided: [orphan], redeemed: 50_000 });
  t.is(openSigned('SyncReceipt', good).message.tokens.length, 0);
  t.is((await host.syncComplete(good)).sw, 0x9000);
  const st = await status(host);
  t.is(st.balance, 0);
  t.false(st.syncPending);
  const b2 = await host.syncBegin(new Uint8Array(16).fill(6));
  t.deepEqual(openSigned('SyncRequest', b2.data).message.history, []);
  t.deepEqual(openSigned('SyncRequest', b2.data).message.holdings, []);
});

test('SYNC: refunded value (SPEC §7.7.3) counts in the token total; an inflated or missing refunded is 6A80', async (t) => {
  const { host } = await readyCard([50_000]);
  t.is((await host.pay(paymentRequest(pki, pki.terminal, { amount: 7_000 }))).sw, 0x9000);
  const b1 = await host.syncBegin(new Uint8Array(16).fill(7));
  // 43 000 kept, 2 000 refunded: the tokens must hold 45 000.
  t.is(
    (await host.syncComplete(ledger.receipt(b1.data, { refunded: 2_001, values: [45_000] }))).sw,
    0x6a80,
    'refunded inflated above what the tokens hold',
  );
  t.is(
    (await host.syncComplete(ledger.receipt(b1.data, { values: [45_000] }))).sw,
    0x6a80,
    'tokens above balance with no refunded to account for them',
  );
  t.is(
    (await host.syncComplete(ledger.receipt(b1.data, { refunded: 2_000, values: [44_999] }))).sw,
    0x6a80,
    'value lost: 1 tiyn of the refund missing',
  );
  t.true((await status(host)).syncPending);
  // Revoked: the refund goes with redeemed (balance + refunded), no tokens.
  t.is((await host.syncComplete(ledger.receipt(b1.data, { refunded: 2_000, redeemed: 45_001, values: [] }))).sw, 0x6a80);
  t.is((await host.syncComplete(ledger.receipt(b1.data, { refunded: 2_000, values: [40_000, 5_000] }))).sw, 0x9000);
  t.is((await status(host)).balance, 45_000);
  t.false((await status(host)).syncPending);
});

test('on-device confirmation: declined -> 6985 and nothing signed; approved -> cvm ON_DEVICE satisfies the CVM limit', async (t) => {
  let answer: boolean | 'throw' = false;
  const prompts: unknown[] = [];
  const c = newCard(new MemoryStorage(), 'hw', {
    confirm: async (p) => {
      prompts.push(p);
      if (answer === 'throw') throw new Error('button broken');
      return answer;
    },
  });
  await personalize(c.host, pki);
  await load(c.host, ledger, 50_000);
  const sel = decodeFormat(SelectResponseSchema, (await c.host.select()).data);
  t.truthy(sel.capabilities & Capability.ON_DEVICE_CONFIRM);
  t.is((await c.host.pay(paymentRequest(pki, pki.terminal, { amount: 20_000 }))).sw, 0x6985);
  t.deepEqual(prompts[0], { amount: 20_000, currency: 398, merchant: 'Grocery One', mcc: 5411 });
  t.is((await status(c.host)).counter, 1);
  answer = 'throw';
  t.is((await c.host.pay(paymentRequest(pki, pki.terminal, { amount: 20_000 }))).sw, 0x6985, 'a failing confirmation is no approval');
  t.is((await status(c.host)).counter, 1);
  answer = true;
  const req = paymentRequest(pki, pki.terminal, { amount: 20_000 });
  const r = await c.host.pay(req);
  t.is(r.sw, 0x9000);
  const v = validate(r.data, req);
  t.true(v.ok);
  if (v.ok) t.is(v.transfer.cvm, Cvm.ON_DEVICE);
});

test('damaged storage (both shadow slots invalid) answers 6F00 to everything: the card never re-blanks itself', async (t) => {
  const storage = new MemoryStorage();
  const c = newCard(storage);
  await personalize(c.host, pki);
  for (const s of [0, 1]) {
    const d = storage.read(s)!;
    d[d.length - 1] ^= 0xff;
    storage.write(s, d);
  }
  c.applet.powerOn();
  t.is((await c.host.select()).sw, 0x6f00);
  t.is((await c.host.raw(Uint8Array.of(0x80, INS.PERSONALIZE, 1, 0, 0))).sw, 0x6f00);
});

test('seeded randomness gives the same card key; another seed another key', async (t) => {
  const a = newCard(new MemoryStorage(), 's1');
  const b = newCard(new MemoryStorage(), 's1');
  const c = newCard(new MemoryStorage(), 's2');
  const key = async (h: Host) => {
    await h.select();
    return (await h.cmd(INS.PERSONALIZE, PERSONALIZE_P1.GENERATE_KEY)).data;
  };
  const ka = await key(a.host);
  t.is(toHex(ka), toHex(await key(b.host)));
  t.not(toHex(ka), toHex(await key(c.host)));
  t.is(seededRandom('x')(5).length, 5);
});

test('CLA constants: chained blocks must keep INS/P1/P2 (6883) and a command over the size bound is 6700', async (t) => {
  const { host } = await readyCard([1_000]);
  const block = new Uint8Array(255);
  t.is((await host.raw(encodeCommand({ cla: CLA.PROPRIETARY | CLA.CHAINING, ins: INS.PAY, p1: 0, p2: 0, data: block }))).sw, 0x9000);
  t.is((await host.raw(encodeCommand({ cla: CLA.PROPRIETARY | CLA.CHAINING, ins: INS.SYNC, p1: 2, p2: 0, data: block }))).sw, 0x6883);
  let sw = 0x9000;
  for (let i = 0; i < 300 && sw === 0x9000; i++)
    sw = (await host.raw(encodeCommand({ cla: CLA.PROPRIETARY | CLA.CHAINING, ins: INS.PAY, p1: 0, p2: 0, data: block }))).sw;
  t.is(sw, 0x6700);
});

test('one command at a time (AppletBusyError); after a storage failure the applet halts until power-on (AppletHaltedError)', async (t) => {
  let release!: (v: boolean) => void;
  let entered!: () => void;
  const inConfirm = new Promise<void>((r) => (entered = r));
  const c = newCard(new MemoryStorage(), 'busy', {
    confirm: () => {
      entered();
      return new Promise<boolean>((r) => (release = r));
    },
  });
  await personalize(c.host, pki);
  await load(c.host, ledger, 1_000);
  const pending = c.host.pay(paymentRequest(pki, pki.terminal, { amount: 100 }));
  await inConfirm;
  await t.throwsAsync(c.applet.process(Uint8Array.of(0x80, INS.GET_STATUS, 0, 0, 0)), { instanceOf: AppletBusyError });
  release(true);
  t.is((await pending).sw, 0x9000);

  // Power lost while the holder looks at the screen: the command dies with its session.
  const counter = (await status(c.host)).counter;
  let entered2!: () => void;
  const inConfirm2 = new Promise<void>((r) => (entered2 = r));
  entered = entered2; // the confirm callback calls whatever `entered` is now
  const pending2 = c.host.pay(paymentRequest(pki, pki.terminal, { amount: 100 }));
  await inConfirm2;
  c.applet.powerOn();
  release(true);
  await t.throwsAsync(pending2, { instanceOf: AppletPowerLostError });
  await c.host.select();
  t.is((await status(c.host)).counter, counter, 'nothing committed for the lost session');

  const inner = new MemoryStorage();
  let fail = false;
  const flaky = newCard(
    {
      read: (s) => inner.read(s),
      write: (s, d) => {
        if (fail) throw new Error('brown-out');
        inner.write(s, d);
      },
    },
    'halt',
  );
  await personalize(flaky.host, pki);
  fail = true;
  await t.throwsAsync(flaky.host.verifyPin(PIN), { message: 'brown-out' });
  await t.throwsAsync(flaky.applet.process(Uint8Array.of(0x80, INS.GET_STATUS, 0, 0, 0)), { instanceOf: AppletHaltedError });
  fail = false;
  flaky.applet.powerOn();
  await flaky.host.select();
  t.is((await status(flaky.host)).pinTries, 3, 'the cut decrement never landed');
});

test.after(
  'every status word of the SW table except 6Cxx was answered by the applet in these tests (fails when only some tests are selected with -m)',
  (t) => {
    const missing = SW_TABLE.filter((row) => row.pattern !== '6Cxx' && ![...observedSw].some((sw) => (sw & row.mask) === row.sw)).map(
      (r) => r.pattern,
    );
    t.deepEqual(missing, []);
    t.log(
      `status words seen: ${[...observedSw]
        .sort((a, b) => a - b)
        .map(swHex)
        .join(' ')}`,
    );
  },
);

test('PAY leaves the issuing bank certificate out when the request names the bank (SPEC §3.6 banks, §10.7 step 10)', async (t) => {
  const { host } = await readyCard();
  const banks = { bankCertificate: (kid: Uint8Array) => (toHex(kid) === toHex(pki.issuing.signer.kid) ? pki.issuing.cert : undefined) };
  // Another bank named: the chain is carried whole.
  const req1 = paymentRequest(pki, pki.terminal, { amount: 1_000, banks: [pki.acquiring.signer.kid] });
  const r1 = await host.pay(req1);
  t.is(r1.sw, 0x9000);
  t.is(decodeMessage('Handover', r1.data).chain.length, 2);
  // The card's bank named: [card] alone, which validates with the held bank certificate and only with it.
  const req2 = paymentRequest(pki, pki.terminal, {
    amount: 1_000,
    time: T0 + 60,
    banks: [pki.acquiring.signer.kid, pki.issuing.signer.kid],
  });
  const r2 = await host.pay(req2);
  t.is(r2.sw, 0x9000);
  const h2 = decodeMessage('Handover', r2.data);
  t.is(h2.chain.length, 1);
  const request = openSigned('PaymentRequest', req2).message;
  const v = validateHandover(r2.data, { trust, request, ...banks });
  t.true(v.ok, JSON.stringify(v));
  t.like(validateHandover(r2.data, { trust, request }), { ok: false, code: 'HANDOVER_CHAIN', detail: 'CERT_CHAIN_BROKEN', index: 1 });
  t.true(encodeMessage('Handover', { ...h2, chain: [h2.chain[0]!, pki.issuing.cert] }).length - r2.data.length >= pki.issuing.cert.length);
});

test('PAY leaves out the history up to the transfer the request names as held (SPEC §3.6 held, §3.8 after)', async (t) => {
  const { host } = await readyCard();
  const r1 = paymentRequest(pki, pki.terminal, { amount: 1_000 });
  const a1 = await host.pay(r1);
  t.is(a1.sw, 0x9000);
  const v1 = validate(a1.data, r1);
  if (!v1.ok) return t.fail(v1.code);
  const r2 = paymentRequest(pki, pki.terminal, { amount: 1_000, time: T0 + 60 });
  const a2 = await host.pay(r2);
  const v2 = validate(a2.data, r2);
  if (!v2.ok) return t.fail(v2.code);
  t.is(v2.handover.history.length, 1);
  // The terminal holds both: naming the second, the card sends no history; naming the first, one link.
  const held = new Map([
    [toHex(v1.transferHash), [a1.data].map((h) => decodeMessage('Handover', h).transfer)],
    [toHex(v2.transferHash), [...v2.handover.history, v2.handover.transfer]],
  ]);
  const heldHistory = (h: Uint8Array) => held.get(toHex(h));
  const r3 = paymentRequest(pki, pki.terminal, { amount: 1_000, time: T0 + 120, held: v2.transferHash });
  const a3 = await host.pay(r3);
  t.is(a3.sw, 0x9000);
  const h3 = decodeMessage('Handover', a3.data);
  t.is(h3.history.length, 0);
  t.deepEqual(h3.after, v2.transferHash);
  const request3 = openSigned('PaymentRequest', r3).message;
  const v3 = validateHandover(a3.data, { trust, request: request3, heldHistory });
  if (!v3.ok) return t.fail(v3.code);
  t.is(v3.offlineCount, 3);
  t.is(v3.offlineTotal, 3_000);
  t.like(validateHandover(a3.data, { trust, request: request3 }), { ok: false, code: 'HISTORY_BROKEN', index: 0 });
  const r4 = paymentRequest(pki, pki.terminal, { amount: 1_000, time: T0 + 180, held: v1.transferHash });
  const h4 = decodeMessage('Handover', (await host.pay(r4)).data);
  t.is(h4.history.length, 2, 'the links after the held one');
});
