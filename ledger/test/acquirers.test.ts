/**
 * Acquirer authentication of `POST /v1/settle` (SPEC.md §7.7.2, src/acquirers.ts):
 * the ledger settles only for acquirers it knows. Every refusal has its stable
 * code and HTTP status (§8.2) and changes nothing (the money state and the
 * audit are compared before and after); the genuine path settles. Run on BOTH
 * storage backends (the blocked-acquirer table is in the ledger storage).
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { BankPermission, decodeDeterministic, encodeDeterministic, OutcomeStatus, signSettleRequest, verifySigned } from '@dt/protocol';
import type { FastifyInstance } from 'fastify';
import { createTestLedger, signSettle, type TestLedger } from '../src/testkit.ts';
import { buildLedgerApp, type LedgerAppOptions } from '../src/server.ts';
import { blockAcquirer, blockedAcquirers, unblockAcquirer } from '../src/acquirers.ts';
import { openSqliteStorage } from '../src/storage/sqlite.ts';
import { openPostgresStorage } from '../src/storage/postgres.ts';
import { pgAvailable, startPgCluster, type PgCluster } from '../src/pg-cluster.ts';
import type { LedgerStorage } from '../src/storage/types.ts';
import { stateDigest } from './_helpers.ts';

let cluster: PgCluster | undefined;
let dbs = 0;

test.before(() => {
  if (!pgAvailable()) throw new Error('PostgreSQL server binaries not found (set PG_BIN); the storage suite must run on both backends');
  cluster = startPgCluster({ fsync: false });
});
test.after.always(() => cluster?.stop());

const BACKENDS: [string, () => Promise<LedgerStorage>][] = [
  ['sqlite', async () => openSqliteStorage(':memory:')],
  ['postgres', async () => openPostgresStorage(cluster!.createDatabase(`acq_${process.pid}_${++dbs}`))],
];

interface World {
  k: TestLedger;
  app: FastifyInstance;
}

async function withWorld(
  open: () => Promise<LedgerStorage>,
  t: ExecutionContext,
  fn: (w: World) => Promise<void>,
  appOpts: LedgerAppOptions = {},
) {
  const k = await createTestLedger({ storage: await open() });
  const app = buildLedgerApp(k.ledger, appOpts);
  try {
    await fn({ k, app });
    t.true((await k.ledger.audit()).ok);
  } finally {
    await app.close();
    await k.storage.close();
  }
}

interface Answer {
  status: number;
  body: { code?: string; detail?: string; index?: number };
  outcomes?: number[][];
}

async function settle(w: World, body: Uint8Array, type = 'application/cose'): Promise<Answer> {
  const r = await w.app.inject({ method: 'POST', url: '/v1/settle', headers: { 'content-type': type }, payload: Buffer.from(body) });
  if (r.statusCode !== 200) return { status: r.statusCode, body: r.json() };
  const raw = decodeDeterministic(new Uint8Array(r.rawPayload), 1 << 24) as Uint8Array[][];
  return {
    status: 200,
    body: {},
    outcomes: raw.map((b) => b.map((x) => verifySigned('Outcome', x, w.k.pki.ledger.keys.publicKey).message.status)),
  };
}

/** A funded card paying `amount` at a fresh terminal (of `bank`, default the test bank): the terminal's signed batch. */
async function payment(w: World, amount = 700, bank = w.k.pki.bank) {
  const card = await w.k.fundCard(10_000);
  const shop =
    bank === w.k.pki.bank
      ? w.k.newTerminal()
      : {
          ...w.k.pki.issueTerminal({ merchant: { id: 'other-shop', mcc: 5411, name: 'other-shop' }, bank }),
          merchant: 'other-shop',
          mcc: 5411,
          seq: 0,
        };
  const p = card.wallet.pay(w.k.request(shop, amount));
  return { shop, batch: w.k.batch(shop, [p.handover]) };
}

/** Asserts that `body` is refused with `status` and `code` and that nothing changed. */
async function refused(t: ExecutionContext, w: World, body: Uint8Array, status: number, code: string, detail?: string, type?: string) {
  const before = await stateDigest(w.k.storage);
  const audit = await w.k.ledger.audit();
  const a = await settle(w, body, type);
  t.is(a.status, status, code);
  t.is(a.body.code, code);
  if (detail !== undefined) t.is(a.body.detail, detail, `${code} detail`);
  t.is(await stateDigest(w.k.storage), before, `${code}: nothing changed`);
  t.deepEqual(await w.k.ledger.audit(), audit);
  return a;
}

