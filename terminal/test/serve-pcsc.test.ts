/**
 * `dt-pos serve` as a process, through a real pcscd (vpcd) with the simulated card served by
 * `dt-card serve --vpcd` (another process), driven over its ECR API:
 * the lock (a second serve and a charge are refused with exit 8; a dead owner's lock is taken
 * over), the token, bounded and checked bodies, a payment approved with its events (present
 * card, processing, outcome), an idempotent retry (same receipt, no second charge), the same
 * reference with another amount (409), one tap at a time (409 BUSY), cancel, a PIN payment,
 * the list, status, report and batch close; SIGTERM during a tap finishes the tap, then stops;
 * SIGKILL during a tap, then a restart: the retried reference resumes the payment and the card
 * is charged once (card balance, journal and orders agree).
 *
 * Needs root, pcscd and vsmartcard-vpcd (CI has them; never skipped).
 */
import test from 'ava';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  cardBalance,
  dtPos,
  ecrClient,
  serveCard,
  startServe,
  startShop,
  type Serve,
  type Shop,
  stopServedCards,
} from './helpers/serve.ts';
import { tempDir } from './helpers/fixtures.ts';

let shop: Shop | undefined;
const running: Serve[] = [];
const tmp = tempDir('dt-pos-serve-');

test.after.always(async () => {
  await stopServedCards();
  for (const s of running) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  await shop?.close();
  tmp.cleanup();
});

interface View {
  reference: string;
  amount: number;
  state: string;
  phase: string | null;
  reason: string | null;
  settlement: string | null;
  request?: string;
  payment: { receipt: number; state: string } | null;
}

const INITIAL = 5_000_000;

