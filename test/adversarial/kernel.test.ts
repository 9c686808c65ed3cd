/**
 * Adversarial group 1: a hostile card against the terminal's payment kernel.
 *
 * The card is the real firmware (card-applet-sim, in process); between it and the kernel sits
 * a hostile link that rewrites what the card answers to PAY, with the card's own key when the
 * attack needs one (read from the chip's memory: a clone). The kernel is the real one with a
 * SQLite journal, the back office the real ledger and acquirer on loopback HTTP.
 *
 * What must hold: the kernel never approves what the ledger would refuse (each crafted
 * handover is also sent to the ledger, which must not settle it), it ends every hostile card
 * with a DECLINED and a code after a bound (at most one PRESENT CARD AGAIN per card), it
 * never hangs, and the torn attempts a card can leave stay bounded. After every attack: the
 * books.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes as nodeRandom } from 'node:crypto';

const randomBytes = (n: number): Uint8Array => new Uint8Array(nodeRandom(n));
import {
  decodeMessage,
  encodeMessage,
  generateKeyPair,
  HandoverCode,
  keyPairSigner,
  openSigned,
  OutcomeStatus,
  signMessage,
  SW,
  identifyCommand,
  isChainedBlock,
  LIMITS,
  type ApduTransport,
  type Handover,
  type Transfer,
} from '@dt/protocol';
import { DeclineReason, MAX_TORN_PER_CARD, type TapOutcome } from '@dt/terminal';
import {
  books,
  genuinePayment,
  hostileCard,
  ledgerVerdicts,
  newCard,
  readerOn,
  settle,
  startWorld,
  stateOf,
  type BackOffice,
  type Terminal,
} from './world.ts';

const AMOUNT = 20_000;
/** Taps a hostile card gets before the kernel must have declined it (for good: every later tap too). */
const BOUND = 3;

/** The card's key from its memory: what a cloner holds. */
const cardSigner = (card: { storage: Parameters<typeof stateOf>[0] }) => {
  const st = stateOf(card.storage);
  return keyPairSigner({ secretKey: st.secretKey!, publicKey: st.publicKey! });
};

type Craft = (h: Handover, ctx: { sign: (t: Transfer) => Uint8Array; other: Handover }) => Handover;

const transferOf = (h: Handover): Transfer => openSigned('Transfer', h.transfer).message;

/** Crafted handovers: each is built from the real card's answer to this very request. */
/**
 * `requestOnly`: the check is the terminal's alone (step 6 of SPEC §7.4 against its own request,
 * which the ledger never sees): a transfer the card signed to this merchant for another amount is
 * still value the card paid, so the ledger may settle it; the kernel must decline it.
 */
