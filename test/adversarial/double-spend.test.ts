/**
 * Adversarial group 4: double-spend games against the ledger, with cloned cards whose keys are
 * known and with a colluding merchant.
 *
 * A clone is either a second chip with a byte-for-byte copy of the card's memory running the
 * real firmware (world.ts `cloneCard`: it taps real terminals, which approve it offline because
 * none of them knows the others), or the reference wallet over the card's state and key
 * (`cloneOf`: it signs whatever the attacker wants: skipped counters, stripped handovers, whole
 * forked branches). Terminals are the real kernels with their journals, settling through the real
 * acquirer; what a colluding merchant submits by hand goes to the ledger's HTTP API in batches
 * signed by its certified terminal key (world.ts `ledgerVerdicts`).
 *
 * Every game must end in DOUBLE_SPEND with the proof (two objects the card key signed, sharing a
 * counter or an input) and the card's revocation recorded; cover only as SPEC §7.7 allows it
 * (earned once per (terminal, card, counter) and per coin, never above the card's certified
 * `offlineTotal`, never taking the bank below its floor); and after every game the books.
 */
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import {
  bytesEqual,
  decodeMessage,
  encodeMessage,
  HandoverCode,
  nobleVerifier,
  openSigned,
  OutcomeStatus,
  selectApplet,
  syncBeginCommand,
  toHex,
  transmitOk,
  verifyCoseSign1,
  type Outcome,
  type ReferenceWallet,
} from '@dt/protocol';
import { Ledger, nativeSigner, openSqliteStorage, signLoadOrder } from '@dt/ledger';
import type { SimulatedCard } from '@dt/card-applet-sim';
import {
  books,
  cloneCard,
  cloneOf,
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
  tapCapturing,
  VARIANT,
  type BackOffice,
  type Terminal,
} from './world.ts';

const OFFLINE_TOTAL = VARIANT.limits.offlineTotal;

/** What a terminal asks (the wallet signs the transfer answering it). */
const requestFor = (term: Terminal, amount: number) => ({
  amount,
  currency: term.identity.currency,
  terminal: term.identity.kid,
  merchant: term.identity.merchant.id,
  mcc: term.identity.merchant.mcc,
  nonce: rnd16(),
  time: nowSec(),
});

/** The card's public key, from its memory. */
const publicKeyOf = (card: SimulatedCard): Uint8Array => stateOf(card.storage).publicKey!;

/** A card-signed object of a proof: a Transfer or a SyncRequest, with its counter and its claims. */
function claimOf(bytes: Uint8Array) {
  try {
    const o = openSigned('Transfer', bytes);
    return { cose: o.cose, card: o.message.card, counter: o.message.counter, claims: o.message.inputs };
  } catch {
    const o = openSigned('SyncRequest', bytes);
    return { cose: o.cose, card: o.message.card, counter: o.message.counter, claims: o.message.holdings };
  }
}

/** A DOUBLE_SPEND outcome with a proof: two different objects, both signed by the card key, sharing a counter or an input. */
function isProof(t: ExecutionContext, o: Outcome, card: SimulatedCard, kid: Uint8Array, label: string): void {
  t.is(o.status, OutcomeStatus.DOUBLE_SPEND, `${label}: DOUBLE_SPEND (${o.status} ${o.code})`);
  t.true(o.code === 'COUNTER_REUSED' || o.code === 'INPUT_SPENT', `${label}: code ${o.code}`);
  t.true(bytesEqual(o.card, kid), `${label}: names the card`);
  if (!o.proof) return void t.fail(`${label}: no proof`);
  const [a, b] = o.proof.map(claimOf) as [ReturnType<typeof claimOf>, ReturnType<typeof claimOf>];
  t.false(bytesEqual(o.proof[0], o.proof[1]), `${label}: two different objects`);
  for (const x of [a, b]) {
    t.true(bytesEqual(x.card, kid), `${label}: the proof's objects are the card's`);
    t.notThrows(() => verifyCoseSign1(x.cose, publicKeyOf(card), nobleVerifier), `${label}: signed by the card key`);
  }
  const shared = a.counter === b.counter || a.claims.some((i) => b.claims.some((j) => bytesEqual(i, j)));
  t.true(shared, `${label}: same counter or same input`);
}

