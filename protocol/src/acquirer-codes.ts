/**
 * The acquirer API's stable error codes (SPEC.md §8.3) and the HTTP status of
 * each: the one table the acquirer answers with and the terminal reads. Every
 * refusal of the acquirer's HTTP API carries one of these codes in its error
 * body (SPEC.md §8.4); the string is the wire form and never changes.
 *
 * @module
 */

/** Stable error codes of the acquirer API (SPEC.md §8.3). */
export const AcquirerErrorCode = {
  /** The body is not a well-formed signed Batch (bad CBOR, bad COSE, schema violation). */
  BATCH_MALFORMED: 'BATCH_MALFORMED',
  /** A handover inside the batch does not decode within the protocol limits. */
  HANDOVER_MALFORMED: 'HANDOVER_MALFORMED',
  /** A handover's transfer does not pay the terminal that submits the batch. */
  HANDOVER_WRONG_PAYEE: 'HANDOVER_WRONG_PAYEE',
  /** The batch signature does not verify with the terminal's certified key. */
  BATCH_BAD_SIGNATURE: 'BATCH_BAD_SIGNATURE',
  /** The terminal's certificate chain does not lead to the pinned issuer root; or (outcome reads) no batch of it was ever accepted. */
  TERMINAL_UNKNOWN: 'TERMINAL_UNKNOWN',
  /** The terminal was certified by an acquiring bank other than this acquirer's. */
  TERMINAL_WRONG_BANK: 'TERMINAL_WRONG_BANK',
  /** The terminal is revoked (by this acquirer, or listed in the ledger's revocation list). */
  TERMINAL_REVOKED: 'TERMINAL_REVOKED',
  /** The terminal's (or its bank's) certificate is expired or not yet valid. */
  TERMINAL_EXPIRED: 'TERMINAL_EXPIRED',
  /** Same terminal and sequence number as a stored batch, different bytes. */
  SEQ_CONFLICT: 'SEQ_CONFLICT',
  /** A sequence number not above the terminal's last accepted one (and not a resend). */
  SEQ_OUT_OF_ORDER: 'SEQ_OUT_OF_ORDER',
  /** Body larger than the configured limit. */
  BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  /** Content-Type other than application/cbor or application/cose. */
  UNSUPPORTED_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  /** A request that needs a signed authorization header came without one. */
  AUTH_REQUIRED: 'AUTH_REQUIRED',
  /** The authorization header is malformed, names another request, or its signature fails. */
  AUTH_INVALID: 'AUTH_INVALID',
  /** The authorization's time is too far from the acquirer's clock. */
  AUTH_STALE: 'AUTH_STALE',
  /** The authorization's nonce was already used. */
  AUTH_REPLAYED: 'AUTH_REPLAYED',
  /** Bad query or path parameter. */
  BAD_REQUEST: 'BAD_REQUEST',
  /** Unknown route. */
  NOT_FOUND: 'NOT_FOUND',
  /** The acquirer holds no verified revocation list yet (the ledger was never reachable). */
  CRL_UNAVAILABLE: 'CRL_UNAVAILABLE',
  /** The acquirer is overloaded (replay cache full); retry later. */
  BUSY: 'BUSY',
  /** Unexpected server error; nothing was stored. */
  INTERNAL: 'INTERNAL',
} as const;
/** One of the {@link AcquirerErrorCode} strings. */
export type AcquirerErrorCode = (typeof AcquirerErrorCode)[keyof typeof AcquirerErrorCode];

/** HTTP status of each acquirer code (SPEC.md §8.3). */
export const ACQUIRER_ERROR_STATUS: Readonly<Record<AcquirerErrorCode, number>> = {
  BATCH_MALFORMED: 400,
  HANDOVER_MALFORMED: 400,
  HANDOVER_WRONG_PAYEE: 400,
  BAD_REQUEST: 400,
  AUTH_REQUIRED: 401,
  AUTH_INVALID: 401,
  AUTH_STALE: 401,
  AUTH_REPLAYED: 401,
  BATCH_BAD_SIGNATURE: 403,
  TERMINAL_UNKNOWN: 403,
  TERMINAL_WRONG_BANK: 403,
  TERMINAL_REVOKED: 403,
  TERMINAL_EXPIRED: 403,
  NOT_FOUND: 404,
  SEQ_CONFLICT: 409,
  SEQ_OUT_OF_ORDER: 409,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  INTERNAL: 500,
  CRL_UNAVAILABLE: 503,
  BUSY: 503,
};
