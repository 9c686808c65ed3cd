/**
 * The ledger API's stable error codes and their HTTP statuses: ONE table
 * (SPEC.md §8.2 lists exactly these codes with these statuses; the test
 * `ledger/test/errors.test.ts` checks it). Every refusal the HTTP API gives is
 * the JSON body `{code, message, detail?, index?}` built by
 * {@link errorBody}: `code` is always one of these codes and nothing else
 * replaces it; a check's own code (a §8.1 code of a refused sync history, a
 * certificate error under `ACQUIRER_AUTH`) goes in `detail`.
 *
 * @module
 */
/** Stable error codes of the ledger's API (HTTP 4xx bodies carry them). */
export const LedgerErrorCode = {
  MALFORMED: 'MALFORMED',
  BATCH_INVALID: 'BATCH_INVALID',
  TERMINAL_CHAIN: 'TERMINAL_CHAIN',
  BATCH_TIME: 'BATCH_TIME',
  CARD_UNKNOWN: 'CARD_UNKNOWN',
  CARD_REVOKED: 'CARD_REVOKED',
  BANK_UNKNOWN: 'BANK_UNKNOWN',
  BANK_CHAIN: 'BANK_CHAIN',
  NOT_PERMITTED: 'NOT_PERMITTED',
  BAD_SIGNATURE: 'BAD_SIGNATURE',
  SYNC_INVALID: 'SYNC_INVALID',
  DOUBLE_SPEND: 'DOUBLE_SPEND',
  INSUFFICIENT_ALLOCATION: 'INSUFFICIENT_ALLOCATION',
  ID_CONFLICT: 'ID_CONFLICT',
  CARD_CHAIN: 'CARD_CHAIN',
} as const;
export type LedgerErrorCode = (typeof LedgerErrorCode)[keyof typeof LedgerErrorCode];

/** A refused request: nothing was changed (except, for DOUBLE_SPEND, the recorded proof and revocation). */
export class LedgerError extends Error {
  constructor(
    readonly status: number,
    readonly code: LedgerErrorCode,
    message: string,
    readonly details: Record<string, string | number> = {},
  ) {
    super(`${code}: ${message}`);
    this.name = 'LedgerError';
  }
}

/** Every stable code of the ledger's HTTP API: the ledger core's codes plus those of the HTTP layer and acquirer authentication. */
export const LedgerApiCode = {
  ...LedgerErrorCode,
  ACQUIRER_AUTH: 'ACQUIRER_AUTH',
  ACQUIRER_STALE: 'ACQUIRER_STALE',
  ACQUIRER_REPLAYED: 'ACQUIRER_REPLAYED',
  ACQUIRER_UNKNOWN: 'ACQUIRER_UNKNOWN',
  ACQUIRER_NOT_PERMITTED: 'ACQUIRER_NOT_PERMITTED',
  TOO_LARGE: 'TOO_LARGE',
  UNSUPPORTED_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  BUSY: 'BUSY',
  INTERNAL: 'INTERNAL',
} as const;
export type LedgerApiCode = (typeof LedgerApiCode)[keyof typeof LedgerApiCode];

/**
 * HTTP status of each code, in SPEC.md §8.2 order. Three codes answer with different
 * statuses in different cases (listed most common first): `BAD_SIGNATURE` is 400 for a
 * batch or a sync request and 403 for a bank's load order (an authentication of the bank);
 * `SYNC_INVALID` is 400 for a request that fails a check and 409 when the card synced
 * concurrently (retry); `BANK_UNKNOWN` is 403 for a load order's signer and 404 for the
 * bank a card or an allocation names. Any other status given for a code is replaced by the first.
 */
export const LEDGER_ERROR_STATUS: { readonly [C in LedgerApiCode]: readonly [number, ...number[]] } = {
  MALFORMED: [400],
  BATCH_INVALID: [400],
  TERMINAL_CHAIN: [400],
  BATCH_TIME: [400],
  BAD_SIGNATURE: [400, 403],
  CARD_CHAIN: [400],
  BANK_CHAIN: [400],
  SYNC_INVALID: [400, 409],
  ACQUIRER_AUTH: [401],
  ACQUIRER_STALE: [401],
  ACQUIRER_REPLAYED: [401],
  ACQUIRER_UNKNOWN: [403],
  ACQUIRER_NOT_PERMITTED: [403],
  BANK_UNKNOWN: [403, 404],
  NOT_PERMITTED: [403],
  CARD_REVOKED: [403],
  CARD_UNKNOWN: [404],
  DOUBLE_SPEND: [409],
  ID_CONFLICT: [409],
  INSUFFICIENT_ALLOCATION: [409],
  TOO_LARGE: [413],
  UNSUPPORTED_MEDIA_TYPE: [415],
  BUSY: [503],
  INTERNAL: [500],
};

/** True when `code` is one of the stable codes of {@link LEDGER_ERROR_STATUS}. */
export function isLedgerApiCode(code: unknown): code is LedgerApiCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(LEDGER_ERROR_STATUS, code);
}

/**
 * A refusal of the HTTP layer (acquirer authentication, body checks): its status is the
 * table's. Nothing was changed when it is thrown.
 */
export class LedgerApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: LedgerApiCode,
    message: string,
    /** A check's own code (e.g. the certificate error under ACQUIRER_AUTH); never secrets. */
    readonly detail?: string,
    /** The batch (or chain) position the refusal is about. */
    readonly index?: number,
  ) {
    super(message);
    this.name = 'LedgerApiError';
    this.status = LEDGER_ERROR_STATUS[code][0];
  }
}

/** The JSON body of a refusal. */
export interface LedgerErrorBody {
  readonly code: LedgerApiCode;
  readonly message: string;
  readonly detail?: string;
  readonly index?: number;
}

/**
 * Status and body of an error the ledger's HTTP API answers: `code` is the stable code
 * (a {@link LedgerError}'s detail code, which the ledger core keeps in `details.code`,
 * goes to `detail`, never over `code`); a status the table does not allow for the code
 * becomes the table's first; an error without a stable code, or one the core raised with a 5xx
 * status, is `500 INTERNAL` with no details.
 */
export function errorBody(err: LedgerError | LedgerApiError): { status: number; body: LedgerErrorBody } {
  // An internal failure the core reports with a 5xx (e.g. its books disagree) is INTERNAL for clients, without details.
  if (!isLedgerApiCode(err.code) || (err.status >= 500 && err.code !== LedgerApiCode.BUSY))
    return { status: 500, body: { code: LedgerApiCode.INTERNAL, message: 'internal error' } };
  const allowed = LEDGER_ERROR_STATUS[err.code];
  const status = allowed.includes(err.status) ? err.status : allowed[0];
  let detail: string | undefined;
  let index: number | undefined;
  if (err instanceof LedgerApiError) {
    detail = err.detail;
    index = err.index;
  } else {
    const d = err.details as Record<string, unknown>;
    const dc = d.detail ?? d.code;
    if (typeof dc === 'string' || typeof dc === 'number') detail = String(dc);
    if (typeof d.index === 'number') index = d.index;
  }
  return {
    status,
    body: { code: err.code, message: err.message, ...(detail !== undefined ? { detail } : {}), ...(index !== undefined ? { index } : {}) },
  };
}
