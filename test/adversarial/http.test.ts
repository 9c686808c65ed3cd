/**
 * Adversarial group 3: hostile clients against the acquirer's and the ledger's HTTP APIs.
 *
 * The servers are the real ones on loopback (world.ts: the ledger on SQLite with its fastify
 * server, the acquirer with its own SQLite); the attackers are plain HTTP clients holding what
 * an outsider can hold: certified keys of other roles, keys of another PKI, keys no one
 * certified, captured requests and bodies, and the cards' own keys (clones) for forged syncs.
 * Each attack is sent as a request, and what must hold is:
 *
 * - the answer carries the stable code of SPEC §8.3 (the acquirer) or §8.2 (the ledger) with
 *   its HTTP status, and a check's own code (e.g. `VALUE_NOT_CONSERVED` of a refused sync) is in
 *   its own field, never over the stable code;
 * - nothing changed: every row of every table of both databases is what it was before the
 *   attack (for the card-signed objects SPEC §7.7 step E records as evidence before judging, only
 *   those evidence tables grow, and nothing that holds value moves);
 * - the books (world.ts `books`): issued = cards + merchants + banks + redeemed, no balance
 *   below its floor, no cover above its bound.
 *
 * Each test starts with a genuine payment that must be approved and settled.
 */
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import {
  ACQUIRER_ERROR_STATUS,
  BankPermission,
  decodeMessage,
  encodeDeterministic,
  exchange,
  generateKeyPair,
  keyPairSigner,
  LIMITS,
  openSigned,
  outputId,
  payloadHash,
  payCommand,
  selectApplet,
  signAcquirerRequest,
  signMessage,
  signSettleRequest,
  SW,
  syncBeginCommand,
  syncCompleteCommand,
  toHex,
  transmitOk,
  type AcquirerErrorCode,
  type Batch,
  type PaymentRequest,
  type Signer,
  type Transfer,
} from '@dt/protocol';
import { blockAcquirer, createPki, LEDGER_ERROR_STATUS, MAX_LOAD_SIZE, signLoadOrder, type LedgerApiCode } from '@dt/ledger';
import type { InProcessTransport } from '@dt/card-applet-sim';
import { certifyTerminal } from '../helpers/variant-world.ts';
import {
  books,
  cloneOf,
  genuinePayment,
  newCard,
  newTerminal,
  nowSec,
  probeAcquirer,
  readerOn,
  rnd16,
  settle,
  startWorld,
  stateOf,
  type BackOffice,
} from './world.ts';

const randomKey = (): Signer =>
  keyPairSigner(
    generateKeyPair((n) => {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i += 16) out.set(rnd16().subarray(0, Math.min(16, n - i)), i);
      return out;
    }),
  );

// ------------------------------------------------------------------ state of both databases
/** Tables where SPEC §7.7 step E records card-signed objects before judging them (evidence, no value). */
const EVIDENCE_TABLES = new Set(['counters', 'spent', 'objects', 'proofs']);

/** A digest of every row of every table of a SQLite database (read through its own connection). */
function tablesOf(file: string): Record<string, string> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const out: Record<string, string> = {};
    const names = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).all() as { name: string }[];
    for (const { name } of names) {
      const rows = db.prepare(`SELECT * FROM "${name}"`).raw().all() as unknown[][];
      const text = JSON.stringify(rows, (_k, v: unknown) => (v instanceof Uint8Array ? toHex(v) : typeof v === 'bigint' ? String(v) : v));
      const sorted = rows.length > 1 ? JSON.stringify((JSON.parse(text) as unknown[]).map((r) => JSON.stringify(r)).sort()) : text;
      out[name] = `${rows.length}:${createHash('sha256').update(sorted).digest('hex')}`;
    }
    return out;
  } finally {
    db.close();
  }
}

interface World {
  readonly t: ExecutionContext;
  readonly dir: string;
  readonly bo: BackOffice;
}

const stateOfBooks = (w: World) => ({ ledger: tablesOf(join(w.dir, 'ledger.db')), acquirer: tablesOf(join(w.dir, 'acquirer.db')) });

/** What a refusal must look like: the status, a JSON body with the stable code. */
async function refusal(t: ExecutionContext, r: Response, status: number, code: string, label: string): Promise<Record<string, unknown>> {
  // The acquirer's routes are /v1/batches and /v1/terminals/…; the ledger's /v1/settle, /v1/sync, /v1/loads, /v1/cards.
  const server = /^\/v1\/(batches|terminals)/.test(new URL(r.url).pathname) ? 'acquirer' : 'ledger';
  const text = await r.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    t.fail(`${label}: the answer is not JSON (${r.status} ${text.slice(0, 200)})`);
  }
  t.is(r.status, status, `${label}: HTTP status (${text.slice(0, 300)})`);
  t.is(body.code, code, `${label}: stable code (${text.slice(0, 300)})`);
  // The status is the one SPEC's table (§8.3 for the acquirer, §8.2 for the ledger) gives the code.
  const ledgerRow = server === 'ledger' ? LEDGER_ERROR_STATUS[code as LedgerApiCode] : undefined;
  const fromTable =
    server === 'acquirer'
      ? [ACQUIRER_ERROR_STATUS[code as AcquirerErrorCode]]
      : ledgerRow && [ledgerRow.status, ...Object.values(ledgerRow.byDetail ?? {})];
  t.true(fromTable?.includes(status), `${label}: ${code} is ${fromTable?.join(' / ')} in SPEC's table`);
  t.true((r.headers.get('content-type') ?? '').startsWith('application/json'), `${label}: a JSON error body`);
  return body;
}

/**
 * One attack: `send` is the hostile request; it must be refused with `status` and `code`, and
 * afterwards both databases must be as they were (or, with `evidence`, differ only in the
 * evidence tables) and the books must hold.
 */
async function attack(
  w: World,
  label: string,
  send: () => Promise<Response>,
  status: number,
  code: string,
  opts: { evidence?: boolean } = {},
): Promise<Record<string, unknown>> {
  const before = stateOfBooks(w);
  const body = await refusal(w.t, await send(), status, code, label);
  const after = stateOfBooks(w);
  if (opts.evidence) {
    for (const k of Object.keys(before.ledger)) if (!EVIDENCE_TABLES.has(k)) w.t.is(after.ledger[k], before.ledger[k], `${label}: ${k}`);
    w.t.deepEqual(after.acquirer, before.acquirer, `${label}: nothing changed at the acquirer`);
  } else w.t.deepEqual(after, before, `${label}: nothing changed`);
  await books(w.t, w.bo, label);
  return body;
}

