/**
 * The HTTP client layer (`@dt/protocol/http`, SPEC.md §8.4) against a real
 * local node:http server: bounded reads (an oversize answer is abandoned
 * mid-stream and the connection closed), time limits, the caller's
 * cancellation, the typed errors, both error-body forms, the retry policy
 * (what is retried, how often) and the backoff's jitter bounds; the
 * AcquirerClient signs every attempt afresh.
 */
import test from 'ava';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  encodeBatchAck,
  encodeDeterministic,
  generateKeyPair,
  keyPairSigner,
  parseAcquirerAuth,
  utf8,
  type CborValue,
} from '../src/index.ts';
import {
  AcquirerClient,
  backoffDelay,
  ERROR_BODY_KEYS,
  HttpBadResponseError,
  HttpRefusedError,
  HttpUnreachableError,
  httpRequest,
  isHttpUrl,
  isRetryable,
  MAX_ERROR_BODY,
  parseErrorBody,
  withRetry,
} from '../src/http/index.ts';

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

/** A real HTTP server on 127.0.0.1 answering with `handler` (n = request number, from 1); closed at teardown. */
async function serve(t: { teardown: (f: () => Promise<void>) => void }, handler: Handler) {
  let n = 0;
  const closed: Promise<void>[] = [];
  const server = createServer((req, res) => {
    n++;
    closed.push(once(res, 'close').then(() => undefined));
    handler(req, res, n);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, requests: () => n, closed };
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
};

// ---------------------------------------------------------------- bounded reads, time limits

test('a 2xx answer is read whole when within the bound', async (t) => {
  const s = await serve(t, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/cbor' });
      res.end(Buffer.concat([Buffer.from(req.method!), ...chunks]));
    });
  });
  const a = await httpRequest(`${s.url}/x`, { body: Uint8Array.of(1, 2, 3), maxBytes: 7 });
  t.is(a.status, 200);
  t.is(a.contentType, 'application/cbor');
  t.deepEqual([...a.body], [...Buffer.from('POST'), 1, 2, 3]);
});

test('an oversize answer without a length is abandoned mid-stream: TOO_LARGE, the connection closed', async (t) => {
  let written = 0;
  const s = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    // An endless body: only the client's abort ends it.
    const pump = () => {
      for (;;) {
        if (!res.writable || res.destroyed) return;
        written += 16 * 1024;
        if (!res.write(Buffer.alloc(16 * 1024, 7))) return void res.once('drain', pump);
      }
    };
    pump();
  });
  const e = await t.throwsAsync(httpRequest(s.url, { maxBytes: 100_000, timeoutMs: 60_000 }));
  t.true(e instanceof HttpBadResponseError);
  t.is((e as HttpBadResponseError).reason, 'TOO_LARGE');
  t.is((e as HttpBadResponseError).status, 200);
  // The server sees its answer cut off: the client stopped reading instead of buffering forever.
  await s.closed[0];
  t.true(written >= 100_000);
});

test('an answer declaring a length over the bound is refused before its body is read', async (t) => {
  const s = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-length': '5000000' });
    res.write(Buffer.alloc(10));
  });
  const e = await t.throwsAsync(httpRequest(s.url, { maxBytes: 4096 }));
  t.true(e instanceof HttpBadResponseError && e.reason === 'TOO_LARGE');
  await s.closed[0];
});

test('no answer within the time limit: HttpUnreachableError timedOut (headers never come, or the body stalls)', async (t) => {
  const silent = await serve(t, () => undefined);
  const e1 = await t.throwsAsync(httpRequest(`${silent.url}/slow?secret=1`, { maxBytes: 10, timeoutMs: 200 }));
  t.true(e1 instanceof HttpUnreachableError);
  t.true((e1 as HttpUnreachableError).timedOut);
  t.is((e1 as HttpUnreachableError).url, `${silent.url}/slow`);
  t.false(e1!.message.includes('secret'), 'no query in the message');
  const stalls = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-length': '100' });
    res.write(Buffer.alloc(10));
  });
  const e2 = await t.throwsAsync(httpRequest(stalls.url, { maxBytes: 1000, timeoutMs: 200 }));
  t.true(e2 instanceof HttpUnreachableError && e2.timedOut);
  t.true(isRetryable(e2));
});

