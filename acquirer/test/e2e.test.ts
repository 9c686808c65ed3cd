/**
 * End to end with the real ledger (@dt/ledger, SQLite): reference wallets
 * funded through the ledger pay terminals; terminals submit signed batches to
 * the acquirer; the acquirer forwards them; terminals fetch the ledger-signed
 * outcomes; the ledger's own balances prove every payment settled once.
 */
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  AdjustmentCode,
  AdjustmentKind,
  encodeDeterministic,
  OutcomeStatus,
  signSettleRequest,
  toHex,
  verifySigned,
  type Outcome,
} from '@dt/protocol';
import { blockAcquirer, startLedgerServer, openSqliteStorage, unblockAcquirer } from '@dt/ledger';
import { createTestLedger, type TestLedger, type TestTerminal } from '@dt/ledger/testkit';
import { startAcquirer, submitBatch, fetchAllOutcomes, fetchCrl, AcquirerHttpError, type AcquirerConfig } from '../src/index.ts';
import { closedPort, tempDir } from './fixtures.ts';

const nowSeconds = () => Math.floor(Date.now() / 1000);

async function kit(t: ExecutionContext): Promise<{ k: TestLedger; dir: string }> {
  const { dir, cleanup } = tempDir();
  const k = await createTestLedger({ now: nowSeconds(), storage: openSqliteStorage(join(dir, 'ledger.db')) });
  // The test ledger's clock is settable; keep it on real time (the acquirer signs its settle requests with real time).
  const clock = setInterval(() => (k.clock.now = nowSeconds()), 200);
  t.teardown(async () => {
    clearInterval(clock);
    await k.storage.close();
    cleanup();
  });
  return { k, dir };
}