/** The proof and the revocation are in the ledger's records. */
async function recorded(t: ExecutionContext, bo: BackOffice, kid: Uint8Array, label: string): Promise<void> {
  const a = await bo.ledger.audit();
  t.true(
    a.proofs.some((p) => p.card === toHex(kid)),
    `${label}: the proof is recorded`,
  );
  t.is(a.revocations.filter((r) => r.card === toHex(kid)).length, 1, `${label}: the card is revoked, once`);
  const crl = openSigned('RevocationList', await bo.ledger.crl()).message;
  t.true(
    crl.revoked.some((k) => bytesEqual(k, kid)),
    `${label}: the latest revocation list names the card`,
  );
}

/** What was covered for one card, from the ledger's tables. */
function coversOf(dir: string, kid: Uint8Array): { terminal: string; counter: number; amount: number }[] {
  const db = new Database(join(dir, 'ledger.db'), { readonly: true, fileMustExist: true });
  try {
    return (
      db.prepare(`SELECT terminal, counter, amount FROM covers WHERE card = ? ORDER BY counter`).all(Buffer.from(kid)) as {
        terminal: Buffer;
        counter: number;
        amount: number;
      }[]
    ).map((r) => ({ terminal: toHex(r.terminal), counter: r.counter, amount: r.amount }));
  } finally {
    db.close();
  }
}

/** The cover bound for one card (SPEC §7.7 rules 4, 5): within offlineTotal, once per (terminal, counter). */
function coverBounded(t: ExecutionContext, dir: string, kid: Uint8Array, label: string): number {
  const covers = coversOf(dir, kid);
  const total = covers.reduce((s, c) => s + c.amount, 0);
  t.true(total <= OFFLINE_TOTAL, `${label}: covered ${total} <= offlineTotal ${OFFLINE_TOTAL}`);
  const keys = covers.map((c) => `${c.terminal}/${c.counter}`);
  t.is(new Set(keys).size, keys.length, `${label}: once per (terminal, card, counter)`);
  return total;
}

/** Reads back the ledger's verdict on handovers it already judged (a replay changes no value). */
async function verdictsOf(bo: BackOffice, term: Terminal, handovers: Uint8Array[]): Promise<Outcome[]> {
  const before = await bo.ledger.audit();
  const out = await ledgerVerdicts(bo, term, handovers);
  const after = await bo.ledger.audit();
  if (after.redeemed !== before.redeemed || after.covered !== before.covered || after.bankBalances !== before.bankBalances)
    throw new Error('reading a verdict moved value');
  return out;
}

/** A card of its own and a clone of its chip, before any payment: the two spend the same state. */
async function cardAndClone(bo: BackOffice) {
  const c = await newCard(bo);
  const clone = cloneCard(c.card);
  return { ...c, clone };
}