test('nobody listening: HttpUnreachableError, not timed out; a body cut off is unreachable too', async (t) => {
  const cut = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-length': '100' });
    res.write(Buffer.alloc(10));
    setImmediate(() => res.destroy());
  });
  const e1 = await t.throwsAsync(httpRequest('http://127.0.0.1:1/', { maxBytes: 10, timeoutMs: 5000 }));
  t.true(e1 instanceof HttpUnreachableError);
  t.false((e1 as HttpUnreachableError).timedOut);
  const e2 = await t.throwsAsync(httpRequest(cut.url, { maxBytes: 1000, timeoutMs: 5000 }));
  t.true(e2 instanceof HttpUnreachableError && !e2.timedOut);
});

test("the caller's cancellation throws its reason, not a network error", async (t) => {
  const s = await serve(t, () => undefined);
  const ac = new AbortController();
  const p = httpRequest(s.url, { maxBytes: 10, timeoutMs: 60_000, signal: ac.signal });
  const reason = new Error('operator cancelled');
  setImmediate(() => ac.abort(reason));
  t.is(await t.throwsAsync(p), reason);
  t.is(await t.throwsAsync(httpRequest(s.url, { maxBytes: 10, signal: ac.signal })), reason);
});

// ---------------------------------------------------------------- refusals and error bodies

test('a refusal carries the status, the stable code and the detail apart (JSON, the ledger form)', async (t) => {
  const s = await serve(t, (_req, res) =>
    json(res, 400, { code: 'SYNC_INVALID', message: 'history: VALUE_NOT_CONSERVED', detail: 'VALUE_NOT_CONSERVED', index: 2 }),
  );
  const e = await t.throwsAsync(httpRequest(s.url, { maxBytes: 10 }));
  t.true(e instanceof HttpRefusedError);
  const r = e as HttpRefusedError;
  t.like(r, { status: 400, code: 'SYNC_INVALID', detail: 'VALUE_NOT_CONSERVED', index: 2, serverMessage: 'history: VALUE_NOT_CONSERVED' });
  t.false(r.transient);
  t.false(isRetryable(r));
});

test('a refusal in the CBOR form is read the same way; an error body longer than the 2xx bound is still read', async (t) => {
  const k = ERROR_BODY_KEYS;
  const body = encodeDeterministic(
    new Map<number, CborValue>([
      [k.code, 'TERMINAL_EXPIRED'],
      [k.message, 'terminal certificate chain is not valid now'],
      [k.detail, 'CERT_EXPIRED'],
      [k.index, 0],
    ]),
  );
  const s = await serve(t, (_req, res) => {
    res.writeHead(403, { 'content-type': 'application/cbor' });
    res.end(Buffer.from(body));
  });
  const e = await t.throwsAsync(httpRequest(s.url, { maxBytes: 4 }));
  t.like(e as HttpRefusedError, { status: 403, code: 'TERMINAL_EXPIRED', detail: 'CERT_EXPIRED', index: 0 });
});

test('parseErrorBody: both forms, the acquirer details, and untrusted bodies reduced to HTTP_<status>', (t) => {
  const j = (v: unknown) => utf8(JSON.stringify(v));
  t.deepEqual(parseErrorBody(404, 'application/json', j({ code: 'CARD_UNKNOWN', message: 'no such card' })), {
    code: 'CARD_UNKNOWN',
    message: 'no such card',
  });
  // The acquirer's form: details.cause is the detail, details.index the index.
  t.deepEqual(
    parseErrorBody(400, 'application/json', j({ code: 'HANDOVER_WRONG_PAYEE', message: 'x', details: { index: 3, cause: 'WRONG_PAYEE' } })),
    { code: 'HANDOVER_WRONG_PAYEE', message: 'x', detail: 'WRONG_PAYEE', index: 3 },
  );
  // JSON without a JSON content type (a proxy, a test double) is still read.
  t.is(parseErrorBody(404, 'text/plain', j({ code: 'NOT_FOUND' })).code, 'NOT_FOUND');
  const cbor = encodeDeterministic(
    new Map<number, CborValue>([
      [1, 'BUSY'],
      [2, 'full'],
    ]),
  );
  t.deepEqual(parseErrorBody(503, 'application/cbor', cbor), { code: 'BUSY', message: 'full' });
  // Not a stable code's shape, not an object, not the declared form, empty, too long: the status alone.
  for (const [ct, b] of [
    ['application/json', j({ code: 'lower case' })],
    ['application/json', j({ code: 'X'.repeat(65) })],
    ['application/json', j({ code: 7 })],
    ['application/json', j(['CARD_UNKNOWN'])],
    ['application/json', utf8('<html>busy</html>')],
    ['application/cbor', j({ code: 'BUSY' })],
    ['application/cbor', encodeDeterministic([1, 2])],
    ['application/json', new Uint8Array(0)],
    ['application/json', utf8(JSON.stringify({ code: 'BUSY', pad: 'x'.repeat(MAX_ERROR_BODY) }))],
  ] as const)
    t.deepEqual(parseErrorBody(502, ct, b), { code: 'HTTP_502' }, `${ct} ${b.length}`);
  // Texts are cut; a negative or fractional index is dropped.
  const long = parseErrorBody(
    400,
    'application/json',
    j({ code: 'MALFORMED', message: 'm'.repeat(1000), detail: 'd'.repeat(300), index: -1 }),
  );
  t.is(long.message?.length, 200);
  t.is(long.detail?.length, 200);
  t.is(long.index, undefined);
});

