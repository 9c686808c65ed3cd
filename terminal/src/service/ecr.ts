/**
 * The cash-register (ECR) API of `dt-pos serve`, and the attendant screen, on loopback (fastify).
 *
 * Every `/v1/*` route but the OpenAPI document needs `Authorization: Bearer <token>`, the
 * token in the data directory's `ecr.token` (created with mode 0600 at the first start; compared
 * in constant time). The screen's static files hold no secret and need no token; the page asks
 * for it (or takes it from the URL fragment, which browsers never send to a server).
 *
 * Bodies are JSON, at most {@link ECR_BODY_LIMIT} bytes; errors are `{ error: CODE, message }`
 * with a stable code ({@link EcrErrorCode}). The routes are described by `terminal/openapi.json`
 * (served at `/v1/openapi.json`; a test checks every route is in it and vice versa).
 *
 * @module
 */
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { LIMITS } from '@dt/protocol';
import { TerminalError, TerminalErrorCode } from '../errors.ts';
import { REFERENCE_PATTERN, ServiceError, type PosService, type ServiceEvent } from './service.ts';

/** Largest request body, bytes. */
export const ECR_BODY_LIMIT = 4096;
/** Most event streams open at once. */
export const MAX_EVENT_STREAMS = 16;
/** File name of the ECR token in the data directory. */
export const TOKEN_FILE = 'ecr.token';

/** Stable error codes of the ECR API and their HTTP status. */
export const EcrErrorCode = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  REFERENCE_CONFLICT: 409,
  BUSY: 409,
  NOT_CANCELLABLE: 409,
  NO_PIN_REQUESTED: 409,
  /** Void: the ledger settled the payment (refund it instead). */
  ALREADY_SETTLED: 409,
  /** Void: the payment has another outcome (rejected, double spend), or nothing was paid. */
  NOT_VOIDABLE: 409,
  /** Refund: the payment is not settled (void it while unsettled). */
  NOT_SETTLED: 409,
  /** Refund: the amount exceeds what is left to refund. */
  REFUND_EXCEEDS: 409,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  TOO_MANY_STREAMS: 503,
  STOPPING: 503,
  INTERNAL: 500,
} as const;
/** An ECR error code. */
export type EcrErrorCode = keyof typeof EcrErrorCode;

const SCREEN_FILES: Record<string, string> = {
  '/': 'index.html',
  '/screen.css': 'screen.css',
  '/screen.js': 'screen.js',
};
const MIME: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'screen.css': 'text/css; charset=utf-8',
  'screen.js': 'text/javascript; charset=utf-8',
};

/** The screen's directory and the OpenAPI document (next to `src/` and `dist/` in the package). */
const PACKAGE_ROOT = new URL('../../', import.meta.url);
/** Path of `openapi.json`. */
export const OPENAPI_PATH = new URL('openapi.json', PACKAGE_ROOT);

/**
 * Reads the ECR token of `dataDir`, creating it (32 random bytes, base64url, mode 0600) when
 * absent. A token file that others can read is refused (fail closed: a `TerminalError` CONFIG).
 */
