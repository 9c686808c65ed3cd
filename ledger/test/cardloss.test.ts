/**
 * Lost or stolen cards (SPEC §7.9) and the defund (§7.6.3) at the ledger:
 * the bank's block revokes the card; the restore is refused before the void
 * window and for a card that is not blocked or not the bank's; after the
 * window it credits the bank with what the card still held (its unspent
 * coins and its unsettled recorded transfers) against a ledger-signed
 * Restitution, once; a late handover of a restored coin is voided or a double
 * spend; a defund empties the card into its bank without revoking it; the
 * books balance after every step.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { OutcomeStatus, openSigned, toHex, verifyCoseSign1, fromHex } from '@dt/protocol';
import { createTestLedger } from '../src/testkit.ts';
import { openRestitution, signCardBankRequest } from '../src/cardloss.ts';
import { signLoadOrder } from '../src/load.ts';
import { LedgerError } from '../src/ledger.ts';
import { createPki } from '../src/pki.ts';

const WEEK = 7 * 86_400;

test('block, restore after the void window, a late handover voided, a second restore answers the same record; books balance', async (t) => {
  const k = await createTestLedger();
  const bankKid = k.pki.bank.kid;
  const balance0 = (await k.ledger.bankBalances())[toHex(bankKid)]!;
  const card = await k.fundCard(10_000);
  const kid = card.identity.kid;
  const a = k.newTerminal('shop-a');
  const b = k.newTerminal('shop-b');
  // Offline: 2000.00 at B (never submitted in time), then 3000.00 at A (submitted: carries both).
  const pb = card.wallet.pay(k.request(b, 2_000));
  const pa = card.wallet.pay(k.request(a, 3_000));
  await k.ledger.settle([k.batch(a, [pa.handover])]);
  // A pending load, cancelled back to the bank at the restore.
  await k.ledger.load(signLoadOrder({ card: kid, amount: 500, id: new Uint8Array(randomBytes(16)), time: k.clock.now }, k.pki.bank.signer));

  const notBlocked = signCardBankRequest('restore', { card: kid, time: k.clock.now }, k.pki.bank.signer);
  await t.throwsAsync(k.ledger.restoreCard(notBlocked), { instanceOf: LedgerError, message: /NOT_BLOCKED/ });

  const block = signCardBankRequest('block', { card: kid, time: k.clock.now }, k.pki.bank.signer);
  const blocked = await k.ledger.blockCard(block);
  t.is(blocked.restoreAfter, blocked.blockedAt + WEEK);
  t.deepEqual(await k.ledger.blockCard(block), blocked, 'a second block answers the first');
  const crl = openSigned('RevocationList', await k.ledger.crl()).message;
  t.true(
    crl.revoked.some((r) => toHex(r) === toHex(kid)),
    'the revocation list names the card',
  );
  t.is(crl.version, blocked.crlVersion);
  await t.throwsAsync(
    k.ledger.load(signLoadOrder({ card: kid, amount: 100, id: new Uint8Array(randomBytes(16)), time: k.clock.now }, k.pki.bank.signer)),
    { message: /CARD_REVOKED/ },
  );

  // Another bank may neither block nor restore it.
  const other = k.pki.createBank({ name: 'other', perms: 3 });
  await k.ledger.registerBank(other.cert);
  await t.throwsAsync(k.ledger.restoreCard(signCardBankRequest('restore', { card: kid, time: k.clock.now }, other.signer)), {
    message: /NOT_PERMITTED/,
  });
  // A stranger's key is no bank.
  const stranger = createPki({ now: k.clock.now }).bank;
  await t.throwsAsync(k.ledger.blockCard(signCardBankRequest('block', { card: kid, time: k.clock.now }, stranger.signer)), {
    message: /BANK_UNKNOWN/,
  });

  const restore = signCardBankRequest('restore', { card: kid, time: k.clock.now }, k.pki.bank.signer);
  await t.throwsAsync(k.ledger.restoreCard(restore), { instanceOf: LedgerError, message: /TOO_EARLY/ });
  t.true((await k.ledger.audit()).ok);

  k.clock.now += WEEK;
  const r = await k.ledger.restoreCard(restore);
  // 10000 - 3000 settled at A = 7000: the change of A's transfer (5000) and B's unsettled 2000.
  t.is(r.amount, 7_000);
  t.is(r.cancelledLoads, 500);
  const rec = openRestitution(fromHex(r.record));
  t.notThrows(() => verifyCoseSign1(rec.cose, k.pki.ledger.keys.publicKey), 'the record is signed by the ledger');
  t.deepEqual(
    { card: toHex(rec.record.card), bank: toHex(rec.record.bank), amount: rec.record.amount, blocked: rec.record.blocked },
    { card: toHex(kid), bank: toHex(bankKid), amount: 7_000, blocked: blocked.blockedAt },
  );
  t.is((await k.ledger.bankBalances())[toHex(bankKid)], balance0 - 10_000 + 7_000, 'the bank holds all but what A was paid');
  t.deepEqual(await k.ledger.restoreCard(restore), r, 'a second restore answers the same record');
  const audit = await k.ledger.audit();
  t.true(audit.ok, JSON.stringify(audit));
  t.is(audit.pendingPayee + audit.unspentTokens + audit.unspentChange + audit.pendingLoads, 0);

  // B submits its payment after the restore: voided (its value went back with the card's).
  const [late] = await k.ledger.settle([k.batch(b, [pb.handover])]);
  t.is(openSigned('Outcome', late![0]!).message.status, OutcomeStatus.VOIDED);
  t.true((await k.ledger.audit()).ok);
  t.like(await k.ledger.cardInfo(kid), { restored: true, blockedAt: blocked.blockedAt, pendingLoads: 0 });
});

test('a coin spent after its restore is a double spend; the books still balance', async (t) => {
  const k = await createTestLedger();
  const card = await k.fundCard(10_000);
  const kid = card.identity.kid;
  const a = k.newTerminal('shop-a');
  await k.ledger.blockCard(signCardBankRequest('block', { card: kid, time: k.clock.now }, k.pki.bank.signer));
  k.clock.now += WEEK;
  const r = await k.ledger.restoreCard(signCardBankRequest('restore', { card: kid, time: k.clock.now }, k.pki.bank.signer));
  t.is(r.amount, 10_000);
  // The thief pays at a terminal that still holds the old list (version 0).
  const p = card.wallet.pay(k.request(a, 4_000));
  const [out] = await k.ledger.settle([k.batch(a, [p.handover], { crlVersion: 0 })]);
  t.is(openSigned('Outcome', out![0]!).message.status, OutcomeStatus.DOUBLE_SPEND);
  const audit = await k.ledger.audit();
  t.true(audit.ok, JSON.stringify(audit));
  // A found card syncing after the restore forks too: nothing more comes back.
  await t.throwsAsync(k.ledger.sync(card.wallet.beginSync(new Uint8Array(randomBytes(16)))), { message: /DOUBLE_SPEND/ });
  t.true((await k.ledger.audit()).ok);
});

test('defund: the offline chain is recorded, the rest goes to the issuing bank, the card is empty, not revoked, and can be loaded again', async (t) => {
  const k = await createTestLedger();
  const bankKid = toHex(k.pki.bank.kid);
  const before = (await k.ledger.bankBalances())[bankKid]!;
  const card = await k.fundCard(10_000);
  const a = k.newTerminal('shop-a');
  const p = card.wallet.pay(k.request(a, 3_000));
  const req = card.wallet.beginSync(new Uint8Array(randomBytes(16)));
  const receipt = await k.ledger.defund(req);
  const m = openSigned('SyncReceipt', receipt).message;
  t.deepEqual({ tokens: m.tokens.length, redeemed: m.redeemed, loaded: m.loaded }, { tokens: 0, redeemed: 7_000, loaded: 0 });
  card.wallet.completeSync(receipt, k.pki.ledger.keys.publicKey);
  t.is(card.wallet.balance, 0);
  t.deepEqual(await k.ledger.defund(req), receipt, 'the same request gets the same receipt');
  t.is((await k.ledger.bankBalances())[bankKid], before - 10_000 + 7_000);
  t.true((await k.ledger.audit()).ok);
  // The merchant's payment still settles; the card is valid and takes a new load.
  const [out] = await k.ledger.settle([k.batch(a, [p.handover])]);
  t.is(openSigned('Outcome', out![0]!).message.status, OutcomeStatus.SETTLED);
  t.is((await k.ledger.cardInfo(card.identity.kid))!.revokedIn, null);
  await k.topUp(card, 1_000);
  t.is(card.wallet.balance, 1_000);
  const audit = await k.ledger.audit();
  t.true(audit.ok, JSON.stringify(audit));
});
