/**
 * USB HID hardware wallets through `node-hid`, with the protocol's HID
 * framing (`HidFramer`: 64-byte reports, channel / tag / sequence).
 *
 * Linux: hidraw nodes are root-only by default. A user running `dt-pos`
 * needs a udev rule such as (vendor/product ids of your wallet):
 *
 * ```text
 * # /etc/udev/rules.d/60-dt-wallet.rules
 * KERNEL=="hidraw*", ATTRS{idVendor}=="1209", ATTRS{idProduct}=="d701", MODE="0660", GROUP="plugdev", TAG+="uaccess"
 * ```
 *
 * then `sudo udevadm control --reload-rules && sudo udevadm trigger` and
 * re-plug the device.
 *
 * @module
 */
import { createRequire } from 'node:module';
import { HID_PACKET_SIZE, HidFramer, type ApduTransport, type TransmitOptions } from '@dt/protocol';
import { TerminalError, TerminalErrorCode } from '../errors.ts';
import { abortReason, checkAborted } from '../util/abort.ts';
import { TransportReader, type CardReader } from './reader.ts';

/** The part of a `node-hid` `HID` device this adapter uses. */
export interface NodeHidDeviceLike {
  /** Writes one output report; the first byte is the report id (0x00 when the device uses none). */
  write(values: number[] | Buffer): number;
  on(event: 'data', listener: (data: Buffer) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  removeAllListeners(event?: string): unknown;
  close(): void;
}

/** Options of {@link HidWalletTransport}. */
export interface HidWalletOptions {
  /** Channel id written in every report (default 0x0101). */
  readonly channel?: number;
  /** Report size (default 64). */
  readonly packetSize?: number;
}

/**
 * The host side of the HID framing over a `node-hid` device, as an
 * `ApduTransport`. One message in flight at a time (the reader guard).
 */
export class HidWalletTransport implements ApduTransport {
  readonly #device: NodeHidDeviceLike;
  readonly #framer: HidFramer;
  #pending: { resolve: (m: Uint8Array) => void; reject: (e: Error) => void } | undefined;
  #failed: Error | undefined;

  /** Wraps an open device. */
  constructor(device: NodeHidDeviceLike, options: HidWalletOptions = {}) {
    this.#device = device;
    this.#framer = new HidFramer(options.channel ?? 0x0101, options.packetSize ?? HID_PACKET_SIZE);
    device.on('data', (data) => {
      let message: Uint8Array | undefined;
      try {
        message = this.#framer.push(new Uint8Array(data));
      } catch (e) {
        // A report that breaks the framing (other channel, bad sequence): drop the message.
        this.#pending?.reject(new TerminalError(TerminalErrorCode.TRANSPORT, `HID framing error: ${(e as Error).message}`, {}, e));
        this.#pending = undefined;
        return;
      }
      if (message) {
        this.#pending?.resolve(message);
        this.#pending = undefined;
      }
    });
    device.on('error', (err) => {
      // Unplugged: every later call fails until a new device is opened.
      this.#failed = new TerminalError(TerminalErrorCode.CARD_REMOVED, `HID device gone: ${err.message}`, {}, err);
      this.#pending?.reject(this.#failed);
      this.#pending = undefined;
    });
  }

  /** {@inheritDoc ApduTransport.transmit} */
  transmit(apdu: Uint8Array, options: TransmitOptions = {}): Promise<Uint8Array> {
    const signal = options.signal as AbortSignal | undefined;
    checkAborted(signal);
    if (this.#failed) return Promise.reject(this.#failed);
    this.#framer.reset();
    return new Promise<Uint8Array>((resolve, reject) => {
      const onAbort = (): void => {
        this.#pending = undefined;
        this.#framer.reset();
        reject(abortReason(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending = {
        resolve: (m) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(m);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      try {
        // node-hid on Linux/Windows wants the report id first: 0x00 for devices without numbered reports.
        for (const report of this.#framer.frame(apdu)) this.#device.write([0x00, ...report]);
      } catch (e) {
        this.#pending = undefined;
        signal?.removeEventListener('abort', onAbort);
        reject(new TerminalError(TerminalErrorCode.TRANSPORT, `HID write failed: ${(e as Error).message}`, {}, e));
      }
    });
  }

  /** Closes the device. */
  close(): void {
    this.#device.removeAllListeners();
    try {
      this.#device.close();
    } catch {
      // already closed
    }
  }
}

/** HID devices node-hid sees (for `dt-pos readers`). */
export function listHidDevices(): { path: string; vendorId: number; productId: number; product?: string }[] {
  const require = createRequire(import.meta.url);
  const HID = require('node-hid') as { devices(): { path?: string; vendorId: number; productId: number; product?: string }[] };
  return HID.devices()
    .filter((d) => d.path)
    .map((d) => ({ path: d.path!, vendorId: d.vendorId, productId: d.productId, ...(d.product ? { product: d.product } : {}) }));
}

/** Opens a HID wallet by device path (from {@link listHidDevices}) as a {@link CardReader}. */
export function openHidReader(path: string, options: HidWalletOptions & { apduTimeoutMs?: number } = {}): CardReader {
  const require = createRequire(import.meta.url);
  const HID = require('node-hid') as { HID: new (path: string) => NodeHidDeviceLike };
  let device: NodeHidDeviceLike;
  try {
    device = new HID.HID(path);
  } catch (e) {
    throw new TerminalError(
      TerminalErrorCode.READER_UNAVAILABLE,
      `cannot open HID device ${path} (udev permissions? see README): ${(e as Error).message}`,
      { path },
      e,
    );
  }
  const transport = new HidWalletTransport(device, options);
  return new TransportReader(`hid:${path}`, transport, {
    apduTimeoutMs: options.apduTimeoutMs ?? 20_000,
    onClose: () => transport.close(),
  });
}
