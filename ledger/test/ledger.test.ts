/**
 * The ledger's behaviour suite, run on BOTH storage backends: SQLite and a
 * throwaway PostgreSQL cluster this file starts itself (it fails, never
 * skips, when PostgreSQL is missing).
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import {
  BankPermission,
  bytesEqual,
  CURRENCY_KZT,
  encodeMessage,
  decodeMessage,
  encodeDeterministic,
  encodeStruct,
  ErrorCode,
  MarkSchema,
  openSigned,
  OutcomeStatus,
  payloadHash,
  signMessage,
  toHex,
  verifySigned,
  type Mark,
} from '@dt/protocol';
import { createTestLedger, type TestLedger } from '../src/testkit.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { openPostgresStorage } from '../src/storage/postgres.ts';
import { pgAvailable, startPgCluster, type PgCluster } from '../src/pg-cluster.ts';
import { LedgerError, MAX_PENDING_MARK_CLASSES, type CardInfo } from '../src/ledger.ts';
import { signLoadOrder } from '../src/load.ts';
import type { LedgerStorage } from '../src/storage/types.ts';
import { outcomes, stateDigest, STATUS_NAME } from './_helpers.ts';

let cluster: PgCluster | undefined;
let dbs = 0;

test.before(() => {
  if (!pgAvailable()) throw new Error('PostgreSQL server binaries not found (set PG_BIN); the storage suite must run on both backends');
  cluster = startPgCluster({ fsync: false });
});
test.after.always(() => cluster?.stop());

/** Name, storage, and validator threads (as `dt-ledger serve --validators 2` settles: validation and evidence on a pool). */
const BACKENDS: [string, () => Promise<LedgerStorage>, number?][] = [
  ['sqlite', async () => openSqliteStorage(':memory:')],
  ['postgres', async () => openPostgresStorage(cluster!.createDatabase(`ledger_${process.pid}_${++dbs}`))],
  ['sqlite, validator pool', async () => openSqliteStorage(':memory:'), 2],
];

const rnd16 = () => new Uint8Array(randomBytes(16));
const statuses = (list: readonly Uint8Array[]) => outcomes(list).map((o) => STATUS_NAME[o.status]);

async function withLedger(
  open: () => Promise<LedgerStorage>,
  t: ExecutionContext,
  fn: (k: TestLedger) => Promise<void>,
  opts: Parameters<typeof createTestLedger>[0] = {},
) {
  const k = await createTestLedger({ ...opts, storage: await open(), ...(WORKERS.has(open) ? { workers: WORKERS.get(open) } : {}) });
  try {
    await fn(k);
    const audit = await k.ledger.audit();
    t.true(audit.ok, `supply invariant: ${JSON.stringify(audit)}`);
  } finally {
    await k.close();
  }
}

const WORKERS = new Map(BACKENDS.flatMap(([, open, workers]) => (workers ? [[open, workers] as const] : [])));

