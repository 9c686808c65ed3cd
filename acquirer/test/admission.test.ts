/**
 * Admission of terminal batches: what is accepted, what is refused with which
 * stable code, and that a refusal stores nothing. The ledger is deliberately
 * unreachable here (forwarding is covered by the end-to-end suite).
 */
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import {
  coseSign1,
  decodeDeterministic,
  encodeDeterministic,
  encodeMessage,
  generateKeyPair,
  keyPairSigner,
  MESSAGES,
  openSigned,
  signMessage,
  toHex,
  type CborValue,
} from '@dt/protocol';
import { startAcquirer, decodeAck, signRequest, fetchOutcomes, AcquirerHttpError, type RunningAcquirer } from '../src/index.ts';
import {
  acquirerIdentity,
  closedPort,
  makeBatch,
  makePki,
  makeTerminal,
  makeWallet,
  pay,
  seededRandom,
  tempDir,
  NOW,
  type Terminal,
} from './fixtures.ts';

const pki = makePki('admission');
const foreignPki = makePki('another issuer');
const rnd = seededRandom('admission nonces');

async function start(
  t: ExecutionContext,
  extra: { maxBodyBytes?: number; authNoncesPerTerminal?: number } = {},
): Promise<RunningAcquirer & { dbFile: string }> {
  const { dir, cleanup } = tempDir();
  const dbFile = join(dir, 'acq.db');
  const acq = await startAcquirer({
    ledgerUrl: `http://127.0.0.1:${await closedPort()}`,
    root: pki.root.cert,
    bankCert: pki.acquiringBank.cert,
    ledgerCert: pki.ledger.cert,
    ...acquirerIdentity(pki),
    dbFile,
    autoForward: false,
    ...extra,
  });
  t.teardown(async () => {
    await acq.close();
    cleanup();
  });
  return Object.assign(acq, { dbFile });
}

async function post(
  url: string,
  body: Uint8Array,
  contentType = 'application/cbor',
): Promise<{ status: number; bytes: Uint8Array; json?: { code: string; message: string } }> {
  const res = await fetch(`${url}/v1/batches`, { method: 'POST', headers: { 'content-type': contentType }, body });
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (res.status === 200) return { status: res.status, bytes };
  return { status: res.status, bytes, json: JSON.parse(new TextDecoder().decode(bytes)) };
}

async function health(url: string): Promise<{ queueDepth: number; pendingHandovers: number; ledgerReachable: boolean; status: string }> {
  return (await fetch(`${url}/v1/health`)).json() as never;
}

function handovers(term: Terminal, n: number): Uint8Array[] {
  const w = makeWallet(pki, 2, 50_000);
  return Array.from({ length: n }, () => pay(w, term, 1_000, rnd));
}

async function refused(
  t: ExecutionContext,
  acq: RunningAcquirer,
  body: Uint8Array,
  status: number,
  code: string,
  contentType?: string,
): Promise<void> {
  const before = await health(acq.url);
  const r = await post(acq.url, body, contentType);
  t.is(r.status, status, JSON.stringify(r.json));
  t.is(r.json?.code, code);
  const after = await health(acq.url);
  t.is(after.queueDepth, before.queueDepth, 'a refused batch must not be stored');
}

test('a valid batch is stored and acknowledged; an identical resend gets the identical ack', async (t) => {
  const acq = await start(t);
  const term = makeTerminal(pki, pki.acquiringBank);
  const batch = makeBatch(term, 1, handovers(term, 3));
  const r1 = await post(acq.url, batch, 'application/cose');
  t.is(r1.status, 200);
  const ack = decodeAck(r1.bytes);
  t.deepEqual(ack.terminal, term.kid);
  t.is(ack.seq, 1);
  t.is(ack.handovers, 3);
  const r2 = await post(acq.url, batch);
  t.is(r2.status, 200);
  t.is(toHex(r2.bytes), toHex(r1.bytes), 'same seq + same bytes: same ack');
  const h = await health(acq.url);
  t.is(h.queueDepth, 1, 'stored once');
  t.is(h.pendingHandovers, 3);
  t.false(h.ledgerReachable);
  t.is(h.status, 'degraded');
  const m = await (await fetch(`${acq.url}/v1/metrics`)).text();
  t.regex(m, /^dt_acquirer_batches_received_total 1$/m);
  t.regex(m, /^dt_acquirer_batches_duplicate_total 1$/m);
  t.regex(m, /^dt_acquirer_pending_batches 1$/m);
  t.regex(m, /^dt_acquirer_pending_handovers 3$/m);
});

