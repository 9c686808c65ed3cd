/**
 * Forwarder failure handling against a scripted ledger: failure modes the
 * real ledger cannot be made to produce on demand (answers that do not
 * verify, a 4xx for one batch of a group, 5xx). The scripted ledger signs its
 * outcomes with the test PKI's ledger key, exactly as a real ledger would;
 * the end-to-end suite runs against the real ledger.
 */
import test, { type ExecutionContext } from 'ava';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import {
  bytesEqual,
  decodeMessage,
  encodeDeterministic,
  openSigned,
  parseSettleRequest,
  payloadHash,
  signMessage,
  toHex,
  verifyCoseSign1,
  verifySigned,
  OutcomeStatus,
  type Signer,
  type SettleRequest,
} from '@dt/protocol';
import { startAcquirer, submitBatch, fetchAllOutcomes } from '../src/index.ts';
import {
  acquirerIdentity,
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

const pki = makePki('forwarder');
const rnd = seededRandom('forwarder nonces');

type Script = (batches: Uint8Array[]) => { status: number; body: Uint8Array | string };

/** Outcomes for every handover of every batch, signed by `signer`. */
function outcomesFor(batches: Uint8Array[], signer: Signer, mutate?: (hash: Uint8Array) => Uint8Array): Uint8Array {
  return encodeDeterministic(
    batches.map((b) => {
      const batch = openSigned('Batch', b).message;
      return batch.handovers.map((hb) => {
        const tr = openSigned('Transfer', decodeMessage('Handover', hb).transfer);
        const hash = payloadHash(tr.cose);
        return signMessage(
          'Outcome',
          {
            transfer: mutate ? mutate(hash) : hash,
            status: OutcomeStatus.SETTLED,
            covered: true,
            time: NOW(),
            card: tr.message.card,
            terminal: batch.terminal,
            amount: tr.message.amount,
          },
          signer,
        );
      });
    }),
  );
}

/**
 * A scripted ledger on a real HTTP server. Like the real one it takes only the acquirer's signed
 * settle request (SPEC §7.7.2): it checks the content type, the chain and the signature with the
 * test acquirer's key (anything else is a test failure, answered 401), and records each request.
 */
async function scriptedLedger(
  t: ExecutionContext,
  script: Script,
): Promise<{ url: string; calls: Uint8Array[][]; requests: SettleRequest[] }> {
  const calls: Uint8Array[][] = [];
  const requests: SettleRequest[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/v1/settle') {
        let request: SettleRequest;
        try {
          if (req.headers['content-type'] !== 'application/cose') throw new Error(`content type ${req.headers['content-type']}`);
          const parsed = parseSettleRequest(new Uint8Array(Buffer.concat(chunks)));
          if (!bytesEqual(parsed.request.chain[0]!, pki.acquirer.cert) || !bytesEqual(parsed.request.chain[1]!, pki.acquiringBank.cert))
            throw new Error('not the acquirer chain');
          verifyCoseSign1(parsed.cose, pki.acquirer.keys.publicKey);
          request = parsed.request;
        } catch (e) {
          t.fail(`the acquirer sent a settle request the ledger would refuse: ${(e as Error).message}`);
          res.writeHead(401, { 'content-type': 'application/json' });
          res.end('{"code":"ACQUIRER_AUTH","message":"test ledger refused the request"}');
          return;
        }
        requests.push(request);
        const batches = request.batches;
        calls.push(batches);
        const r = script(batches);
        res.writeHead(r.status, { 'content-type': typeof r.body === 'string' ? 'application/json' : 'application/cbor' });
        res.end(typeof r.body === 'string' ? r.body : Buffer.from(r.body));
      } else if (req.url === '/v1/crl') {
        res.writeHead(200);
        res.end(Buffer.from(signMessage('RevocationList', { version: 3, issued: NOW(), revoked: [] }, pki.ledger.signer)));
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"status":"ok"}');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const a = server.address();
  return { url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`, calls, requests };
}

async function acquirer(t: ExecutionContext, ledgerUrl: string) {
  const { dir, cleanup } = tempDir();
  const acq = await startAcquirer({
    ledgerUrl,
    root: pki.root.cert,
    bankCert: pki.acquiringBank.cert,
    ledgerCert: pki.ledger.cert,
    ...acquirerIdentity(pki),
    dbFile: join(dir, 'a.db'),
    autoForward: false,
  });
  t.teardown(async () => {
    await acq.close();
    cleanup();
  });
  return acq;
}

function batchOf(term: Terminal, seq: number, n: number): Uint8Array {
  const w = makeWallet(pki, 1, 100_000);
  return makeBatch(
    term,
    seq,
    Array.from({ length: n }, () => pay(w, term, 500, rnd)),
  );
}

async function health(url: string) {
  return (await fetch(`${url}/v1/health`)).json() as Promise<{
    queueDepth: number;
    rejectedBatches: number;
    settledBatches: number;
    lastForwardError: string | null;
  }>;
}

test('answers that do not verify are not recorded: foreign signature, wrong transfer, wrong count, garbage', async (t) => {
  const thief = makePki('not the ledger');
  const modes: Script[] = [
    (b) => ({ status: 200, body: outcomesFor(b, thief.ledger.signer) }),
    (b) => ({ status: 200, body: outcomesFor(b, pki.ledger.signer, (h) => h.map((x) => x ^ 1)) }),
    (b) => ({ status: 200, body: outcomesFor(b.slice(1), pki.ledger.signer) }),
    () => ({ status: 200, body: new Uint8Array([0xff, 0x00]) }),
  ];
  let mode = 0;
  const ledger = await scriptedLedger(t, (b) => modes[mode]!(b));
  const acq = await acquirer(t, ledger.url);
  const term = makeTerminal(pki, pki.acquiringBank);
  await submitBatch(acq.url, batchOf(term, 1, 2));
  await submitBatch(acq.url, batchOf(term, 2, 1));
  for (mode = 0; mode < modes.length; mode++) {
    const r = await acq.forwardNow();
    t.is(r.settled, 0, `mode ${mode}`);
    t.regex(r.error ?? '', /LEDGER_BAD_RESPONSE|does not decode/);
    t.is((await health(acq.url)).queueDepth, 2);
  }
  t.is((await fetchAllOutcomes(acq.url, term.signer, 0)).outcomes.length, 0);
  const m = await (await fetch(`${acq.url}/v1/metrics`)).text();
  t.regex(m, /^dt_acquirer_forward_retries_total 4$/m);
});

test('5xx and an unreachable ledger keep batches pending; the next good answer settles them once', async (t) => {
  let down = true;
  const ledger = await scriptedLedger(t, (b) =>
    down
      ? { status: 503, body: '{"code":"UNAVAILABLE","message":"maintenance"}' }
      : { status: 200, body: outcomesFor(b, pki.ledger.signer) },
  );
  const acq = await acquirer(t, ledger.url);
  const terms = [makeTerminal(pki, pki.acquiringBank), makeTerminal(pki, pki.acquiringBank)];
  await submitBatch(acq.url, batchOf(terms[0]!, 1, 2));
  await submitBatch(acq.url, batchOf(terms[1]!, 1, 3));
  const r1 = await acq.forwardNow();
  t.regex(r1.error ?? '', /503 UNAVAILABLE/);
  t.is(r1.pending, 2);
  t.regex((await health(acq.url)).lastForwardError ?? '', /UNAVAILABLE/);
  down = false;
  const r2 = await acq.forwardNow();
  t.is(r2.settled, 2);
  t.is(r2.pending, 0);
  t.is(ledger.calls.at(-1)!.length, 2, 'batches of two terminals grouped into one settle call');
  const r3 = await acq.forwardNow();
  t.is(r3.settled, 0, 'nothing is sent twice');
  t.is(ledger.calls.length, 2);
  const o0 = await fetchAllOutcomes(acq.url, terms[0]!.signer, 0);
  const o1 = await fetchAllOutcomes(acq.url, terms[1]!.signer, 0);
  t.is(o0.outcomes.length, 2);
  t.is(o1.outcomes.length, 3);
  t.deepEqual(o1.refs, [
    [1, 0],
    [1, 1],
    [1, 2],
  ]);
  for (const o of o1.outcomes) t.deepEqual(verifySigned('Outcome', o, pki.ledger.keys.publicKey).message.terminal, terms[1]!.kid);
  // The cursor moves on: nothing new after it.
  t.is((await fetchAllOutcomes(acq.url, terms[1]!.signer, o1.cursor)).outcomes.length, 0);
});

test('a 4xx for a group is split: the poisoned batch is rejected, the others settle', async (t) => {
  const term = makeTerminal(pki, pki.acquiringBank);
  const poisoned = batchOf(term, 2, 1);
  const ledger = await scriptedLedger(t, (b) =>
    b.some((x) => Buffer.compare(Buffer.from(x), Buffer.from(poisoned)) === 0)
      ? { status: 400, body: '{"code":"BATCH_INVALID","message":"no"}' }
      : { status: 200, body: outcomesFor(b, pki.ledger.signer) },
  );
  const acq = await acquirer(t, ledger.url);
  await submitBatch(acq.url, batchOf(term, 1, 1));
  await submitBatch(acq.url, poisoned);
  await submitBatch(acq.url, batchOf(term, 3, 2));
  const r = await acq.forwardNow();
  t.is(r.error, undefined);
  t.is(r.settled, 2);
  t.is(r.rejected, 1);
  const h = await health(acq.url);
  t.is(h.queueDepth, 0);
  t.is(h.rejectedBatches, 1);
  t.is(h.settledBatches, 2);
  const page = await fetchAllOutcomes(acq.url, term.signer, 0);
  t.deepEqual(page.refs, [
    [1, 0],
    [3, 0],
    [3, 1],
  ]);
  // The revocation list was refreshed after the settle and is served byte for byte.
  const crl = await fetch(`${acq.url}/v1/crl`);
  t.is(crl.status, 200);
  t.is(crl.headers.get('x-dt-crl-version'), '3');
  t.is(verifySigned('RevocationList', new Uint8Array(await crl.arrayBuffer()), pki.ledger.keys.publicKey).message.version, 3);
});

test('grouping respects the per-call batch and handover limits, in arrival order', async (t) => {
  const ledger = await scriptedLedger(t, (b) => ({ status: 200, body: outcomesFor(b, pki.ledger.signer) }));
  const { dir, cleanup } = tempDir();
  const acq = await startAcquirer({
    ledgerUrl: ledger.url,
    root: pki.root.cert,
    bankCert: pki.acquiringBank.cert,
    ledgerCert: pki.ledger.cert,
    ...acquirerIdentity(pki),
    dbFile: join(dir, 'a.db'),
    autoForward: false,
    forwarder: { maxHandoversPerCall: 3, maxBatchesPerCall: 2 },
  });
  t.teardown(async () => {
    await acq.close();
    cleanup();
  });
  const term = makeTerminal(pki, pki.acquiringBank);
  const sizes = [2, 2, 1, 1, 1, 5];
  for (const [i, n] of sizes.entries()) await submitBatch(acq.url, batchOf(term, i + 1, n));
  const r = await acq.forwardNow();
  t.is(r.settled, 6);
  // [2] (2+2 > 3), [2,1], [1,1] (two batches at most), [5] (a lone batch may exceed the handover cap).
  t.deepEqual(
    ledger.calls.map((c) => c.map((b) => openSigned('Batch', b).message.handovers.length)),
    [[2], [2, 1], [1, 1], [5]],
  );
  t.deepEqual(
    (await fetchAllOutcomes(acq.url, term.signer, 0)).refs.map(([s]) => s),
    [1, 1, 2, 2, 3, 4, 5, 6, 6, 6, 6, 6],
  );
});

test('every settle call is signed by the acquirer key with its chain, its time and a fresh nonce, retries and splits included', async (t) => {
  const term = makeTerminal(pki, pki.acquiringBank);
  const poisoned = batchOf(term, 2, 1);
  let down = true;
  const ledger = await scriptedLedger(t, (b) =>
    down
      ? { status: 503, body: '{"code":"BUSY","message":"later"}' }
      : b.some((x) => bytesEqual(x, poisoned))
        ? { status: 400, body: '{"code":"BATCH_INVALID","message":"no"}' }
        : { status: 200, body: outcomesFor(b, pki.ledger.signer) },
  );
  const acq = await acquirer(t, ledger.url);
  await submitBatch(acq.url, batchOf(term, 1, 1));
  await submitBatch(acq.url, poisoned);
  t.regex((await acq.forwardNow()).error ?? '', /503 BUSY/);
  down = false;
  const r = await acq.forwardNow();
  t.is(r.settled, 1);
  t.is(r.rejected, 1);
  // One failed call, the refused group, then each batch alone: four requests, four nonces.
  t.is(ledger.requests.length, 4);
  t.is(new Set(ledger.requests.map((q) => toHex(q.nonce))).size, 4, 'a fresh nonce for every call');
  for (const q of ledger.requests) t.true(Math.abs(q.time - NOW()) <= 5, 'the acquirer time (seconds)');
});

test('a refusal of the acquirer itself (its authentication) keeps the batches pending, not rejected; they settle once it is fixed', async (t) => {
  let refusal: string | undefined = 'ACQUIRER_STALE';
  const ledger = await scriptedLedger(t, (b) =>
    refusal
      ? { status: refusal === 'ACQUIRER_UNKNOWN' ? 403 : 401, body: JSON.stringify({ code: refusal, message: 'refused' }) }
      : { status: 200, body: outcomesFor(b, pki.ledger.signer) },
  );
  const acq = await acquirer(t, ledger.url);
  const term = makeTerminal(pki, pki.acquiringBank);
  await submitBatch(acq.url, batchOf(term, 1, 2));
  await submitBatch(acq.url, batchOf(term, 2, 1));
  for (const code of ['ACQUIRER_STALE', 'ACQUIRER_AUTH', 'ACQUIRER_REPLAYED', 'ACQUIRER_UNKNOWN']) {
    refusal = code;
    const r = await acq.forwardNow();
    t.is(r.rejected, 0, code);
    t.is(r.pending, 2, code);
    t.regex(r.error ?? '', new RegExp(code));
    const h = await health(acq.url);
    t.is(h.rejectedBatches, 0);
    t.regex(h.lastForwardError ?? '', new RegExp(code));
  }
  refusal = undefined;
  const r = await acq.forwardNow();
  t.is(r.settled, 2);
  t.is((await fetchAllOutcomes(acq.url, term.signer, 0)).outcomes.length, 3);
});
