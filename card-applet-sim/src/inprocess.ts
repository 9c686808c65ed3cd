/**
 * In-process devices for unit tests: the simulated card behind the toolkit's
 * one device interface ({@link ApduTransport}) directly, or as a USB HID
 * wallet ({@link VirtualHidCard}).
 *
 * No virtual HID devices exist on the machines this runs on, so the HID path
 * is exercised with {@link VirtualHidCard}: a device that speaks the protocol's
 * HID framing (`makeBlocks` / `reduceResponse`) with a simulated card behind
 * it, behind the protocol's `HidReportChannel`. The host side is the
 * protocol's `HidHostTransport`, the one the terminal ships.
 *
 * @module
 */

import {
  AbortError,
  CardRemovedError,
  DtError,
  ErrorCode,
  ExchangeGuard,
  HID_PACKET_SIZE,
  isComplete,
  makeBlocks,
  reduceResponse,
  throwIfAborted,
} from '@dt/protocol';
import type { AbortSignalLike, ApduTransport, HidAccumulator, HidReportChannel, TransmitOptions } from '@dt/protocol';
import type { SimulatedCard } from './card.ts';
import { isPowerCut } from './faults.ts';

/** Options of {@link InProcessTransport}. */
export interface InProcessTransportOptions {
  /**
   * Power the card on when an APDU arrives for an unpowered card (default
   * true), as a reader does when a card enters its field. With false, such an
   * APDU fails with `CardNotPoweredError`.
   */
  autoPowerOn?: boolean;
}

/**
 * The simulated card as an {@link ApduTransport}: each `transmit` hands one
 * raw command APDU to the card and resolves with its raw response APDU.
 * One exchange at a time; a concurrent call rejects with the protocol's
 * `TransportBusyError`. A power cut rejects the call with the card's
 * `PowerCutError` (a `CardRemovedError`: the command in flight got no
 * answer); the next call powers the card up again.
 *
 * @example
 * const transport = new InProcessTransport(card);
 * const fci = await transmitOk(transport, selectCommand());
 */
export class InProcessTransport implements ApduTransport {
  readonly #card: SimulatedCard;
  readonly #autoPowerOn: boolean;
  readonly #guard = new ExchangeGuard('in-process card');

  /** Wraps `card`. */
  constructor(card: SimulatedCard, options: InProcessTransportOptions = {}) {
    this.#card = card;
    this.#autoPowerOn = options.autoPowerOn ?? true;
  }

  /** The card behind this transport. */
  get card(): SimulatedCard {
    return this.#card;
  }

  /** {@inheritDoc ApduTransport.transmit} */
  async transmit(apdu: Uint8Array, options: TransmitOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    return this.#guard.run(async () => {
      if (!this.#card.powered && this.#autoPowerOn) this.#card.powerOn();
      const opts: { signal?: AbortSignalLike } = {};
      if (options.signal !== undefined) opts.signal = options.signal;
      return this.#card.transmit(apdu, opts);
    });
  }
}

// ---------------------------------------------------------------------------
// HID
// ---------------------------------------------------------------------------

/** Options of {@link VirtualHidCard}. */
export interface VirtualHidCardOptions {
  /** Report size (default 64). */
  packetSize?: number;
}

/**
 * A simulated hardware wallet on USB HID: reassembles command APDUs from
 * output reports, runs them on the card, and queues the response APDU as
 * input reports on the same channel. Reports that break the framing rules
 * discard the partial message (the host times out), as firmware does.
 *
 * The card's fault plan applies: `dropFrame`/`corruptFrame` count input
 * reports the device sends; a power cut disconnects the device (pending and
 * later reads and writes reject with the protocol's `CardRemovedError`) until
 * {@link reconnect} plugs it in again.
 */
export class VirtualHidCard implements HidReportChannel {
  readonly #card: SimulatedCard;
  readonly #packetSize: number;
  #acc: HidAccumulator | undefined;
  #channel = -1;
  readonly #queue: Uint8Array[] = [];
  #waiters: { resolve: (r: Uint8Array) => void; reject: (e: unknown) => void }[] = [];
  #connected = true;
  #processing: Promise<void> = Promise.resolve();
  /** Framing errors seen on output reports, for tests and logs. */
  readonly errors: DtError[] = [];

  /** Plugs in a device with `card` behind it (powered on at once, as USB powers it). */
  constructor(card: SimulatedCard, options: VirtualHidCardOptions = {}) {
    this.#card = card;
    this.#packetSize = options.packetSize ?? HID_PACKET_SIZE;
    if (!card.powered) card.powerOn();
  }

  /** True while plugged in. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Plugs the device in again after a power cut (fresh power-up of the card). */
  reconnect(): void {
    this.#acc = undefined;
    this.#queue.length = 0;
    this.#card.powerOn();
    this.#connected = true;
  }

  /** Receives one output report from the host. */
  async write(report: Uint8Array): Promise<void> {
    if (!this.#connected) throw new CardRemovedError('HID device disconnected');
    if (report.length !== this.#packetSize) {
      throw new DtError(ErrorCode.FRAME_MALFORMED, `HID report of ${report.length} bytes, expected ${this.#packetSize}`, {
        length: report.length,
      });
    }
    const channel = (report[0]! << 8) | report[1]!;
    const sequence = (report[3]! << 8) | report[4]!;
    // A report with sequence 0 starts a new message on its channel.
    if (sequence === 0) {
      this.#acc = undefined;
      this.#channel = channel;
    }
    try {
      this.#acc = reduceResponse(this.#acc, report, this.#channel);
    } catch (e) {
      if (!(e instanceof DtError)) throw e;
      this.errors.push(e);
      this.#acc = undefined;
      return;
    }
    if (!isComplete(this.#acc)) return;
    const apdu = this.#acc!.data;
    const replyChannel = this.#channel;
    this.#acc = undefined;
    // Commands run one after the other, like the single-threaded firmware.
    this.#processing = this.#processing.then(() => this.#run(apdu, replyChannel));
  }

  /** Resolves with the next input report. */
  read(options: { signal?: AbortSignalLike } = {}): Promise<Uint8Array> {
    const { signal } = options;
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the abort reason, passed on as it came
    if (signal?.aborted) return Promise.reject(signal.reason ?? new AbortError());
    if (!this.#connected) return Promise.reject(new CardRemovedError('HID device disconnected'));
    const next = this.#queue.shift();
    if (next !== undefined) return Promise.resolve(next);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (r: Uint8Array) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(r);
        },
        reject: (e: unknown) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      const onAbort = (): void => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the abort reason, passed on as it came
        reject(signal?.reason ?? new AbortError());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  async #run(apdu: Uint8Array, channel: number): Promise<void> {
    let response: Uint8Array;
    try {
      response = await this.#card.transmit(apdu);
    } catch (e) {
      if (isPowerCut(e)) {
        this.#disconnect();
        return;
      }
      // The firmware failed in a way it did not map to a status word.
      response = Uint8Array.of(0x6f, 0x00);
    }
    for (const report of makeBlocks(channel, response, this.#packetSize)) {
      const out = this.#card.faults.onOutgoingFrame(report);
      if (out !== null) this.#deliver(out);
    }
  }

  #deliver(report: Uint8Array): void {
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter.resolve(report);
    else this.#queue.push(report);
  }

  #disconnect(): void {
    this.#connected = false;
    this.#queue.length = 0;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(new CardRemovedError('HID device disconnected (power cut)'));
  }
}