for (const [name, open] of BACKENDS) {
  test(`${name}: valid payments settle, outcomes are ledger-signed, merchants are credited`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const b = k.newTerminal('shop-b');
      const p1 = card.wallet.pay(k.request(a, 1_000));
      const p2 = card.wallet.pay(k.request(b, 2_500));
      const p3 = card.wallet.pay(k.request(a, 500));
      const [oa, ob] = await k.ledger.settle([k.batch(a, [p1.handover, p3.handover]), k.batch(b, [p2.handover])]);
      t.deepEqual(statuses(oa!), ['SETTLED', 'SETTLED']);
      t.deepEqual(statuses(ob!), ['SETTLED']);
      for (const bytes of [...oa!, ...ob!]) {
        const o = verifySigned('Outcome', bytes, k.pki.ledger.keys.publicKey).message;
        t.false(o.covered);
        t.true(bytesEqual(o.card, card.identity.kid));
      }
      t.deepEqual(
        outcomes(oa!).map((o) => toHex(o.transfer)),
        [toHex(p1.transferHash), toHex(p3.transferHash)],
      );
      const m = await k.ledger.merchantBalances();
      t.is(m[toHex(a.kid)], 1_500);
      t.is(m[toHex(b.kid)], 2_500);
      const audit = await k.ledger.audit();
      t.is(audit.redeemed, 4_000);
      t.is(audit.unspentChange, 6_000);
    }));

  test(`${name}: replays are idempotent (same batch: same bytes; same handover elsewhere: ALREADY_SETTLED)`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const p1 = card.wallet.pay(k.request(a, 1_000));
      const batch = k.batch(a, [p1.handover]);
      const [first] = await k.ledger.settle([batch]);
      const before = await stateDigest(k.storage);
      k.clock.now += 60;
      const [again] = await k.ledger.settle([batch]);
      t.deepEqual(again!.map(toHex), first!.map(toHex));
      const [other] = await k.ledger.settle([k.batch(a, [p1.handover, p1.handover])]);
      const o = outcomes(other!);
      const orig = outcomes(first!)[0]!;
      t.deepEqual(
        o.map((x) => STATUS_NAME[x.status]),
        ['ALREADY_SETTLED', 'ALREADY_SETTLED'],
      );
      t.is(o[0]!.time, orig.time);
      t.is(o[0]!.amount, 1_000);
      t.is(toHex(o[0]!.transfer), toHex(orig.transfer));
      t.is(await stateDigest(k.storage), before);
      t.is((await k.ledger.merchantBalances())[toHex(a.kid)], 1_000);
    }));

  test(`${name}: every invalid handover gets an INVALID outcome with its stable code and changes no balance`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const b = k.newTerminal('shop-b');
      const cases: [string, Uint8Array, typeof a][] = [];
      // Tampered: a flipped bit in the transfer's signature.
      const good = card.wallet.clone().pay(k.request(a, 100));
      const h = decodeMessage('Handover', good.handover);
      const tr = h.transfer.slice();
      tr[tr.length - 1]! ^= 1;
      cases.push([ErrorCode.TRANSFER_SIGNATURE, encodeMessage('Handover', { ...h, transfer: tr }), a]);
      // Submitted by a terminal it does not pay.
      cases.push([ErrorCode.WRONG_PAYEE, good.handover, b]);
      // Over the certified per-payment limit.
      // (Each case that signs a new transfer uses a card of its own: two transfers of one card with the
      // same counter are a fork, which is DOUBLE_SPEND whatever else is wrong with them: SPEC §7.7.)
      const smallLimits = { perPayment: 1_000, offlineTotal: 5_000, offlineCount: 5, cvmLimit: 500 };
      const small = await k.fundCard(10_000, { limits: smallLimits });
      cases.push([ErrorCode.LIMIT_EXCEEDED, small.wallet.pay(k.request(a, 2_000), { enforceLimits: false, cvm: 1 }).handover, a]);
      const small2 = await k.fundCard(10_000, { limits: smallLimits });
      cases.push([ErrorCode.CVM_REQUIRED, small2.wallet.pay(k.request(a, 800), { enforceLimits: false }).handover, a]);
      // Future-dated transfer.
      const future = { ...k.request(a, 100), time: k.clock.now + 3_600 };
      cases.push([ErrorCode.TRANSFER_TIME, (await k.fundCard(10_000)).wallet.pay(future).handover, a]);
      // A token signed with the ledger key that the ledger never issued.
      const rogue = await k.fundCard(0);
      rogue.wallet.holdTokens(
        [
          signMessage(
            'Token',
            { serial: rnd16(), value: 5_000, currency: CURRENCY_KZT, owner: rogue.identity.kid, issued: k.clock.now },
            k.pki.ledger.signer,
          ),
        ],
        k.pki.ledger.keys.publicKey,
      );
      cases.push([ErrorCode.TOKEN_INVALID, rogue.wallet.pay(k.request(a, 100)).handover, a]);
      // A chain that is not anchored at a receipt or at genesis.
      cases.push([
        ErrorCode.HISTORY_BROKEN,
        encodeMessage(
          'Handover',
          (() => {
            const x = decodeMessage('Handover', good.handover);
            delete x.receipt;
            return x;
          })(),
        ),
        a,
      ]);
      // Garbage.
      cases.push([ErrorCode.HANDOVER_MALFORMED, new Uint8Array([0xa1, 0x00, 0x01]), a]);

      const before = await k.ledger.audit();
      for (const [code, handover, term] of cases) {
        const [o] = await k.ledger.settle([k.batch(term, [handover])]);
        const oc = outcomes(o!)[0]!;
        t.is(STATUS_NAME[oc.status], 'INVALID', code);
        t.is(oc.code, code);
        t.false(oc.covered);
        t.is(oc.amount, 0);
      }
      const after = await k.ledger.audit();
      t.is(after.redeemed, before.redeemed);
      t.is(after.unspentTokens, before.unspentTokens);
      // The good handover still settles afterwards.
      const [ok] = await k.ledger.settle([k.batch(a, [good.handover])]);
      t.deepEqual(statuses(ok!), ['SETTLED']);
    }));

  test(`${name}: a bad batch refuses the whole request and changes nothing`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const a = k.newTerminal('shop-a');
      const p = card.wallet.pay(k.request(a, 100));
      const good = k.batch(a, [p.handover]);
      const forged = signMessage('Batch', openSigned('Batch', k.batch(a, [p.handover])).message, k.newTerminal('x').signer);
      const before = await stateDigest(k.storage);
      const e1 = await t.throwsAsync(k.ledger.settle([good, forged]), { instanceOf: LedgerError });
      t.is(e1!.code, 'BAD_SIGNATURE');
      t.is(e1!.details.index, 1);
      // A terminal certified by a bank without ACQUIRING.
      const issuingOnly = k.pki.createBank({ name: 'issuing only', perms: BankPermission.ISSUING });
      const rogue = {
        ...k.pki.issueTerminal({ merchant: { id: 'r', mcc: 1, name: 'r' }, bank: issuingOnly }),
        merchant: 'r',
        mcc: 1,
        seq: 0,
      };
      const e2 = await t.throwsAsync(k.ledger.settle([k.batch(rogue, [p.handover])]), { instanceOf: LedgerError });
      t.is(e2!.code, 'TERMINAL_CHAIN');
      const e3 = await t.throwsAsync(k.ledger.settle([k.batch(a, [p.handover], { time: k.clock.now + 3_600 })]), {
        instanceOf: LedgerError,
      });
      t.is(e3!.code, 'BATCH_TIME');
      t.is(await stateDigest(k.storage), before);
      const [o] = await k.ledger.settle([good]);
      t.deepEqual(statuses(o!), ['SETTLED']);
    }));

  test(`${name}: double spend: proof of both signed transfers, revocation, cover by the issuing bank`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const clone = card.wallet.clone();
      const a = k.newTerminal('shop-a');
      const b = k.newTerminal('shop-b');
      const c = k.newTerminal('shop-c');
      const pa = card.wallet.pay(k.request(a, 3_000));
      const pb = clone.pay(k.request(b, 4_000));
      const banksBefore = (await k.ledger.audit()).bankBalances;
      const [oa] = await k.ledger.settle([k.batch(a, [pa.handover])]);
      t.deepEqual(statuses(oa!), ['SETTLED']);
      const batchB = k.batch(b, [pb.handover], { crlVersion: 0 });
      const [ob] = await k.ledger.settle([batchB]);
      const o = verifySigned('Outcome', ob![0]!, k.pki.ledger.keys.publicKey).message;
      t.is(o.status, OutcomeStatus.DOUBLE_SPEND);
      t.is(o.code, 'COUNTER_REUSED');
      t.true(o.covered);
      t.is(o.amount, 4_000);
      // The proof: both transfers, each verifiably signed by the card, same counter, different content.
      t.is(o.proof!.length, 2);
      const [f, s] = o.proof!.map((x) => verifySigned('Transfer', x, card.identity.keys.publicKey));
      t.is(toHex(o.proof![0]!), toHex(pa.transfer));
      t.is(toHex(o.proof![1]!), toHex(pb.transfer));
      t.is(f!.message.counter, s!.message.counter);
      t.notDeepEqual(payloadHash(f!.cose), payloadHash(s!.cose));
      // Revoked in a new signed list.
      const crl = verifySigned('RevocationList', await k.ledger.crl(), k.pki.ledger.keys.publicKey).message;
      t.is(crl.version, 1);
      t.true(crl.revoked.some((kid) => bytesEqual(kid, card.identity.kid)));
      // The issuing bank bore the loss; the merchant got paid.
      const audit = await k.ledger.audit();
      t.is(audit.bankBalances, banksBefore - 4_000);
      t.is(audit.covered, 4_000);
      t.is((await k.ledger.merchantBalances())[toHex(b.kid)], 4_000);
      t.is(audit.proofs.length, 1);
      t.is(audit.revocations[0]!.card, toHex(card.identity.kid));
      // Replays change nothing: same batch, same bytes; the handover elsewhere, same verdict, no second cover.
      const [again] = await k.ledger.settle([batchB]);
      t.deepEqual(again!.map(toHex), ob!.map(toHex));
      const [elsewhere] = await k.ledger.settle([k.batch(b, [pb.handover], { crlVersion: 5 })]);
      const oe = outcomes(elsewhere!)[0]!;
      t.is(oe.status, OutcomeStatus.DOUBLE_SPEND);
      t.true(oe.covered);
      t.is((await k.ledger.audit()).covered, 4_000);
      // A terminal that already had the revocation is not covered.
      const pc = card.wallet.clone().pay(k.request(c, 100)); // counter 2 of the original chain: fine
      const third = clone.pay(k.request(c, 200)); // counter 2 of the clone: forks again
      const [oc] = await k.ledger.settle([k.batch(c, [pc.handover, third.handover], { crlVersion: 1 })]);
      const ocs = outcomes(oc!);
      t.is(STATUS_NAME[ocs[0]!.status], 'SETTLED');
      t.is(STATUS_NAME[ocs[1]!.status], 'DOUBLE_SPEND');
      t.false(ocs[1]!.covered);
      t.is((await k.ledger.audit()).covered, 4_000);
      // A revoked card cannot be loaded; this card's own sync forks against pc (counter 2), so it is a double spend.
      const eLoad = await t.throwsAsync(
        k.ledger.load(signLoadOrder({ card: card.identity.kid, amount: 1, id: rnd16(), time: k.clock.now }, k.pki.bank.signer)),
        { instanceOf: LedgerError },
      );
      t.is(eLoad!.code, 'CARD_REVOKED');
      const e = await t.throwsAsync(k.ledger.sync(card.wallet.beginSync(rnd16())), { instanceOf: LedgerError });
      t.is(e!.code, 'DOUBLE_SPEND');
    }));

  test(`${name}: a revoked card's genuine sync: history recorded, loads cancelled, value redeemed to the issuing bank, no tokens`, (t) =>
    withLedger(
      open,
      t,
      async (k) => {
        const card = await k.fundCard(10_000);
        // A load ordered before the revocation is still pending at the sync.
        t.like(
          await k.ledger.load(signLoadOrder({ card: card.identity.kid, amount: 2_000, id: rnd16(), time: k.clock.now }, k.pki.bank.signer)),
          { state: 'pending' },
        );
        const clone = card.wallet.clone();
        const a = k.newTerminal('shop-a');
        const b = k.newTerminal('shop-b');
        const c = k.newTerminal('shop-c');
        const pa = card.wallet.pay(k.request(a, 3_000));
        const pb = clone.pay(k.request(b, 4_000));
        t.deepEqual(statuses((await k.ledger.settle([k.batch(a, [pa.handover])]))[0]!), ['SETTLED']);
        t.is(outcomes((await k.ledger.settle([k.batch(b, [pb.handover])]))[0]!)[0]!.status, OutcomeStatus.DOUBLE_SPEND);
        t.true((await k.ledger.audit()).revocations.some((r) => r.card === toHex(card.identity.kid)));
        // The genuine card pays once more; that terminal never submits, so the sync voids it.
        const pc = card.wallet.pay(k.request(c, 1_000));
        k.clock.now += 8 * 86400;
        const before = await k.ledger.audit();
        const req = card.wallet.beginSync(rnd16());
        const receipt = await k.ledger.sync(req);
        const r = verifySigned('SyncReceipt', receipt, k.pki.ledger.keys.publicKey).message;
        t.is(toHex(r.request), toHex(payloadHash(openSigned('SyncRequest', req).cose)));
        t.deepEqual(r.tokens, []);
        t.is(r.loaded, 0);
        t.deepEqual(r.voided.map(toHex), [toHex(pc.transferHash)]);
        t.is(r.redeemed, 6_000 + 1_000); // holdings plus the voided orphan's value
        // Issuing bank credited with the redeemed value, the cancelled load returned: nothing pending, invariant intact.
        const after = await k.ledger.audit();
        t.true(after.ok, JSON.stringify(after));
        t.is(after.bankBalances, before.bankBalances + 7_000 + 2_000);
        t.is(after.pendingLoads, 0);
        // Before, the ledger knew only pa's 7,000 change; the sync records pc and spends its 6,000 change: nothing left unspent.
        t.is(before.unspentTokens + before.unspentChange, 7_000);
        t.is(after.unspentTokens + after.unspentChange, 0);
        // The card applies it: empty, history cleared.
        card.wallet.completeSync(receipt, k.pki.ledger.keys.publicKey);
        t.is(card.wallet.balance, 0);
        t.deepEqual(openSigned('SyncRequest', card.wallet.clone().beginSync(rnd16())).message.history, []);
        // Idempotent: the same request gets the same receipt and credits nothing twice.
        t.is(toHex(await k.ledger.sync(req)), toHex(receipt));
        t.deepEqual(await k.ledger.audit(), after);
        // The late terminal is VOIDED: the value went to the bank, not paid twice.
        t.like(outcomes((await k.ledger.settle([k.batch(c, [pc.handover])]))[0]!)[0], { status: OutcomeStatus.VOIDED });
      },
      { voidWindow: 7 * 86400 },
    ));

  test(`${name}: a clone spending value the card already synced is a double spend proven by the SyncRequest`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(10_000);
      const clone = card.wallet.clone();
      const b = k.newTerminal('shop-b');
      const pb = clone.pay(k.request(b, 4_000));
      const req = card.wallet.beginSync(rnd16());
      card.wallet.completeSync(await k.ledger.sync(req), k.pki.ledger.keys.publicKey);
      const [ob] = await k.ledger.settle([k.batch(b, [pb.handover])]);
      const o = outcomes(ob!)[0]!;
      t.is(o.status, OutcomeStatus.DOUBLE_SPEND);
      t.true(o.covered);
      t.is(toHex(o.proof![0]!), toHex(req));
      t.is(toHex(o.proof![1]!), toHex(pb.transfer));
      // The other order: the fork reaches the ledger first, then the card's own sync is refused and the card revoked.
      const card2 = await k.fundCard(10_000);
      const clone2 = card2.wallet.clone();
      const p2 = clone2.pay(k.request(b, 1_000));
      t.deepEqual(statuses((await k.ledger.settle([k.batch(b, [p2.handover])]))[0]!), ['SETTLED']);
      const e = await t.throwsAsync(k.ledger.sync(card2.wallet.beginSync(rnd16())), { instanceOf: LedgerError });
      t.is(e!.code, 'DOUBLE_SPEND');
      const audit = await k.ledger.audit();
      t.true(audit.revocations.some((r) => r.card === toHex(card2.identity.kid)));
    }));

  test(`${name}: sync and load: receipt contents, idempotent replay, orphan voiding, late submission VOIDED`, (t) =>
    withLedger(
      open,
      t,
      async (k) => {
        const card = await k.fundCard(0);
        const load = (amount: number, id = rnd16()) =>
          signLoadOrder({ card: card.identity.kid, amount, id, time: k.clock.now }, k.pki.bank.signer);
        const id = rnd16();
        t.like(await k.ledger.load(load(7_000, id)), { state: 'pending', amount: 7_000 });
        t.like(await k.ledger.load(load(7_000, id)), { state: 'pending', amount: 7_000 }); // same id: nothing added
        t.is((await k.ledger.audit()).pendingLoads, 7_000);
        const e = await t.throwsAsync(k.ledger.load(load(8_000, id)), { instanceOf: LedgerError });
        t.is(e!.code, 'ID_CONFLICT');
        const poor = k.pki.createBank({ name: 'poor', perms: BankPermission.ISSUING });
        await k.ledger.registerBank(poor.cert);
        const e2 = await t.throwsAsync(
          k.ledger.load(signLoadOrder({ card: card.identity.kid, amount: 1, id: rnd16(), time: k.clock.now }, poor.signer)),
          { instanceOf: LedgerError },
        );
        t.is(e2!.code, 'NOT_PERMITTED');
        const stranger = k.pki.createBank({ name: 'unregistered', perms: BankPermission.ISSUING });
        const e3 = await t.throwsAsync(
          k.ledger.load(signLoadOrder({ card: card.identity.kid, amount: 1, id: rnd16(), time: k.clock.now }, stranger.signer)),
          { instanceOf: LedgerError },
        );
        t.is(e3!.code, 'BANK_UNKNOWN');
        const e4 = await t.throwsAsync(k.ledger.load(load(2_000_000_000_000)), { instanceOf: LedgerError });
        t.is(e4!.code, 'INSUFFICIENT_ALLOCATION');

        const req = card.wallet.beginSync(rnd16());
        const receipt = await k.ledger.sync(req);
        t.is(toHex(await k.ledger.sync(req)), toHex(receipt)); // idempotent
        const r = verifySigned('SyncReceipt', receipt, k.pki.ledger.keys.publicKey).message;
        const sr = openSigned('SyncRequest', req);
        t.is(toHex(r.card), toHex(card.identity.kid));
        t.is(r.counter, sr.message.counter);
        t.is(toHex(r.request), toHex(payloadHash(sr.cose)));
        t.is(r.loaded, 7_000);
        t.deepEqual(r.voided, []);
        t.is(
          r.tokens.map((x) => openSigned('Token', x).message.value).reduce((s, v) => s + v, 0),
          7_000,
        );
        card.wallet.completeSync(receipt, k.pki.ledger.keys.publicKey);
        t.is(card.wallet.balance, 7_000);
        t.is((await k.ledger.audit()).pendingLoads, 0);

        // Two payments: one submitted in time, one orphaned (its terminal never submits within the window).
        const a = k.newTerminal('shop-a');
        const b = k.newTerminal('shop-b');
        const pa = card.wallet.pay(k.request(a, 1_000));
        const pb = card.wallet.pay(k.request(b, 2_000));
        t.deepEqual(statuses((await k.ledger.settle([k.batch(a, [pa.handover])]))[0]!), ['SETTLED']);
        t.is((await k.ledger.audit()).pendingPayee, 0); // the ledger has not seen pb yet: it learns of it at the sync
        k.clock.now += 8 * 86400;
        const req2 = card.wallet.beginSync(rnd16());
        const r2 = verifySigned('SyncReceipt', await k.ledger.sync(req2), k.pki.ledger.keys.publicKey).message;
        t.deepEqual(r2.voided.map(toHex), [toHex(pb.transferHash)]);
        t.is(r2.loaded, 0);
        t.is(
          r2.tokens.map((x) => openSigned('Token', x).message.value).reduce((s, v) => s + v, 0),
          4_000 + 2_000,
        );
        card.wallet.completeSync(await k.ledger.sync(req2), k.pki.ledger.keys.publicKey);
        t.is(card.wallet.balance, 6_000);
        // The late terminal gets VOIDED, nothing is paid twice.
        const [late] = await k.ledger.settle([k.batch(b, [pb.handover])]);
        t.like(outcomes(late!)[0], { status: OutcomeStatus.VOIDED, covered: false });
        t.false(toHex(b.kid) in (await k.ledger.merchantBalances()));
        // A payment made after the second sync settles normally (chain anchored at the new receipt).
        const pc = card.wallet.pay(k.request(b, 500));
        t.deepEqual(statuses((await k.ledger.settle([k.batch(b, [pc.handover])]))[0]!), ['SETTLED']);
        // A sync that creates value is refused and moves no value; what the card signed is kept as evidence
        // (its counter is claimed: a second request with that counter would be a fork).
        const before = await stateDigest(k.storage, { evidence: false });
        const bad = signMessage(
          'SyncRequest',
          { ...openSigned('SyncRequest', card.wallet.clone().beginSync(rnd16())).message, balance: 1_000_000 },
          card.identity.signer,
        );
        const e5 = await t.throwsAsync(k.ledger.sync(bad), { instanceOf: LedgerError });
        t.is(e5!.code, 'SYNC_INVALID');
        t.is(e5!.details.detail, 'VALUE_NOT_CONSERVED');
        t.is(await stateDigest(k.storage, { evidence: false }), before);
        const badHash = payloadHash(openSigned('SyncRequest', bad).cose);
        t.truthy(await k.storage.transaction((tx) => tx.get(`SELECT hash FROM counters WHERE hash = ?`, [badHash])));
      },
      { voidWindow: 7 * 86400 },
    ));

  test(`${name}: any arrival order of one card's chained transfers gives the same final state`, (t) =>
    withLedger(open, t, async (k) => {
      const terms = [k.newTerminal('t0'), k.newTerminal('t1'), k.newTerminal('t2'), k.newTerminal('t3')];
      const perms: number[][] = [];
      const permute = (xs: number[], acc: number[] = []) => {
        if (xs.length === 0) perms.push(acc);
        xs.forEach((x, i) => permute([...xs.slice(0, i), ...xs.slice(i + 1)], [...acc, x]));
      };
      permute([0, 1, 2, 3]);
      const cards = await Promise.all(perms.map(() => k.fundCard(10_000)));
      const amounts = [1_000, 2_000, 1_500, 700];
      const pays = cards.map((c) => amounts.map((amt, i) => c.wallet.pay(k.request(terms[i]!, amt))));
      // Card c's handovers arrive in permutation perms[c], each in its own batch from its own terminal.
      for (let step = 0; step < 4; step++) {
        const batches = perms.map((p, c) => k.batch(terms[p[step]!]!, [pays[c]![p[step]!]!.handover]));
        const res = await k.ledger.settle(batches);
        for (const o of res) t.deepEqual(statuses(o), ['SETTLED']);
      }
      // Per card, the normalized state is identical whatever the order.
      const shapes = await k.storage.transaction(async (tx) => {
        const out: string[] = [];
        for (const c of cards) {
          const tr = await tx.all(`SELECT counter, state, amount, change_value FROM transfers WHERE card = ? ORDER BY counter`, [
            c.identity.kid,
          ]);
          const sp = await tx.all(`SELECT COUNT(*) AS n FROM spent s JOIN transfers t ON s.by_hash = t.hash WHERE t.card = ?`, [
            c.identity.kid,
          ]);
          out.push(JSON.stringify({ tr: tr.map((r) => Object.values(r).map(Number)), sp: Number(sp[0]!.n) }));
        }
        return out;
      });
      t.is(new Set(shapes).size, 1, shapes[0]);
      const m = await k.ledger.merchantBalances();
      terms.forEach((term, i) => t.is(m[toHex(term.kid)], amounts[i]! * perms.length));
    }));
}

