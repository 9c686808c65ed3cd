/**
 * Terminal-side client of the acquirer API (used by the POS sync client and
 * by tests). It only moves bytes and checks shapes; the terminal still
 * verifies every Outcome and the revocation list with the ledger key it pins.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import {
  ACQUIRER_MEDIA_TYPES,
  decodeBatchAck,
  decodeOutcomePage,
  signAcquirerRequest,
  toHex,
  type BatchAck,
  type OutcomePage,
  type Signer,
} from '@dt/protocol';

/** A refusal by the acquirer: HTTP status plus the stable `code` of its JSON body. */
export class AcquirerHttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${status} ${code}: ${message}`);
    this.name = 'AcquirerHttpError';
  }
}

async function fail(res: Response): Promise<never> {
  let code = `HTTP_${res.status}`;
  let message = res.statusText;
  try {
    const j = (await res.json()) as { code?: unknown; message?: unknown };
    if (typeof j.code === 'string') code = j.code;
    if (typeof j.message === 'string') message = j.message;
  } catch {
    // not JSON
  }
  throw new AcquirerHttpError(res.status, code, message);
}

async function bytesOf(res: Response): Promise<Uint8Array> {
  return new Uint8Array(await res.arrayBuffer());
}

/** Options common to the client calls. */
export interface ClientOptions {
  /** Abort after this many ms (default 30 000). */
  readonly timeoutMs?: number;
}

/** Submits a signed Batch; resolves to the acquirer's ack (the same ack for an identical resend). */
export async function submitBatch(baseUrl: string, batch: Uint8Array, opts: ClientOptions = {}): Promise<BatchAck> {
  const res = await fetch(new URL('/v1/batches', baseUrl), {
    method: 'POST',
    headers: { 'content-type': ACQUIRER_MEDIA_TYPES.cose },
    body: batch,
    signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
  });
  if (res.status !== 200) return fail(res);
  return decodeBatchAck(await bytesOf(res));
}

/**
 * Fetches one page of this terminal's outcomes after `cursor`, authenticated
 * with a fresh signed authorization (`signAcquirerRequest`, SPEC.md §7.7.1).
 */
export async function fetchOutcomes(
  baseUrl: string,
  terminal: Signer,
  cursor: number,
  opts: ClientOptions & { now?: () => number } = {},
): Promise<OutcomePage> {
  const target = `/v1/terminals/${toHex(terminal.kid)}/outcomes?after=${cursor}`;
  const time = Math.floor((opts.now ?? Date.now)() / 1000);
  const res = await fetch(new URL(target, baseUrl), {
    headers: { authorization: signAcquirerRequest(terminal, 'GET', target, time, new Uint8Array(randomBytes(16))) },
    signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
  });
  if (res.status !== 200) return fail(res);
  return decodeOutcomePage(await bytesOf(res));
}

/** Fetches every outcome after `cursor` (following `more`); returns them and the final cursor. */
export async function fetchAllOutcomes(baseUrl: string, terminal: Signer, cursor: number, opts: ClientOptions = {}): Promise<OutcomePage> {
  const all: OutcomePage = { outcomes: [], refs: [], cursor, more: false };
  for (;;) {
    const p = await fetchOutcomes(baseUrl, terminal, all.cursor, opts);
    all.outcomes.push(...p.outcomes);
    all.refs.push(...p.refs);
    (all as { cursor: number }).cursor = p.cursor;
    if (!p.more) return all;
  }
}

/** Fetches the latest revocation list the acquirer holds (signed bytes; verify with the ledger key). */
export async function fetchCrl(baseUrl: string, opts: ClientOptions = {}): Promise<Uint8Array> {
  const res = await fetch(new URL('/v1/crl', baseUrl), { signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000) });
  if (res.status !== 200) return fail(res);
  return bytesOf(res);
}
