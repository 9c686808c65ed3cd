/**
 * The client of the acquirer API (acquirer/README.md, SPEC.md §7.7.1): the
 * POS sync (`terminal/src/sync/client.ts`) calls the acquirer through it, and
 * the acquirer's own tests and bench use it through `@dt/acquirer`'s
 * `submitBatch` / `fetchOutcomes` / `fetchCrl`.
 *
 * - `POST /v1/batches`, a signed Batch (`application/cose`) → a BatchAck;
 * - `GET /v1/terminals/:kid/outcomes?after=N`, with a fresh signed
 *   authorization per attempt (`signAcquirerRequest`: the acquirer refuses a
 *   reused nonce) → an OutcomePage;
 * - `GET /v1/crl` → the signed RevocationList bytes.
 *
 * It only moves bytes, bounds them (`ACQUIRER_LIMITS`, `LIMITS`) and decodes
 * the shapes; verifying the acknowledgement, every Outcome and the revocation
 * list with the pinned ledger key stays the caller's job. Failures are the
 * typed errors of `./errors.ts`; an answer that does not decode is an
 * {@link HttpBadResponseError} `MALFORMED`. Each call is retried by the one
 * policy of `./retry.ts` (one attempt unless `retry` says more).
 *
 * @module
 */
import { toHex } from '../bytes.ts';
import type { Signer } from '../cose/sign1.ts';
import { LIMITS } from '../schema/messages.ts';
import {
  ACQUIRER_LIMITS,
  ACQUIRER_MEDIA_TYPES,
  decodeBatchAck,
  decodeOutcomePage,
  signAcquirerRequest,
  type BatchAck,
  type OutcomePage,
} from '../schema/acquirer.ts';
import { HttpBadResponseError } from './errors.ts';
import { DEFAULT_HTTP_TIMEOUT_MS, httpRequest, type FetchLike } from './request.ts';
import { withRetry, type RetryPolicy } from './retry.ts';

/** Options of {@link AcquirerClient}. */
export interface AcquirerClientOptions {
  /** Base URL of the acquirer, e.g. `http://127.0.0.1:8081`. */
  readonly baseUrl: string | URL;
  /** Time limit of each attempt (default 30 000 ms). */
  readonly timeoutMs?: number;
  /** Retry policy of each call (default one attempt: no retry). */
  readonly retry?: Partial<RetryPolicy>;
  /** `fetch` implementation (default the global one). */
  readonly fetch?: FetchLike;
  /** Random bytes for authorization nonces and jitter (default the platform's `crypto.getRandomValues`). */
  readonly random?: (n: number) => Uint8Array;
  /** Clock in seconds for the authorization time (default the system clock). */
  readonly now?: () => number;
}

/** Options of one call. */
export interface AcquirerCallOptions {
  readonly signal?: AbortSignal;
}

/** Uniform in [0, 1) from four random bytes. */
function fraction(b: Uint8Array): number {
  return (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0) / 2 ** 32;
}

/**
 * Client of one acquirer.
 *
 * @example
 * const acquirer = new AcquirerClient({ baseUrl: 'http://127.0.0.1:8081', retry: { attempts: 4 } });
 * const ack = await acquirer.submitBatch(signedBatch);
 * const page = await acquirer.fetchOutcomes(terminalSigner, 0);
 */
export class AcquirerClient {
  readonly baseUrl: string;
  readonly #timeoutMs: number;
  readonly #retry: Partial<RetryPolicy>;
  readonly #fetch: FetchLike | undefined;
  readonly #random: (n: number) => Uint8Array;
  readonly #now: () => number;

  constructor(options: AcquirerClientOptions) {
    this.baseUrl = String(options.baseUrl);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS;
    this.#retry = { attempts: 1, ...options.retry };
    this.#fetch = options.fetch;
    this.#random = options.random ?? ((n) => crypto.getRandomValues(new Uint8Array(n)));
    this.#now = options.now ?? (() => Math.floor(Date.now() / 1000));
  }

  /** Submits a signed Batch; resolves to the acquirer's ack (the same ack for an identical resend). Not yet checked against the batch. */
  async submitBatch(batch: Uint8Array, options: AcquirerCallOptions = {}): Promise<BatchAck> {
    const body = await this.#call(
      '/v1/batches',
      { method: 'POST', headers: { 'content-type': ACQUIRER_MEDIA_TYPES.cose }, body: batch },
      ACQUIRER_LIMITS.maxBatchAckSize,
      options,
    );
    return decoded(() => decodeBatchAck(body), 'batch acknowledgement does not decode');
  }

  /** Fetches one page of `terminal`'s outcomes after `cursor`, authenticated with a fresh signed authorization. Outcomes not yet verified. */
  async fetchOutcomes(terminal: Signer, cursor: number | string, options: AcquirerCallOptions = {}): Promise<OutcomePage> {
    const target = `/v1/terminals/${toHex(terminal.kid)}/outcomes?after=${cursor}`;
    const body = await this.#call(
      target,
      () => ({ method: 'GET', headers: { authorization: signAcquirerRequest(terminal, 'GET', target, this.#now(), this.#random(16)) } }),
      ACQUIRER_LIMITS.maxOutcomePageSize,
      options,
    );
    return decoded(() => decodeOutcomePage(body), 'outcome page does not decode');
  }

  /** Fetches every outcome after `cursor` (following `more`); returns them and the final cursor. */
  async fetchAllOutcomes(terminal: Signer, cursor: number, options: AcquirerCallOptions = {}): Promise<OutcomePage> {
    const all = { outcomes: [] as Uint8Array[], refs: [] as [number, number][], cursor, more: false };
    for (;;) {
      const p = await this.fetchOutcomes(terminal, all.cursor, options);
      all.outcomes.push(...p.outcomes);
      all.refs.push(...p.refs);
      all.cursor = p.cursor;
      if (!p.more) return all;
    }
  }

  /** Fetches the latest revocation list the acquirer holds: signed bytes, to verify with the ledger key. */
  async fetchCrl(options: AcquirerCallOptions = {}): Promise<Uint8Array> {
    return this.#call('/v1/crl', { method: 'GET' }, LIMITS.maxRevocationListSize, options);
  }

  async #call(
    target: string,
    init:
      | { method: string; headers?: Record<string, string>; body?: Uint8Array }
      | (() => { method: string; headers?: Record<string, string> }),
    maxBytes: number,
    options: AcquirerCallOptions,
  ): Promise<Uint8Array> {
    const url = new URL(target, this.baseUrl);
    const answer = await withRetry(
      () =>
        httpRequest(url, {
          // A fresh request per attempt (a fresh authorization nonce for signed reads).
          ...(typeof init === 'function' ? init() : init),
          maxBytes,
          timeoutMs: this.#timeoutMs,
          ...(options.signal ? { signal: options.signal } : {}),
          ...(this.#fetch ? { fetch: this.#fetch } : {}),
        }),
      { ...this.#retry, random: () => fraction(this.#random(4)), ...(options.signal ? { signal: options.signal } : {}) },
    );
    return answer.body;
  }
}

function decoded<T>(decode: () => T, message: string): T {
  try {
    return decode();
  } catch (e) {
    throw new HttpBadResponseError(200, 'MALFORMED', message, { cause: e });
  }
}
