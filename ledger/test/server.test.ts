import test from 'ava';
import { randomBytes } from 'node:crypto';
import {
  decodeDeterministic,
  encodeDeterministic,
  openSigned,
  OutcomeStatus,
  payloadHash,
  ReferenceWallet,
  signMessage,
  toHex,
  verifySigned,
} from '@dt/protocol';
import { createTestLedger } from '../src/testkit.ts';
import { startLedgerServer } from '../src/server.ts';
import { signLoadOrder } from '../src/load.ts';

const CBOR = { 'content-type': 'application/cbor' };
const COSE = { 'content-type': 'application/cose' };

async function setup() {
  const k = await createTestLedger();
  const srv = await startLedgerServer({ ledger: k.ledger, port: 0 });
  return { k, srv, url: srv.url };
}

test('HTTP: register, load, sync, settle, replay, CRL, health and metrics', async (t) => {
  const { k, srv, url } = await setup();
  try {
    const card = await k.fundCard(0);
    const id = card.identity;
    // Registration over HTTP is idempotent.
    const reg = await fetch(`${url}/v1/cards`, { method: 'POST', headers: CBOR, body: encodeDeterministic([...id.chain]) });
    t.is(reg.status, 200);
    t.is(((await reg.json()) as { kid: string }).kid, toHex(id.kid));
    const load = await fetch(`${url}/v1/loads`, {
      method: 'POST',
      headers: CBOR,
      body: signLoadOrder({ card: id.kid, amount: 5_000, id: new Uint8Array(randomBytes(16)), time: k.clock.now }, k.pki.bank.signer),
    });
    t.is(load.status, 200);
    t.like(await load.json(), { amount: 5_000, state: 'pending' });
    const req = card.wallet.beginSync(new Uint8Array(randomBytes(16)));
    const sync = await fetch(`${url}/v1/sync`, { method: 'POST', headers: CBOR, body: req });
    t.is(sync.status, 200);
    const receipt = new Uint8Array(await sync.arrayBuffer());
    t.is(verifySigned('SyncReceipt', receipt, k.pki.ledger.keys.publicKey).message.loaded, 5_000);
    card.wallet.completeSync(receipt, k.pki.ledger.keys.publicKey);

    const shop = k.newTerminal('shop-http');
    const p1 = card.wallet.pay(k.request(shop, 1_200));
    const p2 = card.wallet.pay(k.request(shop, 300));
    const batches = [k.batch(shop, [p1.handover]), k.batch(shop, [p2.handover, p1.handover])];
    const res = await fetch(`${url}/v1/settle`, { method: 'POST', headers: COSE, body: k.settleRequest(batches) });
    t.is(res.status, 200);
    t.is(res.headers.get('content-type'), 'application/cbor');
    const raw = new Uint8Array(await res.arrayBuffer());
    const arr = decodeDeterministic(raw, 1 << 20) as Uint8Array[][];
    const st = arr.map((b) => b.map((x) => verifySigned('Outcome', x, k.pki.ledger.keys.publicKey).message.status));
    t.deepEqual(st, [[OutcomeStatus.SETTLED], [OutcomeStatus.SETTLED, OutcomeStatus.ALREADY_SETTLED]]);
    // Settlement is idempotent: the same batches again (in a fresh request) get the same bytes back.
    const again = await fetch(`${url}/v1/settle`, { method: 'POST', headers: COSE, body: k.settleRequest(batches) });
    t.is(toHex(new Uint8Array(await again.arrayBuffer())), toHex(raw));

    const crl = await fetch(`${url}/v1/crl`);
    t.is(crl.status, 200);
    t.is(verifySigned('RevocationList', new Uint8Array(await crl.arrayBuffer()), k.pki.ledger.keys.publicKey).message.version, 0);
    t.like(await (await fetch(`${url}/v1/health`)).json(), { ok: true, storage: 'sqlite' });
    const metrics = await (await fetch(`${url}/v1/metrics`)).text();
    t.regex(metrics, /^dt_ledger_transfers_settled_total 2$/m);
    t.regex(metrics, /^dt_ledger_transfers_already_settled_total 1$/m);
    t.regex(metrics, /^dt_ledger_syncs_total 1$/m);
    // Voids and refunds (SPEC §7.7.3): none in this run.
    for (const m of ['merchant_voids', 'refunds', 'adjustments_refused']) t.regex(metrics, new RegExp(`^dt_ledger_${m}_total 0$`, 'm'));
  } finally {
    await srv.close();
    await k.storage.close();
  }
});

