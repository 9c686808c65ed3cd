/**
 * Adversarial group 2: a hostile terminal against the card applet.
 *
 * The card is the real firmware in process (card-applet-sim), loaded through the real ledger;
 * the attacker is a terminal certified by the acquiring bank (its key and chain are genuine),
 * or a reader that is not, sending PAY commands built by hand: dated beyond the card's time
 * bound (SPEC §10.8), replayed, malformed, oversize, with wrong amounts, signed by the wrong
 * key. After every refusal the card's persistent state is byte for byte what it was (nothing
 * signed, no counter, no floor moved). A request the card may sign but the ledger refuses for
 * its time (future within the bound, or dated before the card's certificate) returns its value
 * to the card at the next sync. After every attack: the books.
 */
import test, { type ExecutionContext } from 'ava';
import {
  LIMITS,
  CARD_TIME_AHEAD,
  coseSign1,
  CURRENCY_KZT,
  decodeDeterministic,
  encodeCommand,
  encodeDeterministic,
  encodeMessage,
  exchange,
  getStatus,
  keyPairSigner,
  generateKeyPair,
  openSigned,
  OutcomeStatus,
  payCommand,
  selectApplet,
  signMessage,
  SW,
  swHex,
  syncBeginCommand,
  syncCompleteCommand,
  transmitOk,
  type ApduTransport,
  type CborValue,
  type PaymentRequest,
} from '@dt/protocol';
import { httpRequest } from '@dt/protocol/http';
import { createPki } from '@dt/ledger';
import {
  books,
  genuinePayment,
  ledgerVerdicts,
  newCard,
  newTerminal,
  nowSec,
  readerOn,
  rnd16,
  settle,
  startWorld,
  stateOf,
  VARIANT,
} from './world.ts';
import type { BackOffice, Terminal } from './world.ts';

/** Random bytes (key generation of the wrong key). */
function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 16) out.set(rnd16().subarray(0, Math.min(16, n - i)), i);
  return out;
}

/** The request a certified terminal would send for `amount` now. */
function requestOf(term: Terminal, amount: number, over: Partial<PaymentRequest> = {}): PaymentRequest {
  return {
    amount,
    currency: term.identity.currency,
    terminal: term.identity.kid,
    merchant: term.identity.merchant.id,
    mcc: term.identity.merchant.mcc,
    nonce: rnd16(),
    time: nowSec(),
    chain: [...term.identity.chain],
    ...over,
  };
}

/** A signed request of `term` (or signed by `signer`). */
const signed = (term: Terminal, req: PaymentRequest, signer = term.identity.signer) => signMessage('PaymentRequest', req, signer);

/** Sends PAY with `data` (any bytes) and returns the status word and the answer. */
async function pay(tr: ApduTransport, data: Uint8Array): Promise<{ sw: number; data: Uint8Array }> {
  await selectApplet(tr);
  return exchange(tr, payCommand(data), { maxResponse: 1 << 20 });
}

/** The card's persistent state as bytes (both journal slots), and its status. */
async function snapshot(card: { storage: { read(slot: number): Uint8Array | undefined } }, tr: ApduTransport) {
  await selectApplet(tr);
  const st = await getStatus(tr);
  return { slots: [0, 1, 2, 3].map((s) => card.storage.read(s)), status: st };
}

/** A payload re-encoded with `edit` applied to its CBOR map, signed by `signer` (valid COSE, invalid content). */
function editedRequest(term: Terminal, req: PaymentRequest, edit: (m: Map<number, CborValue>) => void): Uint8Array {
  const m = decodeDeterministic(encodeMessage('PaymentRequest', req)) as Map<number, CborValue>;
  edit(m);
  return coseSign1(encodeDeterministic(m), 'application/dt.payreq+cbor', term.identity.signer);
}

/** Syncs the card with the ledger over its HTTP API (SYNC BEGIN -> POST /v1/sync -> SYNC COMPLETE). */
async function syncCard(bo: BackOffice, tr: ApduTransport): Promise<Uint8Array> {
  await selectApplet(tr);
  const req = await transmitOk(tr, syncBeginCommand(rnd16()), { maxResponse: 1 << 20 });
  // A refusal throws HttpRefusedError (status, stable code, detail).
  const receipt = (
    await httpRequest(`${bo.ledgerServer.url}/v1/sync`, {
      method: 'POST',
      headers: { 'content-type': 'application/cbor' },
      body: req,
      maxBytes: LIMITS.maxSyncSize,
    })
  ).body;
  await transmitOk(tr, syncCompleteCommand(receipt));
  return receipt;
}

async function world(t: ExecutionContext) {
  const { dir, bo } = await startWorld(t);
  const genuine = await genuinePayment(t, bo, dir);
  const hostile = await newTerminal(t, bo, dir, 'KZ-HOSTILE');
  return { dir, bo, genuine, hostile };
}

