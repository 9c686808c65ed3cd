/**
 * The acquirer bridge as an HTTP service (fastify): admits signed terminal
 * batches, stores them durably before acknowledging, forwards them to the
 * ledger in groups, and serves the ledger's outcomes and revocation list back
 * to terminals. See README.md for the API and error codes.
 *
 * @module
 */
import { performance } from 'node:perf_hooks';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { randomBytes } from 'node:crypto';
import {
  ACQUIRER_LIMITS,
  ACQUIRER_MEDIA_TYPES,
  BankPermission,
  bytesEqual,
  decodeDeterministic,
  encodeBatchAck,
  encodeOutcomePage,
  fromHex,
  isDtError,
  LIMITS,
  openSigned,
  parseAcquirerAuth,
  ReplayWindows,
  signSettleRequest,
  plainBytes,
  Role,
  sha256,
  toHex,
  verifyChain,
  verifyCoseSign1,
  verifyRoot,
  verifySigned,
  type CborValue,
  type OpenedMessage,
  type Signer,
  type Verifier,
  type VerifiedCertificate,
} from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import { AcquirerError, AcquirerErrorCode } from './errors.ts';
import { AcquirerStore, type StoredBatch } from './store.ts';
import { admitBatch, verifyTerminalChain, type TrustConfig } from './verify.ts';
import { LedgerCallError, LedgerClient } from './ledger-client.ts';
import { Forwarder, type ForwarderOptions, type ForwardResult } from './forwarder.ts';
import { Metrics } from './metrics.ts';

/** Configuration of {@link startAcquirer}. */
export interface AcquirerConfig {
  /** Base URL of the ledger, e.g. `http://127.0.0.1:8080`. */
  readonly ledgerUrl: string;
  /** The issuer root certificate (self-signed CWT), pinned. */
  readonly root: Uint8Array;
  /** Optional extra pin: the root's key id must equal this. */
  readonly rootKid?: Uint8Array;
  /** This acquirer's bank certificate (issued by the root, with ACQUIRING permission). */
  readonly bankCert: Uint8Array;
  /**
   * This acquirer's own certificate (role ACQUIRER, issued by the bank of {@link bankCert}):
   * the ledger settles only requests signed with the key it certifies (SPEC §7.7.2).
   */
  readonly acquirerCert: Uint8Array;
  /** The key of {@link acquirerCert}: signs every settle request (never logged). */
  readonly acquirerSigner: Signer;
  /** The ledger certificate (issued by the root): verifies outcomes and revocation lists. */
  readonly ledgerCert: Uint8Array;
  /** SQLite database file (created if missing). */
  readonly dbFile: string;
  /** TCP port (default 0: any free port). */
  readonly port?: number;
  /** Listen address (default 127.0.0.1). */
  readonly host?: string;
  /** Largest request body in bytes (default the protocol's batch limit, 64 MiB). */
  readonly maxBodyBytes?: number;
  /** Forwarder tuning. */
  readonly forwarder?: Partial<ForwarderOptions>;
  /** Start the background forwarder (default true). `forwardNow()` works either way. */
  readonly autoForward?: boolean;
  /** Revocation list refresh period in ms (default 60 000); it is also refreshed after each settle. */
  readonly crlRefreshMs?: number;
  /** Accepted clock skew of signed terminal requests, seconds (default 300). */
  readonly authSkewSeconds?: number;
  /**
   * Most signed reads one terminal may make within twice the skew (its own replay window,
   * default 256): a terminal that fills it gets 503 BUSY, the others are not affected.
   */
  readonly authNoncesPerTerminal?: number;
  /** Most terminals with a live replay window at once (default 50,000). */
  readonly authMaxTerminals?: number;
  /** Outcomes per page of `GET /v1/terminals/:kid/outcomes` (default 1000). */
  readonly outcomePageSize?: number;
  /** Ledger call timeout in ms (default 120 000: a settle call validates up to 2000 handovers). */
  readonly ledgerTimeoutMs?: number;
  /** Clock in ms (default `Date.now`). */
  readonly now?: () => number;
  /** Signature verifier (default `nativeVerifier`, OpenSSL through node:crypto). */
  readonly verifier?: Verifier;
  /**
   * Request log (default off): a pino logger (`dt-acquirer serve` passes one
   * writing JSON lines to stderr), or fastify's logger options. One line per
   * request, the ledger's format: method, route, status, duration; never
   * bodies, headers (authorization) or query strings.
   */
  readonly logger?: boolean | { level: string } | Logger;
}