const CRAFTED: readonly { name: string; craft: Craft; codes: readonly string[]; requestOnly?: boolean }[] = [
  {
    name: 'receipt and history stripped (the clone of issue 12)',
    craft: (h) => ({ ...h, history: [], receipt: undefined }),
    codes: [HandoverCode.HISTORY_BROKEN],
  },
  { name: 'receipt stripped, history kept', craft: (h) => ({ ...h, receipt: undefined }), codes: [HandoverCode.HISTORY_BROKEN] },
  { name: 'history stripped, receipt kept', craft: (h) => ({ ...h, history: [] }), codes: [HandoverCode.HISTORY_BROKEN] },
  {
    name: 'history left out by reference to a transfer the terminal does not hold (SPEC §3.8 after)',
    craft: (h) => ({ ...h, history: [], after: new Uint8Array(32).fill(0x42) }),
    codes: [HandoverCode.HISTORY_BROKEN],
  },
  {
    name: 'history reordered',
    craft: (h, { other }) => ({ ...h, history: [...h.history, ...other.history].reverse() }),
    codes: [HandoverCode.HISTORY_BROKEN, HandoverCode.TRANSFER_SIGNATURE],
  },
  {
    name: 'transfer signature flipped',
    craft: (h) => {
      const t = h.transfer.slice();
      t[t.length - 1]! ^= 0x01;
      return { ...h, transfer: t };
    },
    codes: [HandoverCode.TRANSFER_SIGNATURE],
  },
  {
    name: 'a token re-signed by a key that is not the ledger',
    craft: (h) => {
      const fake = keyPairSigner(generateKeyPair(randomBytes));
      // The provenance tokens wherever the card put them (inline, or named in its receipt, SPEC §3.8),
      // re-signed and carried inline, where validation reads them instead of the receipt's.
      const inReceipt = h.receipt ? openSigned('SyncReceipt', h.receipt).message.tokens : [];
      const provenance = [...(h.tokens ?? []), ...(h.receiptTokens ?? []).map((i) => inReceipt[i]!)];
      if (provenance.length === 0) throw new Error('the card named no token: nothing to re-sign');
      const { receiptTokens: _named, ...rest } = h;
      return { ...rest, tokens: provenance.map((b) => signMessage('Token', openSigned('Token', b).message, fake)) };
    },
    codes: [HandoverCode.TOKEN_INVALID],
  },
  {
    name: 'the receipt re-signed by a key that is not the ledger',
    craft: (h) => {
      const fake = keyPairSigner(generateKeyPair(randomBytes));
      return { ...h, receipt: signMessage('SyncReceipt', openSigned('SyncReceipt', h.receipt!).message, fake) };
    },
    codes: [HandoverCode.HISTORY_BROKEN],
  },
  {
    name: "another card's certificate chain",
    craft: (h, { other }) => ({ ...h, chain: other.chain }),
    codes: [HandoverCode.HANDOVER_CHAIN],
  },
  {
    name: 'counter skipped (re-signed with the card key)',
    craft: (h, { sign }) => ({ ...h, transfer: sign({ ...transferOf(h), counter: transferOf(h).counter + 1 }) }),
    codes: [HandoverCode.HISTORY_BROKEN],
  },
  {
    name: 'counter reused from the history (re-signed)',
    craft: (h, { sign }) => ({ ...h, transfer: sign({ ...transferOf(h), counter: transferOf(h).counter - 1 }) }),
    codes: [HandoverCode.HISTORY_BROKEN],
  },
  {
    name: 'change inflated (re-signed)',
    craft: (h, { sign }) => {
      const t = transferOf(h);
      return { ...h, transfer: sign({ ...t, outputs: t.outputs.map((o, i) => (i === 1 ? { ...o, value: o.value + 500_000 } : o)) }) };
    },
    codes: [HandoverCode.VALUE_NOT_CONSERVED],
  },
  {
    name: 'a smaller amount than asked (re-signed, outputs consistent)',
    craft: (h, { sign }) => {
      const t = transferOf(h);
      const outputs = t.outputs.map((o, i) => (i === 0 ? { ...o, value: 1 } : { ...o, value: o.value + t.amount - 1 }));
      return { ...h, transfer: sign({ ...t, amount: 1, outputs }) };
    },
    codes: [HandoverCode.REQUEST_MISMATCH],
    requestOnly: true,
  },
  {
    name: 'paid to another terminal (re-signed)',
    craft: (h, { sign }) => {
      const t = transferOf(h);
      const payee = new Uint8Array(16).fill(0x77);
      return { ...h, transfer: sign({ ...t, payee, outputs: t.outputs.map((o, i) => (i === 0 ? { ...o, owner: payee } : o)) }) };
    },
    codes: [HandoverCode.VALUE_NOT_CONSERVED, HandoverCode.WRONG_PAYEE],
  },
  {
    name: 'dated after the request (re-signed)',
    craft: (h, { sign }) => ({ ...h, transfer: sign({ ...transferOf(h), time: transferOf(h).time + 3600 }) }),
    codes: [HandoverCode.TRANSFER_TIME, HandoverCode.REQUEST_MISMATCH],
  },
];

/** `h` with the history it left out (`after`, SPEC §3.8) put back from the terminal's journal. */
function complete(term: Terminal, h: Handover): Handover {
  if (!h.after) return h;
  const held = term.journal.getPaymentByTransfer(h.after);
  if (!held) throw new Error('the card left out history the terminal does not hold');
  const stored = decodeMessage('Handover', held.handover);
  const { after: _after, ...rest } = h;
  return { ...rest, history: [...stored.history, stored.transfer, ...h.history] };
}

/** A fresh card of the terminal's, with one honest approved payment so that it has a history and a receipt. */
async function cardWithHistory(t: ExecutionContext, bo: BackOffice, term: Terminal) {
  const c = await newCard(bo);
  const honest = await term.kernel.charge(readerOn(c.transport), AMOUNT);
  t.is(honest.kind, 'APPROVED', 'the honest tap before the attack');
  return c;
}

/**
 * Taps the hostile reader up to `taps` times and checks the bound: never APPROVED, at most one
 * PRESENT CARD AGAIN, then DECLINED (with a reason) at every tap.
 */