test('sequence numbers: same seq with other bytes is 409 SEQ_CONFLICT, an older seq is 409 SEQ_OUT_OF_ORDER, gaps are allowed', async (t) => {
  const acq = await start(t);
  const term = makeTerminal(pki, pki.acquiringBank);
  const hs = handovers(term, 3);
  t.is((await post(acq.url, makeBatch(term, 5, [hs[0]!]))).status, 200);
  await refused(t, acq, makeBatch(term, 5, [hs[1]!]), 409, 'SEQ_CONFLICT');
  await refused(t, acq, makeBatch(term, 4, [hs[1]!]), 409, 'SEQ_OUT_OF_ORDER');
  t.is((await post(acq.url, makeBatch(term, 7, [hs[1]!]))).status, 200);
  t.is((await health(acq.url)).queueDepth, 2);
  // An empty batch is legal (a terminal with nothing to send may still sync its sequence).
  t.is((await post(acq.url, makeBatch(term, 8, []))).status, 200);
});

test('garbage, truncated and wrongly typed bodies are 400 BATCH_MALFORMED', async (t) => {
  const acq = await start(t);
  const term = makeTerminal(pki, pki.acquiringBank);
  const good = makeBatch(term, 1, handovers(term, 1));
  await refused(t, acq, new Uint8Array([1, 2, 3, 4]), 400, 'BATCH_MALFORMED');
  await refused(t, acq, good.slice(0, good.length - 5), 400, 'BATCH_MALFORMED');
  await refused(t, acq, new Uint8Array(0), 400, 'BATCH_MALFORMED');
  // A properly signed object of another type (a certificate) is not a batch.
  await refused(t, acq, term.chain[0]!, 400, 'BATCH_MALFORMED');
  await refused(t, acq, good, 415, 'UNSUPPORTED_MEDIA_TYPE', 'application/json');
});

test('a batch not signed by the terminal it names is 403 BATCH_BAD_SIGNATURE', async (t) => {
  const acq = await start(t);
  const term = makeTerminal(pki, pki.acquiringBank);
  const hs = handovers(term, 1);
  // Flip one bit of the signature.
  const good = makeBatch(term, 1, hs);
  const bad = good.slice();
  bad[bad.length - 1]! ^= 1;
  await refused(t, acq, bad, 403, 'BATCH_BAD_SIGNATURE');
  // Signed by another key that claims the terminal's chain.
  const thief = keyPairSigner(generateKeyPair(pki.random));
  const forged = signMessage('Batch', { terminal: term.kid, seq: 1, time: NOW(), chain: term.chain, handovers: hs, crlVersion: 0 }, thief);
  await refused(t, acq, forged, 403, 'BATCH_BAD_SIGNATURE');
  // Signed by one certified terminal while naming another.
  const other = makeTerminal(pki, pki.acquiringBank);
  const mixed = signMessage(
    'Batch',
    { terminal: other.kid, seq: 1, time: NOW(), chain: term.chain, handovers: hs, crlVersion: 0 },
    term.signer,
  );
  await refused(t, acq, mixed, 403, 'BATCH_BAD_SIGNATURE');
  t.is((await post(acq.url, good)).status, 200, 'the genuine batch is still accepted afterwards');
});

test('unknown, other-bank, revoked and expired terminals are refused with 403 and stable codes', async (t) => {
  const acq = await start(t);
  const foreign = makeTerminal(foreignPki, foreignPki.acquiringBank);
  await refused(t, acq, makeBatch(foreign, 1, []), 403, 'TERMINAL_UNKNOWN');
  const otherBank = makeTerminal(pki, pki.otherBank);
  await refused(t, acq, makeBatch(otherBank, 1, handovers(otherBank, 1)), 403, 'TERMINAL_WRONG_BANK');
  const expired = makeTerminal(pki, pki.acquiringBank, { exp: NOW() - 60, nbf: NOW() - 7200 });
  await refused(t, acq, makeBatch(expired, 1, []), 403, 'TERMINAL_EXPIRED');
  const future = makeTerminal(pki, pki.acquiringBank, { nbf: NOW() + 3600 });
  await refused(t, acq, makeBatch(future, 1, []), 403, 'TERMINAL_EXPIRED');
  const revoked = makeTerminal(pki, pki.acquiringBank);
  t.is((await post(acq.url, makeBatch(revoked, 1, []))).status, 200);
  acq.revokeTerminal(revoked.kid, 'stolen');
  await refused(t, acq, makeBatch(revoked, 2, handovers(revoked, 1)), 403, 'TERMINAL_REVOKED');
  // A card certificate chain is not a terminal chain.
  const w = makeWallet(pki, 1, 100);
  const cardAsTerminal = signMessage(
    'Batch',
    { terminal: w.kid, seq: 1, time: NOW(), chain: [...w.chain], handovers: [], crlVersion: 0 },
    keyPairSigner(generateKeyPair(pki.random)),
  );
  await refused(t, acq, cardAsTerminal, 403, 'TERMINAL_UNKNOWN');
});

