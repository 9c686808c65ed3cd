/**
 * The acquirer API as one-call functions over `AcquirerClient` of
 * `@dt/protocol/http` (the one HTTP client layer: bounded reads, the error
 * bodies of SPEC.md §8.4, typed errors). The acquirer's tests and bench use
 * these; the POS sync (`terminal/src/sync/client.ts`) uses `AcquirerClient`
 * directly, with its retry policy. They only move bytes and check shapes; a
 * terminal still verifies every Outcome and the revocation list with the
 * ledger key it pins.
 *
 * @module
 */
import type { BatchAck, OutcomePage, Signer } from '@dt/protocol';
import { AcquirerClient, HttpRefusedError } from '@dt/protocol/http';

/**
 * A refusal by the acquirer: HTTP status plus the stable `code` of its error body (SPEC.md §8.3). The one
 * refusal error of `@dt/protocol/http`, under its historical name.
 */
export { HttpRefusedError as AcquirerHttpError };

/** Options common to the client calls. */
export interface ClientOptions {
  /** Abort after this many ms (default 30 000). */
  readonly timeoutMs?: number;
}

function client(baseUrl: string, opts: ClientOptions & { now?: () => number }): AcquirerClient {
  const now = opts.now;
  return new AcquirerClient({
    baseUrl,
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    ...(now ? { now: () => Math.floor(now() / 1000) } : {}),
  });
}

/** Submits a signed Batch; resolves to the acquirer's ack (the same ack for an identical resend). */
export async function submitBatch(baseUrl: string, batch: Uint8Array, opts: ClientOptions = {}): Promise<BatchAck> {
  return client(baseUrl, opts).submitBatch(batch);
}

/**
 * Fetches one page of this terminal's outcomes after `cursor`, authenticated
 * with a fresh signed authorization (`signAcquirerRequest`, SPEC.md §7.7.1).
 * `now` is a clock in milliseconds (default `Date.now`).
 */
export async function fetchOutcomes(
  baseUrl: string,
  terminal: Signer,
  cursor: number,
  opts: ClientOptions & { now?: () => number } = {},
): Promise<OutcomePage> {
  return client(baseUrl, opts).fetchOutcomes(terminal, cursor);
}

/** Fetches every outcome after `cursor` (following `more`); returns them and the final cursor. */
export async function fetchAllOutcomes(baseUrl: string, terminal: Signer, cursor: number, opts: ClientOptions = {}): Promise<OutcomePage> {
  return client(baseUrl, opts).fetchAllOutcomes(terminal, cursor);
}

/** Fetches the latest revocation list the acquirer holds (signed bytes; verify with the ledger key). */
export async function fetchCrl(baseUrl: string, opts: ClientOptions = {}): Promise<Uint8Array> {
  return client(baseUrl, opts).fetchCrl();
}
