/**
 * Hostile and faulty cards against the real kernel and journal: a card that answers garbage
 * to every PAY, one whose answers never arrive (with and without a card id), a clone whose
 * keys are known reusing a counter or a coin, and the terminal's certified revocation-list
 * age. The cards run the real firmware (card-applet-sim); only the transport between the
 * kernel and the card is hostile, or, for the clone, the protocol's ReferenceWallet signs
 * with the card's own key and state.
 */
import test from 'ava';
import { decodeState, ShadowJournal, type CardState } from '@dt/firmware';

import { identityFrom, issueTerminal } from '@dt/ledger';
import {
  CardApduProcessor,
  DEFAULT_TERMINAL_CRL_MAX_AGE,
  decodeDeterministic,
  decodeMessage,
  encodeDeterministic,
  exchange,
  keyPairSigner,
  openSigned,
  ReferenceWallet,
  SW,
  toHex,
  type ApduTransport,
  type CborValue,
  type PaymentRequest,
  getStatus as rawStatus,
  selectApplet,
  formatKey,
  identifyCommand,
  isChainedBlock,
  SelectResponseSchema,
  CardRemovedError,
} from '@dt/protocol';
import {
  AttemptState,
  buildIdentity,
  certifiedCrlMaxAge,
  DeclineReason,
  effectiveMaxCrlAge,
  Journal,
  MAX_TORN_ATTEMPTS,
  MAX_TORN_PER_CARD,
  PaymentKernel,
  type PinPad,
  type RiskPolicy,
  type TerminalIdentity,
  type TapOutcome,
} from '../src/index.ts';
import {
  createDevPki,
  devTerminalIdentity,
  makeCard,
  makeJournal,
  nowSec,
  readerFor,
  signedCrl,
  tempDir,
  TEST_LIMITS,
  TEST_POLICY,
  type TestCard,
} from './helpers/fixtures.ts';

const pki = createDevPki();
const identity = devTerminalIdentity(pki);

function setup(
  t: { teardown: (f: () => void) => void },
  opts: { identity?: TerminalIdentity; policy?: RiskPolicy; now?: () => number; pinPad?: PinPad; crlIssued?: number } = {},
) {
  const { dir, cleanup } = tempDir();
  const own = opts.now !== undefined || opts.crlIssued !== undefined;
  const journal = own ? Journal.open(`${dir}/journal.sqlite`, opts.now ? { now: opts.now } : {}) : makeJournal(pki, dir);
  if (own) {
    const issued = opts.crlIssued ?? opts.now!();
    journal.storeCrl({ version: 1, issued, bytes: signedCrl(pki, 1, [], issued), revoked: [] });
  }
  const kernel = new PaymentKernel({
    identity: opts.identity ?? identity,
    journal,
    policy: opts.policy ?? TEST_POLICY,
    timeouts: { cardMs: 2000, tapMs: 8000, pinMs: 2000 },
    ...(opts.now ? { now: opts.now } : {}),
    ...(opts.pinPad ? { pinPad: opts.pinPad } : {}),
  });
  t.teardown(() => {
    journal.close();
    cleanup();
  });
  return { journal, kernel };
}

async function cardStatus(t: ApduTransport) {
  await selectApplet(t);
  return rawStatus(t);
}

/**
 * The real card runs every command (it does sign the PAY), but the kernel gets `answer` back
 * for the last PAY block instead of the card's handover: a card that answers malformed CBOR.
 */
function garbageToPay(inner: ApduTransport, answer: Uint8Array): ApduTransport {
  return {
    async transmit(apdu, o) {
      const r = await inner.transmit(apdu, o);
      if (identifyCommand(apdu) === 'PAY' && !isChainedBlock(apdu)) return Uint8Array.of(...answer, 0x90, 0x00);
      return r;
    },
  };
}

/** The PAY answer never comes back (the card signed; the holder pulled it every time). Optionally hides the card id. */
function payAnswerLost(inner: ApduTransport, hideCardId = false): ApduTransport {
  return {
    async transmit(apdu, o) {
      const r = await inner.transmit(apdu, o);
      if (identifyCommand(apdu) === 'PAY' && !isChainedBlock(apdu)) throw new CardRemovedError('field lost: response never arrived');
      if (hideCardId && identifyCommand(apdu) === 'SELECT' && r.length > 2) {
        // An applet that does not announce its id (SELECT key 6): the kernel cannot tell cards apart.
        const m = decodeDeterministic(r.subarray(0, -2)) as Map<number, CborValue>;
        m.delete(formatKey(SelectResponseSchema, 'card'));
        return Uint8Array.of(...encodeDeterministic(m), ...r.subarray(-2));
      }
      return r;
    },
  };
}