test('handovers are decode-checked: malformed, oversize and other-payee handovers refuse the batch', async (t) => {
  const acq = await start(t);
  const term = makeTerminal(pki, pki.acquiringBank);
  const hs = handovers(term, 2);
  await refused(t, acq, makeBatch(term, 1, [hs[0]!, new Uint8Array([0xa0])]), 400, 'HANDOVER_MALFORMED');
  const res = await post(acq.url, makeBatch(term, 1, [hs[0]!, new Uint8Array([0xa0])]));
  t.like(res.json, { code: 'HANDOVER_MALFORMED', details: { index: 1 } } as never);
  const other = makeTerminal(pki, pki.acquiringBank);
  await refused(t, acq, makeBatch(term, 1, [hs[0]!, ...handovers(other, 1)]), 400, 'HANDOVER_WRONG_PAYEE');
  // A handover above the protocol's handover size limit is a schema violation of the batch.
  // (built by hand: the protocol encoder itself refuses to sign such a batch).
  const huge = new Uint8Array(192 * 1024 + 1).fill(0x41);
  const payload = encodeDeterministic(
    new Map<number, CborValue>([
      [0, 1],
      [1, term.kid],
      [2, 1],
      [3, NOW()],
      [4, term.chain],
      [5, [huge]],
      [6, 0],
    ]),
  );
  await refused(t, acq, coseSign1(payload, MESSAGES.Batch.contentType, term.signer), 400, 'BATCH_MALFORMED');
  // A structurally valid handover whose transfer is not a transfer.
  const h = { transfer: term.chain[0]!, chain: [term.chain[1]!], tokens: [term.chain[1]!], history: [] };
  await refused(t, acq, makeBatch(term, 1, [encodeMessage('Handover', h)]), 400, 'HANDOVER_MALFORMED');
  t.is((await post(acq.url, makeBatch(term, 1, hs))).status, 200, 'the same seq is still free after refusals');
});

test('bodies above the configured limit are 413 BODY_TOO_LARGE', async (t) => {
  const acq = await start(t, { maxBodyBytes: 64 * 1024 });
  const term = makeTerminal(pki, pki.acquiringBank);
  const hs = handovers(term, 40);
  const batch = makeBatch(term, 1, hs);
  t.true(batch.length > 64 * 1024);
  await refused(t, acq, batch, 413, 'BODY_TOO_LARGE');
  t.is((await post(acq.url, makeBatch(term, 1, hs.slice(0, 2)))).status, 200);
});

test('outcome reads need a fresh signature by the terminal over exactly that request', async (t) => {
  const acq = await start(t);
  const term = makeTerminal(pki, pki.acquiringBank);
  const kidHex = toHex(term.kid);
  const target = `/v1/terminals/${kidHex}/outcomes?after=0`;
  const get = async (auth?: string, path = target) => {
    const res = await fetch(acq.url + path, auth ? { headers: { authorization: auth } } : {});
    return {
      status: res.status,
      body: res.status === 200 ? new Uint8Array(await res.arrayBuffer()) : ((await res.json()) as { code: string }),
    };
  };
  // Not yet known: no batch accepted from it.
  t.like((await get(signRequest(term.signer, 'GET', target, NOW(), rnd(16)))).body, { code: 'TERMINAL_UNKNOWN' });
  t.is((await post(acq.url, makeBatch(term, 1, handovers(term, 1)))).status, 200);

  const r0 = await get();
  t.is(r0.status, 401);
  t.like(r0.body, { code: 'AUTH_REQUIRED' });
  t.like((await get('Bearer abc')).body, { code: 'AUTH_INVALID' });
  t.like((await get(signRequest(keyPairSigner(generateKeyPair(pki.random)), 'GET', target, NOW(), rnd(16)))).body, {
    code: 'AUTH_INVALID',
  });
  t.like((await get(signRequest(term.signer, 'GET', `/v1/terminals/${kidHex}/outcomes?after=7`, NOW(), rnd(16)))).body, {
    code: 'AUTH_INVALID',
  });
  t.like((await get(signRequest(term.signer, 'POST', target, NOW(), rnd(16)))).body, { code: 'AUTH_INVALID' });
  t.like((await get(signRequest(term.signer, 'GET', target, NOW() - 3600, rnd(16)))).body, { code: 'AUTH_STALE' });
  const auth = signRequest(term.signer, 'GET', target, NOW(), rnd(16));
  const ok = await get(auth);
  t.is(ok.status, 200);
  t.like((await get(auth)).body, { code: 'AUTH_REPLAYED' });
  // Another terminal cannot read this terminal's outcomes with its own valid signature.
  const other = makeTerminal(pki, pki.acquiringBank);
  t.is((await post(acq.url, makeBatch(other, 1, handovers(other, 1)))).status, 200);
  t.like((await get(signRequest(other.signer, 'GET', target, NOW(), rnd(16)))).body, { code: 'AUTH_INVALID' });
  // Nothing settled yet: an empty page that keeps the cursor.
  const page = await fetchOutcomes(acq.url, term.signer, 0);
  t.deepEqual(page.outcomes, []);
  t.is(page.cursor, 0);
  t.false(page.more);
  t.is((await get(undefined, `/v1/terminals/XYZ/outcomes`)).status, 400);
  acq.revokeTerminal(term.kid, 'test');
  const err = await fetchOutcomes(acq.url, term.signer, 0).catch((e: unknown) => e);
  t.true(err instanceof AcquirerHttpError && err.code === 'TERMINAL_REVOKED');
});