/** A running acquirer. */
export interface RunningAcquirer {
  /** Base URL, e.g. `http://127.0.0.1:43121`. */
  readonly url: string;
  /** Runs a forwarding pass now (ignoring backoff); resolves when it ends. */
  forwardNow(): Promise<ForwardResult>;
  /** Fetches and verifies the ledger's revocation list now; resolves to the stored version (or undefined). */
  refreshCrl(): Promise<number | undefined>;
  /** Revokes a terminal at this acquirer (durable). */
  revokeTerminal(kid: Uint8Array, reason: string): void;
  /** Stops the forwarder and the HTTP server and closes the database. */
  close(): Promise<void>;
}

const CBOR_TYPES: string[] = [ACQUIRER_MEDIA_TYPES.cbor, ACQUIRER_MEDIA_TYPES.cose];

function seconds(ms: number): number {
  return Math.floor(ms / 1000);
}

/** The verified configuration: whom the acquirer trusts, and who it is. */
export interface LoadedTrust extends TrustConfig {
  readonly ledger: VerifiedCertificate;
  /** This acquirer's verified certificate (role ACQUIRER under {@link TrustConfig.bank}). */
  readonly acquirer: VerifiedCertificate;
}

/**
 * Verifies the configured certificates at `at` (seconds): the root, the bank (ACQUIRING),
 * the ledger, and this acquirer's own certificate (role ACQUIRER, issued by that bank, for
 * the key `acquirerKid` names). Throws a plain Error naming what is wrong.
 */
