/**
 * The host side of the serial framing (protocol SPEC, serial framing: COBS +
 * CRC-32 frames with a sequence number) as an {@link ApduTransport}, over any
 * {@link ByteChannel} (a `serialport` port, a tty, an in-memory wire).
 *
 * Link rules: every COMMAND frame carries the next seq and is answered by a
 * RESPONSE (or an ERROR/NAK) with the same seq. On a NAK, a damaged frame
 * while waiting, or no answer within the frame timeout, the host sends the
 * SAME frame again (same seq, same bytes): the device answers a
 * retransmission from its cache without running the command twice, so
 * retrying is safe even for PAY. A NAK busy (the device still runs the
 * command) makes the host listen one more frame timeout for the answer
 * before it resends. Frames with another seq are stale (late answers to an
 * earlier attempt) and ignored. Every send starts with a delimiter, which
 * flushes any partial garbage at the device.
 *
 * @module
 */
import type { AbortSignalLike, ApduTransport, TransmitOptions } from '../apdu/exchange.ts';
import { AbortError, throwIfAborted } from '../apdu/exchange.ts';
import { SERIAL_FRAME_TYPE, SERIAL_NAK_REASON, SerialFrameDecoder, encodeFrame } from '../framing/serial.ts';
import type { SerialFrame, SerialFrameType } from '../framing/serial.ts';
import { TransportLinkError } from './errors.ts';
import { ExchangeGuard } from './guard.ts';
import type { TransportTimers } from './timers.ts';

/** A byte stream in both directions (serial port, pty, in-memory pipe). */
export interface ByteChannel {
  /** Queues bytes for sending. */
  write(bytes: Uint8Array): void;
  /** Registers the receiver of incoming chunks; returns a function that unregisters it. */
  onData(listener: (chunk: Uint8Array) => void): () => void;
}

/** Options of {@link SerialHostTransport}. */
export interface SerialHostOptions {
  /** The host's timers (`nodeTimers` from `@dt/protocol/native` on Node). */
  readonly timers: TransportTimers;
  /** Time to wait for the answer to one frame before retransmitting, ms (default 2000). */
  readonly frameTimeoutMs?: number;
  /** Transmissions of one frame before giving up (default 4). */
  readonly attempts?: number;
  /** Largest frame payload (default the protocol's 4096). */
  readonly maxPayload?: number;
  /** Name in errors (default `serial`). */
  readonly name?: string;
}

type Wait = { kind: 'answer'; frame: SerialFrame } | { kind: 'nak' | 'corrupt' | 'timeout' | 'busy' };

/**
 * The host side of the serial framing as an `ApduTransport`. One exchange at
 * a time: a concurrent call is refused with `TransportBusyError`. No answer
 * after all attempts: `TransportLinkError`. An aborted signal rejects with
 * its reason.
 */
export class SerialHostTransport implements ApduTransport {
  readonly #channel: ByteChannel;
  readonly #decoder: SerialFrameDecoder;
  readonly #timers: TransportTimers;
  readonly #frameTimeoutMs: number;
  readonly #attempts: number;
  readonly #maxPayload: number | undefined;
  readonly #guard: ExchangeGuard;
  readonly #detach: () => void;
  #seq = 0;
  #listener: ((r: { frame: SerialFrame } | { error: unknown }) => void) | undefined;
  /** Frames sent again after a NAK, a damaged answer or a timeout (for tests and logs). */
  retransmissions = 0;

  /** Listens on `channel` at once. */
  constructor(channel: ByteChannel, options: SerialHostOptions) {
    this.#channel = channel;
    this.#timers = options.timers;
    this.#maxPayload = options.maxPayload;
    this.#decoder = new SerialFrameDecoder(options.maxPayload === undefined ? {} : { maxPayload: options.maxPayload });
    this.#frameTimeoutMs = options.frameTimeoutMs ?? 2000;
    this.#attempts = options.attempts ?? 4;
    this.#guard = new ExchangeGuard(options.name ?? 'serial');
    this.#detach = channel.onData((chunk) => {
      for (const r of this.#decoder.push(chunk)) this.#listener?.(r);
    });
  }

  /** Resets the device's link state (RESET frame, answered by RESET): call once after opening; also a ping. */
  async reset(options: TransmitOptions = {}): Promise<void> {
    await this.#exchange(SERIAL_FRAME_TYPE.RESET, new Uint8Array(0), SERIAL_FRAME_TYPE.RESET, options.signal);
  }

  /** {@inheritDoc ApduTransport.transmit} */
  transmit(apdu: Uint8Array, options: TransmitOptions = {}): Promise<Uint8Array> {
    return this.#exchange(SERIAL_FRAME_TYPE.COMMAND, apdu, SERIAL_FRAME_TYPE.RESPONSE, options.signal);
  }

  /** Stops listening (the channel stays open; close it separately). */
  close(): void {
    this.#detach();
  }

  async #exchange(
    type: SerialFrameType,
    payload: Uint8Array,
    answerType: SerialFrameType,
    signal: AbortSignalLike | undefined,
  ): Promise<Uint8Array> {
    throwIfAborted(signal);
    return this.#guard.run(async () => {
      this.#seq = (this.#seq + 1) & 0xff;
      const seq = this.#seq;
      const encoded = encodeFrame({ type, seq, payload }, this.#maxPayload);
      // A leading delimiter flushes any partial garbage at the device.
      const wire = new Uint8Array(encoded.length + 1);
      wire.set(encoded, 1);
      let last: Wait['kind'] = 'timeout';
      for (let attempt = 1; attempt <= this.#attempts; attempt++) {
        throwIfAborted(signal);
        if (attempt > 1) this.retransmissions++;
        this.#channel.write(wire);
        let w = await this.#await(seq, answerType, signal);
        // Busy: the device runs the command; its answer (same seq) may still come.
        if (w.kind === 'busy') w = await this.#await(seq, answerType, signal);
        if (w.kind === 'answer') return w.frame.payload;
        last = w.kind;
      }
      throw new TransportLinkError(`serial device did not answer frame ${seq} after ${this.#attempts} attempts (last: ${last})`, {
        seq,
        attempts: this.#attempts,
        last,
      });
    });
  }

  /** Waits for the answer to `seq`: the frame, or why to retransmit. */
  #await(seq: number, answerType: number, signal: AbortSignalLike | undefined): Promise<Wait> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        this.#timers.cancel(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#listener = undefined;
      };
      const onAbort = (): void => {
        done();
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the abort reason, passed on as it came
        reject(signal?.reason ?? new AbortError());
      };
      const timer = this.#timers.schedule(() => {
        done();
        resolve({ kind: 'timeout' });
      }, this.#frameTimeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#listener = (r) => {
        let w: Wait | undefined;
        if ('error' in r)
          w = { kind: 'corrupt' }; // a damaged frame while we wait is most likely our answer
        else if (r.frame.seq !== seq)
          return; // stale: a late answer to an earlier frame
        else if (r.frame.type === answerType) w = { kind: 'answer', frame: r.frame };
        else if (r.frame.type === SERIAL_FRAME_TYPE.ERROR) w = { kind: r.frame.payload[0] === SERIAL_NAK_REASON.BUSY ? 'busy' : 'nak' };
        else return; // a COMMAND echoed back, or another type: not an answer
        done();
        resolve(w);
      };
    });
  }
}
