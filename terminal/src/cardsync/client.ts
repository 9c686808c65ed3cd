/**
 * The card-sync client: SYNC and LOAD of a card against the ledger's HTTP
 * API, the way a cardholder's app (or a bank's counter) does it. The one
 * implementation used by the story, the lab and the command lines.
 *
 * - SYNC (SPEC §7.6, §10.9): SYNC BEGIN makes the card sign a SyncRequest
 *   over its offline chain and a fresh 16-byte challenge; `POST /v1/sync`
 *   answers the ledger's signed SyncReceipt; SYNC COMPLETE hands it to the
 *   card, which checks the ledger's signature (its pinned ledger key), the
 *   request hash and the token total before it changes anything.
 * - LOAD (SPEC §7.6.1): the bank's signed load order goes to
 *   `POST /v1/loads` (the ledger moves the amount from the bank's balance to a
 *   pending load); LOAD BEGIN / `POST /v1/sync` / LOAD COMPLETE then delivers
 *   every pending load of the card as `loaded`.
 * - Registration: `POST /v1/cards` with the card's chain.
 *
 * A refusal by the ledger is a result (`ok: false` with the HTTP status and
 * the ledger's stable §8.2 `code`, its `detail` apart); a card error throws
 * (`CardStatusError`), a transport error throws, the network throws
 * (`HttpUnreachableError`). The client never signs anything itself: the card
 * and the bank do. The HTTP calls go through `httpRequest` of
 * `@dt/protocol/http` (bounded reads, the one error-body parser of SPEC.md
 * §8.4); a SYNC or LOAD is never retried by the client (the card holds the
 * pending request; the caller decides).
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import {
  LIMITS,
  SYNC_CHALLENGE_LENGTH,
  encodeDeterministic,
  getStatus,
  openSigned,
  syncBegin,
  syncComplete,
  toHex,
  type ApduTransport,
  type CardStatus,
} from '@dt/protocol';
import { HttpBadResponseError, HttpRefusedError, httpRequest, type FetchLike } from '@dt/protocol/http';

/** Media type of the ledger's CBOR bodies. */
const CBOR = 'application/cbor';
/** Largest JSON answer read from the ledger (load answers, registrations, refusals). */
const MAX_JSON = 64 * 1024;

/** A refusal by the ledger: HTTP status, the stable code of SPEC §8.2, and the check's own code or words apart. */
export interface LedgerRefusal {
  readonly ok: false;
  readonly status: number;
  /** The ledger's stable code (`SYNC_INVALID`, `CARD_UNKNOWN`, ...), or `HTTP_<status>` when the body has none. */
  readonly code: string;
  readonly message?: string;
  /** The failed check's own code (e.g. the §8.1 code of a refused sync history). */
  readonly detail?: string;
}

/** What a receipt the card accepted says (read after the card verified it). */
export interface ReceiptSummary {
  /** The card's sync counter the receipt answers. */
  readonly counter: number;
  /** Value added by bank loads (tiyn). */
  readonly loaded: number;
  /** Value moved to the issuing bank (a revoked card), 0 when absent. */
  readonly redeemed: number;
  /** Orphan transfers whose value came back. */
  readonly voided: number;
  /** Value credited by merchant refunds (SPEC §7.7.3, tiyn), 0 when absent. */
  readonly refunded: number;
  /** Fresh tokens the card now holds. */
  readonly tokens: number;
  /** Ledger time of the receipt (seconds). */
  readonly time: number;
}

/** Result of a SYNC or LOAD: the receipt the card accepted, or the ledger's refusal (the card is unchanged, its request pending). */
export type CardSyncResult = { readonly ok: true; readonly receipt: Uint8Array; readonly summary: ReceiptSummary } | LedgerRefusal;

/** The ledger's answer to a bank load order (SPEC §7.6.1): ids in hex, `state` `pending` until the card's next sync. */
export interface LoadOrderAnswer {
  readonly ok: true;
  readonly id: string;
  readonly card: string;
  readonly amount: number;
  readonly state: string;
}

/** Result of {@link CardSyncClient.load}: the order's answer and the card's LOAD, or the refusal that stopped it. */
export type CardLoadResult =
  | { readonly ok: true; readonly order?: LoadOrderAnswer; readonly receipt: Uint8Array; readonly summary: ReceiptSummary }
  | (LedgerRefusal & { readonly step: 'order' | 'load' });

