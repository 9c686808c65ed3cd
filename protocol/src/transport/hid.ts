/**
 * The host side of the HID framing (64-byte reports with channel, tag and
 * sequence; `HidFramer`) as an {@link ApduTransport}, over any
 * {@link HidReportChannel} (a `node-hid` device, a simulated wallet).
 *
 * HID has no retransmission (USB checks each report's integrity): a report
 * that breaks the framing fails the exchange with `TransportLinkError`, no
 * complete answer within the time limit with `TransportTimeoutError`. Reports
 * left over from an earlier, failed exchange (continuation reports, sequence
 * > 0) that arrive before the first report of this exchange's answer are
 * skipped and counted.
 *
 * @module
 */
import type { AbortSignalLike, ApduTransport, TransmitOptions } from '../apdu/exchange.ts';
import { throwIfAborted } from '../apdu/exchange.ts';
import { DtError } from '../errors.ts';
import { HID_PACKET_SIZE, HidFramer } from '../framing/hid.ts';
import { TransportError, TransportLinkError, TransportTimeoutError } from './errors.ts';
import { ExchangeGuard } from './guard.ts';
import { LocalAbort, type TransportTimers } from './timers.ts';

/**
 * A USB HID device as the host sees it: fixed-size reports in and out
 * (without a report-id prefix). The terminal's `node-hid` adapter and the
 * simulator's `VirtualHidCard` implement it.
 */
export interface HidReportChannel {
  /** Sends one output report. */
  write(report: Uint8Array): Promise<void> | void;
  /**
   * Resolves with the next input report; rejects with the signal's reason
   * when it aborts, and with a `CardRemovedError` once the device is gone.
   */
  read(options?: { signal?: AbortSignalLike }): Promise<Uint8Array>;
}

/** Options of {@link HidHostTransport}. */
export interface HidHostOptions {
  /** The host's timers (`nodeTimers` from `@dt/protocol/native` on Node). */
  readonly timers: TransportTimers;
  /** Channel id written in every report (default 0x0101). */
  readonly channel?: number;
  /** Report size (default 64). */
  readonly packetSize?: number;
  /** Time allowed for one whole answer, ms (default 10000). */
  readonly timeoutMs?: number;
  /** Name in errors (default `hid`). */
  readonly name?: string;
}

/**
 * The host side of the HID framing as an `ApduTransport`. One exchange at a
 * time: a concurrent call is refused with `TransportBusyError`. Errors of the
 * device channel that are not typed transport errors are reported as
 * `TransportLinkError` (they are I/O failures); an aborted signal rejects
 * with its reason.
 */
export class HidHostTransport implements ApduTransport {
  readonly #device: HidReportChannel;
  readonly #framer: HidFramer;
  readonly #timers: TransportTimers;
  readonly #timeoutMs: number;
  readonly #guard: ExchangeGuard;
  readonly #name: string;
  /** Reports of earlier, failed exchanges skipped before an answer started (for tests and logs). */
  staleReports = 0;

  /** Talks to `device` on `options.channel`. */
  constructor(device: HidReportChannel, options: HidHostOptions) {
    this.#device = device;
    this.#framer = new HidFramer(options.channel ?? 0x0101, options.packetSize ?? HID_PACKET_SIZE);
    this.#timers = options.timers;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#name = options.name ?? 'hid';
    this.#guard = new ExchangeGuard(this.#name);
  }

  /** {@inheritDoc ApduTransport.transmit} */
  async transmit(apdu: Uint8Array, options: TransmitOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    return this.#guard.run(async () => {
      const limit = new LocalAbort(options.signal);
      const timer = this.#timers.schedule(
        () => limit.abort(new TransportTimeoutError(`no HID answer from ${this.#name} within ${this.#timeoutMs} ms`, this.#timeoutMs)),
        this.#timeoutMs,
      );
      try {
        this.#framer.reset();
        for (const report of this.#framer.frame(apdu)) await this.#io(() => this.#device.write(report), limit, 'write');
        let started = false;
        for (;;) {
          const report = await this.#io(() => this.#device.read({ signal: limit }), limit, 'read');
          // Until the first report of our answer arrives, continuation reports of an
          // earlier, failed exchange may still be queued: skip them.
          if (!started && report.length >= 5 && ((report[3]! << 8) | report[4]!) !== 0) {
            this.staleReports++;
            continue;
          }
          started = true;
          let message: Uint8Array | undefined;
          try {
            message = this.#framer.push(report);
          } catch (e) {
            throw new TransportLinkError(`HID framing error from ${this.#name}: ${(e as Error).message}`, linkDetails(e), e);
          }
          if (message !== undefined) return message;
        }
      } finally {
        this.#timers.cancel(timer);
        limit.dispose();
      }
    });
  }

  /** Runs one device call; once `limit` aborted its reason wins, untyped device errors become link errors. */
  async #io<T>(fn: () => Promise<T> | T, limit: LocalAbort, what: string): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (limit.aborted) throw limit.reason;
      if (e instanceof TransportError) throw e;
      throw new TransportLinkError(`HID ${what} failed on ${this.#name}: ${(e as Error)?.message ?? String(e)}`, {}, e);
    }
  }
}

function linkDetails(e: unknown): Record<string, string> {
  return e instanceof DtError ? { frame: e.code } : {};
}