// ---------------------------------------------------------------------------------------------
test('same counter, different content: a chip and its clone at two terminals; the revoked clone goes on', async (t) => {
  const { dir, bo } = await startWorld(t);
  await genuinePayment(t, bo, dir);
  const t1 = await newTerminal(t, bo, dir, 'KZ-T1');
  const t2 = await newTerminal(t, bo, dir, 'KZ-T2');
  // A terminal that will not sync again: it keeps the list from before the revocation.
  const offline = await newTerminal(t, bo, dir, 'KZ-OFFLINE');
  const { card, kid, transport, clone } = await cardAndClone(bo);
  const bankBefore = Object.values(await bo.ledger.bankBalances())[0]!;

  const a = await tapCapturing(t1, transport, 100_000);
  const b = await tapCapturing(t2, clone.transport, 200_000);
  t.is(a.outcome.kind, 'APPROVED', 'the chip, offline at T1');
  t.is(b.outcome.kind, 'APPROVED', 'its clone, offline at T2: no terminal knows the other');
  t.is(openSigned('Transfer', decodeMessage('Handover', a.handover!).transfer).message.counter, 2);
  t.is(openSigned('Transfer', decodeMessage('Handover', b.handover!).transfer).message.counter, 2, 'the same counter');
  await settle(t1, bo);
  await settle(t2, bo);
  t.is(t1.journal.totalsByState().settled.count, 1, 'the first to arrive settles');
  const [ds] = t2.journal.listPayments();
  t.is(ds!.state, 'double_spent', 'the second is a double spend');
  t.is(ds!.outcomeCode, 'COUNTER_REUSED');
  t.true(ds!.covered, 'T2 followed the rules and could not know: covered by the issuing bank');
  const [o] = await verdictsOf(bo, t2, [b.handover!]);
  isProof(t, o!, card, kid, 'the second spend');
  await recorded(t, bo, kid, 'the second spend');
  t.is(coverBounded(t, dir, kid, 'the second spend'), 200_000);
  t.is(Object.values(await bo.ledger.bankBalances())[0], bankBefore - 200_000, 'the bank paid the cover');
  await books(t, bo, 'same counter, different content');

  // The revoked clone goes on: a terminal holding the new list declines it ...
  const t3 = await newTerminal(t, bo, dir, 'KZ-T3');
  const declined = await t3.kernel.charge(readerOn(clone.transport), 50_000);
  t.is(declined.kind, 'DECLINED');
  t.is(declined.kind === 'DECLINED' ? declined.reason : '', HandoverCode.CARD_REVOKED);
  // ... one with the old list approves it offline, and the ledger finds the fork in its history.
  const c = await tapCapturing(offline, clone.transport, 300_000);
  t.is(c.outcome.kind, 'APPROVED', 'an old list does not name the clone');
  await settle(offline, bo);
  const [late] = offline.journal.listPayments();
  t.is(late!.state, 'double_spent', 'the revoked clone continuing its branch');
  const [lo] = await verdictsOf(bo, offline, [c.handover!]);
  isProof(t, lo!, card, kid, 'the revoked clone continuing');
  await recorded(t, bo, kid, 'the revoked clone continuing');
  coverBounded(t, dir, kid, 'the revoked clone continuing');
  // The chip itself can no longer sync into a fresh chain: its next counter is the clone's.
  await selectApplet(transport);
  const req = await transmitOk(transport, syncBeginCommand(rnd16()), { maxResponse: 1 << 20 });
  const r = await fetch(`${bo.ledgerServer.url}/v1/sync`, { method: 'POST', headers: { 'content-type': 'application/cbor' }, body: req });
  t.is(r.status, 409);
  t.is(((await r.json()) as { code: string }).code, 'DOUBLE_SPEND');
  await recorded(t, bo, kid, 'the chip syncing after the fork');
  await books(t, bo, 'the revoked clone continuing');
});

// ---------------------------------------------------------------------------------------------
test('the same input coin spent twice with different counters (a clone that skips a counter)', async (t) => {
  const { dir, bo } = await startWorld(t);
  await genuinePayment(t, bo, dir);
  const t1 = await newTerminal(t, bo, dir, 'KZ-T1');
  const t2 = await newTerminal(t, bo, dir, 'KZ-T2');
  const { card, kid, transport } = await newCard(bo);
  const before = stateOf(card.storage);
  const token = before.coins[0]!.id;

  t.is((await t1.kernel.charge(readerOn(transport), 100_000)).kind, 'APPROVED');
  await settle(t1, bo);
  // The clone signs counter 3 (not 2) spending the very token the chip spent at counter 2.
  const wallet = cloneOf({ ...before, counter: before.counter + 1 });
  const paid = wallet.pay(requestFor(t2, 150_000), { inputs: [token] });
  const tr = openSigned('Transfer', paid.transfer).message;
  t.is(tr.counter, before.counter + 2, 'another counter');
  t.true(bytesEqual(tr.inputs[0]!, token), 'the same input');
  const [o] = await ledgerVerdicts(bo, t2, [paid.handover]);
  isProof(t, o!, card, kid, 'same input, other counter');
  t.is(o!.code, 'INPUT_SPENT');
  t.false(o!.covered, 'its chain is broken (a terminal following SPEC §7.4 declines it): no cover');
  await recorded(t, bo, kid, 'same input, other counter');
  t.is(coverBounded(t, dir, kid, 'same input, other counter'), 0);
  await books(t, bo, 'same input, other counter');
});

