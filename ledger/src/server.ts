/**
 * The ledger's HTTP API (fastify). Bodies are raw bytes: `application/cose` for the
 * acquirer's signed settle request, `application/cbor` elsewhere.
 *
 * | route | body | answer |
 * |---|---|---|
 * | `POST /v1/settle` | SignedSettleRequest (`application/cose`, SPEC §7.7.2: an authenticated acquirer's batches) | CBOR array (per batch) of arrays of signed Outcome byte strings, in handover order |
 * | `GET /v1/crl` | | the latest signed RevocationList |
 * | `POST /v1/sync` | signed SyncRequest | signed SyncReceipt |
 * | `POST /v1/loads` | signed bank load order (load.ts) | JSON `{id, card, amount, state}` |
 * | `POST /v1/cards` | CBOR array `[card cert, bank cert]` | JSON `{kid}` |
 * | `POST /v1/defund` | signed SyncRequest (SPEC §7.6.3) | signed SyncReceipt with no tokens and `redeemed` |
 * | `POST /v1/cards/block` | the issuing bank's signed CardBlock (cardloss.ts, SPEC §7.9) | JSON `{card, crlVersion, blockedAt, restoreAfter}` |
 * | `POST /v1/cards/restore` | the issuing bank's signed CardRestore (after the void window) | JSON `{card, bank, amount, cancelledLoads, time, blockedAt, record}` (record: the ledger-signed Restitution, hex) |
 * | `GET /v1/cards/<kid>` | | JSON `{card, bank, revokedIn, blockedAt, restoreAfter, restored, pendingLoads, pendingRefunds, byMark}` |
 * | `GET /v1/banks/<kid>` | | JSON `{bank, balance, creditLine}` |
 * | `GET /v1/health` | | JSON `{ok, storage}` |
 * | `GET /v1/metrics` | | Prometheus text |
 *
 * Errors are JSON `{code, message, detail?, index?}`; `code` is always a stable code of
 * SPEC §8.2 with the HTTP status of `LEDGER_ERROR_STATUS` (errors.ts), and a check's own
 * code goes in `detail`.
 *
 * @module
 */
