/**
 * `dt-pos serve`'s background work, in process over the real components (the reference ledger
 * and acquirer over HTTP, the journal, the kernel, firmware cards), with the sync loop's timers
 * injected so that every wait it schedules is seen and fired by the test, never slept:
 * - store and forward with backoff: while the acquirer does not answer, the rounds are spaced by
 *   the one retry policy (`backoffDelay` of `@dt/protocol/http`: exponential, capped, equal
 *   jitter), payments are still taken (an approval does not cut the backoff short); once the
 *   acquirer is back the pending payments are submitted and their outcomes applied;
 * - a tap during a sync round that hangs on the network is not blocked;
 * - the revocation list: a newer one is fetched at the scheduled round and a card revoked in it
 *   is then declined offline; an older (genuinely signed, replayed) one never replaces it; the
 *   list's age in the status is the service clock minus the list's signed issue time.
 */
import test from 'ava';
import { backoffDelay } from '@dt/protocol/http';
import { verifySigned, createTrustStore, toHex } from '@dt/protocol';
import { signCardBankRequest } from '@dt/ledger';
import { PaymentState } from '../src/index.ts';
import { nowSec, readerFor } from './helpers/fixtures.ts';
import { startAcquirerProxy, startService, terminalInWorld } from './helpers/service.ts';

const INTERVAL = 60_000;
const BASE = 100;
const MAX = 800;

test('acquirer unreachable: rounds spaced by backoffDelay (exponential, capped, jittered); back: pending payments submitted and their outcomes applied', async (t) => {
  const { w, id, journal, card } = await terminalInWorld(t, 'backoff');
  const jitter = [0, 0.5, 0.999, 0.25, 0.75, 0.1, 0.9];
  let draws = 0;
  const s = startService({
    identity: id,
    journal,
    reader: readerFor(card.transport),
    acquirerUrl: w.acquirer.url,
    syncIntervalMs: INTERVAL,
    syncBackoffMs: BASE,
    syncMaxBackoffMs: MAX,
    random: () => jitter[draws++ % jitter.length]!,
  });
  t.teardown(() => s.svc.stop());

  // The first round: the acquirer answers; the next one is an interval away.
  let timer = await s.timers.waiting();
  t.is(timer.ms, INTERVAL);
  t.like(s.svc.syncState, { state: 'idle', backoffMs: 0, lastProblem: null });

  // The acquirer goes away. A payment is taken all the same (store and forward); its approval
  // wakes the loop, whose round finds nobody.
  const port = Number(new URL(w.acquirer.url).port);
  await w.acquirer.close();
  t.is((await s.pay('p-1', 100_000)).outcome, 'APPROVED');
  t.true(timer.cancelled, 'the approval cut the interval short');

  const policy = { baseMs: BASE, maxMs: MAX };
  const waits: number[] = [];
  for (let failures = 1; failures <= 6; failures++) {
    timer = await s.timers.waiting();
    const r = jitter[(failures - 1) % jitter.length]!;
    t.is(
      timer.ms,
      backoffDelay(failures, policy, () => r),
      `wait after failure ${failures}`,
    );
    const d = Math.min(MAX, BASE * 2 ** (failures - 1));
    t.true(timer.ms >= d / 2 && timer.ms <= d);
    t.like(s.svc.syncState, { state: 'offline', backoffMs: d });
    t.regex(s.svc.syncState.lastProblem ?? '', /NETWORK/);
    waits.push(timer.ms);
    if (failures === 3) {
      // In backoff an approval does not start a round early: the same wait stays pending.
      t.is((await s.pay('p-2', 50_000)).outcome, 'APPROVED');
      t.deepEqual(s.timers.pending, [timer]);
    }
    if (failures < 6) s.timers.fire(timer);
  }
  t.deepEqual(
    s
      .rounds()
      .slice(-6)
      .map((r) => r.backoffMs),
    [100, 200, 400, 800, 800, 800],
    'doubling, then capped',
  );
  t.true(
    waits.every((ms) => ms <= MAX),
    waits.join(' '),
  );
  t.is(journal.pendingSummary().amount, 150_000, 'both payments wait in the journal');
  t.is(journal.totalsByState().pending.count, 2);

  // The acquirer is back: the next round submits both payments and the loop returns to the interval.
  await w.startAcquirer(port);
  s.timers.fire(timer);
  timer = await s.timers.waiting();
  t.is(timer.ms, INTERVAL);
  t.like(s.svc.syncState, { state: 'idle', backoffMs: 0, lastProblem: null });
  t.deepEqual(journal.totalsByState().submitted, { count: 2, amount: 150_000 });

  // The acquirer settles them at the ledger; the next scheduled round applies the outcomes.
  await w.acquirer.forwardNow();
  const before = s.events.length;
  s.timers.fire(timer);
  await s.timers.waiting();
  t.deepEqual(journal.totalsByState().settled, { count: 2, amount: 150_000 });
  t.is(journal.pendingSummary().amount, 0);
  for (const ref of ['p-1', 'p-2']) {
    t.is(s.svc.getPayment(ref).settlement, 'settled');
    t.is(s.svc.getPayment(ref).payment?.state, PaymentState.SETTLED);
    t.true(
      s.events.slice(before).some((e) => e.type === 'payment' && e.payment.reference === ref && e.payment.settlement === 'settled'),
      `the register is told ${ref} settled`,
    );
  }
});