// ---------------------------------------------------------------------------------------------
test('a stripped handover (no receipt, no history) hides nothing, in both arrival orders', async (t) => {
  const { dir, bo } = await startWorld(t);
  await genuinePayment(t, bo, dir);
  const t1 = await newTerminal(t, bo, dir, 'KZ-T1');
  const m = await newTerminal(t, bo, dir, 'KZ-COLLUDING');
  /** Receipt and history removed; the tokens the receipt carried given inline, so the handover is otherwise whole. */
  const strip = (h: Uint8Array) => {
    const x = decodeMessage('Handover', h);
    const named = x.receipt ? (x.receiptTokens ?? []).map((ix) => openSigned('SyncReceipt', x.receipt!).message.tokens[ix]!) : [];
    const { receipt: _r, receiptTokens: _rt, ...rest } = x;
    void _r;
    void _rt;
    const tokens = [...(x.tokens ?? []), ...named];
    t.true(tokens.length > 0, 'the stripped handover still carries its provenance');
    return encodeMessage('Handover', { ...rest, tokens, history: [] });
  };

  // Order 1: the chip's payment settles first, the clone's stripped one arrives after.
  {
    const { card, kid, transport } = await newCard(bo);
    const wallet = cloneOf(stateOf(card.storage));
    t.is((await t1.kernel.charge(readerOn(transport), 100_000)).kind, 'APPROVED');
    await settle(t1, bo);
    const stripped = strip(wallet.pay(requestFor(m, 900_000)).handover);
    const [o] = await ledgerVerdicts(bo, m, [stripped]);
    isProof(t, o!, card, kid, 'stripped, arriving second');
    t.false(o!.covered, 'a handover no terminal may approve earns no cover');
    await recorded(t, bo, kid, 'stripped, arriving second');
    await books(t, bo, 'stripped, arriving second');
  }
  // Order 2: the stripped one arrives first: INVALID, but its transfer is evidence; the chip's
  // payment arriving after it is the fork, proven and revoked.
  {
    const { card, kid, transport } = await newCard(bo);
    const wallet = cloneOf(stateOf(card.storage));
    const stripped = strip(wallet.pay(requestFor(m, 900_000)).handover);
    const [first] = await ledgerVerdicts(bo, m, [stripped]);
    t.is(first!.status, OutcomeStatus.INVALID, 'alone it is an unanchored chain');
    t.is(first!.code, 'HISTORY_BROKEN');
    t.false(
      (await bo.ledger.audit()).revocations.some((r) => r.card === toHex(kid)),
      'no fork yet',
    );
    const a = await tapCapturing(t1, transport, 100_000);
    t.is(a.outcome.kind, 'APPROVED');
    await settle(t1, bo);
    const p = t1.journal.listPayments().find((x) => x.amount === 100_000 && bytesEqual(x.card, kid));
    t.is(p!.state, 'double_spent', "the chip's payment, arriving second, is the double spend");
    const [o] = await verdictsOf(bo, t1, [a.handover!]);
    isProof(t, o!, card, kid, 'stripped, arriving first');
    await recorded(t, bo, kid, 'stripped, arriving first');
    coverBounded(t, dir, kid, 'stripped, arriving first');
    await books(t, bo, 'stripped, arriving first');
  }
});

// ---------------------------------------------------------------------------------------------
test('reverse arrival order: the clone’s spend arrives first, the chip’s two payments after it', async (t) => {
  const { dir, bo } = await startWorld(t);
  await genuinePayment(t, bo, dir);
  const t1 = await newTerminal(t, bo, dir, 'KZ-T1');
  const t2 = await newTerminal(t, bo, dir, 'KZ-T2');
  const { card, kid, transport, clone } = await cardAndClone(bo);
  const a = await tapCapturing(t1, transport, 100_000);
  const a2 = await tapCapturing(t1, transport, 120_000);
  const b = await tapCapturing(t2, clone.transport, 300_000);
  for (const x of [a, a2, b]) t.is(x.outcome.kind, 'APPROVED');
  await settle(t2, bo); // the second spend arrives first
  t.is(t2.journal.totalsByState().settled.count, 1, 'the first to arrive settles, whoever spent first');
  await settle(t1, bo);
  const states = t1.journal.listPayments().map((p) => p.state);
  t.deepEqual(states, ['double_spent', 'double_spent'], 'the counter-2 fork, and the counter-3 payment that carries it in its history');
  const outs = await verdictsOf(bo, t1, [a.handover!, a2.handover!]);
  outs.forEach((o, i) => isProof(t, o, card, kid, `the chip's payment ${i + 1}`));
  await recorded(t, bo, kid, 'reverse order');
  const covered = coverBounded(t, dir, kid, 'reverse order');
  t.is(
    covered,
    outs.filter((o) => o.covered).reduce((s, o) => s + o.amount, 0),
    'the covers are the covered outcomes',
  );
  await books(t, bo, 'reverse order');
});

