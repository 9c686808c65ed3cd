/**
 * Errors of the terminal package. Every error carries a stable `code`
 * (machine-readable, never changes) and non-secret `details`; PINs, keys and
 * card secrets never appear in messages. Reader and card failures are the
 * protocol's typed transport errors (`CardRemovedError`,
 * `TransportTimeoutError`, `TransportLinkError`, `TransportBusyError`,
 * `ReaderUnavailableError`, codes `CARD_REMOVED`, `TRANSPORT_TIMEOUT`,
 * `TRANSPORT_LINK`, `READER_BUSY`, `READER_UNAVAILABLE`), not terminal errors.
 *
 * @module
 */

/** Stable error codes of `@dt/terminal`. */
export const TerminalErrorCode = {
  /** A wait (card, PIN, tap, network) exceeded its time limit. */
  TIMEOUT: 'TIMEOUT',
  /** The operation was cancelled through its AbortSignal. */
  ABORTED: 'ABORTED',
  /** The configuration file is missing, unreadable or invalid. */
  CONFIG: 'CONFIG',
  /** The terminal is not initialized (no key or no certificate). */
  NOT_INITIALIZED: 'NOT_INITIALIZED',
  /** The journal database is unusable or an invariant would be broken. */
  JOURNAL: 'JOURNAL',
  /** A network call to the acquirer failed (after its retries). */
  NETWORK: 'NETWORK',
  /** The acquirer answered something the terminal refuses to trust. */
  BAD_RESPONSE: 'BAD_RESPONSE',
  /** Not found (e.g. a receipt id). */
  NOT_FOUND: 'NOT_FOUND',
  /** The data directory is held by another dt-pos process (`dt-pos.lock`). */
  LOCKED: 'LOCKED',
  /** A void or refund the terminal's own rules refuse (`details.reason`: an `AdjustmentRefusal`); nothing was recorded. */
  REFUSED: 'REFUSED',
} as const;
/** A terminal error code. */
export type TerminalErrorCode = (typeof TerminalErrorCode)[keyof typeof TerminalErrorCode];

/**
 * Base error of `@dt/terminal`. The `message` says what happened and never
 * repeats the `code`: whoever shows the error prints `code: message` once
 * (a message that embedded its code came out as `BAD_RESPONSE: BAD_RESPONSE: …`
 * wherever both were printed, as `dt-pos sync` does for each problem).
 */
export class TerminalError extends Error {
  /** Stable code, see {@link TerminalErrorCode}. */
  readonly code: TerminalErrorCode;
  /** Structured, non-secret context. */
  readonly details: Readonly<Record<string, string | number | boolean>>;

  /** Builds the error; `cause` is kept for diagnostics. */
  constructor(code: TerminalErrorCode, message: string, details: Record<string, string | number | boolean> = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'TerminalError';
    this.code = code;
    this.details = details;
  }
}

/** A wait timed out. */
export class TimeoutError extends TerminalError {
  /** Builds the error; `what` names the wait (e.g. "card", "apdu", "pin"). */
  constructor(what: string, ms: number) {
    super(TerminalErrorCode.TIMEOUT, `${what} timed out after ${ms} ms`, { what, ms });
    this.name = 'TimeoutError';
  }
}

/** True when `e` is a {@link TerminalError}, optionally with the given code. */
export function isTerminalError(e: unknown, code?: TerminalErrorCode): e is TerminalError {
  return e instanceof TerminalError && (code === undefined || e.code === code);
}