/** Malformed CBOR: an indefinite-length map that is never closed, then junk. */
const GARBAGE = Uint8Array.of(0xbf, 0x01, 0x5f, 0x41, 0x00, 0xff, 0xff, 0x1c, ...new Uint8Array(40).fill(0xfe));

test('a card that always answers malformed CBOR to PAY: PRESENT_CARD_AGAIN once, then DECLINED CARD_ANSWER_INVALID; 50 taps leave at most one torn attempt and pay nothing', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  // The group starts with a genuine payment, so the test can fail.
  const genuine = await kernel.charge(readerFor(c.transport), 10_000);
  t.is(genuine.kind, 'APPROVED');
  const hostile = readerFor(garbageToPay(c.transport, GARBAGE));
  const outcomes: TapOutcome[] = [];
  for (let i = 0; i < 50; i++) {
    outcomes.push(await kernel.charge(hostile, 10_000));
    t.true(journal.tornAttempts().length <= 1, `tap ${i}: ${journal.tornAttempts().length} torn attempts`);
  }
  t.deepEqual(outcomes[0], {
    kind: 'PRESENT_CARD_AGAIN',
    reason: 'DAMAGED_ANSWER',
    detail: 'HANDOVER_MALFORMED',
    tornAttempt: (outcomes[0] as { tornAttempt: string }).tornAttempt,
  });
  t.like(outcomes[1], { kind: 'DECLINED', reason: DeclineReason.CARD_ANSWER_INVALID });
  t.regex((outcomes[1] as { detail?: string }).detail ?? '', /^HANDOVER_MALFORMED\b/);
  // Then, within the retry window, every tap is declined: the card gets no second retry, even
  // though every tap after a decline looks like a fresh attempt to the kernel.
  for (const [i, o] of outcomes.entries()) {
    if (i === 0) continue;
    t.true(o.kind === 'DECLINED' && o.reason === DeclineReason.CARD_ANSWER_INVALID, `tap ${i}: ${JSON.stringify(o)}`);
  }
  t.is(journal.listPayments().length, 1, 'only the genuine payment');
  const st = await cardStatus(c.transport);
  // The firmware behind the hostile link signed a transfer at each fresh attempt until its
  // offline count ran out (its 6985 then came back as garbage too): orphans the ledger voids at its sync.
  t.is(st.offlineCount, TEST_LIMITS.offlineCount);
});

test('a card declined for damaged answers gets one retry again only after the retry window', async (t) => {
  let clock = nowSec();
  const { kernel } = setup(t, { now: () => clock });
  const c = await makeCard(pki);
  const hostile = readerFor(garbageToPay(c.transport, GARBAGE));
  t.is((await kernel.charge(hostile, 1_000)).kind, 'PRESENT_CARD_AGAIN');
  t.like(await kernel.charge(hostile, 1_000), { kind: 'DECLINED', reason: DeclineReason.CARD_ANSWER_INVALID });
  clock += TEST_POLICY.retryWindow - 1;
  t.like(await kernel.charge(hostile, 1_000), { kind: 'DECLINED', reason: DeclineReason.CARD_ANSWER_INVALID }, 'still inside the window');
  clock += TEST_POLICY.retryWindow + 1;
  t.like(await kernel.charge(hostile, 1_000), { kind: 'PRESENT_CARD_AGAIN', reason: 'DAMAGED_ANSWER' }, 'a new window');
});

test('a card whose PAY answer never arrives: every tap is PRESENT_CARD_AGAIN, but the torn attempts stay bounded and the next good tap recovers the one signed transfer', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  const before = await cardStatus(c.transport);
  const lost = readerFor(payAnswerLost(c.transport));
  for (let i = 0; i < 50; i++) {
    const o = await kernel.charge(lost, 20_000);
    t.is(o.kind, 'PRESENT_CARD_AGAIN');
    // The card (by its id and GET STATUS lastNonce) can only answer its last transfer: the rest is closed at once.
    t.true(journal.tornAttempts().length <= 2, `tap ${i}: ${journal.tornAttempts().length} torn attempts`);
  }
  const ok = await kernel.charge(readerFor(c.transport), 20_000);
  t.is(ok.kind, 'APPROVED');
  t.true(ok.kind === 'APPROVED' && ok.recovered, 'the retry recovered the transfer signed at the first tap');
  const after = await cardStatus(c.transport);
  t.is(after.counter, before.counter + 1, 'one signature in 51 taps');
  t.is(before.balance - after.balance, 20_000, 'paid once');
  t.is(journal.tornAttempts().length, 0);
});