test('HTTP: bad input gets a 4xx JSON error with a stable code and changes nothing', async (t) => {
  const { k, srv, url } = await setup();
  try {
    const card = await k.fundCard(5_000);
    const shop = k.newTerminal('shop-http');
    const p = card.wallet.pay(k.request(shop, 100));
    const stranger = k.pki.issueCard(); // certified but never registered
    const strangerSync = new ReferenceWallet({ signer: stranger.signer, chain: stranger.chain }).beginSync(new Uint8Array(16));
    // A history that creates value (issue 12 point 3): the stable code is SYNC_INVALID, the check's code goes in detail.
    const paid = openSigned('Transfer', p.transfer).message;
    const inflated = signMessage(
      'Transfer',
      { ...paid, amount: paid.amount + 500, outputs: paid.outputs.map((o, i) => (i === 0 ? { ...o, value: o.value + 500 } : o)) },
      card.identity.signer,
    );
    const inflatedHash = payloadHash(openSigned('Transfer', inflated).cose);
    const valueCreating = signMessage(
      'SyncRequest',
      {
        card: card.identity.kid,
        counter: paid.counter + 1,
        prev: inflatedHash,
        history: [inflated],
        holdings: [],
        balance: 0,
        challenge: new Uint8Array(16),
      },
      card.identity.signer,
    );
    const before = await k.ledger.audit();
    const post = (path: string, body: Uint8Array | string, headers: Record<string, string> = CBOR) =>
      fetch(`${url}${path}`, { method: 'POST', headers, body });
    const cases: [string, Promise<Response>, number, string][] = [
      ['garbage', post('/v1/settle', new Uint8Array([0xff, 0x00]), COSE), 400, 'MALFORMED'],
      ['not a settle request', post('/v1/settle', encodeDeterministic([1, 2]), COSE), 400, 'MALFORMED'],
      // The old body (a bare CBOR array of batches) is refused in either media type.
      ['old body format as cbor', post('/v1/settle', encodeDeterministic([k.batch(shop, [p.handover])])), 415, 'UNSUPPORTED_MEDIA_TYPE'],
      ['old body format as cose', post('/v1/settle', encodeDeterministic([k.batch(shop, [p.handover])]), COSE), 400, 'MALFORMED'],
      ['wrong media type', post('/v1/settle', '{}', { 'content-type': 'application/json' }), 415, 'UNSUPPORTED_MEDIA_TYPE'],
      [
        'forged batch',
        post(
          '/v1/settle',
          k.settleRequest([signMessage('Batch', openSigned('Batch', k.batch(shop, [p.handover])).message, k.newTerminal('x').signer)]),
          COSE,
        ),
        400,
        'BAD_SIGNATURE',
      ],
      ['sync garbage', post('/v1/sync', new Uint8Array([1, 2, 3])), 400, 'MALFORMED'],
      ['unknown card sync', post('/v1/sync', strangerSync), 404, 'CARD_UNKNOWN'],
      [
        'load by a non-bank',
        post(
          '/v1/loads',
          signLoadOrder({ card: card.identity.kid, amount: 1, id: new Uint8Array(16), time: k.clock.now }, card.identity.signer),
        ),
        403,
        'BANK_UNKNOWN',
      ],
    ];
    for (const [name, pr, status, code] of cases) {
      const r = await pr;
      t.is(r.status, status, name);
      t.is(((await r.json()) as { code: string }).code, code, name);
    }
    const vc = await post('/v1/sync', valueCreating);
    t.is(vc.status, 400);
    t.like(await vc.json(), { code: 'SYNC_INVALID', detail: 'VALUE_NOT_CONSERVED' });
    const after = await k.ledger.audit();
    t.deepEqual(after, before);
  } finally {
    await srv.close();
    await k.storage.close();
  }
});