export function ecrToken(dataDir: string): string {
  const path = join(dataDir, TOKEN_FILE);
  try {
    const fd = openSync(path, 'wx', 0o600);
    try {
      writeSync(fd, randomBytes(32).toString('base64url') + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0)
    throw new TerminalError(TerminalErrorCode.CONFIG, `${path} is readable by others (mode ${mode.toString(8)}): chmod 600 it`, { path });
  const token = readFileSync(path, 'utf8').trim();
  if (token.length < 16)
    throw new TerminalError(TerminalErrorCode.CONFIG, `${path} holds no usable token (delete it to make a new one)`, { path });
  return token;
}

/** Constant-time comparison of a presented token with the expected one (hashes of both: equal lengths). */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** Options of {@link buildEcrApp}. */
export interface EcrAppOptions {
  readonly service: PosService;
  readonly token: string;
  /** Heartbeat comment on event streams, ms (default 15 s). */
  readonly heartbeatMs?: number;
}

class EcrError extends Error {
  constructor(
    readonly code: EcrErrorCode,
    message: string,
  ) {
    super(message);
  }
}

function send(reply: FastifyReply, code: EcrErrorCode, message: string): FastifyReply {
  return reply.code(EcrErrorCode[code]).send({ error: code, message });
}

const paymentParams = {
  type: 'object',
  required: ['reference'],
  properties: { reference: { type: 'string', pattern: REFERENCE_PATTERN } },
} as const;

const ROUTES = new WeakMap<FastifyInstance, { method: string; url: string }[]>();

/** The routes an ECR app serves (method and fastify path, e.g. `GET /v1/payments/:reference`), HEAD left out. */
export function ecrRoutes(app: FastifyInstance): { method: string; url: string }[] {
  return [...(ROUTES.get(app) ?? [])];
}

/** Builds the ECR app (not listening). */
export function buildEcrApp(opts: EcrAppOptions): FastifyInstance {
  const { service, token } = opts;
  const app = Fastify({
    logger: false,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: ECR_BODY_LIMIT,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  }) as unknown as FastifyInstance;
  const streams = new Set<FastifyReply>();
  const routes: { method: string; url: string }[] = [];
  ROUTES.set(app, routes);
  app.addHook('onRoute', (r) => {
    for (const m of Array.isArray(r.method) ? r.method : [r.method]) if (m !== 'HEAD') routes.push({ method: m, url: r.url });
  });

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const url = req.url.split('?')[0]!;
    if (!url.startsWith('/v1/') || url === '/v1/openapi.json') return;
    const h = req.headers.authorization ?? '';
    const m = /^Bearer ([\x21-\x7e]{1,256})$/.exec(h);
    if (!m || !tokenMatches(m[1]!, token)) {
      void reply.header('www-authenticate', 'Bearer realm="dt-pos"');
      return send(reply, 'UNAUTHORIZED', 'a valid Authorization: Bearer token is required (the data directory\u2019s ecr.token)');
    }
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string; validation?: unknown }, _req, reply) => {
    if (err instanceof ServiceError) {
      const code: EcrErrorCode = err.code === 'INVALID' ? 'BAD_REQUEST' : err.code;
      return send(reply, code, err.message);
    }
    if (err instanceof EcrError) return send(reply, err.code, err.message);
    if (err.statusCode === 413) return send(reply, 'BODY_TOO_LARGE', `request body larger than ${ECR_BODY_LIMIT} bytes`);
    if (err.statusCode === 415) return send(reply, 'UNSUPPORTED_MEDIA_TYPE', 'bodies are application/json');
    if (err.validation || (err.statusCode && err.statusCode >= 400 && err.statusCode < 500))
      return send(reply, 'BAD_REQUEST', err.message || 'bad request');
    return send(reply, 'INTERNAL', 'internal error');
  });
  app.setNotFoundHandler((req, reply) => send(reply, 'NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`));

  // ---------------------------------------------------------------- screen
  for (const [route, file] of Object.entries(SCREEN_FILES)) {
    const body = readFileSync(new URL(`screen/${file}`, PACKAGE_ROOT));
    app.get(route, async (_req, reply) =>
      reply
        .type(MIME[file]!)
        .header('cache-control', 'no-store')
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'")
        .send(body),
    );
  }
  const openapi = readFileSync(OPENAPI_PATH);
  app.get('/v1/openapi.json', async (_req, reply) => reply.type('application/json').send(openapi));

  // ---------------------------------------------------------------- payments
  app.post(
    '/v1/payments',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['amount', 'reference'],
          properties: {
            amount: { type: 'integer', minimum: 1, maximum: LIMITS.maxAmount },
            reference: { type: 'string', pattern: REFERENCE_PATTERN },
          },
        },
      },
    },
    async (req, reply) => {
      const b = req.body as { amount: number; reference: string };
      const r = service.startPayment(b.reference, b.amount);
      return reply.code(r.status === 'existing' ? 200 : 201).send({ ...r.payment, request: r.status });
    },
  );
  app.get(
    '/v1/payments',
    {
      schema: {
        querystring: { type: 'object', additionalProperties: false, properties: { limit: { type: 'string', pattern: '^[0-9]{1,4}$' } } },
      },
    },
    async (req) => {
      const q = req.query as { limit?: string };
      const limit = Math.min(1000, Math.max(1, Number(q.limit ?? 100)));
      return { payments: service.listPayments(limit) };
    },
  );
  app.get('/v1/payments/:reference', { schema: { params: paymentParams } }, async (req) =>
    service.getPayment((req.params as { reference: string }).reference),
  );
  app.post('/v1/payments/:reference/cancel', { schema: { params: paymentParams } }, async (req) =>
    service.cancel((req.params as { reference: string }).reference),
  );
  app.post(
    '/v1/payments/:reference/pin',
    {
      schema: {
        params: paymentParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['pin'],
          properties: { pin: { anyOf: [{ type: 'string', pattern: '^[0-9]{4,12}$' }, { type: 'null' }] } },
        },
      },
    },
    async (req, reply) => {
      service.submitPin((req.params as { reference: string }).reference, (req.body as { pin: string | null }).pin);
      return reply.code(202).send({ accepted: true });
    },
  );

  // ---------------------------------------------------------------- voids and refunds
  app.post('/v1/payments/:reference/void', { schema: { params: paymentParams } }, async (req, reply) => {
    const r = service.voidPayment((req.params as { reference: string }).reference);
    return reply.code(r.status === 'existing' ? 200 : 201).send({ payment: r.payment, adjustment: r.adjustment, request: r.status });
  });
  app.post(
    '/v1/payments/:reference/refunds',
    {
      schema: {
        params: paymentParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['refundReference'],
          properties: {
            refundReference: { type: 'string', pattern: REFERENCE_PATTERN },
            amount: { type: 'integer', minimum: 1, maximum: LIMITS.maxAmount },
          },
        },
      },
    },
    async (req, reply) => {
      const b = req.body as { refundReference: string; amount?: number };
      const r = service.refundPayment((req.params as { reference: string }).reference, b.refundReference, b.amount);
      return reply.code(r.status === 'existing' ? 200 : 201).send({ payment: r.payment, adjustment: r.adjustment, request: r.status });
    },
  );

  // ---------------------------------------------------------------- status, report, batch
  app.get('/v1/status', async () => service.status());
  app.get('/v1/report', async () => service.report());
  app.post('/v1/batch/close', async () => service.closeBatch());

  // ---------------------------------------------------------------- events (server-sent)
  app.get('/v1/events', async (req, reply) => {
    if (streams.size >= MAX_EVENT_STREAMS) return send(reply, 'TOO_MANY_STREAMS', `at most ${MAX_EVENT_STREAMS} event streams`);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    let id = 0;
    const write = (type: string, data: unknown): void => {
      res.write(`id: ${++id}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    write('status', service.status());
    let unsubscribe: (() => void) | undefined;
    try {
      unsubscribe = service.subscribe((e: ServiceEvent) => write(e.type, e));
    } catch {
      res.end();
      return;
    }
    streams.add(reply);
    const beat = setInterval(() => res.write(': keep-alive\n\n'), opts.heartbeatMs ?? 15_000);
    beat.unref();
    const done = (): void => {
      clearInterval(beat);
      unsubscribe?.();
      streams.delete(reply);
    };
    req.raw.on('close', done);
    res.on('close', done);
  });

  app.addHook('onClose', async () => {
    for (const r of streams) r.raw.end();
    streams.clear();
  });
  return app;
}