function config(k: TestLedger, dir: string, ledgerUrl: string, extra: Partial<AcquirerConfig> = {}): AcquirerConfig {
  return {
    ledgerUrl,
    root: k.pki.issuer.cert,
    bankCert: k.pki.bank.cert,
    ledgerCert: k.pki.ledger.cert,
    acquirerCert: k.acquirer.cert,
    acquirerSigner: k.acquirer.signer,
    dbFile: join(dir, 'acquirer.db'),
    ...extra,
  };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function decode(k: TestLedger, list: Uint8Array[]): Outcome[] {
  return list.map((o) => verifySigned('Outcome', o, k.pki.ledger.keys.publicKey).message);
}

/** Each card pays each terminal `amount`; returns the handovers per terminal. */
function payments(
  k: TestLedger,
  cards: Awaited<ReturnType<TestLedger['fundCard']>>[],
  terms: TestTerminal[],
  amount: number,
): Uint8Array[][] {
  return terms.map((term) => cards.map((c) => c.wallet.pay(k.request(term, amount)).handover));
}

test('happy path: batches from several terminals settle once; terminals read signed outcomes; resends change nothing', async (t) => {
  const { k, dir } = await kit(t);
  const srv = await startLedgerServer({ ledger: k.ledger, port: 0 });
  t.teardown(() => srv.close());
  const acq = await startAcquirer(config(k, dir, srv.url));
  t.teardown(() => acq.close());

  const cards = await Promise.all([k.fundCard(100_000), k.fundCard(100_000), k.fundCard(100_000)]);
  const terms = [k.newTerminal('shop-a'), k.newTerminal('shop-b')];
  const hs = payments(k, cards, terms, 1_250);
  const batches = terms.map((term, i) => k.batch(term, hs[i]!));
  const acks = await Promise.all(batches.map((b) => submitBatch(acq.url, b)));
  t.deepEqual(
    acks.map((a) => a.handovers),
    [3, 3],
  );

  for (const [i, term] of terms.entries()) {
    const page = await waitFor('outcomes', async () => {
      const p = await fetchAllOutcomes(acq.url, term.signer, 0);
      return p.outcomes.length === 3 ? p : undefined;
    });
    const os = decode(k, page.outcomes);
    t.deepEqual(
      os.map((o) => o.status),
      [OutcomeStatus.SETTLED, OutcomeStatus.SETTLED, OutcomeStatus.SETTLED],
    );
    t.true(os.every((o) => toHex(o.terminal) === toHex(term.kid) && o.amount === 1_250));
    t.deepEqual(page.refs, [
      [1, 0],
      [1, 1],
      [1, 2],
    ]);
    // Resending the same batch after settlement: the same ack, and nothing new for the ledger.
    const again = await submitBatch(acq.url, batches[i]!);
    t.deepEqual(again, acks[i]);
  }
  await acq.forwardNow();
  const balances = await k.ledger.merchantBalances();
  t.is(balances[toHex(terms[0]!.kid)], 3 * 1_250);
  t.is(balances[toHex(terms[1]!.kid)], 3 * 1_250);
  t.is((await k.ledger.counts()).settled, 6);
  t.true((await k.ledger.audit()).ok);

  // The acquirer distributes the ledger's revocation list, byte for byte.
  const crl = await waitFor('crl', async () => fetchCrl(acq.url).catch(() => undefined));
  t.is(toHex(crl), toHex(await k.ledger.crl()));

  const health = (await (await fetch(`${acq.url}/v1/health`)).json()) as Record<string, unknown>;
  t.like(health, { status: 'ok', ledgerReachable: true, queueDepth: 0, settledBatches: 2 });
  const metrics = await (await fetch(`${acq.url}/v1/metrics`)).text();
  t.regex(metrics, /^dt_acquirer_batches_received_total 2$/m);
  t.regex(metrics, /^dt_acquirer_batches_duplicate_total 2$/m);
  t.regex(metrics, /^dt_acquirer_outcomes_recorded_total 6$/m);
  t.regex(metrics, /^dt_acquirer_pending_batches 0$/m);
});

test('a double spend comes back as DOUBLE_SPEND with proof, and the new revocation list reaches the acquirer', async (t) => {
  const { k, dir } = await kit(t);
  const srv = await startLedgerServer({ ledger: k.ledger, port: 0 });
  t.teardown(() => srv.close());
  const acq = await startAcquirer(config(k, dir, srv.url, { autoForward: false }));
  t.teardown(() => acq.close());
  const card = await k.fundCard(10_000);
  const clone = card.wallet.clone();
  const [a, b] = [k.newTerminal('shop-a'), k.newTerminal('shop-b')];
  await submitBatch(acq.url, k.batch(a, [card.wallet.pay(k.request(a, 7_000)).handover]));
  await submitBatch(acq.url, k.batch(b, [clone.pay(k.request(b, 6_000)).handover]));
  const r = await acq.forwardNow();
  t.is(r.settled, 2);
  const [oa] = decode(k, (await fetchAllOutcomes(acq.url, a.signer, 0)).outcomes);
  const [ob] = decode(k, (await fetchAllOutcomes(acq.url, b.signer, 0)).outcomes);
  t.is(oa!.status, OutcomeStatus.SETTLED);
  t.is(ob!.status, OutcomeStatus.DOUBLE_SPEND);
  t.is(ob!.proof?.length, 2);
  // The settle triggered a refresh: the list now names the card.
  const crl = verifySigned('RevocationList', await fetchCrl(acq.url), k.pki.ledger.keys.publicKey).message;
  t.true(crl.version >= 1);
  t.true(crl.revoked.some((kid) => toHex(kid) === toHex(card.identity.kid)));
});

test('voids and refunds (SPEC §7.7.3) travel in batches: the ack counts them, each gets its outcome, refs index them after the handovers', async (t) => {
  const { k, dir } = await kit(t);
  const srv = await startLedgerServer({ ledger: k.ledger, port: 0 });
  t.teardown(() => srv.close());
  const acq = await startAcquirer(config(k, dir, srv.url, { autoForward: false }));
  t.teardown(() => acq.close());
  const card = await k.fundCard(10_000);
  const a = k.newTerminal('shop-a');
  const p1 = card.wallet.pay(k.request(a, 3_000));
  const p2 = card.wallet.pay(k.request(a, 1_000));
  const ack1 = await submitBatch(acq.url, k.batch(a, [p1.handover]));
  t.is(ack1.adjustments, undefined, 'absent when the batch has none');
  t.is((await acq.forwardNow()).settled, 1);
  // Batch 2: the second payment with its void, and a partial refund of the first (no handover of its own).
  const kind = (x: AdjustmentKind, p: typeof p1, amount: number) =>
    k.adjustment(a, { kind: x, transfer: p.transferHash, card: card.identity.kid, amount });
  const b2 = k.batch(a, [p2.handover], { adjustments: [kind(AdjustmentKind.VOID, p2, 1_000), kind(AdjustmentKind.REFUND, p1, 500)] });
  const ack2 = await submitBatch(acq.url, b2);
  t.like(ack2, { handovers: 1, adjustments: 2 });
  t.deepEqual(await submitBatch(acq.url, b2), ack2, 'an identical resend gets the same ack');
  t.is((await acq.forwardNow()).settled, 1);
  const page = await fetchAllOutcomes(acq.url, a.signer, 0);
  t.deepEqual(page.refs, [
    [1, 0],
    [2, 0],
    [2, 1],
    [2, 2],
  ]);
  const os = decode(k, page.outcomes);
  t.like(os[1], { status: OutcomeStatus.VOIDED, code: AdjustmentCode.MERCHANT_VOID });
  t.like(os[2], { status: OutcomeStatus.VOIDED, code: AdjustmentCode.MERCHANT_VOID, amount: 1_000 });
  t.like(os[3], { status: OutcomeStatus.REFUNDED, amount: 500 });
  t.is((await k.ledger.merchantBalances())[toHex(a.kid)], 2_500);
  t.true((await k.ledger.audit()).ok);
  // An adjustment that does not even decode is refused at the door.
  const bad = k.batch(a, [], { adjustments: [new Uint8Array(20).fill(7)] });
  const e = await t.throwsAsync(submitBatch(acq.url, bad), { instanceOf: AcquirerHttpError });
  t.like(e, { code: 'BATCH_MALFORMED' });
});

test('ledger down: batches are acknowledged and kept; once the ledger is up, outcomes arrive', async (t) => {
  const { k, dir } = await kit(t);
  const port = await closedPort();
  const acq = await startAcquirer(config(k, dir, `http://127.0.0.1:${port}`, { forwarder: { backoffBaseMs: 50, backoffMaxMs: 400 } }));
  t.teardown(() => acq.close());
  const cards = await Promise.all([k.fundCard(50_000), k.fundCard(50_000)]);
  const terms = [k.newTerminal('shop-a'), k.newTerminal('shop-b'), k.newTerminal('shop-c')];
  const hs = payments(k, cards, terms, 999);
  for (const [i, term] of terms.entries()) await submitBatch(acq.url, k.batch(term, hs[i]!));

  // Retries happen while the ledger is down, and health says so.
  await waitFor('retries', async () => {
    const m = await (await fetch(`${acq.url}/v1/metrics`)).text();
    return Number(/^dt_acquirer_forward_retries_total (\d+)$/m.exec(m)![1]) >= 2 ? true : undefined;
  });
  const down = (await (await fetch(`${acq.url}/v1/health`)).json()) as Record<string, unknown>;
  t.like(down, { status: 'degraded', ledgerReachable: false, queueDepth: 3, pendingHandovers: 6 });
  t.is(typeof down.lastForwardError, 'string');
  t.is((await k.ledger.counts()).settled, 0);

  const srv = await startLedgerServer({ ledger: k.ledger, port });
  t.teardown(() => srv.close());
  for (const term of terms) {
    const page = await waitFor('outcomes after the ledger came back', async () => {
      const p = await fetchAllOutcomes(acq.url, term.signer, 0);
      return p.outcomes.length === 2 ? p : undefined;
    });
    t.deepEqual(
      decode(k, page.outcomes).map((o) => o.status),
      [OutcomeStatus.SETTLED, OutcomeStatus.SETTLED],
    );
  }
  const balances = await k.ledger.merchantBalances();
  for (const term of terms) t.is(balances[toHex(term.kid)], 2 * 999);
  t.like(await (await fetch(`${acq.url}/v1/health`)).json(), { ledgerReachable: true, queueDepth: 0 });
});

test('the queue survives an acquirer restart (same database), and a terminal resend after restart gets the same ack', async (t) => {
  const { k, dir } = await kit(t);
  const srv = await startLedgerServer({ ledger: k.ledger, port: 0 });
  t.teardown(() => srv.close());
  const first = await startAcquirer(config(k, dir, srv.url, { autoForward: false }));
  const card = await k.fundCard(20_000);
  const term = k.newTerminal('shop-r');
  const batch = k.batch(term, [card.wallet.pay(k.request(term, 3_000)).handover, card.wallet.pay(k.request(term, 4_000)).handover]);
  const ack = await submitBatch(first.url, batch);
  await first.close();
  const second = await startAcquirer(config(k, dir, srv.url, { autoForward: false }));
  t.teardown(() => second.close());
  t.deepEqual(await submitBatch(second.url, batch), ack);
  t.like(await (await fetch(`${second.url}/v1/health`)).json(), { queueDepth: 1 });
  t.is((await second.forwardNow()).settled, 1);
  t.is((await second.forwardNow()).settled, 0);
  t.deepEqual(await submitBatch(second.url, batch), ack);
  t.is((await k.ledger.merchantBalances())[toHex(term.kid)], 7_000);
  t.is(decode(k, (await fetchAllOutcomes(second.url, term.signer, 0)).outcomes).length, 2);
});

test('a terminal revoked at its acquirer cannot settle by posting to the ledger directly; nothing is settled, the books do not move', async (t) => {
  const { k, dir } = await kit(t);
  const srv = await startLedgerServer({ ledger: k.ledger, port: 0 });
  t.teardown(() => srv.close());
  const acq = await startAcquirer(config(k, dir, srv.url, { autoForward: false }));
  t.teardown(() => acq.close());
  const card = await k.fundCard(20_000);
  const term = k.newTerminal('shop-revoked');
  acq.revokeTerminal(term.kid, 'stolen');
  // The terminal signs a valid batch of a genuine payment; its acquirer refuses it ...
  const batch = k.batch(term, [card.wallet.pay(k.request(term, 5_000)).handover]);
  const viaAcquirer = await submitBatch(acq.url, batch).catch((e: unknown) => e);
  t.true(viaAcquirer instanceof AcquirerHttpError && viaAcquirer.code === 'TERMINAL_REVOKED');
  // ... so it goes around it, straight to the ledger: as the old bare body, and in an envelope it signs itself.
  const before = await k.ledger.audit();
  const post = async (body: Uint8Array, type: string) => {
    const r = await fetch(`${srv.url}/v1/settle`, { method: 'POST', headers: { 'content-type': type }, body });
    return { status: r.status, code: ((await r.json()) as { code: string }).code };
  };
  t.deepEqual(await post(encodeDeterministic([batch]), 'application/cbor'), { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
  t.deepEqual(await post(encodeDeterministic([batch]), 'application/cose'), { status: 400, code: 'MALFORMED' });
  const own = signSettleRequest(
    { chain: [...term.chain], time: nowSeconds(), nonce: new Uint8Array(randomBytes(16)), batches: [batch] },
    term.signer,
  );
  t.deepEqual(await post(own, 'application/cose'), { status: 401, code: 'ACQUIRER_AUTH' });
  t.is((await k.ledger.counts()).settled, 0);
  t.false(toHex(term.kid) in (await k.ledger.merchantBalances()));
  t.deepEqual(await k.ledger.audit(), before);
});

test('an acquirer the ledger blocks keeps its batches pending (ACQUIRER_UNKNOWN, not rejected); unblocked, they settle once', async (t) => {
  const { k, dir } = await kit(t);
  const srv = await startLedgerServer({ ledger: k.ledger, port: 0 });
  t.teardown(() => srv.close());
  const acq = await startAcquirer(config(k, dir, srv.url, { autoForward: false }));
  t.teardown(() => acq.close());
  const card = await k.fundCard(20_000);
  const term = k.newTerminal('shop-blocked-acq');
  await submitBatch(acq.url, k.batch(term, [card.wallet.pay(k.request(term, 2_500)).handover]));
  await blockAcquirer(k.storage, k.acquirer.kid, 'test', nowSeconds());
  const r = await acq.forwardNow();
  t.regex(r.error ?? '', /403 ACQUIRER_UNKNOWN/);
  t.is(r.pending, 1);
  t.like(await (await fetch(`${acq.url}/v1/health`)).json(), { rejectedBatches: 0, queueDepth: 1, ledgerReachable: true });
  t.is((await k.ledger.counts()).settled, 0);
  await unblockAcquirer(k.storage, k.acquirer.kid);
  t.is((await acq.forwardNow()).settled, 1);
  t.is((await k.ledger.merchantBalances())[toHex(term.kid)], 2_500);
  t.deepEqual(
    decode(k, (await fetchAllOutcomes(acq.url, term.signer, 0)).outcomes).map((o) => o.status),
    [OutcomeStatus.SETTLED],
  );
});