/** What a cardholder reads from the card (GET STATUS), with the pending-sync state. */
export interface CardState {
  /** Key id of the card (hex), once personalized. */
  readonly card?: string;
  /** Spendable balance (tiyn). */
  readonly balance: number;
  /** A SYNC or LOAD was begun and not completed: the card refuses PAY until it is. */
  readonly syncPending: boolean;
  /** Offline payments and their value since the last sync (what the next sync hands in). */
  readonly offlineCount: number;
  readonly offlineValue: number;
  /** Coins held. */
  readonly coins: number;
  /** The card's transfer counter. */
  readonly counter: number;
  /** The card's offline limits, when personalized. */
  readonly limits?: CardStatus['limits'];
}

/** Options of {@link CardSyncClient}. */
export interface CardSyncClientOptions {
  /** Base URL of the ledger, e.g. `http://127.0.0.1:8080`. */
  readonly ledgerUrl: string;
  /** Time limit of each HTTP request (default 30 s). */
  readonly timeoutMs?: number;
  /** `fetch` implementation (default the global one). */
  readonly fetch?: FetchLike;
  /** Random bytes for the sync challenge (default node:crypto). */
  readonly random?: (n: number) => Uint8Array;
}

/** Options of one call. */
export interface CardSyncCallOptions {
  readonly signal?: AbortSignal;
}

type HttpAnswer = { readonly ok: true; readonly bytes: Uint8Array } | LedgerRefusal;

/** Reads the card's balance and pending state (GET STATUS on a selected applet). */
export async function readCardState(t: ApduTransport, options: CardSyncCallOptions = {}): Promise<CardState> {
  const s = await getStatus(t, options.signal ? { signal: options.signal } : {});
  return {
    ...(s.card ? { card: toHex(s.card) } : {}),
    balance: s.balance,
    syncPending: s.syncPending,
    offlineCount: s.offlineCount,
    offlineValue: s.offlineValue,
    coins: s.coins,
    counter: s.counter,
    ...(s.limits ? { limits: s.limits } : {}),
  };
}

/** What a receipt says; only call it on a receipt the card accepted (the card verified the ledger's signature). */
export function summarizeReceipt(receipt: Uint8Array): ReceiptSummary {
  const r = openSigned('SyncReceipt', receipt).message;
  return {
    counter: r.counter,
    loaded: r.loaded,
    redeemed: r.redeemed ?? 0,
    voided: r.voided.length,
    refunded: r.refunded ?? 0,
    tokens: r.tokens.length,
    time: r.time,
  };
}

/**
 * Card sync against one ledger.
 *
 * @example
 * const ledger = new CardSyncClient({ ledgerUrl: 'http://127.0.0.1:8080' });
 * await selectApplet(card);
 * const r = await ledger.sync(card);
 * if (!r.ok) console.error(`${r.code}: ${r.message ?? ''}`);
 */
export class CardSyncClient {
  readonly ledgerUrl: string;
  readonly #timeoutMs: number;
  readonly #fetch: FetchLike | undefined;
  readonly #random: (n: number) => Uint8Array;

  constructor(options: CardSyncClientOptions) {
    this.ledgerUrl = options.ledgerUrl;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#fetch = options.fetch;
    this.#random = options.random ?? ((n) => new Uint8Array(randomBytes(n)));
  }

  /** SYNC on the selected card in `t`: hands in its offline chain, takes fresh tokens for the rest. */
  async sync(t: ApduTransport, options: CardSyncCallOptions = {}): Promise<CardSyncResult> {
    return this.#exchange(t, false, options);
  }

  /**
   * LOAD on the selected card in `t`. With `order` (a bank's signed load order, `signLoadOrder`), it is
   * first submitted to the ledger; a refused order stops before the card is touched. Without it, the
   * card's pending loads are delivered.
   */
  async load(t: ApduTransport, order?: Uint8Array, options: CardSyncCallOptions = {}): Promise<CardLoadResult> {
    let answer: LoadOrderAnswer | undefined;
    if (order) {
      const a = await this.submitLoadOrder(order, options);
      if (!a.ok) return { ...a, step: 'order' };
      answer = a;
    }
    const r = await this.#exchange(t, true, options);
    if (!r.ok) return { ...r, step: 'load' };
    return { ...r, ...(answer ? { order: answer } : {}) };
  }

