/**
 * Hardware wallets on a serial line (UART, USB CDC-ACM) through `serialport`,
 * with the protocol's COBS + CRC-32 framing (`encodeFrame`,
 * `SerialFrameDecoder`).
 *
 * Link rules (protocol SPEC, serial framing): every COMMAND frame carries a
 * sequence number and is answered by a RESPONSE (or an ERROR/NAK) with the
 * same number. On a NAK for a damaged frame, or when no answer comes within
 * the frame timeout, the host sends the SAME frame again (same seq, same
 * bytes): the device answers a retransmission from its cache without running
 * the command twice, so retrying is safe even for PAY. A NAK "busy" is
 * retried after a pause. Frames with another seq are stale and ignored.
 *
 * @module
 */
import { createRequire } from 'node:module';
import {
  encodeFrame,
  SERIAL_FRAME_TYPE,
  SERIAL_NAK_REASON,
  SerialFrameDecoder,
  type ApduTransport,
  type SerialFrame,
  type TransmitOptions,
} from '@dt/protocol';
import { TerminalError, TerminalErrorCode } from '../errors.ts';
import { abortReason, checkAborted } from '../util/abort.ts';
import { TransportReader, type CardReader } from './reader.ts';

/** The byte stream under the framing (a `serialport` SerialPort, or a test double). */
export interface SerialLink {
  write(bytes: Uint8Array): void;
  /** Registers the receiver of incoming bytes; returns an unsubscribe function. */
  onData(listener: (chunk: Uint8Array) => void): () => void;
  close(): Promise<void>;
}