export function loadTrust(
  cfg: Pick<AcquirerConfig, 'root' | 'rootKid' | 'bankCert' | 'ledgerCert' | 'acquirerCert'> & { readonly acquirerKid: Uint8Array },
  at: number,
  verifier: Verifier,
): LoadedTrust {
  const root = verifyRoot(cfg.root, at, cfg.rootKid, verifier);
  const [bank] = verifyChain([cfg.bankCert], { root, at, leafRole: Role.BANK, verifier });
  if (((bank!.claims.perms ?? 0) & BankPermission.ACQUIRING) === 0) {
    throw new Error('the bank certificate lacks the ACQUIRING permission');
  }
  const [ledger] = verifyChain([cfg.ledgerCert], { root, at, leafRole: Role.LEDGER, verifier });
  let acquirer: VerifiedCertificate;
  try {
    [acquirer] = verifyChain([cfg.acquirerCert, cfg.bankCert], { root, at, leafRole: Role.ACQUIRER, verifier }) as [VerifiedCertificate];
  } catch (e) {
    throw new Error(
      `the acquirer certificate is not an ACQUIRER certificate of this bank, valid now: ${isDtError(e) ? e.code : (e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  if (!bytesEqual(acquirer.kid, cfg.acquirerKid)) throw new Error('the acquirer key is not the key of the acquirer certificate');
  return { root, bank: bank!, ledger: ledger!, acquirer, verifier };
}

/**
 * Starts the acquirer: verifies its certificates, opens the store, listens,
 * and starts the forwarder and the revocation list refresh.
 *
 * @example
 * const acq = await startAcquirer({ ledgerUrl, root, bankCert, ledgerCert, acquirerCert, acquirerSigner: readAcquirerKey('acquirer.key.json'), dbFile: '/var/lib/dt/acq.db' });
 * await acq.forwardNow();
 * await acq.close();
 */
export async function startAcquirer(cfg: AcquirerConfig): Promise<RunningAcquirer> {
  const now = cfg.now ?? Date.now;
  const verifier = cfg.verifier ?? nativeVerifier;
  const trust = loadTrust({ ...cfg, acquirerKid: cfg.acquirerSigner.kid }, seconds(now()), verifier);
  const store = new AcquirerStore(cfg.dbFile);
  const metrics = new Metrics();
  const ledger = new LedgerClient(cfg.ledgerUrl, cfg.ledgerTimeoutMs ?? 120_000);
  const healthProbe = new LedgerClient(cfg.ledgerUrl, 2_000);
  const skew = cfg.authSkewSeconds ?? ACQUIRER_LIMITS.authSkewSeconds;
  // Replay windows of signed reads, one per terminal (in ms): a nonce is remembered for twice the
  // skew, and one terminal filling its window gets BUSY for itself only (SPEC §7.7.1 step 6).
  const nonces = new ReplayWindows({
    retain: 2 * skew * 1000,
    perParty: cfg.authNoncesPerTerminal ?? 256,
    maxParties: cfg.authMaxTerminals ?? 50_000,
  });
  const pageSize = cfg.outcomePageSize ?? 1000;

  // Key ids the ledger revoked (hex); refused as terminals too should a terminal key ever be listed.
  let crlRevoked = new Set<string>();
  const loadCrl = (bytes: Uint8Array): number => {
    const { message } = verifySigned('RevocationList', bytes, trust.ledger.publicKey, verifier);
    return message.version;
  };
  const applyCrl = (bytes: Uint8Array) => {
    const { message } = openSigned('RevocationList', bytes);
    crlRevoked = new Set(message.revoked.map(toHex));
  };
  const stored = store.crl();
  if (stored) applyCrl(stored.bytes);

  let closed = false;
  const refreshCrl = async (): Promise<number | undefined> => {
    if (closed) return undefined;
    try {
      const bytes = await ledger.crl();
      metrics.ledgerUp = true;
      const version = loadCrl(bytes);
      if (store.saveCrl(version, bytes, now())) applyCrl(bytes);
      metrics.inc('crlRefreshes');
    } catch (e) {
      if (e instanceof LedgerCallError) metrics.ledgerUp = false;
      metrics.inc('crlRefreshFailures');
    }
    return closed ? undefined : store.crl()?.version;
  };

  const isRevoked = (kid: Uint8Array) => store.isTerminalRevoked(kid) || crlRevoked.has(toHex(kid));

  const fwdOpts: ForwarderOptions = {
    maxBatchesPerCall: 32,
    maxBytesPerCall: 16 * 1024 * 1024,
    maxHandoversPerCall: 2000,
    backoffBaseMs: 250,
    backoffMaxMs: 30_000,
    lingerMs: 50,
    random: Math.random,
    now,
    ...cfg.forwarder,
  };
  // Every settle call travels in a request signed with the acquirer key: its chain, its time, a fresh nonce (SPEC §7.7.2).
  const acquirerChain = [cfg.acquirerCert, cfg.bankCert];
  const seal = (batches: readonly Uint8Array[]): Uint8Array =>
    signSettleRequest(
      { chain: acquirerChain, time: seconds(now()), nonce: new Uint8Array(randomBytes(16)), batches: [...batches] },
      cfg.acquirerSigner,
    );
  const forwarder = new Forwarder(
    store,
    ledger,
    trust.ledger,
    verifier,
    metrics,
    fwdOpts,
    async () => {
      await refreshCrl();
    },
    seal,
  );

  const logging =
    typeof cfg.logger === 'object' && 'child' in cfg.logger ? { loggerInstance: cfg.logger } : { logger: cfg.logger ?? false };
  const app: FastifyInstance = Fastify({
    ...logging,
    // fastify's own request lines log the URL with its query string: ours below log the route.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: cfg.maxBodyBytes ?? LIMITS.maxBatchSize,
    // Terminals may be slow links; but do not keep a connection forever.
    requestTimeout: 120_000,
  }) as unknown as FastifyInstance;
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
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(CBOR_TYPES, { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: Error & { code?: string; statusCode?: number }, req: FastifyRequest, reply: FastifyReply) => {
    if (err instanceof AcquirerError) {
      return reply
        .status(err.status)
        .send({ code: err.code, message: err.message, ...(Object.keys(err.details).length ? { details: err.details } : {}) });
    }
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.status(413).send({ code: AcquirerErrorCode.BODY_TOO_LARGE, message: 'request body exceeds the limit' });
    }
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || err.code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') {
      return reply
        .status(415)
        .send({ code: AcquirerErrorCode.UNSUPPORTED_MEDIA_TYPE, message: 'send application/cbor or application/cose' });
    }
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.status(400).send({ code: AcquirerErrorCode.BAD_REQUEST, message: 'bad request' });
    }
    req.log.error({ err }, 'internal error');
    return reply.status(500).send({ code: AcquirerErrorCode.INTERNAL, message: 'internal error; nothing was stored' });
  });
  app.setNotFoundHandler((_req, reply) => reply.status(404).send({ code: AcquirerErrorCode.NOT_FOUND, message: 'no such route' }));

  const sendCbor = (reply: FastifyReply, bytes: Uint8Array) =>
    reply.header('content-type', ACQUIRER_MEDIA_TYPES.cbor).send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));

  const ackOf = (b: StoredBatch) =>
    encodeBatchAck({
      terminal: b.terminal,
      seq: b.seq,
      hash: b.hash,
      handovers: b.handovers,
      received: seconds(b.receivedAt),
      ...(b.adjustments > 0 ? { adjustments: b.adjustments } : {}),
    });

  // ---- POST /v1/batches: admission, sequence check, durable store, ack.
  app.post('/v1/batches', async (req, reply) => {
    if (!(req.body instanceof Uint8Array))
      throw new AcquirerError(AcquirerErrorCode.UNSUPPORTED_MEDIA_TYPE, 'send application/cbor or application/cose');
    const bytes = plainBytes(req.body);
    const hash = sha256(bytes);
    // An identical resend of a stored batch gets the stored ack, whatever happened since
    // (those exact bytes were fully verified when first accepted).
    let opened: OpenedMessage<'Batch'> | undefined;
    try {
      opened = openSigned('Batch', bytes);
    } catch {
      // Malformed: admitBatch below reports it with the right code.
    }
    if (opened) {
      const prior = store.findBatch(opened.message.terminal, opened.message.seq);
      if (prior && bytesEqual(prior.hash, hash)) {
        metrics.inc('batchesDuplicate');
        return sendCbor(reply, ackOf(prior));
      }
    }
    const at = now();
    let admitted;
    try {
      admitted = admitBatch(bytes, trust, seconds(at), isRevoked, opened);
    } catch (e) {
      metrics.inc('batchesRefused');
      throw e;
    }
    const { batch } = admitted;
    const prior = store.findBatch(batch.terminal, batch.seq);
    if (prior) {
      metrics.inc('batchesRefused');
      throw new AcquirerError(AcquirerErrorCode.SEQ_CONFLICT, 'this sequence number was used for a different batch', { seq: batch.seq });
    }
    const last = store.lastSeq(batch.terminal);
    if (batch.seq <= last) {
      metrics.inc('batchesRefused');
      throw new AcquirerError(AcquirerErrorCode.SEQ_OUT_OF_ORDER, 'sequence number not above the last accepted one', {
        seq: batch.seq,
        last,
      });
    }
    const saved = store.insertBatch({
      terminal: batch.terminal,
      seq: batch.seq,
      hash: admitted.hash,
      bytes,
      transferHashes: admitted.transferHashes,
      adjustmentTransfers: admitted.adjustmentTransfers,
      receivedAt: at,
      chain: admitted.chainBytes,
      merchant: admitted.terminal.claims.merchant?.id ?? '',
    });
    metrics.inc('batchesReceived');
    forwarder.notify();
    return sendCbor(reply, ackOf(saved));
  });

  // ---- GET /v1/terminals/:kid/outcomes?after=N : signed-request authenticated.
  app.get<{ Params: { kid: string }; Querystring: { after?: string } }>('/v1/terminals/:kid/outcomes', async (req, reply) => {
    const kidHex = req.params.kid;
    if (!/^[0-9a-f]{32}$/.test(kidHex))
      throw new AcquirerError(AcquirerErrorCode.BAD_REQUEST, 'terminal id must be 32 lower-case hex digits');
    const afterRaw = req.query.after ?? '0';
    if (!/^(0|[1-9][0-9]{0,15})$/.test(afterRaw) || !Number.isSafeInteger(Number(afterRaw))) {
      throw new AcquirerError(AcquirerErrorCode.BAD_REQUEST, 'after must be a non-negative integer cursor');
    }
    const kid = fromHex(kidHex);
    authenticate(req, kid);
    const after = Number(afterRaw);
    const rows = store.outcomesAfter(kid, after, pageSize + 1);
    const more = rows.length > pageSize;
    const page = more ? rows.slice(0, pageSize) : rows;
    metrics.inc('outcomeReads');
    return sendCbor(
      reply,
      encodeOutcomePage({
        outcomes: page.map((r) => r.bytes),
        cursor: page.length ? page[page.length - 1]!.cursor : after,
        refs: page.map((r) => [r.batchSeq, r.index] as [number, number]),
        more,
      }),
    );
  });

  /**
   * Authorization of terminal reads (`DT-COSE`, SPEC §7.7.1; the wire format is defined once in
   * `@dt/protocol`, `signAcquirerRequest` / `parseAcquirerAuth`). Accepted when the kid is the
   * terminal named in the path, the terminal is known (its chain was stored with an accepted batch)
   * and still valid and unrevoked, the signature verifies with the certified key, method and target
   * match the request byte for byte, the time is within ±skew of the acquirer clock, and the nonce
   * is new in this terminal's own replay window. Why not a challenge round trip: one request
   * instead of two and no session state beyond the bounded windows; the signed target binds the
   * authorization to one URL (cursor included), and the window stops replays of the same one. The
   * nonce is looked at last, once the terminal is authenticated, so only known terminals get a
   * window. Outcomes are ledger-signed: this protects the merchant's privacy, not integrity.
   */
  const authenticate = (req: FastifyRequest, kid: Uint8Array): void => {
    const header = req.headers.authorization;
    if (typeof header !== 'string' || header.length === 0)
      throw new AcquirerError(AcquirerErrorCode.AUTH_REQUIRED, 'a signed DT-COSE authorization is required');
    let parsed;
    try {
      parsed = parseAcquirerAuth(header);
    } catch {
      throw new AcquirerError(AcquirerErrorCode.AUTH_INVALID, 'malformed authorization');
    }
    if (!bytesEqual(parsed.cose.kid, kid))
      throw new AcquirerError(AcquirerErrorCode.AUTH_INVALID, 'authorization is not signed by this terminal');
    const t = store.terminal(kid);
    if (!t) throw new AcquirerError(AcquirerErrorCode.TERMINAL_UNKNOWN, 'no batch was ever accepted from this terminal');
    const chain = decodeDeterministic(t.chain, 8 * 1024) as CborValue[];
    const at = now();
    const leaf = verifyTerminalChain(chain as Uint8Array[], trust, seconds(at));
    if (isRevoked(kid)) throw new AcquirerError(AcquirerErrorCode.TERMINAL_REVOKED, 'terminal is revoked');
    try {
      verifyCoseSign1(parsed.cose, leaf.publicKey, verifier);
    } catch (e) {
      throw new AcquirerError(AcquirerErrorCode.AUTH_INVALID, 'authorization signature does not verify', {
        cause: isDtError(e) ? e.code : 'UNKNOWN',
      });
    }
    if (parsed.auth.method !== req.method || parsed.auth.target !== req.url) {
      throw new AcquirerError(AcquirerErrorCode.AUTH_INVALID, 'authorization names another request');
    }
    if (Math.abs(parsed.auth.time - seconds(at)) > skew)
      throw new AcquirerError(AcquirerErrorCode.AUTH_STALE, 'authorization time too far from the acquirer clock');
    const r = nonces.add(kid, parsed.auth.nonce, at);
    if (r === 'replayed') throw new AcquirerError(AcquirerErrorCode.AUTH_REPLAYED, 'authorization already used');
    if (r === 'full')
      throw new AcquirerError(AcquirerErrorCode.BUSY, 'too many authorizations from this terminal in the window; retry later');
  };

  // ---- GET /v1/crl: the latest verified ledger revocation list, byte for byte.
  app.get('/v1/crl', async (_req, reply) => {
    const c = store.crl();
    if (!c) throw new AcquirerError(AcquirerErrorCode.CRL_UNAVAILABLE, 'no verified revocation list yet');
    return reply
      .header('content-type', ACQUIRER_MEDIA_TYPES.cose)
      .header('x-dt-crl-version', String(c.version))
      .send(Buffer.from(c.bytes.buffer, c.bytes.byteOffset, c.bytes.byteLength));
  });

  // ---- GET /v1/health
  app.get('/v1/health', async () => {
    const q = store.queueStats();
    // Probe the ledger unless some call (settle, revocation list, probe) answered within the
    // last second: however often health is polled, the ledger sees at most one probe a second.
    if (performance.now() - metrics.ledgerSeenAt > 1000) metrics.ledgerUp = await healthProbe.health();
    const ledgerReachable = metrics.ledgerUp;
    return {
      status: ledgerReachable ? 'ok' : 'degraded',
      ledgerReachable,
      queueDepth: q.pendingBatches,
      pendingHandovers: q.pendingHandovers,
      oldestPendingAgeSeconds: q.oldestPendingAt === null ? 0 : Math.max(0, seconds(now() - q.oldestPendingAt)),
      settledBatches: q.settledBatches,
      rejectedBatches: q.rejectedBatches,
      crlVersion: store.crl()?.version ?? null,
      lastForwardError: forwarder.lastError ?? null,
      acquirerKid: toHex(trust.acquirer.kid),
    };
  });

  // ---- GET /v1/metrics (Prometheus text)
  app.get('/v1/metrics', async (_req, reply) => {
    const q = store.queueStats();
    reply.header('content-type', 'text/plain; version=0.0.4; charset=utf-8');
    return metrics.render({
      pendingBatches: q.pendingBatches,
      pendingHandovers: q.pendingHandovers,
      oldestPendingAgeSeconds: q.oldestPendingAt === null ? 0 : Math.max(0, seconds(now() - q.oldestPendingAt)),
      crlVersion: store.crl()?.version ?? 0,
      ledgerUp: metrics.ledgerUp,
    });
  });

  let address: string;
  try {
    address = await app.listen({ port: cfg.port ?? 0, host: cfg.host ?? '127.0.0.1' });
  } catch (e) {
    store.close();
    throw e;
  }
  const crlTimer = setInterval(() => void refreshCrl(), cfg.crlRefreshMs ?? 60_000);
  crlTimer.unref();
  void refreshCrl();
  if (cfg.autoForward ?? true) forwarder.start();

  return {
    url: address,
    forwardNow: () => forwarder.forwardNow(),
    refreshCrl,
    revokeTerminal: (kid, reason) => store.revokeTerminal(kid, reason, now()),
    close: async () => {
      if (closed) return;
      closed = true;
      clearInterval(crlTimer);
      await forwarder.stop();
      await app.close();
      store.close();
    },
  };
}
