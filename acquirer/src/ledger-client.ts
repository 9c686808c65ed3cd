/**
 * HTTP client for the ledger's settlement contract:
 *
 * - `POST /v1/settle`, body `application/cbor` = CBOR array of signed Batch
 *   byte strings → 200, CBOR array (one entry per batch) of arrays of signed
 *   Outcome byte strings in handover order. Idempotent.
 * - `GET /v1/crl` → signed RevocationList bytes.
 * - `GET /v1/health`.
 * - Errors: 4xx/5xx with JSON `{code, message}`.
 *
 * This module only moves bytes and classifies failures; verifying what the
 * ledger returns is the forwarder's job.
 *
 * @module
 */
import { decodeDeterministic, encodeDeterministic, LIMITS, plainBytes, type CborValue } from '@dt/protocol';

/** Why a ledger call failed: `retry` (network, timeout, 5xx, 408, 429) or `reject` (other 4xx: resending the same request cannot help). */
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
    const retryable = res.status >= 500 || res.status === 408 || res.status === 429;
    throw new LedgerCallError(retryable ? 'retry' : 'reject', res.status, code, `ledger answered ${res.status} ${code} ${message}`.trim());
  }

  /** Posts batches for settlement; returns the decoded outer structure (not yet verified). */
  async settle(batches: readonly Uint8Array[]): Promise<CborValue> {
    const body = encodeDeterministic([...batches]);
    const out = await this.#call(
      '/v1/settle',
      { method: 'POST', headers: { 'content-type': 'application/cbor', accept: 'application/cbor' }, body },
      maxSettleResponse(batches.length),
    );
    try {
      return decodeDeterministic(out, maxSettleResponse(batches.length));
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