/** Opens `path` with the `serialport` package (8N1, raw). */
export async function openSerialPort(path: string, baudRate = 115_200): Promise<SerialLink> {
  const require = createRequire(import.meta.url);
  const { SerialPort } = require('serialport') as typeof import('serialport');
  const port = new SerialPort({ path, baudRate, autoOpen: false });
  await new Promise<void>((resolve, reject) =>
    port.open((e) =>
      e ? reject(new TerminalError(TerminalErrorCode.READER_UNAVAILABLE, `cannot open ${path}: ${e.message}`, { path }, e)) : resolve(),
    ),
  );
  return {
    write: (b) => {
      port.write(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    },
    onData(listener) {
      const h = (c: Buffer): void => listener(new Uint8Array(c));
      port.on('data', h);
      return () => port.off('data', h);
    },
    close: () => new Promise<void>((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve())),
  };
}

/** Options of {@link SerialWalletTransport}. */
export interface SerialWalletOptions {
  /** Time to wait for the answer to one frame before retransmitting (default 2000 ms). */
  readonly frameTimeoutMs?: number;
  /** Transmissions of one frame before giving up (default 4). */
  readonly attempts?: number;
  /** Largest frame payload (default the protocol's 4096). */
  readonly maxPayload?: number;
}

/**
 * The host side of the serial framing as an `ApduTransport`. One command at
 * a time (the caller's reader lock guarantees it; a concurrent call is
 * refused by {@link TransportReader}'s guard).
 */
export class SerialWalletTransport implements ApduTransport {
  readonly #link: SerialLink;
  readonly #decoder: SerialFrameDecoder;
  readonly #frameTimeoutMs: number;
  readonly #attempts: number;
  readonly #maxPayload: number | undefined;
  #seq = 0;
  #waiter: ((f: SerialFrame) => void) | undefined;
  readonly #detach: () => void;

  /** Wraps an open link. */
  constructor(link: SerialLink, options: SerialWalletOptions = {}) {
    this.#link = link;
    this.#maxPayload = options.maxPayload;
    this.#decoder = new SerialFrameDecoder(options.maxPayload === undefined ? {} : { maxPayload: options.maxPayload });
    this.#frameTimeoutMs = options.frameTimeoutMs ?? 2000;
    this.#attempts = options.attempts ?? 4;
    this.#detach = link.onData((chunk) => {
      for (const r of this.#decoder.push(chunk)) {
        // Damaged frames from the device are dropped: the timeout resends our frame.
        if ('frame' in r) this.#waiter?.(r.frame);
      }
    });
  }

  /** Resets the link state (RESET frame, answered by RESET): call once after opening. */
  async reset(signal?: AbortSignal): Promise<void> {
    this.#seq = (this.#seq + 1) & 0xff;
    await this.#roundTrip({ type: SERIAL_FRAME_TYPE.RESET, seq: this.#seq, payload: new Uint8Array(0) }, SERIAL_FRAME_TYPE.RESET, signal);
  }

  /** {@inheritDoc ApduTransport.transmit} */
  async transmit(apdu: Uint8Array, options: TransmitOptions = {}): Promise<Uint8Array> {
    this.#seq = (this.#seq + 1) & 0xff;
    const f = await this.#roundTrip(
      { type: SERIAL_FRAME_TYPE.COMMAND, seq: this.#seq, payload: apdu },
      SERIAL_FRAME_TYPE.RESPONSE,
      options.signal as AbortSignal | undefined,
    );
    return f.payload;
  }

  /** Stops listening and closes the link. */
  async close(): Promise<void> {
    this.#detach();
    await this.#link.close();
  }

  async #roundTrip(frame: SerialFrame, expect: number, signal: AbortSignal | undefined): Promise<SerialFrame> {
    const wire = encodeFrame(frame, this.#maxPayload);
    for (let attempt = 1; attempt <= this.#attempts; attempt++) {
      checkAborted(signal);
      const answer = await this.#sendAndWait(wire, frame.seq, signal);
      if (answer === undefined) continue; // timeout: retransmit the same bytes
      if (answer.type === expect) return answer;
      if (answer.type === SERIAL_FRAME_TYPE.ERROR) {
        if (answer.payload[0] === SERIAL_NAK_REASON.BUSY) await new Promise((r) => setTimeout(r, 50));
        continue;
      }
    }
    throw new TerminalError(
      TerminalErrorCode.TRANSPORT,
      `serial device did not answer frame ${frame.seq} after ${this.#attempts} attempts`,
      { seq: frame.seq },
    );
  }

  #sendAndWait(wire: Uint8Array, seq: number, signal: AbortSignal | undefined): Promise<SerialFrame | undefined> {
    return new Promise((resolve, reject) => {
      const finish = (v: SerialFrame | undefined, e?: Error): void => {
        clearTimeout(timer);
        this.#waiter = undefined;
        signal?.removeEventListener('abort', onAbort);
        if (e) reject(e);
        else resolve(v);
      };
      const onAbort = (): void => finish(undefined, abortReason(signal!));
      const timer = setTimeout(() => finish(undefined), this.#frameTimeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      // Answers for an older seq are stale (a late reply to a retransmission): ignore them.
      this.#waiter = (f) => {
        if (f.seq === seq && f.type !== SERIAL_FRAME_TYPE.COMMAND) finish(f);
      };
      // A leading delimiter flushes any partial garbage at the device.
      const out = new Uint8Array(wire.length + 1);
      out.set(wire, 1);
      this.#link.write(out);
    });
  }
}

/** Opens a serial wallet at `path` and returns it as a {@link CardReader} (the wallet is "present" while connected). */
export async function openSerialReader(
  path: string,
  options: SerialWalletOptions & { baudRate?: number; apduTimeoutMs?: number } = {},
): Promise<CardReader> {
  const link = await openSerialPort(path, options.baudRate);
  const transport = new SerialWalletTransport(link, options);
  try {
    await transport.reset(AbortSignal.timeout((options.frameTimeoutMs ?? 2000) * (options.attempts ?? 4) + 500));
  } catch (e) {
    await transport.close();
    throw new TerminalError(TerminalErrorCode.READER_UNAVAILABLE, `no DT wallet answers on ${path}`, { path }, e);
  }
  return new TransportReader(`serial:${path}`, transport, {
    apduTimeoutMs: options.apduTimeoutMs ?? 20_000,
    onClose: () => transport.close(),
  });
}
