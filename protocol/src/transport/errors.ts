/**
 * Typed transport errors: what can go wrong between a host and a card, by
 * kind, so that whoever runs a tap tells a lost card (the card left the
 * field, the link broke, no answer in time) from a bug (an exchange started
 * while another was in flight, any untyped error).
 *
 * Unlike {@link DtError}, whose codes describe bytes (formats, signatures,
 * framing), these describe the device and the link; their messages do not
 * repeat the code (whoever prints one prints `code: message`). The codes are
 * stable strings.
 *
 * @module
 */

/** Stable codes of the transport errors. */
export const TransportErrorCode = {
  /** No card in the field, or the card (the device) went away during an exchange. */
  CARD_REMOVED: 'CARD_REMOVED',
  /** The device gave no (complete) answer in time. */
  TRANSPORT_TIMEOUT: 'TRANSPORT_TIMEOUT',
  /** The link failed: I/O error, damaged frames past the retries, a closed port. */
  TRANSPORT_LINK: 'TRANSPORT_LINK',
  /** An exchange (or a session) was started while another was in flight: one at a time. */
  READER_BUSY: 'READER_BUSY',
  /** The reader or device is not there (not plugged in, cannot be opened, service down). */
  READER_UNAVAILABLE: 'READER_UNAVAILABLE',
} as const;
/** A transport error code. */
export type TransportErrorCode = (typeof TransportErrorCode)[keyof typeof TransportErrorCode];

/** Base of the typed transport errors. */
export class TransportError extends Error {
  /** Stable code, see {@link TransportErrorCode}. */
  readonly code: TransportErrorCode;
  /** Structured, non-secret context (reader name, path, seq). Never APDU contents. */
  readonly details: Readonly<Record<string, string | number | boolean>>;

  /** Builds the error; `cause` is kept for diagnostics. */
  constructor(code: TransportErrorCode, message: string, details: Record<string, string | number | boolean> = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'TransportError';
    this.code = code;
    this.details = details;
  }
}

/** The card left the field (or the device was unplugged, or lost power) before it answered. */
export class CardRemovedError extends TransportError {
  /** Builds the error. */
  constructor(message = 'the card left the field', details: Record<string, string | number | boolean> = {}, cause?: unknown) {
    super(TransportErrorCode.CARD_REMOVED, message, details, cause);
    this.name = 'CardRemovedError';
  }
}

/** No (complete) answer within the transport's time limit. */
export class TransportTimeoutError extends TransportError {
  /** Builds the error; `ms` is the limit that passed. */
  constructor(message: string, ms: number, details: Record<string, string | number | boolean> = {}, cause?: unknown) {
    super(TransportErrorCode.TRANSPORT_TIMEOUT, message, { ...details, ms }, cause);
    this.name = 'TransportTimeoutError';
  }
}

/** The link failed (I/O error, frames that stay damaged after the retries, a framing violation). */
export class TransportLinkError extends TransportError {
  /** Builds the error. */
  constructor(message: string, details: Record<string, string | number | boolean> = {}, cause?: unknown) {
    super(TransportErrorCode.TRANSPORT_LINK, message, details, cause);
    this.name = 'TransportLinkError';
  }
}

/**
 * The one busy error of the toolkit: an exchange (or a card session) was
 * started on a transport or reader that already runs one. Refused at once,
 * never queued: a second exchange racing the first is a bug of the caller.
 */
export class TransportBusyError extends TransportError {
  /** Builds the error for the named reader or transport. */
  constructor(name: string) {
    super(TransportErrorCode.READER_BUSY, `reader ${name} is busy with another exchange`, { reader: name });
    this.name = 'TransportBusyError';
  }
}

/** The reader or device is not available (absent, cannot be opened, its service is down). */
export class ReaderUnavailableError extends TransportError {
  /** Builds the error. */
  constructor(message: string, details: Record<string, string | number | boolean> = {}, cause?: unknown) {
    super(TransportErrorCode.READER_UNAVAILABLE, message, details, cause);
    this.name = 'ReaderUnavailableError';
  }
}

/** True when `e` is a {@link TransportError}, optionally with the given code. */
export function isTransportError(e: unknown, code?: TransportErrorCode): e is TransportError {
  return e instanceof TransportError && (code === undefined || e.code === code);
}

/**
 * What a transport failure means:
 * - `card-removed`, `link`, `timeout`, `reader-unavailable`: the card (or the
 *   way to it) is gone; the command in flight may or may not have run (a lost
 *   card: present it again);
 * - `busy`: a second exchange raced the first (a bug of the caller).
 */
export type TransportFailure = 'card-removed' | 'link' | 'timeout' | 'busy' | 'reader-unavailable';

const FAILURE_OF_CODE: Readonly<Record<TransportErrorCode, TransportFailure>> = {
  CARD_REMOVED: 'card-removed',
  TRANSPORT_TIMEOUT: 'timeout',
  TRANSPORT_LINK: 'link',
  READER_BUSY: 'busy',
  READER_UNAVAILABLE: 'reader-unavailable',
};

/**
 * Classifies an error thrown by a transport: the kind of transport failure,
 * or `undefined` when it is no typed transport error (an abort reason, a
 * protocol error about the bytes, or a bug).
 */
export function transportFailureOf(e: unknown): TransportFailure | undefined {
  return e instanceof TransportError ? FAILURE_OF_CODE[e.code] : undefined;
}