// ---------------------------------------------------------------------------------------------
test('the same fork at several terminals: five clones, five terminals, one settlement; then the same bytes resubmitted elsewhere', async (t) => {
  const { dir, bo } = await startWorld(t);
  await genuinePayment(t, bo, dir);
  const { card, kid } = await newCard(bo);
  const terms: Terminal[] = [];
  for (let i = 0; i < 5; i++) terms.push(await newTerminal(t, bo, dir, `KZ-SHOP-${i}`));
  const handovers: Uint8Array[] = [];
  for (const term of terms) {
    const c = cloneCard(card);
    const r = await tapCapturing(term, c.transport, 900_000);
    t.is(r.outcome.kind, 'APPROVED', 'each clone is approved offline');
    handovers.push(r.handover!);
  }
  for (const term of terms) await term.sync(); // every batch at the acquirer
  await bo.acquirer.forwardNow(); // one settlement
  for (const term of terms) await term.sync();
  const states = terms.map((term) => term.journal.listPayments()[0]!);
  t.is(states.filter((p) => p.state === 'settled').length, 1, 'exactly one settles');
  t.is(states.filter((p) => p.state === 'double_spent').length, 4, 'the four others are double spends');
  for (const [i, term] of terms.entries()) {
    if (states[i]!.state !== 'double_spent') continue;
    const [o] = await verdictsOf(bo, term, [handovers[i]!]);
    isProof(t, o!, card, kid, `clone at terminal ${i}`);
  }
  await recorded(t, bo, kid, 'five clones');
  const covered = coverBounded(t, dir, kid, 'five clones');
  t.is(covered, 900_000, 'one cover: all four spend the same coin, covered at most once');
  // The same fork bytes resubmitted by the other terminals (a wrong payee for them): DOUBLE_SPEND
  // as first judged, no second cover, no value anywhere.
  const audit = await bo.ledger.audit();
  const dsIndex = states.findIndex((p) => p.state === 'double_spent');
  for (const [i, term] of terms.entries()) {
    if (i === dsIndex) continue;
    const [o] = await ledgerVerdicts(bo, term, [handovers[dsIndex]!]);
    isProof(t, o!, card, kid, `the fork resubmitted by terminal ${i}`);
  }
  const after = await bo.ledger.audit();
  t.is(after.covered, audit.covered, 'no second cover');
  t.is(after.redeemed, audit.redeemed, 'nobody paid');
  await books(t, bo, 'the same fork at several terminals');
});

// ---------------------------------------------------------------------------------------------
test('a colluding merchant with clones: the same counter and coin under an old list version earn one cover; new branches stop at the offline allowance', async (t) => {
  const { dir, bo } = await startWorld(t);
  await genuinePayment(t, bo, dir);
  const t1 = await newTerminal(t, bo, dir, 'KZ-T1');
  const m = await newTerminal(t, bo, dir, 'KZ-COLLUDING');
  const { card, kid, transport } = await newCard(bo);
  const s1 = stateOf(card.storage);
  t.is((await t1.kernel.charge(readerOn(transport), 100_000)).kind, 'APPROVED');
  await settle(t1, bo);
  const v0 = { crlVersion: 0 };

  // (1) Transfers with the same counter and the same coin (the loaded token), each in its own batch
  // declaring revocation list version 0, also after the card is revoked: one cover.
  const same: Outcome[] = [];
  for (let i = 0; i < 5; i++) {
    const w = cloneOf(s1);
    const [o] = await ledgerVerdicts(bo, m, [w.pay(requestFor(m, 900_000 - i)).handover], v0);
    isProof(t, o!, card, kid, `same counter and coin #${i}`);
    same.push(o!);
  }
  t.deepEqual(
    same.map((o) => o.covered),
    [true, false, false, false, false],
    'the same (terminal, card, counter) and coin are covered once',
  );
  await recorded(t, bo, kid, 'same counter and coin');
  t.is(coverBounded(t, dir, kid, 'same counter and coin'), 900_000);
  await books(t, bo, 'same counter and coin');
  // The same handover again in a new batch: its first verdict, no second cover.
  const again = cloneOf(s1);
  const h = again.pay(requestFor(m, 777_000)).handover;
  const [x1] = await ledgerVerdicts(bo, m, [h], v0);
  const [x2] = await ledgerVerdicts(bo, m, [h], v0);
  t.false(x1!.covered);
  t.deepEqual(x2, x1, 'a resubmitted handover repeats its verdict');

  // (2) New branches from the same anchor, each paying at a new counter with a new coin: covered
  // until the card's certified offline allowance is used up, then no more.
  const branch = (k: number): Uint8Array => {
    const w: ReferenceWallet = cloneOf(s1);
    for (let i = 0; i < k; i++) w.pay(requestFor(m, 1_000 + k * 10 + i));
    return w.pay(requestFor(m, 900_000)).handover;
  };
  // Branch lengths: the second 1 pays at counter 3 again (another coin): (terminal, card, counter) is covered once.
  const lengths = [1, 1, 2, 3, 4, 5];
  const branches: Outcome[] = [];
  for (const k of lengths) {
    const [o] = await ledgerVerdicts(bo, m, [branch(k)], v0);
    isProof(t, o!, card, kid, `branch ${k}`);
    branches.push(o!);
  }
  // 900,000 covered in (1); then counters 3, 4, 5 reach 3,600,000; counter 6 would pass the 4,000,000 allowance.
  t.deepEqual(
    branches.map((o) => o.covered),
    [true, false, true, true, false, false],
    'covered once per counter, until the offline allowance is used up',
  );
  const total = coverBounded(t, dir, kid, 'branches');
  t.is(total, 3_600_000, 'four covers of 900,000');
  t.true(total + 900_000 > OFFLINE_TOTAL, `the allowance is used up (${total})`);
  // A list version the ledger never published, or one that names the card: no cover.
  for (const crlVersion of [999, (await bo.ledger.audit()).crlVersion]) {
    const [o] = await ledgerVerdicts(bo, m, [branch(7)], { crlVersion });
    t.false(o!.covered, `declared version ${crlVersion}: not believable`);
  }
  t.deepEqual((await bo.ledger.audit()).coverBreaches, []);
  await books(t, bo, 'a colluding merchant');
});

