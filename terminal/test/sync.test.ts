/**
 * The sync client against the real acquirer and ledger, with payments taken
 * by the kernel from firmware cards loaded through the ledger: settlement,
 * double spend with cover, acquirer down (queue and report), idempotent
 * resend after a lost acknowledgement, refusal of forged outcomes and lists.
 */
import test from 'ava';
import { join } from 'node:path';
import { MemoryStorage } from '@dt/firmware';
import { InProcessTransport, SimulatedCard } from '@dt/card-applet-sim';
import { signMessage, generateKeyPair, keyPairSigner, toHex } from '@dt/protocol';
import { Journal, PaymentKernel, PaymentState, SyncClient, type TerminalIdentity } from '../src/index.ts';
import { nowSec, readerFor, tempDir, TEST_POLICY } from './helpers/fixtures.ts';
import { startWorld, worldCard, worldTerminal, type World } from './helpers/world.ts';

async function terminal(t: { teardown: (f: () => void | Promise<void>) => void }, w: World, identity: TerminalIdentity, name = 'j') {
  const journal = Journal.open(join(w.dir, `${name}.sqlite`));
  t.teardown(() => journal.close());
  const client = (url = w.acquirer.url, extra: Partial<ConstructorParameters<typeof SyncClient>[0]> = {}) =>
    new SyncClient({ identity, journal, acquirerUrl: url, retry: { attempts: 2, baseMs: 10, maxMs: 50, timeoutMs: 5000 }, ...extra });
  // First contact: the revocation list (offline acceptance needs one).
  const first = await client().sync();
  const kernel = new PaymentKernel({ identity, journal, policy: TEST_POLICY });
  return { journal, client, kernel, first };
}

async function world(t: { teardown: (f: () => void | Promise<void>) => void }): Promise<World> {
  const { dir, cleanup } = tempDir();
  const w = await startWorld(dir);
  t.teardown(async () => {
    await w.close();
    cleanup();
  });
  return w;
}

test('payments go pending -> submitted -> settled through the real acquirer and ledger; the CRL is installed', async (t) => {
  const w = await world(t);
  const id = worldTerminal(w);
  const { journal, client, kernel, first } = await terminal(t, w, id);
  t.true(first.online);
  t.truthy(first.crl);
  t.truthy(journal.crl());
  const card = await worldCard(w, 3_000_000);
  for (const amount of [100_000, 250_000, 5_000]) t.is((await kernel.charge(readerFor(card.transport), amount)).kind, 'APPROVED');
  t.is(journal.pendingSummary().amount, 355_000);

  const r1 = await client().sync();
  t.deepEqual(r1.problems, []);
  t.deepEqual(
    r1.batches.map((b) => [b.seq, b.count, b.total]),
    [[1, 3, 355_000]],
  );
  t.is(journal.totalsByState().submitted.amount, 355_000);

  await w.acquirer.forwardNow();
  const r2 = await client().sync();
  t.deepEqual(r2.problems, []);
  t.is(r2.outcomes.applied, 3);
  t.deepEqual(journal.totalsByState().settled, { count: 3, amount: 355_000 });
  t.is(journal.pendingSummary().amount, 0);
  // A further sync changes nothing (cursor persisted).
  const r3 = await client().sync();
  t.is(r3.outcomes.applied, 0);
  t.is(r3.batches.length, 0);
});

test('acquirer down: sync reports offline with the pending amount and since when; nothing is lost and it all goes through once it is back', async (t) => {
  const w = await world(t);
  const id = worldTerminal(w);
  const { journal, client, kernel } = await terminal(t, w, id);
  const card = await worldCard(w, 2_000_000);
  t.is((await kernel.charge(readerFor(card.transport), 70_000)).kind, 'APPROVED');
  const port = Number(new URL(w.acquirer.url).port);
  await w.acquirer.close();
  const down = await client(`http://127.0.0.1:${port}`).sync();
  t.false(down.online);
  t.true(down.problems.some((p) => p.code === 'NETWORK'));
  t.is(down.pending.amount, 70_000);
  t.is(down.pending.count, 1);
  t.true(typeof down.pending.since === 'number' && down.pending.since <= nowSec());
  // Still taking payments offline meanwhile.
  t.is((await kernel.charge(readerFor(card.transport), 30_000)).kind, 'APPROVED');
  await w.startAcquirer(port);
  const up = await client(w.acquirer.url).sync();
  t.true(up.online);
  t.deepEqual(up.problems, []);
  t.is(
    up.batches.reduce((s, b) => s + b.total, 0),
    100_000,
  );
  await w.acquirer.forwardNow();
  await client(w.acquirer.url).sync();
  t.deepEqual(journal.totalsByState().settled, { count: 2, amount: 100_000 });
});