test.serial(
  'dt-pos serve over PC/SC: lock, token, payments idempotent by reference, cancel, PIN, list, report; SIGTERM finishes the tap; SIGKILL mid-tap loses nothing',
  async (t) => {
    shop = await startShop(tmp.dir);
    const { env, dataDir, stateFile } = shop;
    const vpcd = ['--vpcd', '--port', String(shop.pcscd.vpcdPort)];

    // ---------------------------------------------------------------- lock
    const s1 = await startServe(dataDir, env);
    running.push(s1);
    t.is(readFileSync(join(dataDir, 'dt-pos.lock'), 'utf8').trim(), String(s1.proc.pid), 'the lock holds the pid');
    t.is(statSync(join(dataDir, 'ecr.token')).mode & 0o777, 0o600, 'the token is private');
    const second = await dtPos(['--data-dir', dataDir, 'serve', '--port', '0'], env);
    t.is(second.code, 8, second.stdout + second.stderr);
    t.regex(second.stderr, /LOCKED: the data directory is in use by another dt-pos process \(pid \d+\)/);
    const charge = await dtPos(['--data-dir', dataDir, 'charge', '10', '--timeout', '1'], env);
    t.is(charge.code, 8, charge.stdout + charge.stderr);

    // ---------------------------------------------------------------- token, bodies
    const ecr = ecrClient(s1.url, dataDir);
    t.is((await ecr.call('GET', '/v1/status', undefined, '')).status, 401);
    const wrong = await ecr.call('GET', '/v1/status', undefined, `Bearer ${ecr.token.slice(0, -1)}x`);
    t.is(wrong.status, 401);
    t.is((wrong.body as { error: string }).error, 'UNAUTHORIZED');
    t.is((await ecr.call('GET', '/v1/openapi.json', undefined, '')).status, 200, 'the OpenAPI document is public');
    const badAmount = await ecr.call('POST', '/v1/payments', { amount: '50.00', reference: 'x' });
    t.is(badAmount.status, 400);
    t.is((badAmount.body as { error: string }).error, 'BAD_REQUEST');
    t.is((await ecr.call('POST', '/v1/payments', { amount: 5000, reference: 'bad reference!' })).status, 400);
    t.is((await ecr.call('POST', '/v1/payments', { amount: 5000, reference: 'r', extra: 1 })).status, 400);
    const huge = await ecr.call('POST', '/v1/payments', JSON.stringify({ amount: 5000, reference: 'r', pad: 'x'.repeat(5000) }));
    t.is(huge.status, 413);
    t.is((huge.body as { error: string }).error, 'BODY_TOO_LARGE');
    t.is((await ecr.call('GET', '/v1/payments/nope')).status, 404);

    // ---------------------------------------------------------------- a payment, then the card comes
    const events = ecr.events((ev) => ev.some((e) => e.type === 'outcome' && e.data.reference === 'sale-1'));
    const started = await ecr.call<View>('POST', '/v1/payments', { amount: 5000, reference: 'sale-1' });
    t.is(started.status, 201, JSON.stringify(started.body));
    t.is(started.body.state, 'started');
    t.is(started.body.request, 'created');
    t.is(started.body.phase, 'present_card');
    const busy = await ecr.call('POST', '/v1/payments', { amount: 100, reference: 'other' });
    t.is(busy.status, 409);
    t.is((busy.body as { error: string }).error, 'BUSY');
    let card = await serveCard([...vpcd, stateFile], env);
    const seen = await events;
    const types = seen.map((e) => (e.type === 'phase' ? `phase:${e.data.phase as string}` : e.type));
    t.true(types.includes('phase:processing'), types.join(' '));
    const outcome = seen.find((e) => e.type === 'outcome')!;
    t.is(outcome.data.outcome, 'APPROVED');
    const sale1 = (await ecr.call<View>('GET', '/v1/payments/sale-1')).body;
    t.is(sale1.state, 'approved');
    t.truthy(sale1.payment);
    t.true(['pending verification', 'submitted', 'settled'].includes(sale1.settlement!), String(sale1.settlement));

    // The register retries (lost answer): the same payment, no second tap.
    const retry = await ecr.call<View>('POST', '/v1/payments', { amount: 5000, reference: 'sale-1' });
    t.is(retry.status, 200);
    t.is(retry.body.request, 'existing');
    t.is(retry.body.payment!.receipt, sale1.payment!.receipt);
    const conflict = await ecr.call('POST', '/v1/payments', { amount: 6000, reference: 'sale-1' });
    t.is(conflict.status, 409);
    t.is((conflict.body as { error: string }).error, 'REFERENCE_CONFLICT');
    t.is((await ecr.call('POST', '/v1/payments/sale-1/cancel')).status, 409, 'an approved payment is not cancelled');

    // ---------------------------------------------------------------- PIN (above the card's CVM limit of 100 KZT)
    const pinEvents = ecr.events((ev) => ev.some((e) => e.type === 'phase' && e.data.phase === 'pin'));
    t.is((await ecr.call('POST', '/v1/payments', { amount: 15000, reference: 'sale-pin' })).status, 201);
    await pinEvents;
    const done = ecr.events((ev) => ev.some((e) => e.type === 'outcome' && e.data.reference === 'sale-pin'));
    t.is((await ecr.call('POST', '/v1/payments/sale-pin/pin', { pin: shop.pin })).status, 202);
    t.is((await done).find((e) => e.type === 'outcome')!.data.outcome, 'APPROVED');
    t.is((await ecr.call('POST', '/v1/payments/sale-pin/pin', { pin: shop.pin })).status, 409, 'no PIN asked any more');

    // ---------------------------------------------------------------- cancel while waiting for the card
    const mark = s1.lines.length;
    await card.stop();
    await s1.waitLine((l) => l.event === 'reader' && l.state === 'ready', 'the card leaving the reader', mark);
    const waiting = await ecr.call<View>('POST', '/v1/payments', { amount: 2000, reference: 'sale-2' });
    t.is(waiting.status, 201);
    const cancelled = await ecr.call<View>('POST', '/v1/payments/sale-2/cancel');
    t.is(cancelled.status, 200, JSON.stringify(cancelled.body));
    t.is(cancelled.body.state, 'cancelled');
    t.is(cancelled.body.payment, null);
    t.is(
      (await ecr.call<View>('POST', '/v1/payments', { amount: 2000, reference: 'sale-2' })).body.state,
      'cancelled',
      'a retry returns it as is',
    );

    // ---------------------------------------------------------------- list, status, report, close
    const list = (await ecr.call<{ payments: View[] }>('GET', '/v1/payments')).body.payments;
    t.deepEqual(
      list.map((p) => [p.reference, p.state]),
      [
        ['sale-2', 'cancelled'],
        ['sale-pin', 'approved'],
        ['sale-1', 'approved'],
      ],
    );
    const status = (
      await ecr.call<{ reader: { state: string }; crl: { ageSeconds: number } | null; sync: { state: string } }>('GET', '/v1/status')
    ).body;
    t.is(status.reader.state, 'ready');
    t.truthy(status.crl);
    t.not(status.sync.state, 'disabled');
    const closed = (await ecr.call<{ close: { count: number; amount: number } }>('POST', '/v1/batch/close')).body;
    t.deepEqual([closed.close.count, closed.close.amount], [2, 20000]);
    const report = (
      await ecr.call<{ openBatch: { afterReceipt: number }; byState: Record<string, { amount: number }> }>('GET', '/v1/report')
    ).body;
    t.is(
      Object.values(report.byState).reduce((a, v) => a + v.amount, 0),
      20000,
    );

    // ---------------------------------------------------------------- SIGTERM during a tap: the tap finishes, then it stops
    card = await serveCard([...vpcd, '--delay-ms', '300', stateFile], env);
    t.is((await ecr.call('POST', '/v1/payments', { amount: 3000, reference: 'sale-term' })).status, 201);
    await s1.waitLine((l) => l.event === 'phase' && l.reference === 'sale-term' && l.phase === 'processing', 'processing');
    s1.proc.kill('SIGTERM');
    const term = await s1.exited;
    t.is(term.code, 0, term.stdout + term.stderr);
    const order = s1.lines.map((l) => (l.event === 'outcome' ? `outcome:${l.reference as string}:${l.outcome as string}` : l.event));
    t.true(order.indexOf('outcome:sale-term:APPROVED') > order.indexOf('stopping'), order.join(' '));
    t.is(order.at(-1), 'stopped');
    t.false(existsSync(join(dataDir, 'dt-pos.lock')), 'the lock is released');

    // ---------------------------------------------------------------- SIGKILL during a tap, restart, retry: charged once
    const s2 = await startServe(dataDir, env);
    running.push(s2);
    const ecr2 = ecrClient(s2.url, dataDir);
    t.is((await ecr2.call<View>('GET', '/v1/payments/sale-term')).body.state, 'approved');
    t.is((await ecr2.call('POST', '/v1/payments', { amount: 4000, reference: 'sale-kill' })).status, 201);
    await s2.waitLine((l) => l.event === 'phase' && l.reference === 'sale-kill' && l.phase === 'processing', 'processing');
    s2.proc.kill('SIGKILL');
    await s2.exited;
    t.true(existsSync(join(dataDir, 'dt-pos.lock')), 'a killed process leaves its lock');

    const s3 = await startServe(dataDir, env);
    running.push(s3);
    const ecr3 = ecrClient(s3.url, dataDir);
    t.is((await ecr3.call<View>('GET', '/v1/payments/sale-kill')).body.state, 'interrupted');
    const resumedDone = ecr3.events((ev) => ev.some((e) => e.type === 'outcome' && e.data.reference === 'sale-kill'));
    const resumed = await ecr3.call<View>('POST', '/v1/payments', { amount: 4000, reference: 'sale-kill' });
    t.is(resumed.status, 201);
    t.is(resumed.body.request, 'resumed');
    t.is((await resumedDone).find((e) => e.type === 'outcome')!.data.outcome, 'APPROVED');
    const approved = (await ecr3.call<{ payments: View[] }>('GET', '/v1/payments')).body.payments.filter((p) => p.state === 'approved');
    t.deepEqual(approved.map((p) => p.reference).sort(), ['sale-1', 'sale-kill', 'sale-pin', 'sale-term']);
    const receipts = new Set(approved.map((p) => p.payment!.receipt));
    t.is(receipts.size, 4, 'four payments, one receipt each');
    const ordersTotal = approved.reduce((a, p) => a + p.amount, 0);
    const rep = (await ecr3.call<{ byState: Record<string, { count: number; amount: number }> }>('GET', '/v1/report')).body;
    const journalTotal = Object.values(rep.byState).reduce((a, v) => a + v.amount, 0);
    const journalCount = Object.values(rep.byState).reduce((a, v) => a + v.count, 0);
    t.is(journalTotal, ordersTotal);
    t.is(journalCount, 4);
    s3.proc.kill('SIGTERM');
    t.is((await s3.exited).code, 0);
    await card.stop();
    t.is(await cardBalance(stateFile), INITIAL - ordersTotal, 'the card paid exactly what the journal holds');
  },
);