test('an oversize error body is not read: the refusal has the status alone', async (t) => {
  const s = await serve(t, (_req, res) => {
    res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ code: 'INTERNAL', pad: 'x'.repeat(MAX_ERROR_BODY + 10) }));
  });
  const e = await t.throwsAsync(httpRequest(s.url, { maxBytes: 10 * MAX_ERROR_BODY }));
  t.like(e as HttpRefusedError, { status: 500, code: 'HTTP_500' });
  t.true((e as HttpRefusedError).transient);
});

// ---------------------------------------------------------------- retries

test('withRetry retries 5xx, 429 and 408 until an answer, with the attempts the policy gives', async (t) => {
  const statuses = [503, 429, 408, 200];
  const s = await serve(t, (_req, res, n) => {
    if (statuses[n - 1] === 200) {
      res.writeHead(200);
      res.end('ok');
    } else json(res, statuses[n - 1]!, { code: 'BUSY', message: 'later' });
  });
  const waits: number[] = [];
  const a = await withRetry(() => httpRequest(s.url, { maxBytes: 10 }), {
    attempts: 4,
    baseMs: 4,
    maxMs: 1000,
    onRetry: (_attempt, ms) => waits.push(ms),
  });
  t.is(Buffer.from(a.body).toString(), 'ok');
  t.is(s.requests(), 4);
  t.is(waits.length, 3);
  // Exponential with equal jitter: after failure n, in [d/2, d] with d = 4 * 2^(n-1).
  waits.forEach((w, i) => t.true(w >= 2 * 2 ** i && w <= 4 * 2 ** i, `wait ${i + 1}: ${w}`));
});

test('withRetry never retries a 4xx business refusal or a bad 2xx answer, and gives up after the attempts', async (t) => {
  const refusing = await serve(t, (_req, res) => json(res, 409, { code: 'SEQ_CONFLICT', message: 'other bytes' }));
  const e = await t.throwsAsync(withRetry(() => httpRequest(refusing.url, { maxBytes: 10 }), { attempts: 5, baseMs: 1 }));
  t.like(e as HttpRefusedError, { status: 409, code: 'SEQ_CONFLICT' });
  t.is(refusing.requests(), 1);

  const oversize = await serve(t, (_req, res) => {
    res.writeHead(200);
    res.end(Buffer.alloc(100));
  });
  const e2 = await t.throwsAsync(withRetry(() => httpRequest(oversize.url, { maxBytes: 10 }), { attempts: 5, baseMs: 1 }));
  t.true(e2 instanceof HttpBadResponseError);
  t.is(oversize.requests(), 1);

  const down = await serve(t, (_req, res) => json(res, 503, { code: 'CRL_UNAVAILABLE', message: 'none yet' }));
  const e3 = await t.throwsAsync(withRetry(() => httpRequest(down.url, { maxBytes: 10 }), { attempts: 3, baseMs: 1 }));
  t.like(e3 as HttpRefusedError, { status: 503, code: 'CRL_UNAVAILABLE' });
  t.is(down.requests(), 3);

  let calls = 0;
  const e4 = await t.throwsAsync(
    withRetry(
      () => {
        calls++;
        return httpRequest('http://127.0.0.1:1/', { maxBytes: 10 });
      },
      { attempts: 3, baseMs: 1 },
    ),
  );
  t.true(e4 instanceof HttpUnreachableError);
  t.is(calls, 3);
  // Anything else (a bug) is not retried.
  calls = 0;
  await t.throwsAsync(
    withRetry(
      () => {
        calls++;
        return Promise.reject(new TypeError('bug'));
      },
      { attempts: 3, baseMs: 1 },
    ),
  );
  t.is(calls, 1);
});