// ---------------------------------------------------------------------------------------------
test('the bank floor: no cover below zero without a credit line, down to the line with one; audit fails on a floor broken in a copy of the database', async (t) => {
  const { dir, bo } = await startWorld(t);
  await genuinePayment(t, bo, dir);
  const bank = bo.pki.bank;
  const bankHex = toHex(bank.kid);
  const t1 = await newTerminal(t, bo, dir, 'KZ-T1');
  const shops = [await newTerminal(t, bo, dir, 'KZ-S1'), await newTerminal(t, bo, dir, 'KZ-S2'), await newTerminal(t, bo, dir, 'KZ-S3')];
  const { card, kid, transport } = await newCard(bo);
  const s1 = stateOf(card.storage);
  // Drain the bank: a load order for another card leaves it 300,000 tiyn.
  const sink = await newCard(bo);
  const left = (await bo.ledger.bankBalances())[bankHex]!;
  await bo.ledger.load(signLoadOrder({ card: sink.kid, amount: left - 300_000, id: rnd16(), time: nowSec() }, bank.signer));
  t.is((await bo.ledger.bankBalances())[bankHex], 300_000);
  t.is((await t1.kernel.charge(readerOn(transport), 100_000)).kind, 'APPROVED');
  await settle(t1, bo);
  // The list the shops hold: from before the card's revocation (they are offline since).
  const held = { crlVersion: (await bo.ledger.audit()).crlVersion };

  // A fork that would be covered, but the bank holds too little and has no credit line.
  const [o1] = await ledgerVerdicts(bo, shops[0]!, [cloneOf(s1).pay(requestFor(shops[0]!, 900_000)).handover], held);
  isProof(t, o1!, card, kid, 'fork with the bank drained');
  t.false(o1!.covered, 'no cover below the floor');
  t.is((await bo.ledger.bankBalances())[bankHex], 300_000, 'the bank never below zero without a credit line');
  await books(t, bo, 'fork with the bank drained');
  // With a credit line of 1,000,000 the next one is covered (the bank to -600,000), the one after is not.
  await bo.ledger.setCreditLine(bank.kid, 1_000_000);
  const lines = { [bankHex]: 1_000_000 };
  const [o2] = await ledgerVerdicts(bo, shops[1]!, [cloneOf(s1).pay(requestFor(shops[1]!, 900_000)).handover], held);
  isProof(t, o2!, card, kid, 'fork with a credit line');
  t.true(o2!.covered, 'covered within the credit line');
  t.is((await bo.ledger.bankBalances())[bankHex], -600_000);
  const w = cloneOf(s1);
  w.pay(requestFor(shops[2]!, 5_000));
  const [o3] = await ledgerVerdicts(bo, shops[2]!, [w.pay(requestFor(shops[2]!, 900_000)).handover], held);
  isProof(t, o3!, card, kid, 'fork beyond the credit line');
  t.false(o3!.covered, 'not covered below the floor');
  t.is((await bo.ledger.bankBalances())[bankHex], -600_000, 'the bank never below its floor');
  await recorded(t, bo, kid, 'the bank floor');
  coverBounded(t, dir, kid, 'the bank floor');
  await books(t, bo, 'the bank floor', lines);

  // The audit itself: in a copy of the database, move value from the bank to a merchant below the
  // floor (the supply invariant still holds): audit must fail and name the bank.
  const copy = join(dir, 'ledger-copy.db');
  const src = new Database(join(dir, 'ledger.db'), { readonly: true, fileMustExist: true });
  await src.backup(copy);
  src.close();
  const db = new Database(copy);
  db.prepare(`UPDATE banks SET balance = balance - 500000 WHERE kid = ?`).run(Buffer.from(bank.kid));
  db.prepare(`UPDATE merchants SET balance = balance + 500000 WHERE kid = ?`).run(Buffer.from(t1.identity.kid));
  db.close();
  const storage = openSqliteStorage(copy);
  t.teardown(() => storage.close());
  const broken = await Ledger.open({
    storage,
    signer: nativeSigner(bo.pki.ledger.keys),
    rootCert: bo.pki.issuer.cert,
    ledgerCert: bo.pki.ledger.cert,
  });
  const audit = await broken.audit();
  t.is(audit.difference, 0, 'the sums still agree');
  t.false(audit.ok, 'audit fails');
  t.deepEqual(
    audit.floorBreaches.map((f) => [f.kind, f.kid, f.balance, f.floor]),
    [['bank', bankHex, -1_100_000, -1_000_000]],
    'and names the bank below its floor',
  );
});