/** A request that must be answered 200 and change nothing (an idempotent replay). */
async function harmless(w: World, label: string, send: () => Promise<Response>): Promise<Uint8Array> {
  const before = stateOfBooks(w);
  const r = await send();
  w.t.is(r.status, 200, `${label}: ${r.status}`);
  const bytes = new Uint8Array(await r.arrayBuffer());
  w.t.deepEqual(stateOfBooks(w), before, `${label}: nothing changed`);
  await books(w.t, w.bo, label);
  return bytes;
}

const post = (url: string, body: Uint8Array | string, type: string | null = 'application/cose', headers: Record<string, string> = {}) =>
  fetch(url, { method: 'POST', headers: { ...(type ? { 'content-type': type } : {}), ...headers }, body });

/**
 * A body of `size` bytes streamed in chunks without a Content-Length (chunked), so the server
 * must count; answers the status and the body, or the connection error when the server cut it.
 */
function streamOversize(url: string, size: number, type: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest(
      { host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': type } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    const chunk = Buffer.alloc(1 << 20, 0xa5);
    let sent = 0;
    const pump = () => {
      while (sent < size) {
        const n = Math.min(chunk.length, size - sent);
        sent += n;
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void req.once('drain', pump);
      }
      req.end();
    };
    req.on('response', () => (sent = size)); // the server answered: stop sending
    pump();
  });
}

/** One byte of `bytes` at `at` (negative: from the end) changed. */
function flip(bytes: Uint8Array, at: number): Uint8Array {
  const out = bytes.slice();
  const i = at < 0 ? out.length + at : at;
  out[i]! ^= 0x01;
  return out;
}

/** The first offset of `needle` in `hay` (which must hold it). */
function offsetOf(hay: Uint8Array, needle: Uint8Array): number {
  const i = Buffer.from(hay).indexOf(Buffer.from(needle));
  if (i < 0) throw new Error('needle not found');
  return i;
}

// ------------------------------------------------------------------ terminals, batches, handovers
/** A certified terminal identity without a journal: the attacker's own terminal (its batches are hand-made). */
function handTerminal(bo: BackOffice, merchant: string) {
  return certifyTerminal(bo, merchant).identity;
}
type HandTerminal = ReturnType<typeof handTerminal>;

/** A handover of a fresh card paying `term` `amount` (the card signs the terminal's request over PAY). */
async function handoverTo(
  bo: BackOffice,
  term: HandTerminal,
  amount: number,
  card?: InProcessTransport,
): Promise<{ handover: Uint8Array; transport: InProcessTransport }> {
  const transport = card ?? (await newCard(bo)).transport;
  const req: PaymentRequest = {
    amount,
    currency: term.currency,
    terminal: term.kid,
    merchant: term.merchant.id,
    mcc: term.merchant.mcc,
    nonce: rnd16(),
    time: nowSec(),
    chain: [...term.chain],
  };
  await selectApplet(transport);
  const r = await exchange(transport, payCommand(signMessage('PaymentRequest', req, term.signer)), { maxResponse: 1 << 20 });
  if (r.sw !== SW.OK) throw new Error(`PAY answered ${r.sw.toString(16)}`);
  return { handover: r.data, transport };
}

/** A signed batch of `term` (or any chain and signer: the forgeries). */
function batchOf(
  term: { kid: Uint8Array; chain: readonly Uint8Array[]; signer: Signer },
  seq: number,
  handovers: readonly Uint8Array[],
  over: Partial<Batch> = {},
  signer: Signer = term.signer,
): Uint8Array {
  return signMessage(
    'Batch',
    { terminal: term.kid, seq, time: nowSec(), chain: [...term.chain], handovers: [...handovers], crlVersion: 0, ...over },
    signer,
  );
}

/** A signer that names `kid` in its COSE header but signs with another key. */
const impostor = (kid: Uint8Array, key: Signer): Signer => ({ kid, sign: (m) => key.sign(m) });

