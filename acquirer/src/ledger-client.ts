/**
 * HTTP client for the ledger's settlement contract:
 *
 * - `POST /v1/settle`, body `application/cose` = the acquirer's
 *   SignedSettleRequest (SPEC.md §7.7.2: its chain, time, a fresh nonce and the
 *   signed batches, signed with the acquirer key) → 200, CBOR array (one entry
 *   per batch) of arrays of signed Outcome byte strings in handover order.
 *   Idempotent.
 * - `GET /v1/crl` → signed RevocationList bytes.
 * - `GET /v1/health`.
 * - Errors: 4xx/5xx with JSON `{code, message, detail?, index?}`.
 *
 * This module only moves bytes and classifies failures; signing the request
 * and verifying what the ledger returns are the forwarder's job.
 *
 * @module
 */
import { ACQUIRER_MEDIA_TYPES, decodeDeterministic, LIMITS, plainBytes, type CborValue } from '@dt/protocol';

/**
 * Refusals about the acquirer itself, not about a batch it forwards: its authentication (SPEC §7.7.2:
 * chain, signature, blocked or unknown bank, clock, nonce) or the body's media type. Splitting the group
 * cannot help and the batches are not at fault, so they stay pending and are retried with backoff
 * (the operator sees the code in `lastForwardError`) instead of being marked rejected.
 */
const ACQUIRER_LEVEL_CODES: ReadonlySet<string> = new Set([
  'ACQUIRER_AUTH',
  'ACQUIRER_STALE',
  'ACQUIRER_REPLAYED',
  'ACQUIRER_UNKNOWN',
  'UNSUPPORTED_MEDIA_TYPE',
]);

/**
 * Why a ledger call failed: `retry` (network, timeout, 5xx, 408, 429, or a refusal of the acquirer
 * itself: see {@link ACQUIRER_LEVEL_CODES}) or `reject` (other 4xx: resending the same batches cannot help).
 */
export class LedgerCallError extends Error {
  constructor(
    readonly kind: 'retry' | 'reject',
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'LedgerCallError';
  }
}

/** Largest settle response accepted: every batch answered by at most 1000 outcomes of bounded size. */
function maxSettleResponse(batches: number): number {
  return batches * LIMITS.maxBatchHandovers * (LIMITS.maxOutcomeSize + 8) + 64;
}

/** Client of one ledger base URL. */
export class LedgerClient {
  constructor(
    readonly baseUrl: string,
    readonly timeoutMs: number = 30_000,
  ) {}

  async #call(path: string, init: RequestInit, maxBytes: number): Promise<Uint8Array> {
    let res: Response;
    try {
      res = await fetch(new URL(path, this.baseUrl), { ...init, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (e) {
      throw new LedgerCallError('retry', 0, 'LEDGER_UNREACHABLE', `ledger unreachable: ${(e as Error).message}`);
    }
    const body = await readBounded(res, maxBytes);
    if (res.status === 200) return body;
    let code = `HTTP_${res.status}`;
    let message = '';
    try {
      const j = JSON.parse(new TextDecoder().decode(body)) as { code?: unknown; message?: unknown };
      if (typeof j.code === 'string') code = j.code.slice(0, 64);
      if (typeof j.message === 'string') message = j.message.slice(0, 200);
    } catch {
      // Not JSON: keep the HTTP status as the code.
    }
    const retryable = res.status >= 500 || res.status === 408 || res.status === 429 || ACQUIRER_LEVEL_CODES.has(code);
    throw new LedgerCallError(retryable ? 'retry' : 'reject', res.status, code, `ledger answered ${res.status} ${code} ${message}`.trim());
  }

  /**
   * Posts a signed settle request (`signSettleRequest`) carrying `batchCount` batches; returns the
   * decoded outer structure of the answer (not yet verified).
   */
  async settle(signedRequest: Uint8Array, batchCount: number): Promise<CborValue> {
    const out = await this.#call(
      '/v1/settle',
      { method: 'POST', headers: { 'content-type': ACQUIRER_MEDIA_TYPES.cose, accept: ACQUIRER_MEDIA_TYPES.cbor }, body: signedRequest },
      maxSettleResponse(batchCount),
    );
    try {
      return decodeDeterministic(out, maxSettleResponse(batchCount));
    } catch (e) {
      throw new LedgerCallError('retry', 200, 'LEDGER_BAD_RESPONSE', `settle response does not decode: ${(e as Error).message}`);
    }
  }

  /** Fetches the ledger's signed revocation list bytes (not yet verified). */
  async crl(): Promise<Uint8Array> {
    return this.#call('/v1/crl', { method: 'GET' }, LIMITS.maxRevocationListSize);
  }

  /** True when the ledger's health endpoint answers 200. Never throws. */
  async health(): Promise<boolean> {
    try {
      await this.#call('/v1/health', { method: 'GET' }, 64 * 1024);
      return true;
    } catch {
      return false;
    }
  }
}

/** Reads a response body, refusing more than `maxBytes` (a misbehaving peer cannot exhaust memory). */
async function readBounded(res: Response, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel();
    throw new LedgerCallError('retry', res.status, 'LEDGER_RESPONSE_TOO_LARGE', 'ledger response too large');
  }
  if (!res.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let n = 0;
  const reader = res.body.getReader();
  for (;;) {
    let r;
    try {
      r = await reader.read();
    } catch (e) {
      throw new LedgerCallError('retry', res.status, 'LEDGER_UNREACHABLE', `reading the ledger response failed: ${(e as Error).message}`);
    }
    if (r.done) break;
    n += r.value.length;
    if (n > maxBytes) {
      await reader.cancel();
      throw new LedgerCallError('retry', res.status, 'LEDGER_RESPONSE_TOO_LARGE', 'ledger response too large');
    }
    chunks.push(r.value);
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return plainBytes(out);
}