test('without a card id the kernel cannot tell cards apart: the journal still keeps at most MAX_TORN_PER_CARD torn attempts for them', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  const lost = readerFor(payAnswerLost(c.transport, true));
  let max = 0;
  for (let i = 0; i < 50; i++) {
    const o = await kernel.charge(lost, 5_000);
    t.true(o.kind === 'PRESENT_CARD_AGAIN' || (o.kind === 'ONLINE_REQUIRED' && o.reason === 'CARD_LIMITS'), JSON.stringify(o));
    max = Math.max(max, journal.tornAttempts().length);
  }
  t.is(max, MAX_TORN_PER_CARD, 'the bound is reached and holds');
});

test('torn attempts older than the retry window are closed at the next tap', async (t) => {
  let clock = nowSec();
  const { journal, kernel } = setup(t, { now: () => clock });
  const c = await makeCard(pki);
  const o1 = await kernel.charge(readerFor(payAnswerLost(c.transport)), 7_000);
  t.is(o1.kind, 'PRESENT_CARD_AGAIN');
  const torn = journal.tornAttempts();
  t.is(torn.length, 1);
  clock += TEST_POLICY.retryWindow + 1;
  const other = await makeCard(pki);
  t.is((await kernel.charge(readerFor(other.transport), 1_000)).kind, 'APPROVED');
  t.is(journal.getAttempt(torn[0]!.nonce)?.state, AttemptState.CLOSED, 'given up: no tap may name it any more');
  t.deepEqual(journal.tornAttempts(), []);
});

test('journal bounds: at most MAX_TORN_PER_CARD torn attempts per card and MAX_TORN_ATTEMPTS in all, the newest kept', (t) => {
  let clock = 1_800_000_000;
  const j = Journal.open(':memory:', { now: () => clock });
  t.teardown(() => j.close());
  const card = new Uint8Array(16).fill(7);
  const mine: Uint8Array[] = [];
  for (let i = 0; i < MAX_TORN_PER_CARD + 3; i++) {
    const nonce = new Uint8Array(16).fill(i + 1);
    mine.push(nonce);
    j.recordAttempt({ nonce, amount: 100, time: clock, card, request: new Uint8Array(20) });
    j.setAttemptState(nonce, AttemptState.TORN);
    clock++;
  }
  t.deepEqual(
    j.tornAttempts().map((a) => toHex(a.nonce)),
    mine.slice(-MAX_TORN_PER_CARD).map(toHex),
  );
  for (const n of mine.slice(0, 3)) t.is(j.getAttempt(n)?.state, AttemptState.CLOSED);
  // Many cards (or one that announces a new id at every tap).
  for (let i = 0; i < MAX_TORN_ATTEMPTS + 10; i++) {
    const nonce = new Uint8Array(16).fill(0x80);
    nonce[0] = i;
    const kid = new Uint8Array(16).fill(0x40);
    kid[0] = i;
    j.recordAttempt({ nonce, amount: 100, time: clock, card: kid, request: new Uint8Array(20) });
    j.setAttemptState(nonce, AttemptState.TORN);
    clock++;
  }
  const open = j.tornAttempts();
  t.is(open.length, MAX_TORN_ATTEMPTS);
  t.is(open[open.length - 1]!.nonce[0], MAX_TORN_ATTEMPTS + 9, 'the newest is kept');
  // A crash leaving many attempts "sent": the bound holds at start-up too.
  for (let i = 0; i < 10; i++)
    j.recordAttempt({ nonce: new Uint8Array(16).fill(0xc0 + i), amount: 100, time: clock, card, request: new Uint8Array(20) });
  t.is(j.markSentAttemptsTorn(), 10);
  t.is(j.tornAttempts().filter((a) => a.card && toHex(a.card) === toHex(card)).length, MAX_TORN_PER_CARD);
  t.true(j.tornAttempts().length <= MAX_TORN_ATTEMPTS);
});

// ---------------------------------------------------------------- clones with known keys