async function tapUntilDeclined(t: ExecutionContext, term: Terminal, transport: ApduTransport, label: string, taps = BOUND) {
  const outcomes: TapOutcome[] = [];
  for (let i = 0; i < taps; i++) outcomes.push(await term.kernel.charge(readerOn(transport), AMOUNT));
  const kinds = outcomes.map((o) => o.kind);
  t.false(kinds.includes('APPROVED'), `${label}: never approved (${JSON.stringify(outcomes)})`);
  t.true(kinds.filter((k) => k === 'PRESENT_CARD_AGAIN').length <= 1, `${label}: at most one PRESENT CARD AGAIN (${kinds})`);
  t.is(kinds[kinds.length - 1], 'DECLINED', `${label}: declined after ${taps} taps (${JSON.stringify(outcomes)})`);
  t.true(kinds.indexOf('DECLINED') <= 1, `${label}: declined at the second tap at the latest (${kinds})`);
  for (const o of outcomes.slice(kinds.indexOf('DECLINED'))) t.is(o.kind, 'DECLINED', `${label}: declined for good`);
  t.true(term.journal.tornAttempts().length <= 1, `${label}: torn attempts bounded`);
  return outcomes.filter((o) => o.kind === 'DECLINED') as Extract<TapOutcome, { kind: 'DECLINED' }>[];
}

test('crafted handovers (stripped, reordered, forged, re-signed with the card key): declined with the code the ledger gives, never settled', async (t) => {
  const { dir, bo } = await startWorld(t);
  const { term } = await genuinePayment(t, bo, dir);
  let honest = 1;
  // Another card's handover (for its chain and history).
  const donor = await cardWithHistory(t, bo, term);
  honest++;
  let otherHandover: Handover | undefined;
  const donorTap = await term.kernel.charge(
    readerOn(
      hostileCard(donor.transport, (_cmd, real) => {
        otherHandover = complete(term, decodeMessage('Handover', real.data));
        return real;
      }),
    ),
    AMOUNT,
  );
  t.is(donorTap.kind, 'APPROVED');
  honest++;

  for (const attack of CRAFTED) {
    const c = await cardWithHistory(t, bo, term);
    honest++;
    const sign = cardSigner(c.card);
    let last: Uint8Array | undefined;
    const hostile = hostileCard(c.transport, (_cmd, real) => {
      if (real.sw !== SW.OK) return real;
      // Crafted from the complete handover (the history the card left out because the terminal
      // holds it put back, SPEC §3.8), so that every attack has the whole chain to work on.
      const h = attack.craft(complete(term, decodeMessage('Handover', real.data)), {
        sign: (tr) => signMessage('Transfer', tr, sign),
        other: otherHandover!,
      });
      if (h.receipt === undefined) delete h.receipt;
      if (h.after === undefined) delete h.after;
      last = encodeMessage('Handover', h);
      return { data: last, sw: SW.OK };
    });
    const declined = await tapUntilDeclined(t, term, hostile, attack.name, 2);
    // The code the kernel names is the protocol's (directly, or inside CARD_ANSWER_INVALID).
    const code = declined[0]!.reason === DeclineReason.CARD_ANSWER_INVALID ? declined[0]!.detail?.split(':')[0] : declined[0]!.reason;
    t.true(attack.codes.includes(code!), `${attack.name}: declined ${JSON.stringify(declined[0])}, expected one of ${attack.codes}`);
    // The ledger, given the same handover by this terminal, does not settle it either.
    const [verdict] = await ledgerVerdicts(bo, term, [last!]);
    if (attack.requestOnly) t.is(verdict!.status, OutcomeStatus.SETTLED, `${attack.name}: signed value paid to this merchant`);
    else
      t.true(
        verdict!.status === OutcomeStatus.INVALID || verdict!.status === OutcomeStatus.DOUBLE_SPEND,
        `${attack.name}: the ledger settles nothing (${verdict!.status} ${verdict!.code})`,
      );
    await books(t, bo, attack.name);
  }
  t.is(term.journal.listPayments().length, honest, 'only the honest payments are journalled');
  await settle(term, bo);
  t.is(term.journal.totalsByState().settled?.count, honest, 'every honest payment settles');
  await books(t, bo, 'the crafted handovers');
});

/** A raw hostile link: `onPay(apdu)` answers the last PAY block and every GET RESPONSE after it. */
function rawPay(inner: ApduTransport, answer: (apdu: Uint8Array, n: number) => Uint8Array | Promise<Uint8Array>): ApduTransport {
  let inPay = false;
  let n = 0;
  return {
    async transmit(apdu, o) {
      const name = identifyCommand(apdu);
      if (name === 'PAY' && !isChainedBlock(apdu)) {
        await inner.transmit(apdu, o); // the card runs (and may sign) the command
        inPay = true;
        n = 0;
        return answer(apdu, n++);
      }
      if (inPay && apdu[1] === 0xc0) return answer(apdu, n++);
      inPay = false;
      return inner.transmit(apdu, o);
    },
  };
}