test('refused requests leave the card as it was: beyond the time bound, replayed, malformed, oversize, wrong amounts, wrong signer or chain', async (t) => {
  const { bo, genuine, hostile } = await world(t);
  const c = await newCard(bo);
  const tr = c.transport;
  const trusted = stateOf(c.card.storage).trusted!;
  // A request this card signed once (its nonce is in its history now).
  const once = signed(hostile, requestOf(hostile, 10_000));
  t.is((await pay(tr, once)).sw, SW.OK, 'an ordinary request is signed');
  const otherPki = createPki({ now: nowSec() });
  const foreign = otherPki.issueTerminal({ merchant: { id: 'KZ-FOREIGN', mcc: 5411, name: 'foreign' } });
  const wrongKey = keyPairSigner(generateKeyPair(randomBytes));
  const ATTACKS: { name: string; data: () => Uint8Array; sw: number[] }[] = [
    {
      name: `dated ${CARD_TIME_AHEAD + 60} s after the card's trusted time`,
      data: () => signed(hostile, requestOf(hostile, 10_000, { time: trusted + CARD_TIME_AHEAD + 60 })),
      sw: [SW.CONDITIONS_NOT_SATISFIED],
    },
    {
      name: 'dated 200 days ahead (issue 12)',
      data: () => signed(hostile, requestOf(hostile, 10_000, { time: nowSec() + 200 * 86_400 })),
      sw: [SW.CONDITIONS_NOT_SATISFIED],
    },
    {
      name: 'a torn-tap retry dated beyond the bound',
      data: () => {
        const last = openSigned('PaymentRequest', once).message;
        return signed(hostile, requestOf(hostile, 10_000, { time: trusted + CARD_TIME_AHEAD + 60, retryOf: last.nonce }));
      },
      sw: [SW.CONDITIONS_NOT_SATISFIED],
    },
    { name: 'the same signed request again', data: () => once, sw: [SW.DATA_INVALID] },
    {
      name: 'the genuine terminal’s approved request, replayed by another reader',
      data: () => genuine.term.journal.listPayments()[0] && lastRequestOf(genuine.term),
      sw: [SW.DATA_INVALID, SW.OK],
    },
    { name: 'not CBOR', data: () => Uint8Array.of(0xff, 0x00, 0x13, 0x37), sw: [SW.WRONG_DATA] },
    { name: 'truncated', data: () => once.subarray(0, once.length - 7), sw: [SW.WRONG_DATA] },
    { name: 'empty', data: () => new Uint8Array(0), sw: [SW.WRONG_DATA, SW.WRONG_LENGTH] },
    {
      name: 'trailing bytes after the request',
      data: () => Uint8Array.of(...signed(hostile, requestOf(hostile, 10_000)), 0x00),
      sw: [SW.WRONG_DATA],
    },
    {
      name: 'over the request size limit',
      data: () =>
        signed(
          hostile,
          requestOf(hostile, 10_000, {
            merchant: 'x'.repeat(64),
            chain: [...hostile.identity.chain, ...hostile.identity.chain.slice(0, 1)],
          }),
        ),
      sw: [SW.WRONG_DATA],
    },
    {
      name: 'amount 0 (signed, schema-invalid)',
      data: () => editedRequest(hostile, requestOf(hostile, 1), (m) => m.set(1, 0)),
      sw: [SW.WRONG_DATA],
    },
    {
      name: 'amount 2^60 (signed, beyond the safe integers)',
      data: () => {
        // Encoded with a 4-byte placeholder, then its head replaced by the 8-byte head of 2^60.
        const payload = encodeMessage('PaymentRequest', requestOf(hostile, 0x7eadbeef));
        const at = payload.findIndex(
          (_, i) => payload[i] === 0x01 && payload[i + 1] === 0x1a && payload[i + 2] === 0x7e && payload[i + 5] === 0xef,
        );
        const big = Uint8Array.of(...payload.subarray(0, at), 0x01, 0x1b, 0x10, 0, 0, 0, 0, 0, 0, 0, ...payload.subarray(at + 6));
        return coseSign1(big, 'application/dt.payreq+cbor', hostile.identity.signer);
      },
      sw: [SW.WRONG_DATA],
    },
    {
      name: 'amount above perPayment',
      data: () => signed(hostile, requestOf(hostile, VARIANT.limits.perPayment + 1)),
      sw: [SW.CONDITIONS_NOT_SATISFIED],
    },
    {
      name: 'amount above the balance',
      data: () => signed(hostile, requestOf(hostile, VARIANT.load)),
      sw: [SW.CONDITIONS_NOT_SATISFIED],
    },
    {
      name: 'another currency',
      data: () => signed(hostile, requestOf(hostile, 10_000, { currency: CURRENCY_KZT + 1 })),
      sw: [SW.WRONG_DATA],
    },
    {
      name: 'merchant other than certified',
      data: () => signed(hostile, requestOf(hostile, 10_000, { merchant: 'KZ-GENUINE' })),
      sw: [SW.WRONG_DATA],
    },
    { name: 'mcc other than certified', data: () => signed(hostile, requestOf(hostile, 10_000, { mcc: 6011 })), sw: [SW.WRONG_DATA] },
    {
      name: 'payee other than the signing terminal',
      data: () => signed(hostile, requestOf(hostile, 10_000, { terminal: genuine.term.identity.kid })),
      sw: [SW.WRONG_DATA],
    },
    {
      name: 'signed by a key that is not the certified one',
      data: () => signed(hostile, requestOf(hostile, 10_000), wrongKey),
      sw: [SW.WRONG_DATA],
    },
    {
      name: 'a terminal certified under another root',
      data: () =>
        signMessage(
          'PaymentRequest',
          { ...requestOf(hostile, 10_000), terminal: foreign.kid, merchant: 'KZ-FOREIGN', chain: [...foreign.chain] },
          foreign.signer,
        ),
      sw: [SW.WRONG_DATA],
    },
    {
      name: 'a chain without the acquiring bank',
      data: () => signed(hostile, requestOf(hostile, 10_000, { chain: hostile.identity.chain.slice(0, 1) })),
      sw: [SW.WRONG_DATA],
    },
  ];
  for (const attack of ATTACKS) {
    const before = await snapshot(c.card, tr);
    t.truthy(before.slots[0] && before.slots[1], 'both journal slots hold a state');
    const r = await pay(tr, attack.data());
    if (r.sw === SW.OK) {
      // Only the replayed request of another terminal may be signed (a request names no card): it pays that terminal.
      t.is(attack.name, ATTACKS[4]!.name, `${attack.name}: signed (${swHex(r.sw)})`);
      continue;
    }
    t.true(attack.sw.includes(r.sw), `${attack.name}: ${swHex(r.sw)}, expected ${attack.sw.map(swHex)}`);
    t.deepEqual(await snapshot(c.card, tr), before, `${attack.name}: the card's state is unchanged`);
  }
  // Oversize: a chained PAY longer than the card accepts (built block by block, past the host-side bound).
  {
    const before = await snapshot(c.card, tr);
    const head = payCommand(new Uint8Array(1));
    let sw: number = SW.OK;
    for (let i = 0; i < 300 && sw === SW.OK; i++) {
      const block = encodeCommand({ cla: head.cla | 0x10, ins: head.ins, p1: head.p1, p2: head.p2, data: new Uint8Array(255).fill(0xa0) });
      const r = await tr.transmit(block);
      sw = (r[r.length - 2]! << 8) | r[r.length - 1]!;
    }
    t.is(sw, SW.WRONG_LENGTH, 'a chain over 65535 bytes is refused with 6700');
    t.deepEqual(await snapshot(c.card, tr), before, 'oversize: unchanged');
  }
  // The card still pays the honest request, at the genuine terminal.
  t.is((await genuine.term.kernel.charge(readerOn(tr), 5_000)).kind, 'APPROVED');
  await settle(genuine.term, bo);
  await books(t, bo, 'hostile terminal requests');
});