/** The card's committed state, read from its storage (a clone's view: keys included). */
function stateOf(c: TestCard): CardState {
  const j = new ShadowJournal(c.storage);
  const found = j.load();
  if (found.kind !== 'state') throw new Error('card has no state');
  return decodeState(found.body);
}

/** A ReferenceWallet with the card's key and state: a cloned secure element. */
function cloneOf(st: CardState): ReferenceWallet {
  return new ReferenceWallet({
    signer: keyPairSigner({ secretKey: st.secretKey!, publicKey: st.publicKey! }),
    chain: st.chain!,
    state: {
      counter: st.counter,
      prev: st.prev,
      history: [...st.history],
      holdings: st.coins.map((c) => ({ id: c.id, value: c.value, ...(c.mark ? { mark: c.mark } : {}) })),
      tokens: Object.fromEntries(st.tokens.map((b) => [toHex(openSigned('Token', b).message.serial), b])),
      ...(st.receipt ? { receipt: st.receipt } : {}),
      nonces: st.nonces.map(toHex),
      trusted: st.trusted!,
    },
  });
}

/** A card whose SELECT and GET STATUS come from the real card, and whose PAY answers come from `pay`. */
function cloneTransport(inner: ApduTransport, pay: (req: PaymentRequest) => Uint8Array): ApduTransport {
  const proc = new CardApduProcessor(async (cmd) => {
    if (identifyCommand(cmd) === 'PAY') return { data: pay(openSigned('PaymentRequest', cmd.data!).message), sw: SW.OK };
    return exchange(inner, cmd);
  });
  return { transmit: (apdu) => proc.process(apdu) };
}

test('the journal refuses a second approval with the same (card, counter) or the same input from the same card: DECLINED DOUBLE_SPEND_DETECTED', async (t) => {
  const { journal, kernel } = setup(t);
  const c = await makeCard(pki);
  const s0 = stateOf(c);
  const genuine = await kernel.charge(readerFor(c.transport), 100_000);
  t.is(genuine.kind, 'APPROVED');
  if (genuine.kind !== 'APPROVED') return;
  const paid = openSigned('Transfer', decodeMessage('Handover', genuine.payment.handover).transfer).message;
  const spentCoin = paid.inputs[0]!;
  const otherCoin = s0.coins.find((x) => toHex(x.id) !== toHex(spentCoin))!.id;

  // Same counter, another coin: a clone of the card before the genuine payment.
  const a = cloneOf(s0);
  const sameCounter = await kernel.charge(
    readerFor(cloneTransport(c.transport, (req) => a.pay(req, { inputs: [otherCoin] }).handover)),
    100_000,
  );
  t.is(sameCounter.kind, 'DECLINED');
  if (sameCounter.kind === 'DECLINED') {
    t.is(sameCounter.reason, DeclineReason.DOUBLE_SPEND_DETECTED);
    t.regex(sameCounter.detail ?? '', /\(counter\)/);
  }

  // Same coin, a new counter: the clone first signs a payment elsewhere (counter + 1), then spends the coin again here.
  const b = cloneOf(s0);
  b.pay(
    {
      amount: 1_000,
      currency: identity.currency,
      terminal: new Uint8Array(16).fill(9),
      merchant: 'elsewhere',
      mcc: 5411,
      nonce: new Uint8Array(16).fill(3),
      time: nowSec(),
    },
    { inputs: [otherCoin] },
  );
  const sameInput = await kernel.charge(
    readerFor(cloneTransport(c.transport, (req) => b.pay(req, { inputs: [spentCoin] }).handover)),
    100_000,
  );
  t.is(sameInput.kind, 'DECLINED');
  if (sameInput.kind === 'DECLINED') {
    t.is(sameInput.reason, DeclineReason.DOUBLE_SPEND_DETECTED);
    t.regex(sameInput.detail ?? '', /\(input\)/);
  }
  t.is(journal.listPayments().length, 1, 'only the genuine payment is journalled');

  // The journal on its own: conflicts by counter and by input, a duplicate for the same transfer.
  const p = genuine.payment;
  const base = { ...p, inputs: [spentCoin] };
  t.is(
    journal.recordApproval({ ...base, transferHash: new Uint8Array(32).fill(1), inputs: [new Uint8Array(32).fill(2)] }).kind,
    'conflict',
  );
  const byInput = journal.recordApproval({ ...base, transferHash: new Uint8Array(32).fill(3), counter: p.counter + 5 });
  t.like(byInput, { kind: 'conflict', reason: 'input' });
  const byCounter = journal.recordApproval({ ...base, transferHash: new Uint8Array(32).fill(4), inputs: [new Uint8Array(32).fill(5)] });
  t.like(byCounter, { kind: 'conflict', reason: 'counter' });
  t.is(journal.recordApproval(base).kind, 'duplicate');
  t.is(journal.listPayments().length, 1);
});

