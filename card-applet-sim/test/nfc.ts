/**
 * A small typed wrapper around `nfc-pcsc` for the tests: it ships no types,
 * processes cards automatically unless told not to, loses connect errors
 * (it emits them under the error object as event name), and leaves 61xx to
 * the caller. Here: autoProcessing off, waits with timeouts, and an
 * {@link ApduTransport} whose 61xx/GET RESPONSE handling is the protocol's
 * `exchange`.
 */
import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';
import type { ApduTransport } from '@dt/protocol';

/** The parts of nfc-pcsc's Reader the tests use. */
export interface NfcReader extends EventEmitter {
  readonly name: string;
  autoProcessing: boolean;
  card: { atr?: Buffer } | null;
  connection: { protocol: number } | null;
  transmit(data: Buffer, responseMaxLength: number): Promise<Buffer>;
  connect(): Promise<unknown>;
  disconnect(): Promise<unknown>;
  close(): void;
  /** The underlying @pokusew/pcsclite reader. */
  reader: {
    SCARD_UNPOWER_CARD: number;
    SCARD_LEAVE_CARD: number;
    disconnect(disposition: number, cb: (err?: Error) => void): void;
  };
}

interface NfcInstance extends EventEmitter {
  close(): void;
}

/** Opens the PC/SC reader `name` through nfc-pcsc (PCSCLITE_CSOCK_NAME must be set before the first call). */
export async function openReader(name: string, timeoutMs = 15_000): Promise<{ nfc: NfcInstance; reader: NfcReader }> {
  const require = createRequire(import.meta.url);
  const { NFC } = require('nfc-pcsc') as { NFC: new () => NfcInstance };
  const nfc = new NFC();
  // nfc-pcsc reports some errors as events named by the error object itself;
  // keep them from crashing the process, the waits below time out instead.
  nfc.on('error', () => undefined);
  const reader = await new Promise<NfcReader>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`reader ${name} did not appear`)), timeoutMs);
    nfc.on('reader', (r: NfcReader) => {
      r.on('error', () => undefined);
      if (r.name !== name) return;
      // Before any card event: we drive the card ourselves.
      r.autoProcessing = false;
      clearTimeout(timer);
      resolve(r);
    });
  });
  return { nfc, reader };
}

/** Waits until a card is in `reader` and nfc-pcsc has connected to it. */
export async function waitCard(reader: NfcReader, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(reader.card && reader.connection)) {
    if (Date.now() > deadline) throw new Error(`no card connected in ${reader.name} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Resolves at the next card insertion in `reader` (nfc-pcsc's 'card' event,
 * emitted once it has connected). Call it before the action that removes the
 * card, so a quick removal and reinsertion is not missed.
 */
export function nextCard(reader: NfcReader, timeoutMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reader.off('card', on);
      reject(new Error(`no card inserted in ${reader.name} within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (): void => {
      clearTimeout(timer);
      resolve();
    };
    reader.once('card', on);
  });
}

/**
 * The reader as an {@link ApduTransport}. nfc-pcsc sizes its receive buffer
 * from the caller: 258 = 256 data bytes + SW, the most a short response holds.
 */
export function nfcTransport(reader: NfcReader): ApduTransport {
  return {
    async transmit(apdu) {
      const r = await reader.transmit(Buffer.from(apdu), 258);
      return new Uint8Array(r);
    },
  };
}
