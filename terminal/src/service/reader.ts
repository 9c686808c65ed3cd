/**
 * The service's reader: the terminal's transports (PC/SC, serial, HID) behind one
 * {@link CardReader} that follows the device coming and going.
 *
 * PC/SC follows readers and pcscd restarts itself ({@link PcscReaders}); a serial or HID
 * wallet is (re)opened when a tap needs it and closed again after a transport failure
 * (unplugged), so plugging it back in is all it takes.
 *
 * @module
 */
import { isTransportError, ReaderUnavailableError, TransportErrorCode } from '@dt/protocol';
import { TerminalError, TerminalErrorCode } from '../errors.ts';
import { PcscReaders, type PcscEvent } from '../transports/pcsc.ts';
import { openSerialReader } from '../transports/serial.ts';
import { openHidReader, type NodeHidDeviceLike } from '../transports/hid.ts';
import type { CardReader, CardSession, WaitOptions } from '../transports/reader.ts';
import type { ReaderStatus } from './service.ts';

/** A reader for the service, with its status and its close. */
export interface ServiceReader {
  readonly reader: CardReader;
  status(): ReaderStatus;
  close(): Promise<void>;
}

/** Options of {@link openServiceReader}. */
export interface ServiceReaderOptions {
  readonly apduTimeoutMs?: number;
  /** Serial: time to wait for the answer to one frame before retransmitting (default the transport's 2 s). */
  readonly frameTimeoutMs?: number;
  /** HID: opens the device at a path (default node-hid; tests inject a device layer). */
  readonly openHidDevice?: (path: string) => NodeHidDeviceLike;
}

/** Opens the service reader of `spec` (`pcsc`, `pcsc:<name part>`, `serial:<path>`, `hid:<path>`); `onChange` is told of reader events. */
export function openServiceReader(spec: string, onChange: () => void, options: ServiceReaderOptions = {}): ServiceReader {
  if (spec === 'pcsc' || spec.startsWith('pcsc:')) {
    const pcsc = new PcscReaders({
      ...(options.apduTimeoutMs ? { apduTimeoutMs: options.apduTimeoutMs } : {}),
      onEvent: (_e: PcscEvent) => onChange(),
    });
    const match = spec === 'pcsc' ? undefined : spec.slice(5);
    return {
      reader: pcsc.reader(match),
      status(): ReaderStatus {
        if (pcsc.contextError !== undefined) return { spec, state: 'down', detail: pcsc.contextError };
        const r = pcsc.list().find((x) => match === undefined || x.name.includes(match));
        if (!r) return { spec, state: 'absent' };
        return { spec, state: r.cardPresent ? 'card' : 'ready', name: r.name };
      },
      close: () => pcsc.close(),
    };
  }
  if (spec.startsWith('serial:') || spec.startsWith('hid:')) {
    const r = new ReopeningReader(spec, onChange, options);
    return { reader: r, status: () => r.status(), close: () => r.close() };
  }
  throw new TerminalError(TerminalErrorCode.CONFIG, `unknown reader spec ${spec} (pcsc, pcsc:<name>, serial:<path>, hid:<path>)`);
}

/**
 * A serial or HID wallet, opened when needed and reopened after it was unplugged. It is dropped
 * (status `absent`, `onChange`) as soon as the port or device reports that it went away, or an
 * exchange fails on the link (I/O error, device gone); the next tap opens it again.
 */
class ReopeningReader implements CardReader {
  #inner: CardReader | undefined;
  #opening: Promise<CardReader> | undefined;
  #error: string | undefined;

  constructor(
    readonly spec: string,
    readonly onChange: () => void,
    readonly options: ServiceReaderOptions = {},
  ) {}

  get name(): string {
    return this.spec;
  }

  status(): ReaderStatus {
    if (this.#inner) return { spec: this.spec, state: 'ready', name: this.spec };
    return { spec: this.spec, state: 'absent', ...(this.#error ? { detail: this.#error } : {}) };
  }

  #open(): Promise<CardReader> {
    if (this.#inner) return Promise.resolve(this.#inner);
    if (!this.#opening) {
      // Set before the open settles (a HID open is synchronous), cleared once it has.
      const opening = this.#connect().finally(() => {
        if (this.#opening === opening) this.#opening = undefined;
        this.onChange();
      });
      this.#opening = opening;
    }
    return this.#opening;
  }

  async #connect(): Promise<CardReader> {
    const o = this.options;
    // The port or device going away under an open reader drops that reader (not a newer one).
    const opened: { reader?: CardReader } = {};
    const onGone = (why: string): void => {
      if (opened.reader !== undefined && this.#inner === opened.reader) void this.#drop(why);
    };
    try {
      const r = this.spec.startsWith('serial:')
        ? await openSerialReader(this.spec.slice(7), {
            onGone,
            ...(o.apduTimeoutMs !== undefined ? { apduTimeoutMs: o.apduTimeoutMs } : {}),
            ...(o.frameTimeoutMs !== undefined ? { frameTimeoutMs: o.frameTimeoutMs } : {}),
          })
        : openHidReader(this.spec.slice(4), {
            onGone,
            ...(o.apduTimeoutMs !== undefined ? { apduTimeoutMs: o.apduTimeoutMs } : {}),
            ...(o.openHidDevice ? { openDevice: o.openHidDevice } : {}),
          });
      opened.reader = r;
      this.#inner = r;
      this.#error = undefined;
      return r;
    } catch (e) {
      this.#error = (e as Error).message;
      throw new ReaderUnavailableError(`${this.spec}: ${this.#error}`, { reader: this.spec }, e);
    }
  }

  async waitForCard(options: WaitOptions = {}): Promise<CardSession> {
    const inner = await this.#open();
    const session = await inner.waitForCard(options);
    return {
      reader: session.reader,
      ...(session.atr ? { atr: session.atr } : {}),
      transmit: async (apdu, o) => {
        try {
          return await session.transmit(apdu, o);
        } catch (e) {
          // An I/O failure of the port: the device is gone; the next tap opens it again.
          // (HID reports an unplugged device as CARD_REMOVED: for a wallet on a cable it is the same.)
          if (
            isTransportError(e, TransportErrorCode.TRANSPORT_LINK) ||
            isTransportError(e, TransportErrorCode.READER_UNAVAILABLE) ||
            isTransportError(e, TransportErrorCode.CARD_REMOVED)
          )
            if (this.#inner === inner) void this.#drop((e as Error).message);
          throw e;
        }
      },
      release: () => session.release(),
    };
  }

  async #drop(why: string): Promise<void> {
    const r = this.#inner;
    if (!r) return;
    this.#inner = undefined;
    this.#error = why;
    this.onChange();
    await r?.close().catch(() => {});
  }

  async close(): Promise<void> {
    const r = this.#inner;
    this.#inner = undefined;
    await r?.close();
  }
}