import Fastify, { LogController, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import {
  ACQUIRER_LIMITS,
  decodeDeterministic,
  LIMITS,
  encodeDeterministic,
  fromHex,
  isDtError,
  toHex,
  type CborValue,
  type Verifier,
} from '@dt/protocol';
import { Ledger, type LedgerOptions } from './ledger.ts';
import { errorBody, LedgerApiCode, LedgerApiError, LedgerError, LedgerErrorCode } from './errors.ts';
import { authenticateSettle, settleReplayWindows } from './acquirers.ts';
import { MAX_LOAD_SIZE } from './load.ts';
import { MAX_CARD_LOSS_SIZE } from './cardloss.ts';

/** Options of {@link startLedgerServer}: an open ledger, or what {@link Ledger.open} needs. */
export type LedgerServerOptions = ({ ledger: Ledger } | LedgerOptions) & {
  /** TCP port (0: any free port). */
  readonly port?: number;
  readonly host?: string;
} & LedgerAppOptions;

/** Options of {@link buildLedgerApp}. */
export interface LedgerAppOptions {
  /**
   * Largest request body in bytes (default 128 MiB, `ACQUIRER_LIMITS.maxSettleSize`, for `POST /v1/settle`);
   * `POST /v1/sync`, `/v1/loads` and `/v1/cards` read at most their object's own limit (192 KiB, 512 B, 8 KiB).
   */
  readonly bodyLimit?: number;
  /** Most batches in one settle request (default and at most 64, `ACQUIRER_LIMITS.maxSettleBatches`). */
  readonly maxBatchesPerRequest?: number;
  /**
   * Request log (default off): a pino logger (`dt-ledger serve` passes one
   * writing JSON lines to stderr), or `true` for pino's default. One line per
   * request: method, route, status, duration; never bodies or keys.
   */
  readonly logger?: boolean | Logger;
  /** Accepted |settle request time − ledger time|, seconds (default 300, `ACQUIRER_LIMITS.settleSkewSeconds`). */
  readonly settleSkewSeconds?: number;
  /** Most settle requests one acquirer may make within twice the skew (default 10,000; more answer 503 BUSY). */
  readonly settleNoncesPerAcquirer?: number;
  /** Most acquirers with a live nonce window (default 1,000). */
  readonly settleMaxAcquirers?: number;
  /** Verifier of acquirer signatures (default `nativeVerifier`). */
  readonly verifier?: Verifier;
  /** The ledger's validator pool, if it has one (`dt-ledger serve`): its size and restarts go to `/v1/metrics`. */
  readonly validators?: { readonly size: number; readonly restarts: number };
}

/** A running ledger server. */
export interface LedgerServer {
  readonly url: string;
  readonly ledger: Ledger;
  readonly app: FastifyInstance;
  close(): Promise<void>;
}

const CBOR = 'application/cbor';
/** Largest `POST /v1/cards` body: a CBOR array of at most 3 certificates. */
const MAX_CARD_CHAIN_BODY = 8192;
const COSE = 'application/cose';

function byteStrings(v: CborValue, what: string, max: number): Uint8Array[] {
  if (!Array.isArray(v) || v.length > max || !v.every((x) => x instanceof Uint8Array)) {
    throw new LedgerError(LedgerErrorCode.MALFORMED, `${what} must be a CBOR array of at most ${max} byte strings`);
  }
  return v as Uint8Array[];
}

/**
 * Any error a route or fastify raised, as a refusal with a stable code (its status is then
 * `LEDGER_ERROR_STATUS`'s): a protocol decoding error is MALFORMED; fastify's own body errors are
 * TOO_LARGE, UNSUPPORTED_MEDIA_TYPE or MALFORMED; anything else is INTERNAL.
 */
function refusalOf(err: unknown): LedgerError | LedgerApiError {
  if (err instanceof LedgerError || err instanceof LedgerApiError) return err;
  if (isDtError(err)) return new LedgerApiError(LedgerApiCode.MALFORMED, err.message, err.code);
  const statusCode = err instanceof Error && 'statusCode' in err && typeof err.statusCode === 'number' ? err.statusCode : undefined;
  if (statusCode === 413) return new LedgerApiError(LedgerApiCode.TOO_LARGE, 'request body too large');
  if (statusCode === 415) return new LedgerApiError(LedgerApiCode.UNSUPPORTED_MEDIA_TYPE, 'unsupported content type');
  if (statusCode !== undefined && statusCode >= 400 && statusCode < 500)
    return new LedgerApiError(LedgerApiCode.MALFORMED, err instanceof Error ? err.message : 'bad request');
  return new LedgerApiError(LedgerApiCode.INTERNAL, 'internal error');
}

/** Builds the fastify app over a ledger (not listening). */
export function buildLedgerApp(ledger: Ledger, opts: LedgerAppOptions = {}): FastifyInstance {
  const bodyLimit = opts.bodyLimit ?? ACQUIRER_LIMITS.maxSettleSize;
  const maxBatches = Math.min(opts.maxBatchesPerRequest ?? ACQUIRER_LIMITS.maxSettleBatches, ACQUIRER_LIMITS.maxSettleBatches);
  const skewSeconds = opts.settleSkewSeconds ?? ACQUIRER_LIMITS.settleSkewSeconds;
  // One bounded nonce window per acquirer, for the server's lifetime (SPEC §7.7.2 step 3).
  const nonces = settleReplayWindows({
    skewSeconds,
    ...(opts.settleNoncesPerAcquirer !== undefined ? { perAcquirer: opts.settleNoncesPerAcquirer } : {}),
    ...(opts.settleMaxAcquirers !== undefined ? { maxAcquirers: opts.settleMaxAcquirers } : {}),
  });
  const logging = typeof opts.logger === 'object' ? { loggerInstance: opts.logger } : { logger: opts.logger ?? false };
  // fastify's own request logging is off: it logs the URL with its query string, twice per request.
  const app = Fastify({
    ...logging,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit,
  }) as unknown as FastifyInstance;
  // One line per request, the same format as the acquirer's: never a body, a header or a query string.
  app.addHook('onResponse', async (req, reply) => {
    req.log.info(
      {
        method: req.method,
        route: req.routeOptions.url ?? null,
        status: reply.statusCode,
        durationMs: Math.round(reply.elapsedTime * 10) / 10,
      },
      'request',
    );
  });
  // No route takes JSON or text: without their parsers any other type is 415 before its body is read
  // (a malformed JSON body answered 400 MALFORMED, found by the adversarial suite).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser([CBOR, COSE], { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
  const http = { requests: 0, errors: 0, settleRefused: 0 };
  /** The raw body, which must have been sent as `type`. */
  const body = (req: FastifyRequest, type: string = CBOR): Uint8Array => {
    const b = req.body;
    const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (!(b instanceof Uint8Array) || ct !== type) throw new LedgerApiError(LedgerApiCode.UNSUPPORTED_MEDIA_TYPE, `body must be ${type}`);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength).slice();
  };
  app.addHook('onRequest', async () => {
    http.requests++;
  });
  app.setErrorHandler((err, _req, reply) => {
    http.errors++;
    const { status, body: b } = errorBody(refusalOf(err));
    return reply.code(status).send(b);
  });

  // Only an authenticated acquirer's signed request is settled (SPEC §7.7.2); the bare CBOR array
  // of batches of earlier versions is refused (415 as application/cbor, 400 MALFORMED as application/cose).
  app.post('/v1/settle', async (req, reply) => {
    let batches: Uint8Array[];
    try {
      ({ batches } = await authenticateSettle(ledger, body(req, COSE), {
        nonces,
        skewSeconds,
        ...(opts.verifier ? { verifier: opts.verifier } : {}),
      }));
      if (batches.length > maxBatches)
        throw new LedgerApiError(LedgerApiCode.MALFORMED, `at most ${maxBatches} batches per settle request`);
    } catch (e) {
      http.settleRefused++;
      throw e;
    }
    const out = await ledger.settle(batches);
    return reply.type(CBOR).send(Buffer.from(encodeDeterministic(out)));
  });
  app.get('/v1/crl', async (_req, reply) => reply.type(CBOR).send(Buffer.from(await ledger.crl())));
  // The card- and bank-facing routes take one small signed object each: a body is never read beyond
  // that object's own limit (the 128 MiB of a settle request was accepted on every route before).
  const within = (limit: number) => ({ bodyLimit: Math.min(bodyLimit, limit) });
  app.post('/v1/sync', within(LIMITS.maxSyncSize), async (req, reply) => reply.type(CBOR).send(Buffer.from(await ledger.sync(body(req)))));
  app.post('/v1/loads', within(MAX_LOAD_SIZE), async (req) => ledger.load(body(req)));
  // A defund: the card's SyncRequest, answered with a receipt that empties the card into its issuing bank (SPEC §7.6.3).
  app.post('/v1/defund', within(LIMITS.maxSyncSize), async (req, reply) =>
    reply.type(CBOR).send(Buffer.from(await ledger.defund(body(req)))),
  );
  // Lost or stolen cards (SPEC §7.9): the issuing bank's signed block and restore requests.
  app.post('/v1/cards/block', within(MAX_CARD_LOSS_SIZE), async (req) => ledger.blockCard(body(req)));
  app.post('/v1/cards/restore', within(MAX_CARD_LOSS_SIZE), async (req) => ledger.restoreCard(body(req)));
  app.get<{ Params: { kid: string } }>('/v1/cards/:kid', async (req) => {
    if (!/^[0-9a-f]{32}$/.test(req.params.kid)) throw new LedgerApiError(LedgerApiCode.MALFORMED, 'card key id: 32 lowercase hex digits');
    const info = await ledger.cardInfo(fromHex(req.params.kid));
    if (!info) throw new LedgerError(LedgerErrorCode.CARD_UNKNOWN, 'card not registered');
    return info;
  });
  // A bank's balance and floor (SPEC §7.6.2): public figures of the books, no secret.
  app.get<{ Params: { kid: string } }>('/v1/banks/:kid', async (req) => {
    if (!/^[0-9a-f]{32}$/.test(req.params.kid)) throw new LedgerApiError(LedgerApiCode.MALFORMED, 'bank key id: 32 lowercase hex digits');
    const info = await ledger.bankInfo(fromHex(req.params.kid));
    if (!info) throw new LedgerError(LedgerErrorCode.BANK_UNKNOWN, 'bank not registered');
    return info;
  });
  app.post('/v1/cards', within(MAX_CARD_CHAIN_BODY), async (req) => {
    const chain = byteStrings(decodeDeterministic(body(req), MAX_CARD_CHAIN_BODY), 'card chain', 3);
    return { kid: toHex(await ledger.registerCard(chain)) };
  });
  app.get('/v1/health', async () => ({ ok: true, storage: ledger.storage.kind, time: ledger.now() }));
  app.get('/v1/metrics', async (_req, reply) => {
    const s = ledger.stats;
    const lines = [
      ['dt_ledger_transfers_settled_total', 'counter', 'Transfers settled', s.settled],
      ['dt_ledger_transfers_already_settled_total', 'counter', 'Replayed transfers answered ALREADY_SETTLED', s.alreadySettled],
      ['dt_ledger_double_spends_total', 'counter', 'Double spends detected', s.doubleSpends],
      ['dt_ledger_invalid_total', 'counter', 'Handovers refused as INVALID', s.invalid],
      ['dt_ledger_voided_total', 'counter', 'Orphan transfers voided', s.voided],
      ['dt_ledger_syncs_total', 'counter', 'Card syncs answered', s.syncs],
      ['dt_ledger_loads_total', 'counter', 'Bank loads accepted', s.loads],
      ['dt_ledger_batches_total', 'counter', 'Batches settled', s.batches],
      ['dt_ledger_batches_set_based_total', 'counter', 'Batches settled set-based (all handovers valid and new)', s.batchesSetBased],
      [
        'dt_ledger_chains_resumed_total',
        'counter',
        "Handovers whose chain was validated from the card's recorded chain head on (SPEC §7.7)",
        s.resumedChains,
      ],
      ['dt_ledger_merchant_voids_total', 'counter', 'Voids of terminals accepted (SPEC §7.7.3)', s.merchantVoids],
      ['dt_ledger_refunds_total', 'counter', 'Refunds of terminals accepted (SPEC §7.7.3)', s.refunds],
      ['dt_ledger_adjustments_refused_total', 'counter', 'Voids and refunds refused as INVALID', s.adjustmentsRefused],
      ['dt_ledger_http_requests_total', 'counter', 'HTTP requests', http.requests],
      ['dt_ledger_http_errors_total', 'counter', 'HTTP requests answered with an error', http.errors],
      [
        'dt_ledger_settle_refused_total',
        'counter',
        'Settle requests refused before settlement (acquirer authentication, body)',
        http.settleRefused,
      ],
      [
        'dt_ledger_validator_threads',
        'gauge',
        'Worker threads validating handovers and finding their evidence (0: the main thread does)',
        opts.validators?.size ?? 0,
      ],
      [
        'dt_ledger_validator_restarts_total',
        'counter',
        'Validator worker threads that died and were replaced',
        opts.validators?.restarts ?? 0,
      ],
    ] as const;
    return reply
      .type('text/plain; version=0.0.4')
      .send(lines.map(([name, type, help, v]) => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${v}\n`).join(''));
  });
  return app;
}

/**
 * Starts the ledger HTTP server. For other packages' tests:
 * `const srv = await startLedgerServer({ ledger, port: 0 }); ... await srv.close();`
 */
export async function startLedgerServer(opts: LedgerServerOptions): Promise<LedgerServer> {
  const ledger = 'ledger' in opts ? opts.ledger : await Ledger.open(opts);
  const app = buildLedgerApp(ledger, opts);
  const address = await app.listen({ port: opts.port ?? 0, host: opts.host ?? '127.0.0.1' });
  return { url: address, ledger, app, close: () => app.close() };
}
