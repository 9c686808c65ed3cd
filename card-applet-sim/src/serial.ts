/**
 * The simulated card on a serial line (a hardware wallet on a UART or USB
 * CDC port), with the protocol's COBS + CRC-32 framing (`encodeFrame`,
 * `SerialFrameDecoder`). The host side is the protocol's
 * `SerialHostTransport`, the one the terminal ships.
 *
 * Bytes move over a {@link ByteLink}: a tty device ({@link openTty}, e.g. one
 * end of a `socat` pty pair) or an in-memory pair ({@link createLinkPair}).
 *
 * Device rules (SPEC.md, serial framing): a COMMAND frame is answered by a
 * RESPONSE frame with the same seq; a frame that fails to decode is answered
 * by an ERROR (NAK) frame; a COMMAND with the same seq and payload as the one
 * answered last gets the previous RESPONSE again without running the command
 * twice; a COMMAND arriving while one is running gets NAK busy; RESET clears
 * the link state and is answered with RESET.
 *
 * @module
 */

import { openSync, closeSync, constants as fsc } from 'node:fs';
import { ReadStream, WriteStream } from 'node:tty';
import { DtError, SERIAL_FRAME_TYPE, SERIAL_NAK_REASON, SerialFrameDecoder, bytesEqual, encodeFrame, nakReasonFor } from '@dt/protocol';
import type { ByteChannel, SerialFrame } from '@dt/protocol';
import type { SimulatedCard } from './card.ts';
import { isPowerCut } from './faults.ts';

/** A bidirectional byte stream (serial port, pty, in-memory pipe): the protocol's `ByteChannel`, closable. */
export interface ByteLink extends ByteChannel {
  /** Closes the link; no more data is delivered. */
  close(): void;
}

/**
 * Two connected in-memory {@link ByteLink}s: bytes written to one arrive at
 * the other asynchronously (on a later macrotask), in order, like a wire.
 */
export function createLinkPair(): [ByteLink, ByteLink] {
  const make = (): { link: ByteLink; deliver: (c: Uint8Array) => void; peer?: { deliver: (c: Uint8Array) => void } } => {
    const listeners = new Set<(c: Uint8Array) => void>();
    let closed = false;
    const self: { link: ByteLink; deliver: (c: Uint8Array) => void; peer?: { deliver: (c: Uint8Array) => void } } = {
      deliver: (c) => {
        if (closed) return;
        for (const l of listeners) l(c);
      },
      link: {
        write: (bytes) => {
          if (closed) return;
          const copy = bytes.slice();
          setImmediate(() => self.peer?.deliver(copy));
        },
        onData: (l) => {
          listeners.add(l);
          return () => listeners.delete(l);
        },
        close: () => {
          closed = true;
          listeners.clear();
        },
      },
    };
    return self;
  };
  const a = make();
  const b = make();
  a.peer = b;
  b.peer = a;
  return [a.link, b.link];
}

/**
 * Opens a tty device (a serial port or a pty such as one end of
 * `socat -d -d pty,raw,echo=0,link=/tmp/card pty,raw,echo=0,link=/tmp/host`)
 * as a {@link ByteLink}, in raw mode (no echo, no line editing, all 256
 * byte values pass).
 *
 * Uses two file descriptors, one per direction, each with Node's tty stream
 * (non-blocking, so a stalled peer never blocks the event loop).
 */
export function openTty(path: string): ByteLink {
  const flags = fsc.O_RDWR | fsc.O_NOCTTY;
  const rfd = openSync(path, flags);
  let wfd: number;
  try {
    wfd = openSync(path, flags);
  } catch (e) {
    closeSync(rfd);
    throw e;
  }
  const input = new ReadStream(rfd);
  input.setRawMode(true);
  const output = new WriteStream(wfd);
  let closed = false;
  // A pty whose peer closed reports EIO: treat it as the end of the link.
  input.on('error', () => undefined);
  output.on('error', () => undefined);
  return {
    write: (bytes) => {
      if (!closed) output.write(Buffer.from(bytes));
    },
    onData: (listener) => {
      const h = (chunk: Buffer): void => listener(new Uint8Array(chunk));
      input.on('data', h);
      return () => input.off('data', h);
    },
    close: () => {
      if (closed) return;
      closed = true;
      input.destroy();
      output.destroy();
    },
  };
}

/** Options of {@link SerialCardEndpoint}. */
export interface SerialCardEndpointOptions {
  /** Largest frame payload accepted (default: the protocol's 4096). */
  maxPayload?: number;
  /** Called with each framing error the endpoint NAKed (for logs). */
  onFrameError?: (error: DtError) => void;
  /** Called after each command with the APDU and its response (for logs). */
  onApdu?: (command: Uint8Array, response: Uint8Array | undefined) => void;
}