test('withRetry: cancelling during a wait throws the reason and makes no further attempt', async (t) => {
  const s = await serve(t, (_req, res) => json(res, 503, { code: 'BUSY' }));
  const ac = new AbortController();
  const reason = new Error('stop');
  const p = withRetry(() => httpRequest(s.url, { maxBytes: 10 }), {
    attempts: 5,
    baseMs: 60_000,
    maxMs: 60_000,
    signal: ac.signal,
    onRetry: () => setImmediate(() => ac.abort(reason)),
  });
  t.is(await t.throwsAsync(p), reason);
  t.is(s.requests(), 1);
});

test('backoffDelay: exponential, capped, equal jitter within [d/2, d]', (t) => {
  const p = { baseMs: 100, maxMs: 1000 };
  const expected = [100, 200, 400, 800, 1000, 1000, 1000];
  expected.forEach((d, i) => {
    t.is(
      backoffDelay(i + 1, p, () => 0),
      d / 2,
      `lowest after failure ${i + 1}`,
    );
    t.is(
      backoffDelay(i + 1, p, () => 0.5),
      Math.floor(d * 0.75),
    );
    t.true(backoffDelay(i + 1, p, () => 0.999_999) <= d);
  });
  // Random values out of [0, 1) cannot push the delay out of its bounds; huge failure counts do not overflow.
  t.is(
    backoffDelay(1, p, () => -5),
    50,
  );
  t.is(
    backoffDelay(1, p, () => 7),
    100,
  );
  t.is(
    backoffDelay(10_000, p, () => 0),
    500,
  );
  for (let i = 0; i < 1000; i++) {
    const n = 1 + (i % 8);
    const d = Math.min(1000, 100 * 2 ** (n - 1));
    const w = backoffDelay(n, p);
    t.true(w >= d / 2 && w <= d, `${n}: ${w}`);
  }
});

// ---------------------------------------------------------------- the acquirer client

test('AcquirerClient: a fresh signed authorization per attempt, decoded answers, MALFORMED for one that does not decode', async (t) => {
  const signer = keyPairSigner(generateKeyPair((n) => crypto.getRandomValues(new Uint8Array(n))));
  const auths: string[] = [];
  const ack = encodeBatchAck({ terminal: signer.kid, seq: 1, hash: new Uint8Array(32).fill(9), handovers: 0, received: 1 });
  const s = await serve(t, (req, res, n) => {
    if (req.url!.startsWith('/v1/terminals/')) {
      auths.push(String(req.headers.authorization));
      if (auths.length === 1) return json(res, 503, { code: 'BUSY', message: 'later' });
      res.writeHead(200, { 'content-type': 'application/cbor' });
      return res.end(Buffer.from([0xa0]));
    }
    if (req.url === '/v1/batches') {
      res.writeHead(200, { 'content-type': 'application/cbor' });
      return res.end(Buffer.from(ack));
    }
    json(res, 404, { code: 'NOT_FOUND', message: `no route ${n}` });
  });
  const client = new AcquirerClient({ baseUrl: s.url, retry: { attempts: 2, baseMs: 1 } });
  t.like(await client.submitBatch(Uint8Array.of(0xd2)), { seq: 1, handovers: 0 });
  const e = await t.throwsAsync(client.fetchOutcomes(signer, 0));
  t.true(e instanceof HttpBadResponseError && e.reason === 'MALFORMED');
  t.is(auths.length, 2);
  t.not(auths[0], auths[1]);
  const nonces = auths.map((a) => parseAcquirerAuth(a).auth.nonce);
  t.notDeepEqual(nonces[0], nonces[1]);
  t.like(await t.throwsAsync(client.fetchCrl()), { name: 'HttpRefusedError', status: 404, code: 'NOT_FOUND' });
});

test('isHttpUrl: absolute http: and https: URLs only (what the CLIs accept as --ledger / --acquirer)', (t) => {
  for (const ok of ['http://127.0.0.1:8440', 'https://ledger.example/v1', 'HTTP://host']) t.true(isHttpUrl(ok), ok);
  for (const bad of ['notaurl', '127.0.0.1:8440', 'ftp://host', 'file:///etc/passwd', '/v1/settle', '']) t.false(isHttpUrl(bad), bad);
});