for (const [name, open] of BACKENDS) {
  test(`${name}: the genuine path: a registered bank's acquirer settles its terminals' batches`, (t) =>
    withWorld(open, t, async (w) => {
      const { shop, batch } = await payment(w);
      const a = await settle(w, w.k.settleRequest([batch]));
      t.is(a.status, 200);
      t.deepEqual(a.outcomes, [[OutcomeStatus.SETTLED]]);
      t.is((await w.k.ledger.merchantBalances())[Buffer.from(shop.kid).toString('hex')], 700);
    }));

  test(`${name}: a terminal posting to the ledger directly settles nothing (bare batches, its own envelope)`, (t) =>
    withWorld(open, t, async (w) => {
      // A certified terminal (say, one its acquirer revoked) with a valid batch of a genuine payment.
      const { shop, batch } = await payment(w);
      await refused(t, w, encodeDeterministic([batch]), 415, 'UNSUPPORTED_MEDIA_TYPE', undefined, 'application/cbor');
      await refused(t, w, encodeDeterministic([batch]), 400, 'MALFORMED');
      await refused(t, w, batch, 400, 'MALFORMED');
      // The terminal signs the envelope itself with its certified key: its chain is not an acquirer's.
      const own = signSettleRequest(
        { chain: [...shop.chain], time: w.k.clock.now, nonce: new Uint8Array(randomBytes(16)), batches: [batch] },
        shop.signer,
      );
      await refused(t, w, own, 401, 'ACQUIRER_AUTH', 'CERT_WRONG_ROLE');
      t.deepEqual(await w.k.ledger.merchantBalances(), {});
    }));

  test(`${name}: acquirer chain and signature: forged, other key, expired, bank without ACQUIRING`, (t) =>
    withWorld(open, t, async (w) => {
      const { batch } = await payment(w);
      const acq = w.k.acquirer;
      const now = w.k.clock.now;
      const nonce = () => new Uint8Array(randomBytes(16));
      // Signed by another key that claims the acquirer's kid.
      const impostor = w.k.pki.issueAcquirer();
      const forged = signSettleRequest(
        { chain: [...acq.chain], time: now, nonce: nonce(), batches: [batch] },
        { kid: acq.kid, sign: (m) => impostor.signer.sign(m) },
      );
      await refused(t, w, forged, 401, 'ACQUIRER_AUTH', 'BAD_SIGNATURE');
      // Signed by another certified acquirer presenting this one's chain: the kid does not match the leaf.
      await refused(
        t,
        w,
        signSettleRequest({ chain: [...acq.chain], time: now, nonce: nonce(), batches: [batch] }, impostor.signer),
        401,
        'ACQUIRER_AUTH',
        'KEY_MISMATCH',
      );
      // Expired acquirer certificate (verified at the ledger's time).
      const old = w.k.pki.issueAcquirer({ validity: { nbf: now - 3 * 86400, exp: now - 86400 } });
      await refused(t, w, signSettle(old, [batch], { time: now }), 401, 'ACQUIRER_AUTH', 'CERT_EXPIRED');
      // A registered bank that may only issue cannot certify an acquirer.
      const issuing = w.k.pki.createBank({ name: 'issuing only', perms: BankPermission.ISSUING });
      await w.k.ledger.registerBank(issuing.cert);
      await refused(
        t,
        w,
        signSettle(w.k.pki.issueAcquirer({ bank: issuing }), [batch], { time: now }),
        401,
        'ACQUIRER_AUTH',
        'CERT_NOT_PERMITTED',
      );
    }));

  test(`${name}: an acquirer of an unregistered bank, and a blocked acquirer, are ACQUIRER_UNKNOWN; unblocking restores it`, (t) =>
    withWorld(open, t, async (w) => {
      const stranger = w.k.pki.createBank({ name: 'unregistered', perms: BankPermission.ACQUIRING });
      const { batch: theirs } = await payment(w, 300, stranger);
      await refused(
        t,
        w,
        signSettle(w.k.pki.issueAcquirer({ bank: stranger }), [theirs], { time: w.k.clock.now }),
        403,
        'ACQUIRER_UNKNOWN',
      );

      const { batch } = await payment(w);
      t.true(await blockAcquirer(w.k.storage, w.k.acquirer.kid, 'key leaked', w.k.clock.now));
      t.false(await blockAcquirer(w.k.storage, w.k.acquirer.kid, 'again', w.k.clock.now), 'blocking is idempotent');
      t.deepEqual(
        (await blockedAcquirers(w.k.storage)).map((b) => [b.kid, b.reason]),
        [[Buffer.from(w.k.acquirer.kid).toString('hex'), 'key leaked']],
      );
      await refused(t, w, w.k.settleRequest([batch]), 403, 'ACQUIRER_UNKNOWN');
      // Another acquirer of the same bank is not affected.
      const second = w.k.pki.issueAcquirer();
      t.deepEqual((await settle(w, signSettle(second, [batch], { time: w.k.clock.now }))).outcomes, [[OutcomeStatus.SETTLED]]);
      t.true(await unblockAcquirer(w.k.storage, w.k.acquirer.kid));
      t.false(await unblockAcquirer(w.k.storage, w.k.acquirer.kid));
      t.deepEqual((await settle(w, w.k.settleRequest([batch]))).outcomes, [[OutcomeStatus.SETTLED]]);
    }));

  test(`${name}: a stale or future time is ACQUIRER_STALE; a replayed nonce is ACQUIRER_REPLAYED`, (t) =>
    withWorld(open, t, async (w) => {
      const { batch } = await payment(w);
      const now = w.k.clock.now;
      await refused(t, w, w.k.settleRequest([batch], { time: now - 301 }), 401, 'ACQUIRER_STALE');
      await refused(t, w, w.k.settleRequest([batch], { time: now + 301 }), 401, 'ACQUIRER_STALE');
      const nonce = new Uint8Array(randomBytes(16));
      const first = w.k.settleRequest([batch], { time: now - 300, nonce });
      t.deepEqual((await settle(w, first)).outcomes, [[OutcomeStatus.SETTLED]]);
      // The captured request again, and a new request reusing its nonce.
      await refused(t, w, first, 401, 'ACQUIRER_REPLAYED');
      await refused(t, w, w.k.settleRequest([batch], { nonce }), 401, 'ACQUIRER_REPLAYED');
      // The nonce belongs to this acquirer only.
      t.is((await settle(w, signSettle(w.k.pki.issueAcquirer(), [batch], { time: now, nonce }))).status, 200);
    }));

  test(`${name}: an acquirer settling another bank's terminal is ACQUIRER_NOT_PERMITTED; a batch that does not open is BATCH_INVALID`, (t) =>
    withWorld(open, t, async (w) => {
      const other = w.k.pki.createBank({ name: 'other acquirer bank', perms: BankPermission.ACQUIRING });
      await w.k.ledger.registerBank(other.cert);
      const { batch: foreign } = await payment(w, 400, other);
      const { batch: own } = await payment(w, 500);
      const a = await refused(t, w, w.k.settleRequest([own, foreign]), 403, 'ACQUIRER_NOT_PERMITTED');
      t.is(a.body.index, 1);
      // The other bank's own acquirer settles it.
      t.deepEqual((await settle(w, signSettle(w.k.pki.issueAcquirer({ bank: other }), [foreign], { time: w.k.clock.now }))).outcomes, [
        [OutcomeStatus.SETTLED],
      ]);
      const b = await refused(t, w, w.k.settleRequest([own, new Uint8Array(32).fill(7)]), 400, 'BATCH_INVALID');
      t.is(b.body.index, 1);
    }));

  test(`${name}: an acquirer that fills its nonce window gets BUSY; another acquirer still settles`, (t) =>
    withWorld(
      open,
      t,
      async (w) => {
        const { batch } = await payment(w);
        for (let i = 0; i < 3; i++) t.is((await settle(w, w.k.settleRequest([batch]))).status, 200);
        await refused(t, w, w.k.settleRequest([batch]), 503, 'BUSY');
        const second = w.k.pki.issueAcquirer();
        t.deepEqual((await settle(w, signSettle(second, [batch], { time: w.k.clock.now }))).outcomes, [[OutcomeStatus.SETTLED]]);
        // Once its nonces are older than twice the skew, the first acquirer is served again.
        w.k.clock.now += 601;
        t.is((await settle(w, w.k.settleRequest([batch]))).status, 200);
      },
      { settleNoncesPerAcquirer: 3 },
    ));
}
