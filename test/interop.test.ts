/**
 * Interoperability of the real card applet (firmware, hosted in-process by
 * card-applet-sim) with the real ledger: personalization with the ledger's
 * PKI, a bank load delivered through LOAD, offline payments settled from a
 * terminal batch, an orphan transfer voided at a later sync and accepted by
 * the card, a cloned card's double spend caught with its proof, and the
 * supply invariant after every step.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import {
  CLA,
  INS,
  SYNC_P1,
  OutcomeStatus,
  decodeMessage,
  openSigned,
  payloadHash,
  signMessage,
  toHex,
  transmitOk,
  type ApduTransport,
  pay,
  getStatus,
  selectApplet,
} from '@dt/protocol';
import { MemoryStorage } from '@dt/firmware';
import { InProcessTransport, SimulatedCard, personalizeCard } from '@dt/card-applet-sim';
import { signLoadOrder, type AuditReport } from '@dt/ledger';
import { createTestLedger, type TestLedger, type TestTerminal } from '@dt/ledger/testkit';

const rnd = (n: number) => new Uint8Array(randomBytes(n));

async function newCard(k: TestLedger): Promise<{ transport: InProcessTransport; storage: MemoryStorage; kid: Uint8Array }> {
  const storage = new MemoryStorage();
  const card = new SimulatedCard({ storage, now: () => k.clock.now });
  card.powerOn();
  const transport = new InProcessTransport(card);
  const bank = { signer: k.pki.bank.signer, cert: k.pki.bank.cert, root: k.pki.issuer.cert, ledgerCert: k.pki.ledger.cert };
  const p = await personalizeCard(transport, bank, {
    pin: '1234',
    puk: '12345678',
    now: k.clock.now,
    limits: { perPayment: 50_000, offlineTotal: 100_000, offlineCount: 10, cvmLimit: 40_000 },
  });
  await k.ledger.registerCard([p.certificate, k.pki.bank.cert]);
  return { transport, storage, kid: p.cardKid };
}

/** SYNC (or LOAD) through the card's APDUs against the ledger; returns the receipt. */
async function syncCard(k: TestLedger, t: ApduTransport, load = false): Promise<Uint8Array> {
  const ins = load ? INS.LOAD : INS.SYNC;
  const request = await transmitOk(t, { cla: CLA.PROPRIETARY, ins, p1: SYNC_P1.BEGIN, p2: 0, data: rnd(16), le: 256 });
  const receipt = await k.ledger.sync(request);
  await transmitOk(t, { cla: CLA.PROPRIETARY, ins, p1: SYNC_P1.COMPLETE, p2: 0, data: receipt });
  return receipt;
}

async function payAt(k: TestLedger, t: ApduTransport, terminal: TestTerminal, amount: number): Promise<Uint8Array> {
  const req = k.request(terminal, amount);
  const signed = signMessage('PaymentRequest', req, terminal.signer);
  return pay(t, signed);
}

function assertBooks(t: { true: (v: boolean, m?: string) => void }, a: AuditReport, what: string): void {
  t.true(a.ok, `supply invariant after ${what}: ${JSON.stringify(a)}`);
}

