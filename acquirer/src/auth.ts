/**
 * Terminal authentication for reads (`GET /v1/terminals/:kid/outcomes`).
 *
 * Scheme: the terminal signs, with its certified key, a small CBOR object
 * naming exactly the request it authorizes, and sends it as a header:
 *
 * ```
 * Authorization: DT-COSE <base64url(COSE_Sign1)>
 * COSE_Sign1 content type "application/dt.acq-auth+cbor", kid = terminal key id
 * payload = {
 *   1: tstr,          ; HTTP method, upper case ("GET")
 *   2: tstr,          ; request target: path and query exactly as sent
 *   3: uint,          ; terminal time, seconds
 *   4: bstr .size 16  ; fresh random nonce
 * }
 * ```
 *
 * The acquirer accepts it when the kid is the terminal named in the path, the
 * terminal is known (its certificate chain was stored with an accepted batch)
 * and still valid and unrevoked, the signature verifies with the certified
 * key, method and target match the request byte for byte, the time is within
 * ±`skewSeconds` of the acquirer clock, and the nonce was not seen within that
 * window. Why not a challenge round trip: this is one request instead of two
 * and needs no server-side session state beyond a bounded nonce cache; the
 * signed target binds the authorization to one URL (cursor included), so a
 * captured header cannot be used for another read, and the nonce cache stops
 * replays of the same one. Outcomes are ledger-signed, so authentication here
 * protects the merchant's privacy, not integrity.
 *
 * @module
 */
import {
  coseSign1, decodeCoseSign1, decodeDeterministic, decodeStruct, defineSchema, bytes as bytesKind, encodeDeterministic,
  encodeStruct, text, toHex, uint, MAX_UINT, type Infer, type Signer,
} from '@dt/protocol';

/** COSE content type of an authorization object. */
export const AUTH_CONTENT_TYPE = 'application/dt.acq-auth+cbor';
/** Authorization scheme name in the `Authorization` header. */
export const AUTH_SCHEME = 'DT-COSE';
/** Largest accepted authorization object (bytes). */
export const MAX_AUTH_SIZE = 1024;

/** Schema of the signed authorization payload. */
export const RequestAuthSchema = defineSchema({
  name: 'RequestAuth',
  fields: [
    { key: 1, name: 'method', type: text(16) },
    { key: 2, name: 'target', type: text(512) },
    { key: 3, name: 'time', type: uint(MAX_UINT) },
    { key: 4, name: 'nonce', type: bytesKind(16) },
  ],
});
export type RequestAuth = Infer<typeof RequestAuthSchema>;

function b64url(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');
}

/**
 * Builds the `Authorization` header value for a terminal request.
 *
 * @example
 * const header = signRequest(terminalSigner, 'GET', `/v1/terminals/${kidHex}/outcomes?after=0`, nowSeconds, randomBytes(16));
 */
export function signRequest(signer: Signer, method: string, target: string, time: number, nonce: Uint8Array): string {
  const payload = encodeDeterministic(encodeStruct(RequestAuthSchema, { method, target, time, nonce }));
  return `${AUTH_SCHEME} ${b64url(coseSign1(payload, AUTH_CONTENT_TYPE, signer))}`;
}

/** A parsed, NOT yet verified authorization. */
export interface ParsedAuth {
  readonly cose: ReturnType<typeof decodeCoseSign1>;
  readonly auth: RequestAuth;
}

/** Parses an `Authorization` header value; throws on anything malformed (the caller maps it to AUTH_INVALID). */
export function parseAuthHeader(header: string): ParsedAuth {
  const m = /^DT-COSE ([A-Za-z0-9_-]{1,2048})$/.exec(header);
  if (!m) throw new Error('not a DT-COSE authorization');
  const raw = new Uint8Array(Buffer.from(m[1]!, 'base64url'));
  const cose = decodeCoseSign1(raw, MAX_AUTH_SIZE);
  if (cose.contentType !== AUTH_CONTENT_TYPE) throw new Error('wrong content type');
  const auth = decodeStruct(RequestAuthSchema, decodeDeterministic(cose.payload, MAX_AUTH_SIZE));
  return { cose, auth };
}

/**
 * Bounded cache of used nonces. Entries expire after the acceptance window, so
 * a nonce older than the window is refused by the time check instead. When
 * full, {@link NonceCache.add} refuses (fail closed) rather than forgetting.
 */
export class NonceCache {
  readonly #seen = new Map<string, number>();
  constructor(readonly windowMs: number, readonly maxEntries: number) {}

  /** 'ok' when the nonce is new (and records it), 'replayed' or 'full' otherwise. */
  add(nonce: Uint8Array, nowMs: number): 'ok' | 'replayed' | 'full' {
    this.#prune(nowMs);
    const k = toHex(nonce);
    if (this.#seen.has(k)) return 'replayed';
    if (this.#seen.size >= this.maxEntries) return 'full';
    this.#seen.set(k, nowMs + 2 * this.windowMs);
    return 'ok';
  }

  #prune(nowMs: number): void {
    // Insertion order is expiry order (constant window), so stop at the first live entry.
    for (const [k, exp] of this.#seen) {
      if (exp > nowMs) break;
      this.#seen.delete(k);
    }
  }
}
