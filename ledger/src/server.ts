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
import { ACQUIRER_LIMITS, decodeDeterministic, encodeDeterministic, isDtError, toHex, type CborValue, type Verifier } from '@dt/protocol';
import { Ledger, LedgerError, LedgerErrorCode, type LedgerOptions } from './ledger.ts';
import { errorBody, LedgerApiCode, LedgerApiError } from './errors.ts';
import { authenticateSettle, settleReplayWindows } from './acquirers.ts';

/** Options of {@link startLedgerServer}: an open ledger, or what {@link Ledger.open} needs. */
export type LedgerServerOptions = ({ ledger: Ledger } | LedgerOptions) & {
  /** TCP port (0: any free port). */
  readonly port?: number;
  readonly host?: string;
} & LedgerAppOptions;

/** Options of {@link buildLedgerApp}. */
export interface LedgerAppOptions {
  /** Largest request body in bytes (default 128 MiB, `ACQUIRER_LIMITS.maxSettleSize`). */
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
}

/** A running ledger server. */
export interface LedgerServer {
  readonly url: string;
  readonly ledger: Ledger;
  readonly app: FastifyInstance;
  close(): Promise<void>;
}

const CBOR = 'application/cbor';
const COSE = 'application/cose';

function byteStrings(v: CborValue, what: string, max: number): Uint8Array[] {
  if (!Array.isArray(v) || v.length > max || !v.every((x) => x instanceof Uint8Array)) {
    throw new LedgerError(400, LedgerErrorCode.MALFORMED, `${what} must be a CBOR array of at most ${max} byte strings`);
  }
  return v as Uint8Array[];
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
    if (err instanceof LedgerError || err instanceof LedgerApiError) {
      const { status, body: b } = errorBody(err);
      return reply.code(status).send(b);
    }
    if (isDtError(err)) return reply.code(400).send({ code: LedgerApiCode.MALFORMED, message: err.message, detail: err.code });
    const e = err as { statusCode?: number; code?: string; message?: string };
    if (e.statusCode === 413) return reply.code(413).send({ code: LedgerApiCode.TOO_LARGE, message: 'request body too large' });
    if (e.statusCode === 415)
      return reply.code(415).send({ code: LedgerApiCode.UNSUPPORTED_MEDIA_TYPE, message: 'unsupported content type' });
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500)
      return reply.code(400).send({ code: LedgerApiCode.MALFORMED, message: e.message ?? 'bad request' });
    return reply.code(500).send({ code: LedgerApiCode.INTERNAL, message: 'internal error' });
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
  app.post('/v1/sync', async (req, reply) => reply.type(CBOR).send(Buffer.from(await ledger.sync(body(req)))));
  app.post('/v1/loads', async (req) => ledger.load(body(req)));
  app.post('/v1/cards', async (req) => {
    const chain = byteStrings(decodeDeterministic(body(req), 8192), 'card chain', 3);
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
      ['dt_ledger_http_requests_total', 'counter', 'HTTP requests', http.requests],
      ['dt_ledger_http_errors_total', 'counter', 'HTTP requests answered with an error', http.errors],
      [
        'dt_ledger_settle_refused_total',
        'counter',
        'Settle requests refused before settlement (acquirer authentication, body)',
        http.settleRefused,
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
