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
 * This module only moves bytes (through `httpRequest` of `@dt/protocol/http`:
 * bounded reads, time limits, the one error-body parser of SPEC.md §8.4) and
 * classifies failures for the forwarder; signing the request and verifying
 * what the ledger returns are the forwarder's job. It does not retry itself:
 * the forwarder's loop does, with the one backoff of `@dt/protocol/http`.
 *
 * @module
 */
import { ACQUIRER_MEDIA_TYPES, decodeDeterministic, LIMITS, type CborValue } from '@dt/protocol';
import { HttpBadResponseError, HttpRefusedError, HttpUnreachableError, httpRequest } from '@dt/protocol/http';

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
 * Why a ledger call failed: `retry` (network, timeout, 5xx, 408, 429 — the transient failures of SPEC.md §8.4 —,
 * an answer over its bound, or a refusal of the acquirer itself: see {@link ACQUIRER_LEVEL_CODES}) or `reject`
 * (other 4xx: resending the same batches cannot help).
 */
export class LedgerCallError extends Error {
  constructor(
    readonly kind: 'retry' | 'reject',
    readonly status: number,
    readonly code: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
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

  async #call(
    path: string,
    init: { method: string; headers?: Record<string, string>; body?: Uint8Array },
    maxBytes: number,
  ): Promise<Uint8Array> {
    try {
      return (await httpRequest(new URL(path, this.baseUrl), { ...init, maxBytes, timeoutMs: this.timeoutMs })).body;
    } catch (e) {
      if (e instanceof HttpUnreachableError)
        throw new LedgerCallError('retry', 0, 'LEDGER_UNREACHABLE', `ledger unreachable: ${e.message}`, { cause: e });
      if (e instanceof HttpBadResponseError)
        throw new LedgerCallError('retry', e.status, 'LEDGER_RESPONSE_TOO_LARGE', 'ledger response too large', { cause: e });
      if (!(e instanceof HttpRefusedError)) throw e;
      const retryable = e.transient || ACQUIRER_LEVEL_CODES.has(e.code);
      const words = [e.serverMessage, e.detail].filter((x) => x !== undefined).join(' ');
      throw new LedgerCallError(retryable ? 'retry' : 'reject', e.status, e.code, `ledger answered ${e.status} ${e.code} ${words}`.trim(), {
        cause: e,
      });
    }
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