/**
 * The device side: serves a {@link SimulatedCard} over a {@link ByteLink}.
 * The card is powered on when the endpoint starts (the port is the power
 * supply of a hardware wallet); after a power cut it powers up again at once
 * and has forgotten its link state (a reboot), so a retransmitted command
 * is executed again.
 */
export class SerialCardEndpoint {
  readonly #card: SimulatedCard;
  readonly #link: ByteLink;
  readonly #decoder: SerialFrameDecoder;
  readonly #maxPayload: number | undefined;
  readonly #options: SerialCardEndpointOptions;
  #last: { seq: number; command: Uint8Array; response: Uint8Array } | undefined;
  #busy = false;
  #detach: () => void;
  #queue: Promise<void> = Promise.resolve();

  /** Starts serving at once. */
  constructor(card: SimulatedCard, link: ByteLink, options: SerialCardEndpointOptions = {}) {
    this.#card = card;
    this.#link = link;
    this.#options = options;
    this.#maxPayload = options.maxPayload;
    this.#decoder = new SerialFrameDecoder(options.maxPayload === undefined ? {} : { maxPayload: options.maxPayload });
    if (!card.powered) card.powerOn();
    this.#detach = link.onData((chunk) => this.#onData(chunk));
  }

  /** Stops serving (the link stays open; close it separately). */
  stop(): void {
    this.#detach();
  }

  #onData(chunk: Uint8Array): void {
    for (const result of this.#decoder.push(chunk)) {
      if ('error' in result) {
        this.#options.onFrameError?.(result.error);
        const seq = typeof result.error.details.seq === 'number' ? result.error.details.seq : 0;
        this.#send({ type: SERIAL_FRAME_TYPE.ERROR, seq, payload: Uint8Array.of(nakReasonFor(result.error)) });
        continue;
      }
      this.#onFrame(result.frame);
    }
  }

  #onFrame(frame: SerialFrame): void {
    switch (frame.type) {
      case SERIAL_FRAME_TYPE.COMMAND: {
        const last = this.#last;
        if (last !== undefined && last.seq === frame.seq && bytesEqual(last.command, frame.payload)) {
          // A retransmission: our response was lost. Answer again, run nothing.
          this.#send({ type: SERIAL_FRAME_TYPE.RESPONSE, seq: frame.seq, payload: last.response });
          return;
        }
        if (this.#busy) {
          this.#send({ type: SERIAL_FRAME_TYPE.ERROR, seq: frame.seq, payload: Uint8Array.of(SERIAL_NAK_REASON.BUSY) });
          return;
        }
        this.#busy = true;
        this.#queue = this.#queue.then(() => this.#run(frame.seq, frame.payload));
        return;
      }
      case SERIAL_FRAME_TYPE.RESET:
        // Link state only; the applet's state is untouched.
        this.#last = undefined;
        this.#send({ type: SERIAL_FRAME_TYPE.RESET, seq: frame.seq, payload: new Uint8Array(0) });
        return;
      default:
        // RESPONSE and ERROR frames are for hosts; a device ignores them.
        return;
    }
  }

  async #run(seq: number, command: Uint8Array): Promise<void> {
    let response: Uint8Array | undefined;
    try {
      if (!this.#card.powered) this.#card.powerOn();
      response = await this.#card.transmit(command);
    } catch (e) {
      if (!isPowerCut(e)) response = Uint8Array.of(0x6f, 0x00);
    } finally {
      this.#busy = false;
    }
    this.#options.onApdu?.(command, response);
    if (response === undefined) {
      // Power cut: the device reboots. Its RAM (the remembered last response
      // and any partial frame) is gone and the command gets no answer.
      this.#last = undefined;
      this.#decoder.reset();
      this.#powerUp();
      return;
    }
    this.#last = { seq, command, response };
    this.#send({ type: SERIAL_FRAME_TYPE.RESPONSE, seq, payload: response });
  }

  #powerUp(): void {
    // Recovery itself may be hit by a planned cut; faults fire once, so the
    // second attempt runs clean.
    for (let i = 0; i < 2; i++) {
      try {
        this.#card.powerOn();
        return;
      } catch (e) {
        if (!isPowerCut(e)) throw e;
      }
    }
  }

  #send(frame: SerialFrame): void {
    const wire = encodeFrame(frame, this.#maxPayload);
    const out = this.#card.faults.onOutgoingFrame(wire);
    if (out !== null) this.#link.write(out);
  }
}
