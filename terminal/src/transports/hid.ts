/**
 * USB HID hardware wallets through `node-hid`: the Node binding of the
 * protocol's `HidHostTransport` (64-byte reports, channel / tag / sequence,
 * stale reports skipped, a time limit per answer).
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
import {
  AbortError,
  CardRemovedError,
  HidHostTransport,
  ReaderUnavailableError,
  TransportLinkError,
  type AbortSignalLike,
  type HidReportChannel,
} from '@dt/protocol';
import { nodeTimers } from '@dt/protocol/native';
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

/** Input reports kept while nobody reads (a device that floods is cut off there). */
const MAX_QUEUED_REPORTS = 256;

/**
 * A `node-hid` device as the protocol's {@link HidReportChannel}: writes
 * reports with the report-id byte 0x00 first (node-hid on Linux/Windows
 * wants it for devices without numbered reports), queues input reports
 * (bounded) until read. Unplugged (node-hid's `error`): every pending and
 * later read or write fails with `CardRemovedError`.
 */
export class NodeHidChannel implements HidReportChannel {
  readonly #device: NodeHidDeviceLike;
  readonly #queue: Uint8Array[] = [];
  #waiter: { resolve: (r: Uint8Array) => void; reject: (e: unknown) => void } | undefined;
  #failed: Error | undefined;

  readonly #onGone: ((why: string) => void) | undefined;

  /** Wraps an open device; `onGone` is told once when it reports an error (unplugged). */
  constructor(device: NodeHidDeviceLike, onGone?: (why: string) => void) {
    this.#device = device;
    this.#onGone = onGone;
    device.on('data', (data) => {
      const report = new Uint8Array(data);
      const w = this.#waiter;
      this.#waiter = undefined;
      if (w) w.resolve(report);
      else if (this.#queue.length < MAX_QUEUED_REPORTS) this.#queue.push(report);
      else this.#fail(new TransportLinkError(`more than ${MAX_QUEUED_REPORTS} unread HID reports`));
    });
    device.on('error', (err) => {
      const first = this.#failed === undefined;
      this.#fail(new CardRemovedError(`HID device gone: ${err.message}`, {}, err));
      if (first) this.#onGone?.(`HID device gone: ${err.message}`);
    });
  }

  /** {@inheritDoc HidReportChannel.write} */
  write(report: Uint8Array): void {
    if (this.#failed) throw this.#failed;
    this.#device.write([0x00, ...report]);
  }

  /** {@inheritDoc HidReportChannel.read} */
  read(options: { signal?: AbortSignalLike } = {}): Promise<Uint8Array> {
    const { signal } = options;
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the abort reason, passed on as it came
    if (signal?.aborted) return Promise.reject(signal.reason ?? new AbortError());
    if (this.#failed) return Promise.reject(this.#failed);
    const next = this.#queue.shift();
    if (next) return Promise.resolve(next);
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        if (this.#waiter === waiter) this.#waiter = undefined;
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the abort reason, passed on as it came
        reject(signal?.reason ?? new AbortError());
      };
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
      this.#waiter = waiter;
      signal?.addEventListener('abort', onAbort, { once: true });
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

  #fail(e: Error): void {
    this.#failed ??= e;
    this.#queue.length = 0;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(this.#failed);
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

/** Options of {@link openHidReader}. */
export interface HidReaderOptions {
  /** Channel id written in every report (default 0x0101). */
  readonly channel?: number;
  /** Report size (default 64). */
  readonly packetSize?: number;
  /** Time allowed for one whole answer (default 10 s). */
  readonly answerTimeoutMs?: number;
  /** Per-APDU time limit of the reader (default 20 s). */
  readonly apduTimeoutMs?: number;
  /** Told once when the device reports an error (unplugged). */
  readonly onGone?: (why: string) => void;
  /** Opens the device at a path (default node-hid's `new HID.HID(path)`; tests inject a device layer). */
  readonly openDevice?: (path: string) => NodeHidDeviceLike;
}

/** A HID wallet on `device` (a node-hid device, or a test double of its API) as a {@link CardReader}. */
export function hidReader(name: string, device: NodeHidDeviceLike, options: HidReaderOptions = {}): CardReader {
  const channel = new NodeHidChannel(device, options.onGone);
  const transport = new HidHostTransport(channel, {
    timers: nodeTimers,
    name,
    ...(options.channel !== undefined ? { channel: options.channel } : {}),
    ...(options.packetSize !== undefined ? { packetSize: options.packetSize } : {}),
    ...(options.answerTimeoutMs !== undefined ? { timeoutMs: options.answerTimeoutMs } : {}),
  });
  return new TransportReader(name, transport, {
    apduTimeoutMs: options.apduTimeoutMs ?? 20_000,
    onClose: () => channel.close(),
  });
}

/** Opens a HID wallet by device path (from {@link listHidDevices}) as a {@link CardReader}; `ReaderUnavailableError` when it cannot be opened. */
export function openHidReader(path: string, options: HidReaderOptions = {}): CardReader {
  const open =
    options.openDevice ??
    ((p: string): NodeHidDeviceLike => {
      const require = createRequire(import.meta.url);
      const HID = require('node-hid') as { HID: new (path: string) => NodeHidDeviceLike };
      return new HID.HID(p);
    });
  let device: NodeHidDeviceLike;
  try {
    device = open(path);
  } catch (e) {
    throw new ReaderUnavailableError(`cannot open HID device ${path} (udev permissions? see README): ${(e as Error).message}`, { path }, e);
  }
  return hidReader(`hid:${path}`, device, options);
}
