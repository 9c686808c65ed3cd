/**
 * The three ways an HTTP call of the DT clients fails (`httpRequest`):
 *
 * - {@link HttpUnreachableError}: no answer (connection refused or reset, DNS,
 *   the time limit, a body cut off mid-way). Retrying may help.
 * - {@link HttpRefusedError}: the server answered a status other than 2xx, with
 *   the stable `code` of its error body (SPEC.md §8.4) and its `detail` apart.
 *   Retrying helps only for a transient status (5xx, 429, 408); a 4xx is a
 *   business refusal and the same request gets the same answer.
 * - {@link HttpBadResponseError}: a 2xx answer that cannot be used (larger than
 *   the caller's bound, or not the object asked for). Not retried.
 *
 * @module
 */

/** No answer from the server: network failure, time limit, or a body that stopped arriving. */
export class HttpUnreachableError extends Error {
  /** The request's URL without its query. */
  readonly url: string;
  /** True when the request's time limit ran out. */
  readonly timedOut: boolean;

  constructor(url: string, message: string, options: { timedOut?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HttpUnreachableError';
    this.url = url;
    this.timedOut = options.timedOut ?? false;
  }
}

/** An HTTP status is transient when the same request may succeed later: 5xx, 429 Too Many Requests, 408 Request Timeout. */
export function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

/** The server refused: its HTTP status and the stable code of its error body (SPEC.md §8.4). */
export class HttpRefusedError extends Error {
  /** HTTP status of the answer. */
  readonly status: number;
  /** The stable code (SPEC.md §8.2, §8.3), or `HTTP_<status>` when the body carries none. */
  readonly code: string;
  /** The failed check's own code or words (e.g. the §8.1 code of a refused sync history), apart from `code`. */
  readonly detail: string | undefined;
  /** The batch or chain position the refusal names, when there is one. */
  readonly index: number | undefined;
  /** The server's own words (`message` of the error body), if any. */
  readonly serverMessage: string | undefined;

  constructor(status: number, body: { code: string; message?: string; detail?: string; index?: number }) {
    super(`HTTP ${status} ${body.code}${body.message ? `: ${body.message}` : ''}${body.detail ? ` (${body.detail})` : ''}`);
    this.name = 'HttpRefusedError';
    this.status = status;
    this.code = body.code;
    this.detail = body.detail;
    this.index = body.index;
    this.serverMessage = body.message;
  }

  /** True when retrying may help ({@link isTransientStatus}); false for a business refusal (other 4xx). */
  get transient(): boolean {
    return isTransientStatus(this.status);
  }
}

/** Why a 2xx answer was not usable. */
export type HttpBadResponseReason = 'TOO_LARGE' | 'MALFORMED';

/** A 2xx answer that cannot be used: over the caller's byte bound, or not the object asked for. */
export class HttpBadResponseError extends Error {
  /** HTTP status of the answer. */
  readonly status: number;
  readonly reason: HttpBadResponseReason;

  constructor(status: number, reason: HttpBadResponseReason, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HttpBadResponseError';
    this.status = status;
    this.reason = reason;
  }
}
