/**
 * Errors of the acquirer bridge. Every refusal the HTTP API gives carries one
 * of the stable codes of SPEC.md §8.3 (`AcquirerErrorCode`, defined in
 * `@dt/protocol`) in a JSON body `{code, message, details?}` (SPEC.md §8.4),
 * with the HTTP status that table assigns.
 *
 * @module
 */

import { ACQUIRER_ERROR_STATUS, AcquirerErrorCode } from '@dt/protocol';

// The code table is defined once in @dt/protocol (SPEC.md §8.3), where the terminal reads it too.
export { AcquirerErrorCode };
/** HTTP status of each code (`ACQUIRER_ERROR_STATUS` of `@dt/protocol`, under its historical name). */
export const HTTP_STATUS = ACQUIRER_ERROR_STATUS;

/**
 * A refusal with a stable code. `details` holds non-secret context (an index,
 * the protocol error code underneath); never key material.
 */
export class AcquirerError extends Error {
  readonly code: AcquirerErrorCode;
  readonly status: number;
  readonly details: Readonly<Record<string, string | number | boolean>>;

  constructor(code: AcquirerErrorCode, message: string, details: Record<string, string | number | boolean> = {}) {
    super(message);
    this.name = 'AcquirerError';
    this.code = code;
    this.status = HTTP_STATUS[code];
    this.details = details;
  }
}

/** True when `e` is an {@link AcquirerError}, optionally with the given code. */
export function isAcquirerError(e: unknown, code?: AcquirerErrorCode): e is AcquirerError {
  return e instanceof AcquirerError && (code === undefined || e.code === code);
}
