/**
 * Errors of the DT protocol layer.
 *
 * Every error the protocol throws is a {@link DtError} with a stable `code`
 * (listed in {@link ErrorCode} and in SPEC.md section "Error codes"). Messages
 * never contain key material, PINs or whole card secrets: they name fields,
 * lengths and limits only.
 *
 * @module
 */

/** Stable error codes. The string value is the wire/log form and never changes. */
export const ErrorCode = {
  // --- encoding ---
  CBOR_MALFORMED: 'CBOR_MALFORMED',
  CBOR_NON_DETERMINISTIC: 'CBOR_NON_DETERMINISTIC',
  /** A map holds the same key twice (RFC 8949 §5.6: such a map is not valid). */
  CBOR_DUPLICATE_KEY: 'CBOR_DUPLICATE_KEY',
  CBOR_FORBIDDEN_TYPE: 'CBOR_FORBIDDEN_TYPE',
  TOO_LARGE: 'TOO_LARGE',
  SCHEMA_MISSING_FIELD: 'SCHEMA_MISSING_FIELD',
  SCHEMA_UNKNOWN_FIELD: 'SCHEMA_UNKNOWN_FIELD',
  SCHEMA_WRONG_TYPE: 'SCHEMA_WRONG_TYPE',
  SCHEMA_OUT_OF_RANGE: 'SCHEMA_OUT_OF_RANGE',
  UNSUPPORTED_VERSION: 'UNSUPPORTED_VERSION',
  AMOUNT_OVERFLOW: 'AMOUNT_OVERFLOW',
  // --- COSE / signatures ---
  COSE_MALFORMED: 'COSE_MALFORMED',
  COSE_WRONG_ALGORITHM: 'COSE_WRONG_ALGORITHM',
  COSE_WRONG_CONTENT_TYPE: 'COSE_WRONG_CONTENT_TYPE',
  BAD_SIGNATURE: 'BAD_SIGNATURE',
  KEY_MISMATCH: 'KEY_MISMATCH',
  BAD_KEY: 'BAD_KEY',
  // --- certificates ---
  CERT_EXPIRED: 'CERT_EXPIRED',
  CERT_NOT_YET_VALID: 'CERT_NOT_YET_VALID',
  CERT_WRONG_ROLE: 'CERT_WRONG_ROLE',
  CERT_CHAIN_BROKEN: 'CERT_CHAIN_BROKEN',
  CERT_UNTRUSTED_ROOT: 'CERT_UNTRUSTED_ROOT',
  CERT_NOT_PERMITTED: 'CERT_NOT_PERMITTED',
  // --- transport / framing ---
  APDU_MALFORMED: 'APDU_MALFORMED',
  APDU_TOO_LONG: 'APDU_TOO_LONG',
  CARD_STATUS: 'CARD_STATUS',
  FRAME_MALFORMED: 'FRAME_MALFORMED',
  FRAME_CRC: 'FRAME_CRC',
  FRAME_SEQUENCE: 'FRAME_SEQUENCE',
  FRAME_CHANNEL: 'FRAME_CHANNEL',
  /** An exchange was cancelled through its AbortSignal before it completed. */
  ABORTED: 'ABORTED',
  // --- handover validation (SPEC.md §7.4, §8.1; see handover.ts) ---
  /** Step 1: the handover or one of its objects does not decode within its limits. */
  HANDOVER_MALFORMED: 'HANDOVER_MALFORMED',
  /** Step 1: the card certificate chain does not verify up to the pinned root at the transfer time. */
  HANDOVER_CHAIN: 'HANDOVER_CHAIN',
  /** Step 2: the card key id is on the revocation list. */
  CARD_REVOKED: 'CARD_REVOKED',
  /** Step 3: a provenance token is not ledger-signed, not owned by the card, of another currency, duplicated or expired. */
  TOKEN_INVALID: 'TOKEN_INVALID',
  /** Step 4: a transfer is not signed by the card key or names another card. */
  TRANSFER_SIGNATURE: 'TRANSFER_SIGNATURE',
  /** Step 4: counters are not consecutive or a `prev` link (or the receipt anchor) is wrong. */
  HISTORY_BROKEN: 'HISTORY_BROKEN',
  /** Step 5: an input is unknown or used twice, sums differ, or the outputs are not shaped as SPEC.md §7.3 says. */
  VALUE_NOT_CONSERVED: 'VALUE_NOT_CONSERVED',
  /** Step 5: a marked input is paid where its mark does not allow, marks are mixed, or an output's mark is wrong. */
  MARK_VIOLATION: 'MARK_VIOLATION',
  /** Step 6: the transfer does not pay this terminal. */
  WRONG_PAYEE: 'WRONG_PAYEE',
  /** Step 6: amount, currency, merchant, mcc, nonce or time differ from the terminal's request. */
  REQUEST_MISMATCH: 'REQUEST_MISMATCH',
  /** Step 7: a certified card limit (per payment, offline total, offline count) is exceeded. */
  LIMIT_EXCEEDED: 'LIMIT_EXCEEDED',
  /** Step 7: the amount is above the card's CVM limit but no cardholder verification was done. */
  CVM_REQUIRED: 'CVM_REQUIRED',
  /** The transfer time is after the latest time the validator accepts (a future-dated transfer). */
  TRANSFER_TIME: 'TRANSFER_TIME',
} as const;

/** A stable error code, see {@link ErrorCode}. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * Base error of the toolkit. `code` is stable and machine-readable; `details`
 * carries structured, non-secret context (field paths, sizes, limits).
 */
export class DtError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, string | number | boolean>>;

  constructor(code: ErrorCode, message: string, details: Record<string, string | number | boolean> = {}) {
    super(`${code}: ${message}`);
    this.name = 'DtError';
    this.code = code;
    this.details = details;
  }
}

/** True when `e` is a {@link DtError}, optionally with the given code. */
export function isDtError(e: unknown, code?: ErrorCode): e is DtError {
  return e instanceof DtError && (code === undefined || e.code === code);
}
