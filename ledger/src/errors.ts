/**
 * The ledger API's stable error codes and their HTTP statuses: ONE table
 * (SPEC.md §8.2 lists exactly these codes with these statuses; the test
 * `ledger/test/errors.test.ts` checks it). Every refusal the HTTP API gives is
 * the JSON body `{code, message, detail?, index?}` built by
 * {@link errorBody}: `code` is always one of these codes and nothing else
 * replaces it; a check's own code (a §8.1 code of a refused sync history, a
 * certificate error under `ACQUIRER_AUTH`) goes in `detail`.
 *
 * A throw names a code (and a detail), never an HTTP status: the status is the
 * table's, looked up by {@link statusOf} when the error is made.
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
  NOT_BLOCKED: 'NOT_BLOCKED',
  TOO_EARLY: 'TOO_EARLY',
} as const;
export type LedgerErrorCode = (typeof LedgerErrorCode)[keyof typeof LedgerErrorCode];

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

/** The detail that names the refusal of a bank's load order (its signer is authenticated: 403, SPEC §8.2). */
export const LOAD_ORDER_DETAIL = 'LOAD_ORDER';
/** The detail that names the refusal of a bank's card block or restore request (SPEC §7.9; its signer is authenticated: 403). */
export const BANK_REQUEST_DETAIL = 'BANK_REQUEST';
/** The detail of a sync refused because the card synced concurrently (409: retry). */
export const CONCURRENT_SYNC_DETAIL = 'CONCURRENT_SYNC';

/** The HTTP status of a code, and the other status of the one case (named by its `detail`) that answers differently. */
export interface ErrorStatus {
  readonly status: number;
  readonly byDetail?: Readonly<Record<string, number>>;
}

/**
 * HTTP status of each code, in SPEC.md §8.2 order: one status per code, except that three
 * codes answer another status in one case, which the error's `detail` names: `BAD_SIGNATURE`
 * and `BANK_UNKNOWN` are 403 for a bank's load order (an authentication of the bank, detail
 * `LOAD_ORDER`), and `SYNC_INVALID` is 409 when the card synced concurrently (detail
 * `CONCURRENT_SYNC`: retry).
 */
export const LEDGER_ERROR_STATUS: { readonly [C in LedgerApiCode]: ErrorStatus } = {
  MALFORMED: { status: 400 },
  BATCH_INVALID: { status: 400 },
  TERMINAL_CHAIN: { status: 400 },
  BATCH_TIME: { status: 400 },
  BAD_SIGNATURE: { status: 400, byDetail: { [LOAD_ORDER_DETAIL]: 403, [BANK_REQUEST_DETAIL]: 403 } },
  CARD_CHAIN: { status: 400 },
  BANK_CHAIN: { status: 400 },
  SYNC_INVALID: { status: 400, byDetail: { [CONCURRENT_SYNC_DETAIL]: 409 } },
  ACQUIRER_AUTH: { status: 401 },
  ACQUIRER_STALE: { status: 401 },
  ACQUIRER_REPLAYED: { status: 401 },
  ACQUIRER_UNKNOWN: { status: 403 },
  ACQUIRER_NOT_PERMITTED: { status: 403 },
  BANK_UNKNOWN: { status: 404, byDetail: { [LOAD_ORDER_DETAIL]: 403, [BANK_REQUEST_DETAIL]: 403 } },
  NOT_PERMITTED: { status: 403 },
  CARD_REVOKED: { status: 403 },
  CARD_UNKNOWN: { status: 404 },
  DOUBLE_SPEND: { status: 409 },
  ID_CONFLICT: { status: 409 },
  INSUFFICIENT_ALLOCATION: { status: 409 },
  NOT_BLOCKED: { status: 409 },
  TOO_EARLY: { status: 409 },
  TOO_LARGE: { status: 413 },
  UNSUPPORTED_MEDIA_TYPE: { status: 415 },
  BUSY: { status: 503 },
  INTERNAL: { status: 500 },
};

/** True when `code` is one of the stable codes of {@link LEDGER_ERROR_STATUS}. */
export function isLedgerApiCode(code: unknown): code is LedgerApiCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(LEDGER_ERROR_STATUS, code);
}

/** The HTTP status of `code` with `detail`, from {@link LEDGER_ERROR_STATUS}. */
export function statusOf(code: LedgerApiCode, detail?: string): number {
  const s = LEDGER_ERROR_STATUS[code];
  const other =
    detail !== undefined && s.byDetail && Object.prototype.hasOwnProperty.call(s.byDetail, detail) ? s.byDetail[detail] : undefined;
  return other ?? s.status;
}

/** What a refusal says beyond its code: a check's own code, and the batch (or chain) position it is about. Never secrets. */
export interface LedgerErrorDetails {
  readonly detail?: string;
  readonly index?: number;
}

/**
 * A refused request of the ledger core: nothing was changed (except, for DOUBLE_SPEND, the recorded
 * proof and revocation). It carries a code and details; its status is the table's.
 */
export class LedgerError extends Error {
  readonly status: number;
  constructor(
    readonly code: LedgerErrorCode,
    message: string,
    readonly details: LedgerErrorDetails = {},
  ) {
    super(`${code}: ${message}`);
    this.name = 'LedgerError';
    this.status = statusOf(code, details.detail);
  }
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
    this.status = statusOf(code, detail);
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
 * (a {@link LedgerError}'s detail code goes to `detail`, never over `code`), the status is the
 * table's; `INTERNAL` (and anything without a stable code) is `500 INTERNAL` with no details.
 */
export function errorBody(err: LedgerError | LedgerApiError): { status: number; body: LedgerErrorBody } {
  if (!isLedgerApiCode(err.code) || err.code === LedgerApiCode.INTERNAL)
    return { status: statusOf(LedgerApiCode.INTERNAL), body: { code: LedgerApiCode.INTERNAL, message: 'internal error' } };
  const { detail, index } = err instanceof LedgerApiError ? err : err.details;
  return {
    status: statusOf(err.code, detail),
    body: { code: err.code, message: err.message, ...(detail !== undefined ? { detail } : {}), ...(index !== undefined ? { index } : {}) },
  };
}
