/**
 * The ledger's HTTP API (fastify). Bodies are `application/cbor` bytes.
 *
 * | route | body | answer |
 * |---|---|---|
 * | `POST /v1/settle` | CBOR array of signed Batch byte strings | CBOR array (per batch) of arrays of signed Outcome byte strings, in handover order |
 * | `GET /v1/crl` | | the latest signed RevocationList |
 * | `POST /v1/sync` | signed SyncRequest | signed SyncReceipt |
 * | `POST /v1/loads` | signed bank load order (load.ts) | JSON `{id, card, amount, state}` |
 * | `POST /v1/cards` | CBOR array `[card cert, bank cert]` | JSON `{kid}` |
 * | `GET /v1/health` | | JSON `{ok, storage}` |
 * | `GET /v1/metrics` | | Prometheus text |
 *
 * Errors are JSON `{code, message}` with a stable code (`LedgerErrorCode`,
 * or `MALFORMED`, `UNSUPPORTED_MEDIA_TYPE`, `TOO_LARGE`, `INTERNAL`).
 *
 * @module
 */
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { decodeDeterministic, encodeDeterministic, isDtError, toHex, type CborValue } from '@dt/protocol';
import { Ledger, LedgerError, LedgerErrorCode, type LedgerOptions } from './ledger.ts';

/** Options of {@link startLedgerServer}: an open ledger, or what {@link Ledger.open} needs. */
export type LedgerServerOptions = ({ ledger: Ledger } | LedgerOptions) & {
  /** TCP port (0: any free port). */
  readonly port?: number;
  readonly host?: string;
  /** Largest request body in bytes (default 128 MiB). */
  readonly bodyLimit?: number;
  /** Most batches in one settle request (default 64). */
  readonly maxBatchesPerRequest?: number;
  /**
   * Request log (default off): a pino logger (`dt-ledger serve` passes one
   * writing JSON lines to stderr), or `true` for pino's default. One line per
   * request: method, route, status, duration; never bodies or keys.
   */
  readonly logger?: boolean | Logger;
};

/** A running ledger server. */
export interface LedgerServer {
  readonly url: string;
  readonly ledger: Ledger;
  readonly app: FastifyInstance;
  close(): Promise<void>;
}

const CBOR = 'application/cbor';

function byteStrings(v: CborValue, what: string, max: number): Uint8Array[] {
  if (!Array.isArray(v) || v.length > max || !v.every((x) => x instanceof Uint8Array)) {
    throw new LedgerError(400, LedgerErrorCode.MALFORMED, `${what} must be a CBOR array of at most ${max} byte strings`);
  }
  return v as Uint8Array[];
}

/** Builds the fastify app over a ledger (not listening). */
export function buildLedgerApp(ledger: Ledger, opts: { bodyLimit?: number; maxBatchesPerRequest?: number; logger?: boolean | Logger } = {}): FastifyInstance {
  const bodyLimit = opts.bodyLimit ?? 128 * 1024 * 1024;
  const maxBatches = opts.maxBatchesPerRequest ?? 64;
  const logging = typeof opts.logger === 'object' ? { loggerInstance: opts.logger } : { logger: opts.logger ?? false };
  // fastify's own request logging is off: it logs the URL with its query string, twice per request.
  const app = Fastify({ ...logging, logController: new LogController({ disableRequestLogging: true }), bodyLimit }) as unknown as FastifyInstance;
  // One line per request, the same format as the acquirer's: never a body, a header or a query string.
  app.addHook('onResponse', async (req, reply) => {
    req.log.info({ method: req.method, route: req.routeOptions.url ?? null, status: reply.statusCode, durationMs: Math.round(reply.elapsedTime * 10) / 10 }, 'request');
  });
  app.addContentTypeParser(CBOR, { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
  const http = { requests: 0, errors: 0 };
  const body = (b: unknown): Uint8Array => {
    if (!(b instanceof Uint8Array)) throw new LedgerError(415, 'UNSUPPORTED_MEDIA_TYPE' as never, 'body must be application/cbor');
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength).slice();
  };
  app.addHook('onRequest', async () => { http.requests++; });
  app.setErrorHandler((err, _req, reply) => {
    http.errors++;
    if (err instanceof LedgerError) return reply.code(err.status).send({ code: err.code, message: err.message, ...err.details });
    if (isDtError(err)) return reply.code(400).send({ code: LedgerErrorCode.MALFORMED, message: err.message });
    const e = err as { statusCode?: number; code?: string; message?: string };
    if (e.statusCode === 413) return reply.code(413).send({ code: 'TOO_LARGE', message: 'request body too large' });
    if (e.statusCode === 415) return reply.code(415).send({ code: 'UNSUPPORTED_MEDIA_TYPE', message: 'body must be application/cbor' });
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) return reply.code(e.statusCode).send({ code: LedgerErrorCode.MALFORMED, message: e.message ?? 'bad request' });
    return reply.code(500).send({ code: 'INTERNAL', message: 'internal error' });
  });

  app.post('/v1/settle', async (req, reply) => {
    const batches = byteStrings(decodeDeterministic(body(req.body), bodyLimit), 'settle body', maxBatches);
    const out = await ledger.settle(batches);
    return reply.type(CBOR).send(Buffer.from(encodeDeterministic(out)));
  });
  app.get('/v1/crl', async (_req, reply) => reply.type(CBOR).send(Buffer.from(await ledger.crl())));
  app.post('/v1/sync', async (req, reply) => reply.type(CBOR).send(Buffer.from(await ledger.sync(body(req.body)))));
  app.post('/v1/loads', async (req) => ledger.load(body(req.body)));
  app.post('/v1/cards', async (req) => {
    const chain = byteStrings(decodeDeterministic(body(req.body), 8192), 'card chain', 3);
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
    ] as const;
    return reply.type('text/plain; version=0.0.4').send(lines.map(([name, type, help, v]) => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${v}\n`).join(''));
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