// ====================================================================== the acquirer
test('acquirer batches: forged, wrong signer or role, unknown or revoked terminal, altered, replayed, oversize, malformed, wrong content type', async (t) => {
  const { dir, bo } = await startWorld(t);
  const w: World = { t, dir, bo };
  await genuinePayment(t, bo, dir);
  const url = `${bo.acquirer.url}/v1/batches`;
  const x = handTerminal(bo, 'KZ-X');
  const b = handTerminal(bo, 'KZ-B');
  const revoked = handTerminal(bo, 'KZ-REVOKED');
  bo.acquirer.revokeTerminal(revoked.kid, 'adversarial suite');
  const { handover } = await handoverTo(bo, x, 30_000);
  const { handover: toRevoked } = await handoverTo(bo, revoked, 10_000);
  const { handover: toB } = await handoverTo(bo, b, 10_000);
  // Its time, so that a batch meant to differ from it does (two built in the same second would be the same bytes).
  const goodTime = nowSec();
  const good = batchOf(x, 1, [handover], { time: goodTime });

  const otherPki = createPki({ now: nowSec() });
  const foreign = otherPki.issueTerminal({ merchant: { id: 'KZ-FOREIGN', mcc: 5411, name: 'foreign' } });
  const otherBank = bo.pki.createBank({ name: 'other acquiring bank', perms: BankPermission.ACQUIRING });
  const wrongBank = bo.pki.issueTerminal({ merchant: { id: 'KZ-WRONG-BANK', mcc: 5411, name: 'wb' }, bank: otherBank });
  const cardId = bo.pki.issueCard();
  const acquirerId = probeAcquirer(bo);
  const now = nowSec();
  const expired = bo.pki.issueTerminal({
    merchant: { id: 'KZ-EXPIRED', mcc: 5411, name: 'exp' },
    validity: { nbf: now - 86_400 * 10, exp: now - 86_400 },
  });

  const cases: { name: string; body: () => Uint8Array; status: number; code: string; cause?: string; index?: number }[] = [
    { name: 'batch signature flipped', body: () => flip(good, -1), status: 403, code: 'BATCH_BAD_SIGNATURE' },
    {
      name: 'one byte changed inside a signed handover',
      body: () => flip(good, offsetOf(good, handover) + handover.length - 3),
      status: 403,
      code: 'BATCH_BAD_SIGNATURE',
    },
    {
      name: "terminal X's batch signed by terminal B's key",
      body: () => batchOf(x, 2, [handover], {}, b.signer),
      status: 403,
      code: 'BATCH_BAD_SIGNATURE',
    },
    {
      name: "B's key under X's kid (impostor signer)",
      body: () => batchOf(x, 2, [handover], {}, impostor(x.kid, b.signer)),
      status: 403,
      code: 'BATCH_BAD_SIGNATURE',
    },
    {
      name: 'batch naming X, signed by B with its own chain',
      body: () => batchOf({ ...b, kid: x.kid }, 2, [handover], {}, b.signer),
      status: 403,
      code: 'BATCH_BAD_SIGNATURE',
    },
    {
      name: 'a card key and chain in the terminal role',
      body: () => batchOf(cardId, 1, [handover]),
      status: 403,
      code: 'TERMINAL_UNKNOWN',
      cause: 'CERT_WRONG_ROLE',
    },
    {
      name: 'an acquirer key and chain in the terminal role',
      body: () => batchOf(acquirerId, 1, [handover]),
      status: 403,
      code: 'TERMINAL_UNKNOWN',
      cause: 'CERT_WRONG_ROLE',
    },
    { name: 'a terminal of another PKI', body: () => batchOf(foreign, 1, [handover]), status: 403, code: 'TERMINAL_UNKNOWN' },
    {
      name: 'a terminal of another acquiring bank',
      body: () => batchOf(wrongBank, 1, [handover]),
      status: 403,
      code: 'TERMINAL_WRONG_BANK',
    },
    { name: 'an expired terminal certificate', body: () => batchOf(expired, 1, [handover]), status: 403, code: 'TERMINAL_EXPIRED' },
    { name: 'a terminal revoked at the acquirer', body: () => batchOf(revoked, 1, [toRevoked]), status: 403, code: 'TERMINAL_REVOKED' },
    {
      name: "X's handover replayed in B's batch (after one of B's own)",
      body: () => batchOf(b, 1, [toB, handover]),
      status: 400,
      code: 'HANDOVER_WRONG_PAYEE',
      index: 1,
    },
    { name: 'not CBOR', body: () => Uint8Array.of(0xff, 0xfe, 0x00, 0x13), status: 400, code: 'BATCH_MALFORMED' },
    { name: 'truncated batch', body: () => good.subarray(0, good.length - 9), status: 400, code: 'BATCH_MALFORMED' },
    { name: 'trailing byte after the batch', body: () => Uint8Array.of(...good, 0), status: 400, code: 'BATCH_MALFORMED' },
    {
      name: 'a signed Transfer where a Batch belongs',
      body: () => decodeMessage('Handover', handover).transfer,
      status: 400,
      code: 'BATCH_MALFORMED',
      cause: 'COSE_WRONG_CONTENT_TYPE',
    },
    {
      name: 'a signed batch whose handover is not CBOR',
      body: () => batchOf(x, 2, [Uint8Array.of(0xa1, 0x01, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]),
      status: 400,
      code: 'HANDOVER_MALFORMED',
      index: 0,
    },
  ];
  for (const c of cases) {
    const body = await attack(w, c.name, () => post(url, c.body()), c.status, c.code);
    const details = body.details as Record<string, unknown> | undefined;
    if (c.cause) t.is(details?.cause, c.cause, `${c.name}: cause in its own field`);
    if (c.index !== undefined) t.is(details?.index, c.index, `${c.name}: the handover's index`);
  }

  // Wrong content types: the same good batch, never stored.
  for (const [type, payload] of [
    ['application/json', JSON.stringify({ batch: toHex(good) })],
    ['application/json', '{"batch": '],
    ['text/plain', toHex(good)],
    ['application/octet-stream', good],
    [null, good],
  ] as const) {
    await attack(w, `content type ${type ?? '(none)'}`, () => post(url, payload, type), 415, 'UNSUPPORTED_MEDIA_TYPE');
  }
  // Oversize: one byte over the limit, streamed without a length (the server must count), and declared.
  {
    const before = stateOfBooks(w);
    const r = await streamOversize(url, LIMITS.maxBatchSize + 1, 'application/cose').catch((e: Error) => ({ status: -1, body: e.message }));
    t.is(r.status, 413, `oversize streamed: ${r.status} ${r.body.slice(0, 200)}`);
    t.is((JSON.parse(r.body) as { code: string }).code, 'BODY_TOO_LARGE');
    t.deepEqual(stateOfBooks(w), before, 'oversize streamed: nothing changed');
  }
  await attack(w, 'oversize with its length', () => post(url, new Uint8Array(LIMITS.maxBatchSize + 1)), 413, 'BODY_TOO_LARGE');

  // Replays: the good batch is accepted once; the same bytes get the same ack and change nothing;
  // the same seq with other bytes, or an older seq, is refused.
  const first = await post(url, good);
  t.is(first.status, 200, 'the good batch is stored');
  const ack = new Uint8Array(await first.arrayBuffer());
  const again = await harmless(w, 'the same batch again', () => post(url, good));
  t.deepEqual(again, ack, 'the same ack byte for byte');
  const conflict = await attack(
    w,
    'same seq, other bytes',
    () => post(url, batchOf(x, 1, [handover], { time: goodTime - 5 })),
    409,
    'SEQ_CONFLICT',
  );
  t.deepEqual(conflict.details, { seq: 1 });
  const { handover: second } = await handoverTo(bo, x, 20_000);
  t.is((await post(url, batchOf(x, 5, [second]))).status, 200, 'seq 5 stored');
  const older = await attack(w, 'an older seq after 5', () => post(url, batchOf(x, 3, [second])), 409, 'SEQ_OUT_OF_ORDER');
  t.deepEqual(older.details, { seq: 3, last: 5 });
  // The same handover again in a new batch: stored (a terminal's own resend), settled once.
  t.is((await post(url, batchOf(x, 6, [handover]))).status, 200, 'seq 6 (a resend of the first handover) stored');
  await bo.acquirer.forwardNow();
  t.is((await bo.ledger.merchantBalances())[toHex(x.kid)], 30_000 + 20_000, 'each transfer paid once');
  await books(t, bo, 'after forwarding the accepted batches');
});

test('acquirer outcome reads: no, malformed, cross-terminal, impostor, retargeted, stale and replayed authorizations; one terminal cannot exhaust the replay windows', async (t) => {
  const { dir, bo } = await startWorld(t);
  const w: World = { t, dir, bo };
  const { term: g } = await genuinePayment(t, bo, dir);
  const x = await newTerminal(t, bo, dir, 'KZ-X');
  // X becomes known to the acquirer through a settled payment of its own.
  const c = await newCard(bo);
  t.is((await x.kernel.charge(readerOn(c.transport), 40_000)).kind, 'APPROVED');
  await settle(x, bo);
  const unknown = handTerminal(bo, 'KZ-NEVER-SENT');
  const revoked = await newTerminal(t, bo, dir, 'KZ-REVOKED');
  const c2 = await newCard(bo);
  t.is((await revoked.kernel.charge(readerOn(c2.transport), 10_000)).kind, 'APPROVED');
  await settle(revoked, bo);
  bo.acquirer.revokeTerminal(revoked.identity.kid, 'adversarial suite');

  const path = (kid: Uint8Array, after = 0) => `/v1/terminals/${toHex(kid)}/outcomes?after=${after}`;
  const auth = (signer: Signer, target: string, time = nowSec(), nonce = rnd16()) =>
    signAcquirerRequest(signer, 'GET', target, time, nonce);
  const get = (target: string, header?: string) =>
    fetch(`${bo.acquirer.url}${target}`, header === undefined ? {} : { headers: { authorization: header } });
  const xs = x.identity.signer;
  const gs = g.identity.signer;

  const xPath = path(x.identity.kid);
  const ok = await get(xPath, auth(xs, xPath));
  t.is(ok.status, 200, 'X reads its own outcomes');
  const cases: { name: string; target: string; header?: () => string; status: number; code: string }[] = [
    { name: 'no authorization', target: xPath, status: 401, code: 'AUTH_REQUIRED' },
    { name: 'garbage authorization', target: xPath, header: () => 'DT-COSE !!!', status: 401, code: 'AUTH_INVALID' },
    { name: 'another scheme', target: xPath, header: () => 'Bearer abc', status: 401, code: 'AUTH_INVALID' },
    { name: "G signs a read of X's outcomes", target: xPath, header: () => auth(gs, xPath), status: 401, code: 'AUTH_INVALID' },
    {
      name: "G's valid header for its own path, sent to X's path",
      target: xPath,
      header: () => auth(gs, path(g.identity.kid)),
      status: 401,
      code: 'AUTH_INVALID',
    },
    {
      name: "G's key under X's kid",
      target: xPath,
      header: () => auth(impostor(x.identity.kid, gs), xPath),
      status: 401,
      code: 'AUTH_INVALID',
    },
    {
      name: 'signed for after=0, sent with after=1',
      target: path(x.identity.kid, 1),
      header: () => auth(xs, xPath),
      status: 401,
      code: 'AUTH_INVALID',
    },
    {
      name: 'signed for POST',
      target: xPath,
      header: () => signAcquirerRequest(xs, 'POST', xPath, nowSec(), rnd16()),
      status: 401,
      code: 'AUTH_INVALID',
    },
    { name: 'dated 10 minutes ago', target: xPath, header: () => auth(xs, xPath, nowSec() - 600), status: 401, code: 'AUTH_STALE' },
    { name: 'dated 10 minutes ahead', target: xPath, header: () => auth(xs, xPath, nowSec() + 600), status: 401, code: 'AUTH_STALE' },
    {
      name: 'a terminal that never sent a batch',
      target: path(unknown.kid),
      header: () => auth(unknown.signer, path(unknown.kid)),
      status: 403,
      code: 'TERMINAL_UNKNOWN',
    },
    {
      name: 'a terminal revoked at the acquirer',
      target: path(revoked.identity.kid),
      header: () => auth(revoked.identity.signer, path(revoked.identity.kid)),
      status: 403,
      code: 'TERMINAL_REVOKED',
    },
    {
      name: 'a terminal id that is not hex',
      target: '/v1/terminals/XYZ/outcomes',
      header: () => auth(xs, xPath),
      status: 400,
      code: 'BAD_REQUEST',
    },
    {
      name: 'a negative cursor',
      target: `/v1/terminals/${toHex(x.identity.kid)}/outcomes?after=-1`,
      header: () => auth(xs, xPath),
      status: 400,
      code: 'BAD_REQUEST',
    },
  ];
  for (const cs of cases) await attack(w, cs.name, () => get(cs.target, cs.header?.()), cs.status, cs.code);

  // A captured header replayed: the first use reads, the second is refused.
  const captured = auth(xs, xPath);
  t.is((await get(xPath, captured)).status, 200, 'the captured header, first use');
  await attack(w, 'the captured header replayed', () => get(xPath, captured), 401, 'AUTH_REPLAYED');
  // The same nonce under another terminal's key is that terminal's own first use.
  const nonce = rnd16();
  t.is((await get(xPath, auth(xs, xPath, nowSec(), nonce))).status, 200);
  t.is((await get(path(g.identity.kid), auth(gs, path(g.identity.kid), nowSec(), nonce))).status, 200, "X's nonce is G's to use too");

  // X fills its own replay window (256 reads within the skew): X gets BUSY, G reads on.
  let busy: Response | undefined;
  for (let i = 0; i < 300 && !busy; i++) {
    const r = await get(xPath, auth(xs, xPath));
    if (r.status === 503) busy = r;
    else {
      t.is(r.status, 200);
      await r.arrayBuffer();
    }
  }
  t.truthy(busy, 'X is refused once its own window is full');
  await refusal(t, busy!, 503, 'BUSY', 'X with a full window');
  const s = await g.sync();
  t.true(s.online && s.problems.length === 0, `G syncs and reads its outcomes while X is BUSY: ${JSON.stringify(s.problems)}`);
  const gPath = path(g.identity.kid);
  t.is((await get(gPath, auth(gs, gPath))).status, 200, 'G reads');
  await books(t, bo, 'after the reads');
});

// ====================================================================== the ledger
test('ledger settle: forged, wrong role, unknown or blocked acquirer, altered, stale, replayed, foreign terminals, bad batches, oversize, wrong content type', async (t) => {
  const { dir, bo } = await startWorld(t);
  const w: World = { t, dir, bo };
  const { term: g } = await genuinePayment(t, bo, dir);
  const url = `${bo.ledgerServer.url}/v1/settle`;
  const acq = probeAcquirer(bo);
  const x = handTerminal(bo, 'KZ-X');
  const rv = handTerminal(bo, 'KZ-REVOKED');
  bo.acquirer.revokeTerminal(rv.kid, 'adversarial suite: goes around its acquirer');
  const { handover } = await handoverTo(bo, x, 25_000);
  const batch = batchOf(x, 1, [handover]);
  const settleBody = (
    batches: Uint8Array[],
    over: { time?: number; nonce?: Uint8Array; chain?: readonly Uint8Array[] } = {},
    signer: Signer = acq.signer,
  ) =>
    signSettleRequest(
      { chain: [...(over.chain ?? acq.chain)], time: over.time ?? nowSec(), nonce: over.nonce ?? rnd16(), batches },
      signer,
    );

  const otherPki = createPki({ now: nowSec() });
  const foreignAcq = otherPki.issueAcquirer();
  const unregistered = bo.pki.createBank({ name: 'unregistered acquiring bank', perms: BankPermission.ACQUIRING });
  const unregisteredAcq = bo.pki.issueAcquirer({ bank: unregistered });
  const blocked = bo.pki.issueAcquirer({ name: 'blocked acquirer' });
  await blockAcquirer(bo.ledger.storage, blocked.kid, 'adversarial suite', nowSec());
  const otherBank = bo.pki.createBank({ name: 'other bank', perms: BankPermission.ACQUIRING | BankPermission.ISSUING });
  await bo.ledger.registerBank(otherBank.cert);
  const otherBankTerminal = bo.pki.issueTerminal({ merchant: { id: 'KZ-OB', mcc: 5411, name: 'ob' }, bank: otherBank });
  const terminalId = { kid: x.kid, chain: x.chain, signer: x.signer };

  const good = settleBody([batch]);
  const cases: { name: string; body: () => Uint8Array | string; type?: string; status: number; code: string; detail?: string }[] = [
    {
      name: 'the bare batch array of earlier versions',
      body: () => encodeDeterministic([batch]),
      type: 'application/cbor',
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    },
    {
      name: 'JSON',
      body: () => JSON.stringify({ batches: [toHex(batch)] }),
      type: 'application/json',
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    },
    { name: 'malformed JSON', body: () => '{"batches": [', type: 'application/json', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
    { name: 'no content type', body: () => good, type: '', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
    { name: 'not CBOR', body: () => Uint8Array.of(0xff, 0x00, 0x01), status: 400, code: 'MALFORMED' },
    {
      name: 'a signed batch where a settle request belongs',
      body: () => batch,
      status: 400,
      code: 'MALFORMED',
      detail: 'COSE_WRONG_CONTENT_TYPE',
    },
    { name: 'settle request signature flipped', body: () => flip(good, -1), status: 401, code: 'ACQUIRER_AUTH' },
    {
      name: 'one byte changed inside the signed batch',
      body: () => flip(good, offsetOf(good, batch) + 40),
      status: 401,
      code: 'ACQUIRER_AUTH',
    },
    {
      name: 'a terminal (revoked at its acquirer) settling directly with its own key and chain',
      body: () => settleBody([batchOf(rv, 1, [handover])], { chain: rv.chain }, rv.signer),
      status: 401,
      code: 'ACQUIRER_AUTH',
      detail: 'CERT_WRONG_ROLE',
    },
    {
      name: "the acquirer's chain, another acquirer's key",
      body: () => settleBody([batch], {}, blocked.signer),
      status: 401,
      code: 'ACQUIRER_AUTH',
      detail: 'KEY_MISMATCH',
    },
    {
      name: "another key under the acquirer's kid",
      body: () => settleBody([batch], {}, impostor(acq.kid, blocked.signer)),
      status: 401,
      code: 'ACQUIRER_AUTH',
    },
    {
      name: 'an acquirer of another PKI',
      body: () => settleBody([batch], { chain: foreignAcq.chain }, foreignAcq.signer),
      status: 401,
      code: 'ACQUIRER_AUTH',
    },
    {
      name: 'an acquirer of a bank the ledger does not know',
      body: () => settleBody([batch], { chain: unregisteredAcq.chain }, unregisteredAcq.signer),
      status: 403,
      code: 'ACQUIRER_UNKNOWN',
    },
    {
      name: 'a blocked (revoked) acquirer',
      body: () => settleBody([batch], { chain: blocked.chain }, blocked.signer),
      status: 403,
      code: 'ACQUIRER_UNKNOWN',
    },
    { name: 'dated 10 minutes ago', body: () => settleBody([batch], { time: nowSec() - 600 }), status: 401, code: 'ACQUIRER_STALE' },
    { name: 'dated 10 minutes ahead', body: () => settleBody([batch], { time: nowSec() + 600 }), status: 401, code: 'ACQUIRER_STALE' },
    {
      name: "a terminal of another bank in the acquirer's request",
      body: () => settleBody([batchOf(otherBankTerminal, 1, [handover])]),
      status: 403,
      code: 'ACQUIRER_NOT_PERMITTED',
    },
    {
      name: 'a batch that does not open',
      body: () => settleBody([Uint8Array.of(0xa0, ...new Uint8Array(20))]),
      status: 400,
      code: 'BATCH_INVALID',
    },
    { name: 'a batch whose signature is flipped', body: () => settleBody([flip(batch, -1)]), status: 400, code: 'BAD_SIGNATURE' },
    {
      name: "X's batch signed by a card key",
      body: () => settleBody([batchOf(terminalId, 1, [handover], {}, bo.pki.issueCard().signer)]),
      status: 400,
      code: 'BAD_SIGNATURE',
    },
    {
      name: 'a batch dated an hour ahead',
      body: () => settleBody([batchOf(x, 2, [handover], { time: nowSec() + 3600 })]),
      status: 400,
      code: 'BATCH_TIME',
    },
  ];
  for (const c of cases) {
    const body = await attack(
      w,
      c.name,
      () => post(url, c.body(), c.type === '' ? null : (c.type ?? 'application/cose')),
      c.status,
      c.code,
    );
    if (c.detail) t.is(body.detail, c.detail, `${c.name}: the check's own code in detail`);
  }
  // Oversize: over the 128 MiB settle limit, streamed without a length.
  {
    const before = stateOfBooks(w);
    const r = await streamOversize(url, (128 << 20) + 1, 'application/cose').catch((e: Error) => ({ status: -1, body: e.message }));
    t.is(r.status, 413, `oversize streamed: ${r.status} ${r.body.slice(0, 200)}`);
    t.is((JSON.parse(r.body) as { code: string }).code, 'TOO_LARGE');
    t.deepEqual(stateOfBooks(w), before, 'oversize: nothing changed');
  }

  // The good request settles once; the same request again (its nonce) is refused and changes nothing.
  const r = await post(url, good);
  t.is(r.status, 200, 'the good settle request');
  await r.arrayBuffer();
  t.is((await bo.ledger.merchantBalances())[toHex(x.kid)], 25_000);
  await attack(w, 'the same settle request replayed', () => post(url, good), 401, 'ACQUIRER_REPLAYED');
  // A fresh request with the same batch: idempotent (same outcomes), nothing changes.
  const again = await harmless(w, 'the same batch in a fresh request', () => post(url, settleBody([batch])));
  t.true(again.length > 0);
  t.is((await bo.ledger.merchantBalances())[toHex(x.kid)], 25_000, 'paid once');
  // The genuine terminal goes on settling through its acquirer.
  const s = await g.sync();
  t.true(s.online && s.problems.length === 0);
  await books(t, bo, 'after the settle attacks');
});

test('ledger syncs, loads and cards: forged, foreign card, value-creating history (SYNC_INVALID, detail apart), replayed, over the balance and credit line, malformed', async (t) => {
  const { dir, bo } = await startWorld(t);
  const w: World = { t, dir, bo };
  await genuinePayment(t, bo, dir);
  const ledger = bo.ledgerServer.url;
  const x = handTerminal(bo, 'KZ-X');

  // ---------------- syncs
  const syncUrl = `${ledger}/v1/sync`;
  const a = await newCard(bo);
  const other = await newCard(bo);
  const challengeOf = (req: Uint8Array) => openSigned('SyncRequest', req).message.challenge;
  // The genuine card's real sync request (not sent yet).
  await selectApplet(a.transport);
  const realReq = await transmitOk(a.transport, syncBeginCommand(rnd16()), { maxResponse: 1 << 20 });
  const otherState = stateOf(other.card.storage);
  const unregistered = bo.pki.issueCard();
  const unregisteredWallet = cloneOf({
    ...otherState,
    secretKey: unregistered.keys.secretKey,
    publicKey: unregistered.keys.publicKey,
    chain: [...unregistered.chain],
  });
  const wrongKey = randomKey();

  const syncCases: {
    name: string;
    body: () => Uint8Array | string;
    type?: string;
    status: number;
    code: string;
    detail?: string;
    evidence?: boolean;
  }[] = [
    { name: 'sync: not CBOR', body: () => Uint8Array.of(0x9f, 0xff, 0x00), status: 400, code: 'MALFORMED' },
    { name: 'sync: truncated', body: () => realReq.subarray(0, realReq.length - 5), status: 400, code: 'MALFORMED' },
    {
      name: 'sync: JSON',
      body: () => JSON.stringify({ request: toHex(realReq) }),
      type: 'application/json',
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    },
    { name: 'sync: malformed JSON', body: () => '{"request": ', type: 'application/json', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
    { name: 'sync: sent as application/cose', body: () => realReq, type: 'application/cose', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
    { name: 'sync: signature flipped', body: () => flip(realReq, -1), status: 400, code: 'BAD_SIGNATURE' },
    {
      name: 'sync: one byte of the challenge changed',
      body: () => flip(realReq, offsetOf(realReq, challengeOf(realReq))),
      status: 400,
      code: 'BAD_SIGNATURE',
    },
    {
      name: "sync: the card's request signed by another key under its kid",
      body: () => signMessage('SyncRequest', openSigned('SyncRequest', realReq).message, impostor(a.kid, wrongKey)),
      status: 400,
      code: 'BAD_SIGNATURE',
    },
    {
      name: "sync: a foreign card's request signed by this card's key",
      body: () => signMessage('SyncRequest', { ...openSigned('SyncRequest', realReq).message, card: other.kid }, keyOf(a)),
      status: 400,
      code: 'BAD_SIGNATURE',
    },
    {
      name: 'sync: a card the ledger never registered',
      body: () => unregisteredWallet.beginSync(rnd16()),
      status: 404,
      code: 'CARD_UNKNOWN',
    },
  ];
  for (const c of syncCases) {
    const body = await attack(w, c.name, () => post(syncUrl, c.body(), c.type ?? 'application/cbor'), c.status, c.code, {
      evidence: c.evidence,
    });
    if (c.detail) t.is(body.detail, c.detail, `${c.name}: detail`);
  }

  // Value-creating histories, signed with the card's own key (a clone): SYNC_INVALID, the chain
  // check's code in `detail`. The card-signed objects are evidence (SPEC §7.7 step E), recorded
  // before the judgement; no value moves. One fresh card each (a second object at a counter the
  // first forgery claimed would be a fork: DOUBLE_SPEND, below).
  const forgeries: { name: string; make: (st: ReturnType<typeof stateOf>, key: Signer) => Uint8Array; detail: string }[] = [
    {
      name: 'a history transfer whose change is inflated',
      make: (st, key) => {
        const paid = cloneOf(st).pay(requestFor(x, 100_000));
        const tr = openSigned('Transfer', paid.transfer).message;
        const inflated: Transfer = { ...tr, outputs: tr.outputs.map((o, i) => (i === 1 ? { ...o, value: o.value + 1_000_000 } : o)) };
        return syncWith(st, [signMessage('Transfer', inflated, key)], [], (s) => s);
      },
      detail: 'VALUE_NOT_CONSERVED',
    },
    { name: 'a balance above the holdings', make: (st) => syncWith(st, [], [], (s) => s + 1), detail: 'VALUE_NOT_CONSERVED' },
    { name: 'a holding the card never had', make: (st) => syncWith(st, [], [rnd16()], (s) => s), detail: 'VALUE_NOT_CONSERVED' },
    {
      name: 'a history transfer of a foreign card',
      make: (st) => syncWith(st, [cloneOf(stateOf(a.card.storage)).pay(requestFor(x, 10_000)).transfer], [], (s) => s),
      detail: 'TRANSFER_SIGNATURE',
    },
  ];
  for (const f of forgeries) {
    const c = await newCard(bo);
    const st = stateOf(c.card.storage);
    const body = await attack(w, `sync: ${f.name}`, () => post(syncUrl, f.make(st, keyOf(c)), 'application/cbor'), 400, 'SYNC_INVALID', {
      evidence: true,
    });
    t.is(body.detail, f.detail, `${f.name}: the chain check's code in detail, SYNC_INVALID stays the code`);
    t.false(
      (await bo.ledger.audit()).revocations.some((r) => r.card === toHex(c.kid)),
      `${f.name}: no fork, not revoked`,
    );
  }
  // A counter far beyond any honest chain: refused, and not even evidence (SPEC §7.7 step E keeps
  // state bounded): every row as it was.
  {
    const c = await newCard(bo);
    const st = stateOf(c.card.storage);
    const far = signMessage(
      'SyncRequest',
      {
        card: c.kid,
        counter: st.counter + 1000,
        prev: st.prev,
        history: [],
        holdings: st.coins.map((x) => x.id),
        balance: st.coins.reduce((s, x) => s + x.value, 0),
        challenge: rnd16(),
      },
      keyOf(c),
    );
    const body = await attack(w, 'sync: a counter 1000 ahead', () => post(syncUrl, far, 'application/cbor'), 400, 'SYNC_INVALID');
    t.is(body.detail, 'HISTORY_BROKEN');
  }
  // A clone's two different requests at one counter: the second is a fork, DOUBLE_SPEND (409) with
  // the proof and the revocation recorded, and still no value moves.
  {
    const st = stateOf(other.card.storage);
    const one = syncWith(st, [], [], (s) => s);
    const two = syncWith(st, [], [], (s) => s);
    const r1 = await post(syncUrl, one, 'application/cbor');
    t.is(r1.status, 200, 'the first request is a valid sync');
    const receipt1 = new Uint8Array(await r1.arrayBuffer());
    const before = await bo.ledger.audit();
    const value = { banks: await bo.ledger.bankBalances(), merchants: await bo.ledger.merchantBalances() };
    const body = await refusal(
      t,
      await post(syncUrl, two, 'application/cbor'),
      409,
      'DOUBLE_SPEND',
      'sync: a second request at the same counter',
    );
    t.is(body.detail, 'COUNTER_REUSED', 'the fork reason in detail');
    const after = await bo.ledger.audit();
    t.is(after.proofs.length, before.proofs.length + 1, 'the proof is recorded');
    t.true(
      after.revocations.some((r) => r.card === toHex(other.kid)),
      'the card is revoked',
    );
    t.true(after.crlVersion > before.crlVersion, 'a new revocation list names it');
    t.deepEqual({ banks: await bo.ledger.bankBalances(), merchants: await bo.ledger.merchantBalances() }, value, 'no value moved');
    // The first sync's receipt is still the card's answer to the first request.
    t.deepEqual(new Uint8Array(await (await post(syncUrl, one, 'application/cbor')).arrayBuffer()), receipt1);
    await books(t, bo, 'sync: a second request at the same counter');
  }

  // The real sync of `a` succeeds once; the same request again gets the same receipt and changes nothing.
  const first = await post(syncUrl, realReq, 'application/cbor');
  t.is(first.status, 200, 'the real sync');
  const receipt = new Uint8Array(await first.arrayBuffer());
  const replayed = await harmless(w, 'sync: the same request again', () => post(syncUrl, realReq, 'application/cbor'));
  t.deepEqual(replayed, receipt, 'the same receipt byte for byte');
  await transmitOk(a.transport, syncCompleteCommand(receipt));

  // ---------------- loads
  const loadsUrl = `${ledger}/v1/loads`;
  const bank = bo.pki.bank;
  const balance = (await bo.ledger.bankBalances())[toHex(bank.kid)]!;
  const order = (over: { card?: Uint8Array; amount?: number; id?: Uint8Array } = {}, signer: Signer = bank.signer) =>
    signLoadOrder({ card: over.card ?? a.kid, amount: over.amount ?? 10_000, id: over.id ?? rnd16(), time: nowSec() }, signer);
  const noIssuing = bo.pki.createBank({ name: 'acquiring only', perms: BankPermission.ACQUIRING });
  await bo.ledger.registerBank(noIssuing.cert);
  const bank2 = bo.pki.createBank({ name: 'second issuer', perms: BankPermission.ISSUING });
  await bo.ledger.registerBank(bank2.cert);
  const unregisteredBank = bo.pki.createBank({ name: 'unregistered issuer', perms: BankPermission.ISSUING });
  // A credit line is for covers (SPEC §7.6.2), never for loads.
  await bo.ledger.setCreditLine(bank.kid, 10_000_000);

  const loadCases: { name: string; body: () => Uint8Array | string; type?: string; status: number; code: string }[] = [
    { name: 'load: not CBOR', body: () => Uint8Array.of(0xff), status: 400, code: 'MALFORMED' },
    {
      name: 'load: JSON',
      body: () => JSON.stringify({ card: toHex(a.kid), amount: 1 }),
      type: 'application/json',
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    },
    { name: 'load: signed by a key no one certified', body: () => order({}, wrongKey), status: 403, code: 'BANK_UNKNOWN' },
    {
      name: "load: another key under the bank's kid",
      body: () => order({}, impostor(bank.kid, wrongKey)),
      status: 403,
      code: 'BAD_SIGNATURE',
    },
    { name: 'load: signature flipped', body: () => flip(order(), -1), status: 403, code: 'BAD_SIGNATURE' },
    { name: "load: signed by a terminal's key", body: () => order({}, x.signer), status: 403, code: 'BANK_UNKNOWN' },
    { name: "load: signed by the acquirer's key", body: () => order({}, probeAcquirer(bo).signer), status: 403, code: 'BANK_UNKNOWN' },
    { name: 'load: a bank the ledger does not know', body: () => order({}, unregisteredBank.signer), status: 403, code: 'BANK_UNKNOWN' },
    { name: 'load: a bank without ISSUING', body: () => order({}, noIssuing.signer), status: 403, code: 'NOT_PERMITTED' },
    { name: "load: another bank's card", body: () => order({}, bank2.signer), status: 403, code: 'NOT_PERMITTED' },
    { name: 'load: a card the ledger does not know', body: () => order({ card: unregistered.kid }), status: 404, code: 'CARD_UNKNOWN' },
    { name: 'load: a revoked card', body: () => order({ card: other.kid }), status: 403, code: 'CARD_REVOKED' },
    {
      name: 'load: one tiyn over the balance (a credit line is not for loads)',
      body: () => order({ amount: balance + 1 }),
      status: 409,
      code: 'INSUFFICIENT_ALLOCATION',
    },
    {
      name: 'load: over the balance and the credit line',
      body: () => order({ amount: balance + 10_000_001 }),
      status: 409,
      code: 'INSUFFICIENT_ALLOCATION',
    },
  ];
  for (const c of loadCases) await attack(w, c.name, () => post(loadsUrl, c.body(), c.type ?? 'application/cbor'), c.status, c.code);

  // A genuine order is accepted once; replayed, it is the same answer and no second debit;
  // its id with another amount is a conflict.
  const id = rnd16();
  const genuine = order({ id, amount: 50_000 });
  const accepted = await post(loadsUrl, genuine, 'application/cbor');
  t.is(accepted.status, 200);
  const answer = (await accepted.json()) as { state: string };
  t.is(answer.state, 'pending');
  const replayedLoad = await harmless(w, 'load: the same order again', () => post(loadsUrl, genuine, 'application/cbor'));
  t.deepEqual(JSON.parse(Buffer.from(replayedLoad).toString('utf8')), answer, 'the same answer');
  t.is((await bo.ledger.bankBalances())[toHex(bank.kid)], balance - 50_000, 'debited once');
  await attack(
    w,
    'load: the same id, another amount',
    () => post(loadsUrl, order({ id, amount: 60_000 }), 'application/cbor'),
    409,
    'ID_CONFLICT',
  );
  await attack(
    w,
    'load: the same id, another card',
    () => post(loadsUrl, order({ id, amount: 50_000, card: bank2.kid }), 'application/cbor'),
    409,
    'ID_CONFLICT',
  );

  // ---------------- oversize bodies: each route reads no more than its one object may be.
  for (const [route, limit] of [
    ['/v1/sync', LIMITS.maxSyncSize],
    ['/v1/loads', MAX_LOAD_SIZE],
    ['/v1/cards', 8192],
  ] as const) {
    await attack(
      w,
      `${route}: one byte over its limit, with its length`,
      () => post(`${ledger}${route}`, new Uint8Array(limit + 1), 'application/cbor'),
      413,
      'TOO_LARGE',
    );
    const before = stateOfBooks(w);
    const r = await streamOversize(`${ledger}${route}`, 8 << 20, 'application/cbor').catch((e: Error) => ({ status: -1, body: e.message }));
    t.is(r.status, 413, `${route}: 8 MiB streamed without a length: ${r.status} ${r.body.slice(0, 200)}`);
    t.is((JSON.parse(r.body) as { code: string }).code, 'TOO_LARGE');
    t.deepEqual(stateOfBooks(w), before, `${route}: oversize streamed, nothing changed`);
  }

  // ---------------- card registration
  const cardsUrl = `${ledger}/v1/cards`;
  const selfMade = otherPki().issueCard();
  const cardCases: { name: string; body: () => Uint8Array; status: number; code: string }[] = [
    { name: 'cards: not CBOR', body: () => Uint8Array.of(0xff, 0xff), status: 400, code: 'MALFORMED' },
    { name: 'cards: a card of another PKI', body: () => encodeDeterministic([...selfMade.chain]), status: 400, code: 'CARD_CHAIN' },
    { name: 'cards: a terminal chain as a card', body: () => encodeDeterministic([...x.chain]), status: 400, code: 'CARD_CHAIN' },
    {
      name: 'cards: a card certificate with a flipped signature',
      body: () => encodeDeterministic([flip(bo.pki.issueCard().cert, -1), bo.pki.bank.cert]),
      status: 400,
      code: 'CARD_CHAIN',
    },
  ];
  for (const c of cardCases) await attack(w, c.name, () => post(cardsUrl, c.body(), 'application/cbor'), c.status, c.code);
  await books(t, bo, 'after the sync, load and card attacks');
});

const otherPki = () => createPki({ now: nowSec() });

/** The card key read from its memory (a clone's key). */
function keyOf(c: { card: { storage: Parameters<typeof stateOf>[0] } }): Signer {
  const st = stateOf(c.card.storage);
  return keyPairSigner({ secretKey: st.secretKey!, publicKey: st.publicKey! });
}

/** A request of a hand terminal for `amount` now (unsigned: the wallet signs the transfer). */
function requestFor(term: HandTerminal, amount: number) {
  return {
    amount,
    currency: term.currency,
    terminal: term.kid,
    merchant: term.merchant.id,
    mcc: term.merchant.mcc,
    nonce: rnd16(),
    time: nowSec(),
  };
}

/**
 * A SyncRequest of the card of `st` continuing its chain with `history` (signed transfers),
 * claiming what the card holds after the history plus `extraHoldings`, and the balance
 * `balance(sum of those holdings)`, signed with the card key read from its memory.
 */
function syncWith(
  st: ReturnType<typeof stateOf>,
  history: Uint8Array[],
  extraHoldings: Uint8Array[],
  balance: (sum: number) => number,
): Uint8Array {
  const last = history.length ? openSigned('Transfer', history[history.length - 1]!) : undefined;
  const change = last?.message.outputs[1];
  const holdings = last ? (change ? [outputIdOf(history[history.length - 1]!)] : []) : st.coins.map((c) => c.id);
  const sum = last ? (change?.value ?? 0) : st.coins.reduce((s, c) => s + c.value, 0);
  const key = keyPairSigner({ secretKey: st.secretKey!, publicKey: st.publicKey! });
  return signMessage(
    'SyncRequest',
    {
      card: key.kid,
      counter: (last ? last.message.counter : st.counter) + 1,
      prev: last ? payloadHashOf(history[history.length - 1]!) : st.prev,
      history,
      holdings: [...holdings, ...extraHoldings],
      balance: balance(sum),
      challenge: rnd16(),
    },
    key,
  );
}

const payloadHashOf = (signed: Uint8Array) => payloadHash(openSigned('Transfer', signed).cose);
const outputIdOf = (signed: Uint8Array) => outputId(payloadHashOf(signed), 1);