test('lost acknowledgement: the same batch bytes are resent and acknowledged once; the ledger settles each payment once', async (t) => {
  const w = await world(t);
  const id = worldTerminal(w);
  const { journal, client, kernel } = await terminal(t, w, id);
  const card = await worldCard(w, 2_000_000);
  t.is((await kernel.charge(readerFor(card.transport), 12_345)).kind, 'APPROVED');
  let posts = 0;
  // The POST reaches the acquirer, but the answer is lost on the way back.
  const lossy: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    if (init?.method === 'POST') {
      posts++;
      await res.arrayBuffer();
      throw new TypeError('connection reset');
    }
    return res;
  };
  const r1 = await client(w.acquirer.url, { fetch: lossy, retry: { attempts: 1 } }).sync();
  t.false(r1.online);
  t.is(posts, 1);
  t.is(journal.openBatch()?.seq, 1);
  t.is(journal.totalsByState().pending.count, 1);
  const r2 = await client().sync();
  t.deepEqual(r2.problems, []);
  t.deepEqual(
    r2.batches.map((b) => b.seq),
    [1],
  );
  await w.acquirer.forwardNow();
  const r3 = await client().sync();
  t.is(r3.outcomes.applied, 1);
  t.deepEqual(journal.totalsByState().settled, { count: 1, amount: 12_345 });
  const audit = await w.tl.ledger.audit();
  t.is(audit.difference, 0);
});

test('double spend by a cloned card: second terminal gets DOUBLE_SPENT and covered (its batch predates the revocation); the new CRL then declines the card offline', async (t) => {
  const w = await world(t);
  const a = await terminal(t, w, worldTerminal(w, 'shop-a'), 'a');
  const b = await terminal(t, w, worldTerminal(w, 'shop-b'), 'b');
  const storage = new MemoryStorage();
  const card = await worldCard(w, 2_000_000, undefined, storage);
  const clone = new InProcessTransport(new SimulatedCard({ storage: new MemoryStorage(storage.snapshot()) }));
  t.is((await a.kernel.charge(readerFor(card.transport), 400_000)).kind, 'APPROVED');
  t.is((await b.kernel.charge(readerFor(clone), 400_000)).kind, 'APPROVED');
  await a.client().sync();
  await w.acquirer.forwardNow();
  await b.client().sync();
  await w.acquirer.forwardNow();
  await w.acquirer.refreshCrl();
  await a.client().sync();
  const rb = await b.client().sync();
  t.deepEqual(a.journal.totalsByState().settled, { count: 1, amount: 400_000 });
  t.deepEqual(b.journal.totalsByState().double_spent, { count: 1, amount: 400_000 });
  t.deepEqual(b.journal.doubleSpent().covered, { count: 1, amount: 400_000 });
  t.truthy(rb.crl);
  t.true(b.journal.isRevoked(card.kid));
  const again = await b.kernel.charge(readerFor(card.transport), 1000);
  t.is(again.kind, 'DECLINED');
  t.is(again.kind === 'DECLINED' && again.reason, 'CARD_REVOKED');
});

test('forged outcomes and revocation lists (not signed by the pinned ledger key) are refused; nothing changes', async (t) => {
  const w = await world(t);
  const id = worldTerminal(w);
  const { journal, client, kernel } = await terminal(t, w, id);
  const card = await worldCard(w, 2_000_000);
  const o = await kernel.charge(readerFor(card.transport), 10_000);
  t.is(o.kind, 'APPROVED');
  if (o.kind !== 'APPROVED') return;
  await client().sync();
  const forger = keyPairSigner(generateKeyPair((n) => new Uint8Array(n).map(() => Math.floor(Math.random() * 256))));
  const forgedOutcome = signMessage(
    'Outcome',
    { transfer: o.payment.transferHash, status: 1, covered: true, time: nowSec(), card: card.kid, terminal: id.kid, amount: 10_000 },
    forger,
  );
  const forgedCrl = signMessage('RevocationList', { version: 99, issued: nowSec(), revoked: [] }, forger);
  const { encodeDeterministic } = await import('@dt/protocol');
  const fake: typeof fetch = async (input) => {
    const u = new URL(String(input instanceof Request ? input.url : input));
    if (u.pathname.endsWith('/outcomes'))
      return new Response(
        Buffer.from(
          encodeDeterministic(
            new Map<number, unknown>([
              [1, [forgedOutcome]],
              [2, 7],
              [3, [[1, 0]]],
              [4, false],
            ]) as never,
          ),
        ),
        { status: 200 },
      );
    if (u.pathname === '/v1/crl') return new Response(Buffer.from(forgedCrl), { status: 200 });
    return new Response('{"code":"NOT_FOUND","message":"x"}', { status: 404 });
  };
  const before = journal.crl();
  const r = await client(w.acquirer.url, { fetch: fake }).sync();
  t.true(r.problems.some((p) => p.step === 'outcomes' && p.code === 'BAD_RESPONSE'));
  t.true(r.problems.some((p) => p.step === 'crl' && p.code === 'BAD_RESPONSE'));
  t.is(journal.getPayment(o.payment.id)!.state, PaymentState.SUBMITTED);
  t.is(journal.getMeta('outcomeCursor') ?? '0', '0');
  t.deepEqual(journal.crl()?.version, before?.version);
  t.is(toHex(id.kid).length, 32);
});