test('the firmware card and the ledger agree: load, pay, settle, void an orphan at a later sync', async (t) => {
  const k = await createTestLedger({ voidWindow: 3600 });
  t.teardown(() => k.close());
  const card = await newCard(k);
  const shop = k.newTerminal('KZ-SHOP-1');

  // The bank orders a load; the card takes it through LOAD BEGIN/COMPLETE.
  await k.ledger.load(signLoadOrder({ card: card.kid, amount: 60_000, id: rnd(16), time: k.clock.now }, k.pki.bank.signer));
  const r0 = openSigned('SyncReceipt', await syncCard(k, card.transport, true)).message;
  t.is(r0.loaded, 60_000);
  t.is((await getStatus(card.transport)).balance, 60_000);
  assertBooks(t, await k.ledger.audit(), 'load');

  // Two offline payments; the terminal submits only the first.
  const h1 = await payAt(k, card.transport, shop, 10_000);
  const h2 = await payAt(k, card.transport, shop, 5_000);
  const [outcomes] = await k.ledger.settle([k.batch(shop, [h1])]);
  t.is(openSigned('Outcome', outcomes![0]!).message.status, OutcomeStatus.SETTLED);
  t.is((await getStatus(card.transport)).balance, 45_000);

  // Sync: the card hands in its chain; the second transfer waits for its terminal.
  const r1 = openSigned('SyncReceipt', await syncCard(k, card.transport)).message;
  t.deepEqual(r1.voided, []);
  t.is((await getStatus(card.transport)).balance, 45_000);
  assertBooks(t, await k.ledger.audit(), 'first sync');

  // After the void window the orphan comes back at the next sync, and the card accepts it.
  k.clock.now += 7200;
  const r2 = openSigned('SyncReceipt', await syncCard(k, card.transport)).message;
  const orphan = payloadHash(openSigned('Transfer', decodeMessage('Handover', h2).transfer).cose);
  t.deepEqual(r2.voided.map(toHex), [toHex(orphan)]);
  t.is((await getStatus(card.transport)).balance, 50_000);
  assertBooks(t, await k.ledger.audit(), 'voiding sync');

  // The terminal's late submission is answered VOIDED: nothing is paid twice.
  const [late] = await k.ledger.settle([k.batch(shop, [h2])]);
  t.is(openSigned('Outcome', late![0]!).message.status, OutcomeStatus.VOIDED);
  assertBooks(t, await k.ledger.audit(), 'late submission');
  t.is((await k.ledger.merchantBalances())[toHex(shop.kid)] ?? 0, 10_000);
});

test('a cloned firmware card double-spends: the ledger keeps both transfers as proof and revokes the card', async (t) => {
  const k = await createTestLedger();
  t.teardown(() => k.close());
  const genuine = await newCard(k);
  await k.ledger.load(signLoadOrder({ card: genuine.kid, amount: 20_000, id: rnd(16), time: k.clock.now }, k.pki.bank.signer));
  await syncCard(k, genuine.transport, true);

  // The attack: same keys and state in a second card.
  const cloneStorage = new MemoryStorage(genuine.storage.snapshot());
  const cloneCard = new SimulatedCard({ storage: cloneStorage, now: () => k.clock.now });
  cloneCard.powerOn();
  const clone = new InProcessTransport(cloneCard);
  await selectApplet(clone);

  const a = k.newTerminal('KZ-SHOP-A');
  const b = k.newTerminal('KZ-SHOP-B');
  const ha = await payAt(k, genuine.transport, a, 15_000);
  const hb = await payAt(k, clone, b, 15_000);
  const [oa] = await k.ledger.settle([k.batch(a, [ha])]);
  const [ob] = await k.ledger.settle([k.batch(b, [hb])]);
  t.is(openSigned('Outcome', oa![0]!).message.status, OutcomeStatus.SETTLED);
  const ds = openSigned('Outcome', ob![0]!).message;
  t.is(ds.status, OutcomeStatus.DOUBLE_SPEND);
  t.is(ds.proof?.length, 2);
  const proofCounters = ds.proof!.map((p) => openSigned('Transfer', p).message);
  t.deepEqual(
    proofCounters.map((p) => toHex(p.card)),
    [toHex(genuine.kid), toHex(genuine.kid)],
  );
  t.is(proofCounters[0]!.counter, proofCounters[1]!.counter, 'both transfers use the same card counter');
  const crl = openSigned('RevocationList', await k.ledger.crl()).message;
  t.true(
    crl.revoked.some((r) => toHex(r) === toHex(genuine.kid)),
    'the card is revoked',
  );
  t.true(ds.covered, 'terminal B followed the rules with the list it had (version 0)');
  assertBooks(t, await k.ledger.audit(), 'double spend');
});
