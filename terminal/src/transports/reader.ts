/**
 * Readers and card sessions on top of the toolkit's one device interface
 * (`ApduTransport` from `@dt/protocol`).
 *
 * A {@link CardReader} waits for a card and hands out one {@link CardSession}
 * at a time (a second caller gets the protocol's `TransportBusyError`); a
 * session is an `ApduTransport` that runs one APDU at a time (a concurrent
 * `transmit` also gets `TransportBusyError`), each within a time limit
 * (`TransportTimeoutError`). Both guards are the protocol's `ExchangeGuard`.
 * PC/SC, serial and HID adapters implement `CardReader`;
 * {@link TransportReader} turns any always-present transport (a wallet on a
 * cable, an in-process simulated card) into one.
 *
 * @module
 */
import { ExchangeGuard, TransportTimeoutError, type ApduTransport, type TransmitOptions } from '@dt/protocol';
import { checkAborted, raceAbort, withDeadline } from '../util/abort.ts';

/** Options of {@link CardReader.waitForCard}. */
export interface WaitOptions {
  readonly signal?: AbortSignal;
  /** Time allowed for a card to appear (default: no limit besides the signal). */
  readonly timeoutMs?: number;
}

/** A card in the field (or a connected wallet), usable for one transaction. */
export interface CardSession extends ApduTransport {
  /** Name of the reader the card is on. */
  readonly reader: string;
  /** The card's ATR when the transport reports one. */
  readonly atr?: Uint8Array;
  /** Ends the session (the reader can serve the next one). Idempotent. */
  release(): Promise<void>;
}

/** A reader (or a wallet port) that can present cards. */
export interface CardReader {
  /** Human-readable reader name. */
  readonly name: string;
  /** Waits until a card is present; rejects with `TransportBusyError` while another session is open. */
  waitForCard(options?: WaitOptions): Promise<CardSession>;
  /** Stops the reader and frees the device. */
  close(): Promise<void>;
}

/**
 * Wraps a transport so that a concurrent `transmit` is refused with
 * `TransportBusyError` and every `transmit` has a time limit
 * (`TransportTimeoutError`).
 */
export class GuardedTransport implements ApduTransport {
  readonly #inner: ApduTransport;
  readonly #guard: ExchangeGuard;
  readonly #timeoutMs: number;

  /** `timeoutMs` bounds each APDU (default 5 s). */
  constructor(inner: ApduTransport, readerName: string, timeoutMs = 5000) {
    this.#inner = inner;
    this.#guard = new ExchangeGuard(readerName);
    this.#timeoutMs = timeoutMs;
  }

  /** {@inheritDoc ApduTransport.transmit} */
  async transmit(apdu: Uint8Array, options: TransmitOptions = {}): Promise<Uint8Array> {
    const parent = options.signal as AbortSignal | undefined;
    checkAborted(parent);
    const ms = this.#timeoutMs;
    const name = this.#guard.name;
    return this.#guard.run(() =>
      withDeadline(
        parent,
        ms,
        'apdu',
        (signal) => this.#inner.transmit(apdu, { signal }),
        () => new TransportTimeoutError(`no answer from ${name} within ${ms} ms`, ms, { reader: name }),
      ),
    );
  }
}

/** Options of {@link TransportReader}. */
export interface TransportReaderOptions {
  /** Per-APDU time limit (default 5 s). */
  readonly apduTimeoutMs?: number;
  /** Called when a session is released (e.g. to close a port). */
  readonly onRelease?: () => Promise<void> | void;
  /** Called by {@link CardReader.close}. */
  readonly onClose?: () => Promise<void> | void;
}

/**
 * A reader whose "card" is always present: a hardware wallet on a serial or
 * HID cable, or an in-process simulated card in tests.
 */
export class TransportReader implements CardReader {
  readonly #transport: ApduTransport;
  readonly #sessions: ExchangeGuard;
  readonly #opts: TransportReaderOptions;

  /** Wraps `transport` under `name`. */
  constructor(
    readonly name: string,
    transport: ApduTransport,
    options: TransportReaderOptions = {},
  ) {
    this.#transport = new GuardedTransport(transport, name, options.apduTimeoutMs ?? 5000);
    this.#sessions = new ExchangeGuard(name);
    this.#opts = options;
  }

  /** {@inheritDoc CardReader.waitForCard} */
  async waitForCard(options: WaitOptions = {}): Promise<CardSession> {
    checkAborted(options.signal);
    this.#sessions.acquire();
    let released = false;
    const transport = this.#transport;
    const sessions = this.#sessions;
    const onRelease = this.#opts.onRelease;
    return {
      reader: this.name,
      transmit: (apdu, o) => transport.transmit(apdu, o),
      async release() {
        if (released) return;
        released = true;
        sessions.release();
        await onRelease?.();
      },
    };
  }

  /** {@inheritDoc CardReader.close} */
  async close(): Promise<void> {
    await this.#opts.onClose?.();
  }
}

/** Waits for a card with an optional time limit (helper for adapters). */
export function waitWithTimeout<T>(p: (signal: AbortSignal | undefined) => Promise<T>, options: WaitOptions, what = 'card'): Promise<T> {
  if (options.timeoutMs === undefined) return raceAbort(p(options.signal), options.signal);
  return withDeadline(options.signal, options.timeoutMs, what, (s) => p(s));
}
