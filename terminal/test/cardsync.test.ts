/**
 * The card-sync client against the real ledger over HTTP, with a firmware
 * card: registration, a bank load order and LOAD, the card's state, SYNC,
 * and refusals (the ledger's stable code and its
 * detail apart; a refused load order leaves the card untouched).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MemoryStorage } from '@dt/firmware';
import { InProcessTransport, personalizeCard, SimulatedCard } from '@dt/card-applet-sim';
import { openSqliteStorage, signLoadOrder, startLedgerServer } from '@dt/ledger';
import { createTestLedger } from '@dt/ledger/testkit';
import { selectApplet, toHex } from '@dt/protocol';
import { CardSyncClient, readCardState } from '../src/index.ts';
import { nowSec, tempDir, TEST_LIMITS } from './helpers/fixtures.ts';

const rnd16 = (): Uint8Array => new Uint8Array(randomBytes(16));

async function setup(t: { teardown: (f: () => void | Promise<void>) => void }) {
  const { dir, cleanup } = tempDir();
  const tl = await createTestLedger({ now: nowSec(), storage: openSqliteStorage(join(dir, 'ledger.db')) });
  const server = await startLedgerServer({ ledger: tl.ledger, port: 0, host: '127.0.0.1' });
  t.teardown(async () => {
    await server.close();
    cleanup();
  });
  const pki = tl.pki;
  const transport = new InProcessTransport(new SimulatedCard({ storage: new MemoryStorage() }));
  const p = await personalizeCard(
    transport,
    { signer: pki.bank.signer, cert: pki.bank.cert, root: pki.issuer.cert, ledgerCert: pki.ledger.cert },
    { pin: '1234', puk: '12345678', limits: TEST_LIMITS },
  );
  const order = (amount: number, card = p.cardKid) => signLoadOrder({ card, amount, id: rnd16(), time: nowSec() }, pki.bank.signer);
  return { tl, server, transport, p, order, client: new CardSyncClient({ ledgerUrl: server.url }) };
}

test('register, load with a bank order, read the state, sync: the receipt the card accepted', async (t) => {
  const { tl, transport, p, order, client } = await setup(t);
  const reg = await client.registerCard([p.certificate, tl.pki.bank.cert]);
  t.like(reg, { ok: true, kid: toHex(p.cardKid) });
  await selectApplet(transport);
  const before = await readCardState(transport);
  t.like(before, { card: toHex(p.cardKid), balance: 0, syncPending: false, offlineCount: 0 });

  const load = await client.load(transport, order(2_500_000));
  if (!load.ok) return t.fail(`load refused: ${load.step} ${load.code}`);
  t.like(load.order, { ok: true, card: toHex(p.cardKid), amount: 2_500_000, state: 'pending' });
  t.like(load.summary, { loaded: 2_500_000, redeemed: 0, voided: 0, refunded: 0 });
  t.true(load.summary.tokens > 0);
  t.like(await readCardState(transport), { balance: 2_500_000, syncPending: false });

  const sync = await client.sync(transport);
  if (!sync.ok) return t.fail(`sync refused: ${sync.code}`);
  t.like(sync.summary, { loaded: 0, redeemed: 0 });
  t.like(await readCardState(transport), { balance: 2_500_000, syncPending: false, offlineCount: 0 });
});

test('a refused load order stops before the card: the ledger code, the card unchanged', async (t) => {
  const { transport, order, client } = await setup(t);
  await selectApplet(transport);
  // Not registered: 404 CARD_UNKNOWN.
  const r = await client.load(transport, order(1000));
  t.like(r, { ok: false, step: 'order', status: 404, code: 'CARD_UNKNOWN' });
  t.like(await readCardState(transport), { balance: 0, syncPending: false });
  // A load order for another (unknown) card, submitted alone.
  t.like(await client.submitLoadOrder(order(1000, rnd16())), { ok: false, status: 404, code: 'CARD_UNKNOWN' });
});

test('a refused sync is a result with the stable code; the request stays pending', async (t) => {
  const { transport, client } = await setup(t);
  await selectApplet(transport);
  // The card was never registered: the ledger refuses its sync request.
  const r = await client.sync(transport);
  t.like(r, { ok: false, status: 404, code: 'CARD_UNKNOWN' });
  t.like(await readCardState(transport), { syncPending: true });
});

test('an unreachable ledger throws (nothing to report as a ledger refusal)', async (t) => {
  const { transport } = await setup(t);
  await selectApplet(transport);
  const client = new CardSyncClient({ ledgerUrl: 'http://127.0.0.1:1', timeoutMs: 2000 });
  await t.throwsAsync(client.sync(transport));
});