test('APDU abuse (wrong status words, garbage, endless 61xx, oversize): declined with a code after a bound, nothing approved', async (t) => {
  const { dir, bo } = await startWorld(t);
  const { term } = await genuinePayment(t, bo, dir);
  const ABUSE: { name: string; answer: (apdu: Uint8Array, n: number) => Uint8Array }[] = [
    { name: 'status 6F00', answer: () => Uint8Array.of(0x6f, 0x00) },
    { name: 'status 6A82', answer: () => Uint8Array.of(0x6a, 0x82) },
    { name: 'status 9001 with data', answer: () => Uint8Array.of(1, 2, 3, 0x90, 0x01) },
    { name: 'one byte, no status word', answer: () => Uint8Array.of(0x90) },
    { name: 'empty answer', answer: () => new Uint8Array(0) },
    { name: 'garbage that ends in 9000', answer: () => Uint8Array.of(...new Uint8Array(300).fill(0xfe), 0x90, 0x00) },
    { name: '61xx to GET RESPONSE without data', answer: () => Uint8Array.of(0x61, 0x10) },
    { name: 'endless 61xx with data', answer: () => Uint8Array.of(...new Uint8Array(255).fill(0xa5), 0x61, 0x00) },
    {
      name: 'an answer one byte over the handover limit',
      answer: (_a, n) => {
        const total = LIMITS.maxHandoverSize + 1;
        const left = total - n * 256;
        const piece = new Uint8Array(Math.min(256, left)).fill(0xbb);
        const more = left - piece.length;
        return Uint8Array.of(...piece, more > 0 ? 0x61 : 0x90, more > 0 ? Math.min(more, 256) & 0xff : 0x00);
      },
    },
  ];
  for (const abuse of ABUSE) {
    const c = await newCard(bo);
    const declined = await tapUntilDeclined(t, term, rawPay(c.transport, abuse.answer), abuse.name);
    t.truthy(declined[0]!.reason, `${abuse.name}: a reason`);
    t.log(`${abuse.name}: ${declined[0]!.reason} ${declined[0]!.detail ?? ''}`);
  }
  t.is(term.journal.listPayments().length, 1, 'only the genuine payment');
  t.true(term.journal.tornAttempts().length <= MAX_TORN_PER_CARD);
  await books(t, bo, 'APDU abuse');
});

test('slow answers: every tap ends at the per-APDU deadline, the card signs once, torn attempts stay bounded, the next good tap recovers the one transfer', async (t) => {
  const { dir, bo } = await startWorld(t);
  const { term } = await genuinePayment(t, bo, dir);
  const c = await newCard(bo);
  let signed = 0;
  const slow: ApduTransport = {
    async transmit(apdu, o) {
      const r = await c.transport.transmit(apdu, o);
      if (identifyCommand(apdu) === 'PAY' && !isChainedBlock(apdu)) {
        signed++;
        // Longer than the reader's per-APDU deadline (2 s), answered only if the terminal still waits.
        await new Promise((res, rej) => {
          const timer = setTimeout(res, 4000);
          o?.signal?.addEventListener('abort', () => {
            clearTimeout(timer);
            rej(o.signal!.reason as Error);
          });
        });
      }
      return r;
    },
  };
  for (let i = 0; i < 2; i++) {
    const o = await term.kernel.charge(readerOn(slow), AMOUNT);
    t.is(o.kind, 'PRESENT_CARD_AGAIN', JSON.stringify(o));
    // The first attempt and its retry (an attempt chain): nothing more.
    t.true(term.journal.tornAttempts().length <= 2);
  }
  const ok = await term.kernel.charge(readerOn(c.transport), AMOUNT);
  t.is(ok.kind, 'APPROVED');
  t.true(ok.kind === 'APPROVED' && ok.recovered, 'the retry recovered the transfer signed at the first slow tap');
  t.is(stateOf(c.card.storage).counter, 2, 'LOAD used counter 1: one transfer in three taps');
  t.is(signed, 2, 'the card answered both slow PAYs, the retry with the stored handover');
  await settle(term, bo);
  t.deepEqual(term.journal.totalsByState().settled, { count: 2, amount: 100_000 + AMOUNT });
  await books(t, bo, 'slow answers');
});