// ---------------------------------------------------------------- certified CRL age

/** A terminal identity whose certificate carries `crlMaxAge` (issued with the ledger's PKI tooling by the dev bank). */
function terminalWithCrlMaxAge(crlMaxAge: number): TerminalIdentity {
  const bank = identityFrom(pki.bank.keys, [pki.bank.cert]);
  const now = nowSec();
  const term = issueTerminal(bank, {
    validity: { nbf: now - 86_400, exp: now + 86_400 * 30 },
    merchant: { id: 'shop-crl', mcc: 5411, name: 'Shop CRL' },
    crlMaxAge,
  });
  return buildIdentity({ keyPair: term.keys, chain: [...term.chain], root: pki.issuer.cert, ledgerCert: pki.ledger.cert }, now);
}

test("certified CRL age: the certificate's crlMaxAge caps the configured maxCrlAge (default 3 days without the claim); a config cannot widen it", async (t) => {
  const short = terminalWithCrlMaxAge(3_600);
  t.is(certifiedCrlMaxAge(short.chain[0]!), 3_600);
  t.is(certifiedCrlMaxAge(identity.chain[0]!), DEFAULT_TERMINAL_CRL_MAX_AGE, 'no claim: the default');
  t.is(effectiveMaxCrlAge(TEST_POLICY, 3_600), 3_600);
  t.is(effectiveMaxCrlAge({ ...TEST_POLICY, maxCrlAge: 600, crlNarrowAfter: 600 }, 3_600), 600, 'a config may narrow it');
  const c = await makeCard(pki);
  const r = readerFor(c.transport);
  const now = nowSec();
  {
    // A list 3601 s old: fine for the policy (3 days), too old for this terminal's certificate.
    const { kernel, journal } = setup(t, { identity: short, crlIssued: now - 3_601 });
    t.deepEqual(await kernel.charge(r, 1_000), { kind: 'ONLINE_REQUIRED', reason: 'REVOCATION_LIST_TOO_OLD' });
    t.is(journal.listPayments().length, 0);
  }
  {
    const { kernel } = setup(t, { identity: short, crlIssued: now - 3_000 });
    t.is((await kernel.charge(r, 1_000)).kind, 'APPROVED', 'younger than the certified age');
  }
  {
    // The same 3601 s old list at a terminal certified without the claim (3 days): accepted.
    const { kernel } = setup(t, { crlIssued: now - 3_601 });
    t.is((await kernel.charge(r, 1_000)).kind, 'APPROVED');
  }
  {
    // A config that allows 10 days cannot go past the certificate's default of 3.
    const wide = { ...TEST_POLICY, maxCrlAge: 10 * 86_400 };
    const { kernel } = setup(t, { policy: wide, crlIssued: now - 4 * 86_400 });
    t.deepEqual(await kernel.charge(r, 1_000), { kind: 'ONLINE_REQUIRED', reason: 'REVOCATION_LIST_TOO_OLD' });
  }
});

test('certified CRL age is checked again at the request time: a list that gets too old during PIN entry stops the tap before PAY, nothing signed', async (t) => {
  const short = terminalWithCrlMaxAge(3_600);
  let clock = nowSec();
  const pinPad: PinPad = {
    async requestPin() {
      clock += 30; // the holder takes a while
      return new TextEncoder().encode('1234');
    },
  };
  const { kernel, journal } = setup(t, { identity: short, now: () => clock, crlIssued: clock - 3_600 + 10, pinPad });
  const c = await makeCard(pki);
  const before = await cardStatus(c.transport);
  const o = await kernel.charge(readerFor(c.transport), TEST_POLICY.cvmLimit + 1);
  t.deepEqual(o, { kind: 'ONLINE_REQUIRED', reason: 'REVOCATION_LIST_TOO_OLD' });
  t.is((await cardStatus(c.transport)).counter, before.counter, 'no PAY was sent');
  t.is(journal.listPayments().length, 0);
  t.is(journal.tornAttempts().length, 0);
});