/** The last approved payment's request as the genuine terminal signed it (from its journal). */
function lastRequestOf(term: Terminal): Uint8Array {
  const p = term.journal.listPayments()[0]!;
  return term.journal.getAttempt(p.nonce)!.request;
}

test('a request the card may sign but the ledger refuses for its time returns its value to the card at the next sync', async (t) => {
  const { bo, hostile } = await world(t);
  const c = await newCard(bo);
  const tr = c.transport;
  const balance = async () => {
    await selectApplet(tr);
    return (await getStatus(tr)).balance;
  };
  const start = await balance();
  // Within the card's bound (10 days) but far ahead of the ledger; and dated before the card's certificate.
  const CASES = [
    { name: '10 days ahead', time: nowSec() + 10 * 86_400, code: 'TRANSFER_TIME' },
    { name: 'before the card was certified', time: nowSec() - 400 * 86_400, code: 'HANDOVER_CHAIN' },
  ];
  let paid = 0;
  for (const k of CASES) {
    const r = await pay(tr, signed(hostile, requestOf(hostile, 25_000, { time: k.time })));
    if (r.sw !== SW.OK) {
      t.log(`${k.name}: the card refuses (${swHex(r.sw)})`);
      continue;
    }
    paid += 25_000;
    const [o] = await ledgerVerdicts(bo, hostile, [r.data]);
    t.is(o!.status, OutcomeStatus.INVALID, `${k.name}: ${o!.status}`);
    t.is(o!.code, k.code, k.name);
    await books(t, bo, k.name);
  }
  t.is(await balance(), start - paid);
  const receipt = openSigned('SyncReceipt', await syncCard(bo, tr)).message;
  t.is(await balance(), start, 'the refused payments came back at the sync');
  t.true(receipt.voided.length >= paid / 25_000);
  await books(t, bo, 'time-refused payments');
});