  /** Submits a bank's signed load order (`POST /v1/loads`); the value waits at the ledger for the card's next sync. */
  async submitLoadOrder(order: Uint8Array, options: CardSyncCallOptions = {}): Promise<LoadOrderAnswer | LedgerRefusal> {
    const r = await this.#post('/v1/loads', order, MAX_JSON, options.signal);
    if (!r.ok) return r;
    const j = parseJson(r.bytes) as Partial<Record<keyof LoadOrderAnswer, unknown>> | undefined;
    if (!j || typeof j.id !== 'string' || typeof j.card !== 'string' || typeof j.amount !== 'number' || typeof j.state !== 'string')
      return {
        ok: false,
        status: 200,
        code: 'BAD_RESPONSE',
        message: 'the ledger answered the load order with something else than {id, card, amount, state}',
      };
    return { ok: true, id: j.id, card: j.card, amount: j.amount, state: j.state };
  }

  /** Registers a card's chain (card certificate, then its bank's) with the ledger (`POST /v1/cards`); answers the card's key id in hex. */
  async registerCard(chain: readonly Uint8Array[], options: CardSyncCallOptions = {}): Promise<{ ok: true; kid: string } | LedgerRefusal> {
    const r = await this.#post('/v1/cards', encodeDeterministic([...chain]), MAX_JSON, options.signal);
    if (!r.ok) return r;
    const j = parseJson(r.bytes) as { kid?: unknown } | undefined;
    if (!j || typeof j.kid !== 'string')
      return { ok: false, status: 200, code: 'BAD_RESPONSE', message: 'the ledger answered the registration without a kid' };
    return { ok: true, kid: j.kid };
  }

  /** Posts a card's SyncRequest (`POST /v1/sync`) and answers the ledger's receipt bytes (not yet checked: the card checks them). */
  async postSyncRequest(
    request: Uint8Array,
    options: CardSyncCallOptions = {},
  ): Promise<{ ok: true; receipt: Uint8Array } | LedgerRefusal> {
    const r = await this.#post('/v1/sync', request, LIMITS.maxSyncSize, options.signal);
    return r.ok ? { ok: true, receipt: r.bytes } : r;
  }

  async #exchange(t: ApduTransport, load: boolean, options: CardSyncCallOptions): Promise<CardSyncResult> {
    const signal = options.signal ? { signal: options.signal } : {};
    const request = await syncBegin(t, this.#random(SYNC_CHALLENGE_LENGTH), { load, ...signal });
    const r = await this.postSyncRequest(request, options);
    if (!r.ok) return r;
    await syncComplete(t, r.receipt, { load, ...signal });
    return { ok: true, receipt: r.receipt, summary: summarizeReceipt(r.receipt) };
  }

  async #post(path: string, body: Uint8Array, maxBytes: number, signal: AbortSignal | undefined): Promise<HttpAnswer> {
    try {
      const r = await httpRequest(new URL(path, this.ledgerUrl), {
        method: 'POST',
        headers: { 'content-type': CBOR },
        body,
        maxBytes,
        timeoutMs: this.#timeoutMs,
        ...(signal ? { signal } : {}),
        ...(this.#fetch ? { fetch: this.#fetch } : {}),
      });
      return { ok: true, bytes: r.body };
    } catch (e) {
      if (e instanceof HttpRefusedError)
        return {
          ok: false,
          status: e.status,
          code: e.code,
          ...(e.serverMessage !== undefined ? { message: e.serverMessage } : {}),
          ...(e.detail !== undefined ? { detail: e.detail } : {}),
        };
      if (e instanceof HttpBadResponseError && e.reason === 'TOO_LARGE')
        return { ok: false, status: e.status, code: 'TOO_LARGE', message: e.message };
      throw e;
    }
  }
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return undefined;
  }
}

/**
 * SYNC (or LOAD with `load: true`, delivering the card's pending loads) on the selected card in `t`
 * against `ledgerUrl`: {@link CardSyncClient} in one call.
 */
export async function syncCard(
  t: ApduTransport,
  ledgerUrl: string,
  options: { load?: boolean; signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<CardSyncResult> {
  const client = new CardSyncClient({ ledgerUrl, ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}) });
  const call = options.signal ? { signal: options.signal } : {};
  if (!options.load) return client.sync(t, call);
  const r = await client.load(t, undefined, call);
  if (!r.ok) {
    const { step: _step, ...refusal } = r;
    return refusal;
  }
  return { ok: true, receipt: r.receipt, summary: r.summary };
}