test('the replay window is per terminal: one terminal that floods its own gets 503 BUSY, another terminal still reads', async (t) => {
  const acq = await start(t, { authNoncesPerTerminal: 20 });
  const flooder = makeTerminal(pki, pki.acquiringBank, { merchant: 'M-FLOOD' });
  const other = makeTerminal(pki, pki.acquiringBank, { merchant: 'M-OTHER' });
  for (const term of [flooder, other]) t.is((await post(acq.url, makeBatch(term, 1, handovers(term, 1)))).status, 200);
  const read = async (term: Terminal) => {
    const target = `/v1/terminals/${toHex(term.kid)}/outcomes?after=0`;
    const res = await fetch(acq.url + target, { headers: { authorization: signRequest(term.signer, 'GET', target, NOW(), rnd(16)) } });
    return { status: res.status, code: res.status === 200 ? undefined : ((await res.json()) as { code: string }).code };
  };
  // A certified terminal signs fresh, valid authorizations as fast as it can: it fills its own window ...
  for (let i = 0; i < 20; i++) t.is((await read(flooder)).status, 200, `read ${i}`);
  t.deepEqual(await read(flooder), { status: 503, code: 'BUSY' });
  t.deepEqual(await read(flooder), { status: 503, code: 'BUSY' });
  // ... and only its own: the other terminal's reads still succeed, many of them.
  for (let i = 0; i < 20; i++) t.deepEqual(await read(other), { status: 200, code: undefined }, `other read ${i}`);
  t.deepEqual(await read(other), { status: 503, code: 'BUSY' }, 'the other terminal has a window of the same size');
});

test('without a verified revocation list GET /v1/crl is 503 CRL_UNAVAILABLE; unknown routes are 404', async (t) => {
  const acq = await start(t);
  const r = await fetch(`${acq.url}/v1/crl`);
  t.is(r.status, 503);
  t.like(await r.json(), { code: 'CRL_UNAVAILABLE' });
  const n = await fetch(`${acq.url}/v2/nothing`);
  t.is(n.status, 404);
  t.like(await n.json(), { code: 'NOT_FOUND' });
});

test('startAcquirer refuses certificates that do not fit: a bank without ACQUIRING, a foreign ledger, an acquirer certificate of another bank, role or key', async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const base = {
    ledgerUrl: 'http://127.0.0.1:1',
    root: pki.root.cert,
    ledgerCert: pki.ledger.cert,
    bankCert: pki.acquiringBank.cert,
    ...acquirerIdentity(pki),
    dbFile: join(dir, 'a.db'),
  };
  await t.throwsAsync(startAcquirer({ ...base, bankCert: pki.issuingBank.cert }), { message: /ACQUIRING/ });
  await t.throwsAsync(startAcquirer({ ...base, ledgerCert: foreignPki.ledger.cert }), { message: /CERT_CHAIN_BROKEN/ });
  await t.throwsAsync(startAcquirer({ ...base, bankCert: pki.ledger.cert }), { message: /CERT_WRONG_ROLE/ });
  // Its own certificate: issued by another bank than --bank-cert, of another role (a terminal's), or for another key.
  await t.throwsAsync(startAcquirer({ ...base, bankCert: pki.otherBank.cert }), { message: /acquirer certificate .*CERT_CHAIN_BROKEN/ });
  await t.throwsAsync(startAcquirer({ ...base, acquirerCert: makeTerminal(pki, pki.acquiringBank).chain[0]! }), {
    message: /acquirer certificate .*CERT_WRONG_ROLE/,
  });
  await t.throwsAsync(startAcquirer({ ...base, acquirerSigner: pki.acquiringBank.signer }), { message: /acquirer key is not the key/ });
  t.truthy(decodeDeterministic(openSigned('Certificate', pki.root.cert).cose.payload, 4096));
});