test('a tap while a sync round hangs on the network is not blocked: approved while the round still waits', async (t) => {
  const { w, id, journal, card } = await terminalInWorld(t, 'hang');
  const proxy = await startAcquirerProxy(() => w.acquirer.url);
  t.teardown(() => proxy.close());
  proxy.hold();
  const s = startService({
    identity: id,
    journal,
    reader: readerFor(card.transport),
    acquirerUrl: proxy.url,
    syncIntervalMs: INTERVAL,
    syncBackoffMs: BASE,
    syncMaxBackoffMs: MAX,
  });
  t.teardown(() => s.svc.stop());
  await proxy.holding();
  t.is(s.svc.syncState.state, 'running');

  const outcome = await s.pay('during-sync', 70_000);
  t.is(outcome.outcome, 'APPROVED');
  t.is(s.svc.syncState.state, 'running', 'the round is still waiting for the acquirer');
  t.true(proxy.held.length > 0, 'the acquirer has not answered');
  t.is(s.svc.getPayment('during-sync').state, 'approved');
  t.is(journal.pendingSummary().amount, 70_000);

  // The network answers: the round ends well; the payment goes at the latest with the next round.
  proxy.release();
  const timer = await s.timers.waiting();
  t.is(timer.ms, INTERVAL);
  t.like(s.svc.syncState, { state: 'idle', lastProblem: null });
  if (journal.totalsByState().submitted.count === 0) {
    s.timers.fire(timer);
    await s.timers.waiting();
  }
  t.deepEqual(journal.totalsByState().submitted, { count: 1, amount: 70_000 });
});

test('revocation list: a newer list is fetched at the scheduled round and its revoked card is declined offline; an older list never replaces it; the age in the status is right', async (t) => {
  const { w, id, journal, card } = await terminalInWorld(t, 'crl');
  const proxy = await startAcquirerProxy(() => w.acquirer.url);
  t.teardown(() => proxy.close());
  let clock = nowSec() + 1000;
  const s = startService({
    identity: id,
    journal,
    reader: readerFor(card.transport),
    acquirerUrl: proxy.url,
    syncIntervalMs: INTERVAL,
    now: () => clock,
  });
  t.teardown(() => s.svc.stop());
  let timer = await s.timers.waiting();
  t.is(proxy.crls.length, 1, 'the round fetched the list');
  const ledgerKey = createTrustStore({ root: id.root, ledgerCert: id.ledgerCert, at: clock }).ledgerKey;
  const v1 = verifySigned('RevocationList', proxy.crls[0]!, ledgerKey).message;
  type CrlStatus = { version: number; issued: number; ageSeconds: number; revoked: number };
  const crlStatus = (): CrlStatus => s.svc.status().crl as CrlStatus;
  t.like(crlStatus(), { version: v1.version, issued: v1.issued, ageSeconds: clock - v1.issued, revoked: 0 });
  clock += 7200;
  t.is(crlStatus().ageSeconds, clock - v1.issued, 'the age follows the clock');
  t.true(crlStatus().ageSeconds >= 8200);
  t.is(s.svc.status().offlineAcceptance, 'normal');
  t.is((await s.pay('before', 10_000)).outcome, 'APPROVED');
  // The approval started a round at once (the acquirer answers): wait for it to end.
  t.true(timer.cancelled);
  timer = await s.timers.waiting();
  const fetched = proxy.crls.length;

  // The card's bank blocks it; the ledger's next list names it; the acquirer fetches it.
  const bank = w.tl.pki.bank.signer;
  await w.tl.ledger.blockCard(signCardBankRequest('block', { card: card.kid, time: w.tl.clock.now }, bank));
  await w.acquirer.refreshCrl();
  t.false(journal.isRevoked(card.kid), 'nothing changes before the scheduled round');
  s.timers.fire(timer);
  timer = await s.timers.waiting();
  t.is(proxy.crls.length, fetched + 1, 'the scheduled round fetched the list');
  const v2 = verifySigned('RevocationList', proxy.crls.at(-1)!, ledgerKey).message;
  t.true(v2.version > v1.version);
  t.true(v2.revoked.some((k) => toHex(k) === toHex(card.kid)));
  t.like(crlStatus(), { version: v2.version, issued: v2.issued, ageSeconds: clock - v2.issued, revoked: v2.revoked.length });
  t.true(journal.isRevoked(card.kid));

  // An older list, genuinely signed (replayed), never replaces the newer one.
  proxy.replayOldCrl = true;
  s.timers.fire(timer);
  await s.timers.waiting();
  t.like(crlStatus(), { version: v2.version, issued: v2.issued, revoked: v2.revoked.length });
  t.is(journal.crl()?.version, v2.version);
  t.true(journal.isRevoked(card.kid));

  // The revoked card is declined offline: no network needed, nothing taken.
  const declined = await s.pay('after', 10_000);
  t.is(declined.outcome, 'DECLINED');
  t.is(declined.reason, 'CARD_REVOKED');
  t.like(s.svc.getPayment('after'), { state: 'declined', reason: 'CARD_REVOKED', payment: null });
  t.is(journal.listPayments().length, 1);
});
