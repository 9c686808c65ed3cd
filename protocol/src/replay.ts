/**
 * Bounded replay windows: the nonce memory behind every signed request a
 * server accepts once (the acquirer's terminal reads, SPEC.md §7.7.1 step 6;
 * the ledger's acquirer settle requests, §7.7.2 step 3). One implementation,
 * used by both servers.
 *
 * Each party (a terminal, an acquirer: whoever signed the request, known and
 * authenticated before its nonce is looked at) gets its own window of at most
 * `perParty` nonces, so one party that floods its window is refused (`'full'`,
 * answered 503 BUSY) without touching anybody else's. The number of windows is
 * bounded too (`maxParties`); a window is dropped as soon as its last nonce
 * expired, so in practice the windows held are those of the parties that sent
 * a request within the last `retain`. Worst-case memory is therefore
 * `maxParties * perParty` nonces, whatever anyone sends.
 *
 * Pure: no clock and no timers. Every call takes the current time, in any unit,
 * as long as `retain` is in the same unit. When full, a window refuses (fail
 * closed) rather than forgetting a nonce that could then be replayed.
 *
 * @example
 * // Requests are accepted within ±300 s of the server clock: remember each nonce for 600 s.
 * const windows = new ReplayWindows({ retain: 600_000, perParty: 256, maxParties: 50_000 });
 * const r = windows.add(terminalKid, auth.nonce, Date.now()); // 'ok' | 'replayed' | 'full'
 *
 * @module
 */
import { toHex } from './bytes.ts';

/** Result of {@link ReplayWindows.add}: new (and now recorded), seen before, or refused because a bound is reached. */
export type ReplayVerdict = 'ok' | 'replayed' | 'full';

/** Bounds of {@link ReplayWindows}. */
export interface ReplayWindowOptions {
  /**
   * How long each nonce is remembered after it was first seen, in the unit of the
   * `now` argument. For a request accepted while |request time − server time| ≤ skew,
   * use 2 × skew: a nonce older than that is refused by the time check instead.
   */
  readonly retain: number;
  /** Most nonces one party may have in its window at once. */
  readonly perParty: number;
  /** Most parties with a live window at once. */
  readonly maxParties: number;
}

/** One party's window: nonce (hex) -> expiry (insertion order is expiry order: constant retention), and its newest expiry. */
interface Window {
  readonly nonces: Map<string, number>;
  last: number;
}

/** Per-party bounded nonce windows; see the module comment. */
export class ReplayWindows {
  readonly retain: number;
  readonly perParty: number;
  readonly maxParties: number;
  /** party (hex) -> window, oldest newest-nonce first (a window moves to the end when it records a nonce). */
  readonly #windows = new Map<string, Window>();

  constructor(opts: ReplayWindowOptions) {
    for (const k of ['retain', 'perParty', 'maxParties'] as const) {
      if (!Number.isSafeInteger(opts[k]) || opts[k] <= 0) throw new RangeError(`ReplayWindows: ${k} must be a positive integer`);
    }
    this.retain = opts.retain;
    this.perParty = opts.perParty;
    this.maxParties = opts.maxParties;
  }

  /**
   * Records `nonce` for `party` at time `now`: `'ok'` when it was not seen within the
   * retention (it is remembered from now on), `'replayed'` when it was, `'full'` when
   * this party's window, or the table of windows, is at its bound (nothing recorded).
   */
  add(party: Uint8Array, nonce: Uint8Array, now: number): ReplayVerdict {
    this.#dropIdle(now);
    const p = toHex(party);
    let w = this.#windows.get(p);
    if (w === undefined) {
      if (this.#windows.size >= this.maxParties) return 'full';
      w = { nonces: new Map<string, number>(), last: -Infinity };
    }
    prune(w, now);
    const k = toHex(nonce);
    if (w.nonces.has(k)) return 'replayed';
    if (w.nonces.size >= this.perParty) return 'full';
    w.last = now + this.retain;
    w.nonces.set(k, w.last);
    // Windows are kept in the order of their newest nonce (so #dropIdle can stop at the first live one).
    this.#windows.delete(p);
    this.#windows.set(p, w);
    return 'ok';
  }

  /** Number of nonces `party` holds at `now` (for metrics and tests). */
  size(party: Uint8Array, now: number): number {
    const w = this.#windows.get(toHex(party));
    if (w === undefined) return 0;
    prune(w, now);
    return w.nonces.size;
  }

  /** Number of windows held (parties with a request within the retention, at most `maxParties`). */
  get parties(): number {
    return this.#windows.size;
  }

  /**
   * Drops, from the least recently used end, windows whose newest nonce expired (stopping
   * at the first live one: amortized O(1) per call).
   */
  #dropIdle(now: number): void {
    for (const [p, w] of this.#windows) {
      if (w.last > now) break;
      this.#windows.delete(p);
    }
  }
}

function prune(w: Window, now: number): void {
  // Insertion order is expiry order, so stop at the first live entry.
  for (const [k, exp] of w.nonces) {
    if (exp > now) break;
    w.nonces.delete(k);
  }
}
