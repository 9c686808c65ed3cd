/**
 * Server-side state of the terminal read authorization (`DT-COSE`). The wire
 * format (the signed `RequestAuth` payload, its content type and header
 * syntax) is defined once in `@dt/protocol` (`schema/acquirer.ts`,
 * SPEC.md §7.7.1: `signAcquirerRequest`, `parseAcquirerAuth`); the checks
 * are in `server.ts` (`authenticate`).
 *
 * The acquirer accepts an authorization when the kid is the terminal named in
 * the path, the terminal is known (its certificate chain was stored with an
 * accepted batch) and still valid and unrevoked, the signature verifies with
 * the certified key, method and target match the request byte for byte, the
 * time is within ±`authSkewSeconds` of the acquirer clock, and the nonce was
 * not seen within that window. Why not a challenge round trip: this is one
 * request instead of two and needs no server-side session state beyond a
 * bounded nonce cache; the signed target binds the authorization to one URL
 * (cursor included), so a captured header cannot be used for another read,
 * and the nonce cache stops replays of the same one. Outcomes are
 * ledger-signed, so authentication here protects the merchant's privacy, not
 * integrity.
 *
 * @module
 */
import { toHex } from '@dt/protocol';

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
