/**
 * Void and refund through the ECR API of `dt-pos serve` (fastify inject over the real service,
 * journal, kernel, firmware card, acquirer and ledger): a void is idempotent (one per payment), a
 * refund is idempotent on its refundReference (a retry never refunds twice; another amount under
 * the same reference is a conflict), the terminal's rules answer 409 with their codes, the
 * payment shows its adjustments and the ledger's answers after a sync, and events are emitted.
 */
import test from 'ava';
import { buildEcrApp, SyncClient } from '../src/index.ts';
import { readerFor, tempDir } from './helpers/fixtures.ts';
import { startWorld, worldCard, worldTerminal } from './helpers/world.ts';
import { startService, syncedJournal } from './helpers/service.ts';

const TOKEN = 't'.repeat(40);

test('ECR void and refunds: idempotent, refused by the rules with stable codes, confirmed by the ledger', async (t) => {
  const { dir, cleanup } = tempDir('dt-pos-ecr-adjust-');
  const w = await startWorld(dir);
  t.teardown(async () => {
    await w.close();
    cleanup();
  });
  const id = worldTerminal(w);
  const journal = await syncedJournal(w, id, 'ecr-adjust');
  t.teardown(() => journal.close());
  const card = await worldCard(w, 3_000_000);
  const s = startService({ identity: id, journal, reader: readerFor(card.transport) });
  t.teardown(() => s.svc.stop());
  const app = buildEcrApp({ service: s.svc, token: TOKEN });
  t.teardown(() => app.close());
  const call = async (method: 'GET' | 'POST', url: string, body?: unknown) => {
    const r = await app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
    });
    return { status: r.statusCode, body: JSON.parse(r.body) as any };
  };
  const sync = async (): Promise<void> => {
    const c = new SyncClient({ identity: id, journal, acquirerUrl: w.acquirer.url, retry: { attempts: 1 } });
    t.deepEqual((await c.sync()).problems, []);
    await w.acquirer.forwardNow();
    t.deepEqual((await c.sync()).problems, []);
  };

  t.is((await s.pay('o-1', 100_000)).outcome, 'APPROVED');
  t.is((await s.pay('o-2', 200_000)).outcome, 'APPROVED');

  const v1 = await call('POST', '/v1/payments/o-1/void');
  t.is(v1.status, 201, JSON.stringify(v1.body));
  t.like(v1.body, { request: 'created', adjustment: { kind: 'void', amount: 100_000, state: 'pending' } });
  t.is(v1.body.payment.settlement, 'voided (pending ledger confirmation)');
  t.true(v1.body.payment.payment.voided);
  const v2 = await call('POST', '/v1/payments/o-1/void');
  t.is(v2.status, 200);
  t.is(v2.body.request, 'existing');
  t.is(v2.body.adjustment.id, v1.body.adjustment.id, 'one void per payment');
  t.like(await call('POST', '/v1/payments/o-2/refunds', { refundReference: 'rf-1', amount: 50_000 }), {
    status: 409,
    body: { error: 'NOT_SETTLED' },
  });
  t.like(await call('POST', '/v1/payments/nope/void'), { status: 404, body: { error: 'NOT_FOUND' } });
  t.like(await call('POST', '/v1/payments/o-2/refunds', { refundReference: 'bad ref' }), { status: 400 });

  await sync();
  const o1 = await call('GET', '/v1/payments/o-1');
  t.is(o1.body.settlement, 'voided');
  t.like(o1.body.payment.adjustments[0], { kind: 'void', state: 'accepted', code: 'MERCHANT_VOID' });
  const o2 = await call('GET', '/v1/payments/o-2');
  t.like(o2.body.payment, { state: 'settled', refundable: 200_000, refunded: 0 });
  t.like(await call('POST', '/v1/payments/o-2/void'), { status: 409, body: { error: 'ALREADY_SETTLED' } });

  const r1 = await call('POST', '/v1/payments/o-2/refunds', { refundReference: 'rf-1', amount: 50_000 });
  t.is(r1.status, 201, JSON.stringify(r1.body));
  t.like(r1.body.payment.payment, { refunded: 50_000, refundable: 150_000 });
  t.is(r1.body.payment.settlement, 'settled, partly refunded');
  const r2 = await call('POST', '/v1/payments/o-2/refunds', { refundReference: 'rf-1', amount: 50_000 });
  t.is(r2.status, 200);
  t.is(r2.body.request, 'existing');
  t.is(r2.body.adjustment.id, r1.body.adjustment.id, 'a retry is the same refund');
  t.like(await call('POST', '/v1/payments/o-2/refunds', { refundReference: 'rf-1', amount: 60_000 }), {
    status: 409,
    body: { error: 'REFERENCE_CONFLICT' },
  });
  t.like(await call('POST', '/v1/payments/o-2/refunds', { refundReference: 'rf-2', amount: 150_001 }), {
    status: 409,
    body: { error: 'REFUND_EXCEEDS' },
  });
  t.is(journal.refundedOf(journal.getOrder('o-2')!.paymentId!), 50_000, 'never refunded twice');
  t.is(s.events.filter((e) => e.type === 'adjustment').length, 2, 'one event per recorded void or refund');

  await sync();
  const after = await call('GET', '/v1/payments/o-2');
  t.like(after.body.payment.adjustments[0], { kind: 'refund', reference: 'rf-1', amount: 50_000, state: 'accepted' });
  const rep = await call('GET', '/v1/report');
  t.like(rep.body.adjustments, { void: { accepted: { count: 1, amount: 100_000 } }, refund: { accepted: { count: 1, amount: 50_000 } } });
});