// ---------------------------------------------------------------------------------------------
test('racing arrivals: two clones’ spends in concurrent settle requests, two clones’ syncs at once', async (t) => {
  const { dir, bo } = await startWorld(t);
  await genuinePayment(t, bo, dir);
  const t1 = await newTerminal(t, bo, dir, 'KZ-T1');
  const t2 = await newTerminal(t, bo, dir, 'KZ-T2');
  for (let round = 0; round < 3; round++) {
    const { card, kid } = await newCard(bo);
    const s1 = stateOf(card.storage);
    const [a, b] = [cloneOf(s1).pay(requestFor(t1, 400_000)).handover, cloneOf(s1).pay(requestFor(t2, 500_000)).handover];
    const [[oa], [ob]] = await Promise.all([ledgerVerdicts(bo, t1, [a]), ledgerVerdicts(bo, t2, [b])]);
    const statuses = [oa!.status, ob!.status].sort();
    t.deepEqual(statuses, [OutcomeStatus.SETTLED, OutcomeStatus.DOUBLE_SPEND], `round ${round}: one settles, one is the double spend`);
    isProof(t, oa!.status === OutcomeStatus.DOUBLE_SPEND ? oa! : ob!, card, kid, `round ${round}`);
    await recorded(t, bo, kid, `round ${round}`);
    coverBounded(t, dir, kid, `round ${round}`);
    await books(t, bo, `racing settles, round ${round}`);
  }
  // Two clones sync at once, each with its own request at the same counter.
  const { card, kid } = await newCard(bo);
  const s1 = stateOf(card.storage);
  const reqs = [cloneOf(s1).beginSync(rnd16()), cloneOf(s1).beginSync(rnd16())];
  const answers = await Promise.all(
    reqs.map((body) => fetch(`${bo.ledgerServer.url}/v1/sync`, { method: 'POST', headers: { 'content-type': 'application/cbor' }, body })),
  );
  const codes = await Promise.all(
    answers.map(async (r) => (r.status === 200 ? 200 : `${r.status} ${((await r.json()) as { code: string }).code}`)),
  );
  t.true(codes.includes('409 DOUBLE_SPEND'), `one of two racing syncs at one counter is the double spend (${JSON.stringify(codes)})`);
  t.true(
    codes.every((c) => c === 200 || c === '409 DOUBLE_SPEND'),
    JSON.stringify(codes),
  );
  await recorded(t, bo, kid, 'racing syncs');
  await books(t, bo, 'racing syncs');
});