for (const [name, open] of BACKENDS) {
  test(`${name}: a marked load order (SPEC §7.6.1) arrives as a token carrying its mark, spendable only where the mark allows`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(5_000);
      const pharmacy: Mark = { merchants: ['pharmacy'], hops: 1 };
      const books: Mark = { mccs: [5942], hops: 2 };
      const load = (amount: number, mark?: Mark, id = rnd16()) =>
        k.ledger.load(
          signLoadOrder({ card: card.identity.kid, amount, id, time: k.clock.now, ...(mark ? { mark } : {}) }, k.pki.bank.signer),
        );
      const id = rnd16();
      t.like(await load(3_000, pharmacy, id), { state: 'pending', amount: 3_000 });
      t.like(await load(3_000, pharmacy, id), { state: 'pending' }); // the same order again: nothing added
      // The same id with another mark, or none, is another order.
      for (const other of [books, undefined]) t.like(await t.throwsAsync(load(3_000, other, id)), { code: 'ID_CONFLICT' });
      await load(500, pharmacy);
      await load(1_000);
      await load(200, books);
      const info = await k.ledger.cardInfo(card.identity.kid);
      t.is(info!.pendingLoads, 4_700);
      const hex = (m: Mark) => toHex(encodeDeterministic(encodeStruct(MarkSchema, m)));
      const byMark = (list: CardInfo['byMark']) => Object.fromEntries(list.map((c) => [c.mark ?? 'unmarked', c]));
      t.like(byMark(info!.byMark), {
        unmarked: { synced: 5_000, pendingLoads: 1_000 },
        [hex(pharmacy)]: { synced: 0, pendingLoads: 3_500 },
        [hex(books)]: { synced: 0, pendingLoads: 200 },
      });
      const before = await k.ledger.audit();

      const r = verifySigned('SyncReceipt', await k.sync(card), k.pki.ledger.keys.publicKey).message;
      t.is(r.loaded, 4_700);
      const tokens = r.tokens.map((x) => openSigned('Token', x).message);
      t.deepEqual(
        tokens.map((x) => [x.mark ? hex(x.mark) : 'unmarked', x.value]).sort(),
        [
          ['unmarked', 6_000],
          [hex(pharmacy), 3_500],
          [hex(books), 200],
        ].sort(),
      );
      t.is(card.wallet.balance, 9_700);
      const after = await k.ledger.audit();
      t.is(after.pendingLoads, before.pendingLoads - 4_700);
      t.is(after.unspentTokens, before.unspentTokens + 4_700);
      t.like(byMark((await k.ledger.cardInfo(card.identity.kid))!.byMark), {
        unmarked: { synced: 6_000, pendingLoads: 0 },
        [hex(pharmacy)]: { synced: 3_500, pendingLoads: 0 },
      });

      // A grocery can take only the unmarked 6 000: the marked value is not its.
      const grocery = k.newTerminal('grocery', 5411);
      t.throws(() => card.wallet.pay(k.request(grocery, 6_001)), { message: /insufficient funds for this payee/ });
      const pharmacyTerminal = k.newTerminal('pharmacy', 5912);
      const atPharmacy = card.wallet.pay(k.request(pharmacyTerminal, 3_500));
      const ph = openSigned('Transfer', atPharmacy.transfer).message;
      t.deepEqual(ph.inputs.length, 1); // the marked token alone
      t.deepEqual(
        ph.outputs.map((o) => o.mark),
        [undefined],
      ); // hops 1: the pharmacy is paid unmarked value
      const g = card.wallet.pay(k.request(grocery, 6_000));
      const shop = k.newTerminal('shop', 5411);
      t.throws(() => card.wallet.pay(k.request(shop, 1)), { message: /insufficient funds for this payee/ }); // 200 left, bound to MCC 5942
      t.deepEqual(statuses((await k.ledger.settle([k.batch(grocery, [g.handover])]))[0]!), ['SETTLED']);
      t.deepEqual(statuses((await k.ledger.settle([k.batch(pharmacyTerminal, [atPharmacy.handover])]))[0]!), ['SETTLED']);
      t.is(card.wallet.balance, 200);
    }));

  test(`${name}: a card's pending loads carry at most MAX_PENDING_MARK_CLASSES distinct marks`, (t) =>
    withLedger(open, t, async (k) => {
      const card = await k.fundCard(0);
      const load = (mark: Mark) =>
        k.ledger.load(signLoadOrder({ card: card.identity.kid, amount: 1, id: rnd16(), time: k.clock.now, mark }, k.pki.bank.signer));
      for (let i = 0; i < MAX_PENDING_MARK_CLASSES; i++) await load({ mccs: [i], hops: 1 });
      const before = await k.ledger.audit();
      t.like(await t.throwsAsync(load({ mccs: [MAX_PENDING_MARK_CLASSES], hops: 1 })), { code: 'NOT_PERMITTED' });
      t.deepEqual(await k.ledger.audit(), before); // refused: nothing changed
      await load({ mccs: [0], hops: 1 }); // a mark already pending is no new class
      await load({ mccs: [1], hops: 1 });
      const r = verifySigned('SyncReceipt', await k.sync(card), k.pki.ledger.keys.publicKey).message;
      t.is(r.tokens.length, MAX_PENDING_MARK_CLASSES);
      t.is(r.loaded, MAX_PENDING_MARK_CLASSES + 2);
    }));
}
