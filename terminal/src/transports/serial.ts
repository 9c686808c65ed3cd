/**
 * Hardware wallets on a serial line (UART, USB CDC-ACM) through `serialport`:
 * the Node binding of the protocol's `SerialHostTransport` (COBS + CRC-32
 * frames, retransmission of the same frame on a NAK, a damaged answer or a
 * timeout, which the device answers from its cache: PAY never runs twice).
 *
 * @module
 */
import { createRequire } from 'node:module';
import { ReaderUnavailableError, SerialHostTransport, type ByteChannel } from '@dt/protocol';
import { nodeTimers } from '@dt/protocol/native';
import { TransportReader, type CardReader } from './reader.ts';

/** An open serial port as the protocol's byte channel, with a way to close it. */
export interface SerialPortChannel extends ByteChannel {
  close(): Promise<void>;
}

/**
 * The reason in serialport's open error without what our message already says: its binding words it
 * "Error: No such file or directory, cannot open /dev/x", which would print the path and the word
 * "Error" twice in `cannot open /dev/x: …`.
 */
export function openFailure(message: string, path: string): string {
  const why = message
    .replace(/^Error:\s*/, '')
    .replace(`, cannot open ${path}`, '')
    .trim();
  return why.length > 0 ? why : message;
}

/**
 * Opens `path` with the `serialport` package (8N1, raw); `ReaderUnavailableError` when it cannot be opened.
 * `onGone` is told once when the port fails or closes under us (the device was unplugged, the pty's
 * other end went away), not when we close it.
 */
export async function openSerialPort(path: string, baudRate = 115_200, onGone?: (why: string) => void): Promise<SerialPortChannel> {
  const require = createRequire(import.meta.url);
  const { SerialPort } = require('serialport') as typeof import('serialport');
  const port = new SerialPort({ path, baudRate, autoOpen: false });
  await new Promise<void>((resolve, reject) =>
    port.open((e) =>
      e ? reject(new ReaderUnavailableError(`cannot open ${path}: ${openFailure(e.message, path)}`, { path }, e)) : resolve(),
    ),
  );
  let closing = false;
  let gone = false;
  const lost = (e: Error | null | undefined): void => {
    if (closing || gone) return;
    gone = true;
    onGone?.(`${path}: ${e?.message ?? 'closed'}`);
  };
  // An I/O error of the port (the device went away) is an event, never an uncaught exception.
  port.on('error', (e: Error) => lost(e));
  port.on('close', (e: Error | null) => lost(e));
  return {
    write: (b) => {
      if (gone || !port.isOpen) return;
      port.write(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    },
    onData(listener) {
      const h = (c: Buffer): void => listener(new Uint8Array(c));
      port.on('data', h);
      return () => port.off('data', h);
    },
    close: () => {
      closing = true;
      return new Promise<void>((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve()));
    },
  };
}

/** Options of {@link openSerialReader}. */
export interface SerialReaderOptions {
  /** Time to wait for the answer to one frame before retransmitting (default 2000 ms). */
  readonly frameTimeoutMs?: number;
  /** Transmissions of one frame before giving up (default 4). */
  readonly attempts?: number;
  /** Largest frame payload (default the protocol's 4096). */
  readonly maxPayload?: number;
  /** Line speed (default 115200). */
  readonly baudRate?: number;
  /** Per-APDU time limit of the reader (default 20 s). */
  readonly apduTimeoutMs?: number;
  /** Told once when the port fails or closes under the reader (unplugged); see {@link openSerialPort}. */
  readonly onGone?: (why: string) => void;
}

/**
 * Opens a serial wallet at `path` and returns it as a {@link CardReader} (the
 * wallet is "present" while connected). The link is reset first; a port that
 * does not open, or no DT wallet answering on it, is `ReaderUnavailableError`.
 */
export async function openSerialReader(path: string, options: SerialReaderOptions = {}): Promise<CardReader> {
  const port = await openSerialPort(path, options.baudRate, options.onGone);
  const name = `serial:${path}`;
  const transport = new SerialHostTransport(port, {
    timers: nodeTimers,
    name,
    ...(options.frameTimeoutMs !== undefined ? { frameTimeoutMs: options.frameTimeoutMs } : {}),
    ...(options.attempts !== undefined ? { attempts: options.attempts } : {}),
    ...(options.maxPayload !== undefined ? { maxPayload: options.maxPayload } : {}),
  });
  const close = async (): Promise<void> => {
    transport.close();
    await port.close();
  };
  try {
    await transport.reset({ signal: AbortSignal.timeout((options.frameTimeoutMs ?? 2000) * (options.attempts ?? 4) + 500) });
  } catch (e) {
    await close();
    throw new ReaderUnavailableError(`no DT wallet answers on ${path}`, { path }, e);
  }
  return new TransportReader(name, transport, { apduTimeoutMs: options.apduTimeoutMs ?? 20_000, onClose: close });
}
