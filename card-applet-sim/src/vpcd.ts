/**
 * vpcd client: puts the simulated card into a real `pcscd` through the
 * `vsmartcard-vpcd` reader driver.
 *
 * The driver listens on TCP (127.0.0.1:35963 for its first reader "Virtual
 * PCD 00 00", +1 per further slot); the card connects as a client, and the
 * connection existing is the card being in the reader. Every message in
 * either direction is
 *
 * ```text
 * offset 0  length   uint16 BE   payload size n
 * offset 2  payload  n bytes
 * ```
 *
 * A 1-byte payload from the driver is a control code: 00 power off, 01 power
 * on, 02 reset (none of them answered), 04 get ATR (answered with the ATR).
 * pcscd polls with get ATR between APDUs to see that the card is still there.
 * A longer payload is a command APDU, answered with the response APDU.
 *
 * A power cut (fault plan) or a dropped frame closes the connection: to
 * pcscd the card left the field. The client reconnects after
 * `reinsertDelayMs` (the card comes back, powered down) and, whenever the
 * connection breaks because pcscd restarted, keeps retrying every
 * `reconnectMs` until {@link VpcdClient.stop}.
 *
 * {@link VpcdClient.remove} takes the card out of the reader on purpose (a
 * lab robot's hand, the `remove` command of the card control channel): the
 * connection closes and stays closed, whatever happens, until
 * {@link VpcdClient.insert} puts the card back.
 *
 * @module
 */

import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import type { SimulatedCard } from './card.ts';
import { isPowerCut } from './faults.ts';

/** Default TCP port of the vpcd driver's first slot. */
export const VPCD_DEFAULT_PORT = 35963;

/** vpcd control codes (1-byte payloads from the driver). */
export const VPCD_CONTROL = {
  POWER_OFF: 0x00,
  POWER_ON: 0x01,
  RESET: 0x02,
  GET_ATR: 0x04,
} as const;

/** Options of {@link VpcdClient}. */
export interface VpcdClientOptions {
  /** Host of pcscd's vpcd driver (default 127.0.0.1). */
  host?: string;
  /** Reader slot: port = `port` + `slot` (default slot 0). */
  slot?: number;
  /** Port of slot 0 (default 35963). */
  port?: number;
  /** Wait between connection attempts while pcscd is away, in ms (default 500). */
  reconnectMs?: number;
  /** Time the card stays out of the reader after a power cut or dropped frame, in ms (default 1000: longer than two of pcscd's 400 ms status polls, so pcscd always sees the card leave and come back). */
  reinsertDelayMs?: number;
}

/** Events of {@link VpcdClient}. */
export interface VpcdClientEvents {
  /** Connected to the driver: the card is in the reader. */
  connected: [];
  /** Disconnected: the card left the reader (`reason` says why). */
  disconnected: [reason: string];
  /** A control code arrived. */
  control: [code: number];
  /** An APDU was answered (`response` undefined when it got no answer). */
  apdu: [command: Uint8Array, response: Uint8Array | undefined];
  /** A planned fault fired. */
  fault: [description: string];
  /** A non-fatal error (connection refused, socket error). */
  warning: [error: Error];
}

/**
 * Serves a {@link SimulatedCard} to pcscd's vpcd driver.
 *
 * @example
 * const client = new VpcdClient(card, { slot: 0 });
 * client.start();
 * // ... pcsc_scan shows the card in "Virtual PCD 00 00"
 * await client.stop();
 */
export class VpcdClient extends EventEmitter<VpcdClientEvents> {
  readonly #card: SimulatedCard;
  readonly #host: string;
  readonly #port: number;
  readonly #reconnectMs: number;
  readonly #reinsertDelayMs: number;
  #socket: Socket | undefined;
  #running = false;
  #timer: NodeJS.Timeout | undefined;
  #buffer: Buffer = Buffer.alloc(0);
  #queue: Promise<void> = Promise.resolve();
  #connections = 0;
  /** False while the card is taken out with {@link remove}: no (re)connection until {@link insert}. */
  #present = true;

  /** Prepares a client; nothing happens before {@link start}. */
  constructor(card: SimulatedCard, options: VpcdClientOptions = {}) {
    super();
    this.#card = card;
    this.#host = options.host ?? '127.0.0.1';
    const slot = options.slot ?? 0;
    if (!Number.isInteger(slot) || slot < 0 || slot > 15) throw new RangeError('slot must be 0..15');
    this.#port = (options.port ?? VPCD_DEFAULT_PORT) + slot;
    if (this.#port > 65535) throw new RangeError('port out of range');
    this.#reconnectMs = options.reconnectMs ?? 500;
    this.#reinsertDelayMs = options.reinsertDelayMs ?? 1000;
  }

  /** TCP port this client connects to. */
  get port(): number {
    return this.#port;
  }

  /** True while connected (the card is in the reader). */
  get connected(): boolean {
    return this.#socket !== undefined && !this.#socket.connecting && !this.#socket.destroyed;
  }

  /** False while the card is taken out of the reader with {@link remove}. */
  get present(): boolean {
    return this.#present;
  }

  /** Number of successful connections so far (reinsertions included). */
  get connections(): number {
    return this.#connections;
  }

  /** Connects, and keeps reconnecting until {@link stop}. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#connect();
  }

  /** Disconnects for good (the card is taken out); resolves once the socket is closed. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket !== undefined && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.destroy();
      });
    }
    await this.#queue;
    this.#card.powerOff();
  }

  /**
   * Takes the card out of the reader: the connection to the driver closes
   * (to pcscd the card left the field), the card loses power, and no
   * reconnection happens, not even the automatic one after a power cut,
   * until {@link insert}. An APDU the card is processing completes on the
   * card (its answer is lost), as when a card is pulled right after it
   * finished. Resolves once the connection is closed and the card is
   * unpowered. Idempotent.
   */
  async remove(): Promise<void> {
    this.#present = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const socket = this.#socket;
    this.#socket = undefined;
    const wasConnected = socket !== undefined && !socket.connecting && !socket.destroyed;
    if (socket !== undefined && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.destroy();
      });
    }
    // After the command in flight, if any: the card leaves the field without power.
    this.#queue = this.#queue.then(() => this.#card.powerOff());
    await this.#queue;
    if (wasConnected) this.emit('disconnected', 'removed');
  }

  /**
   * Puts a card taken out with {@link remove} back into the reader: connects
   * to the driver again (and keeps retrying while the driver is away, as
   * after {@link start}). Does nothing while the card is in the reader.
   */
  insert(): void {
    if (this.#present) return;
    this.#present = true;
    if (this.#running && this.#socket === undefined && this.#timer === undefined) this.#connect();
  }

  /** Resolves once connected (or rejects after `timeoutMs`). */
  waitConnected(timeoutMs = 10_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('connected', on);
        reject(new Error(`vpcd client not connected to ${this.#host}:${this.#port} within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.once('connected', on);
    });
  }

  #schedule(delay: number): void {
    if (!this.#running || !this.#present || this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#connect();
    }, delay);
  }

  #connect(): void {
    if (!this.#running || !this.#present) return;
    const socket = new Socket();
    this.#socket = socket;
    this.#buffer = Buffer.alloc(0);
    socket.setNoDelay(true);
    let wasConnected = false;
    socket.on('connect', () => {
      wasConnected = true;
      this.#connections++;
      this.emit('connected');
    });
    socket.on('data', (chunk) => this.#onData(socket, chunk));
    socket.on('error', (e) => this.emit('warning', e));
    socket.on('close', () => {
      if (this.#socket === socket) {
        this.#socket = undefined;
        // Card out of the reader: volatile state is gone.
        this.#queue = this.#queue.then(() => this.#card.powerOff());
        // A failed connection attempt (pcscd not up yet) is not a removal.
        if (wasConnected) this.emit('disconnected', 'connection closed');
        this.#schedule(this.#reconnectMs);
      }
    });
    socket.connect(this.#port, this.#host);
  }

  #onData(socket: Socket, chunk: Buffer): void {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    while (this.#buffer.length >= 2) {
      const n = this.#buffer.readUInt16BE(0);
      if (this.#buffer.length < 2 + n) break;
      const payload = new Uint8Array(this.#buffer.subarray(2, 2 + n));
      this.#buffer = this.#buffer.subarray(2 + n);
      // One message at a time, in order: the driver waits for each answer anyway.
      this.#queue = this.#queue
        .then(() => this.#handle(socket, payload))
        .catch((e: unknown) => {
          this.emit('warning', e instanceof Error ? e : new Error(String(e)));
        });
    }
  }

  async #handle(socket: Socket, payload: Uint8Array): Promise<void> {
    if (socket !== this.#socket || socket.destroyed) return;
    if (payload.length === 1) {
      const code = payload[0]!;
      this.emit('control', code);
      switch (code) {
        case VPCD_CONTROL.POWER_OFF:
          this.#card.powerOff();
          return;
        case VPCD_CONTROL.POWER_ON:
        case VPCD_CONTROL.RESET:
          this.#powerUp(socket);
          return;
        case VPCD_CONTROL.GET_ATR:
          this.#reply(socket, this.#card.atr);
          return;
        default:
          // Unknown control code: the driver expects no answer.
          return;
      }
    }
    if (payload.length === 0) return;
    let response: Uint8Array | undefined;
    try {
      // vpcd powers the card on before sending APDUs; a card that lost power
      // in between is powered up as a reader would.
      if (!this.#card.powered && !this.#powerUp(socket)) return;
      response = await this.#card.transmit(payload);
    } catch (e) {
      if (!isPowerCut(e)) {
        // The driver waits for an answer to every APDU: an unexpected failure
        // is answered 6F00 (internal error) so the link stays in step.
        this.emit('warning', e instanceof Error ? e : new Error(String(e)));
        this.#reply(socket, Uint8Array.of(0x6f, 0x00));
        return;
      }
      this.emit('apdu', payload, undefined);
      this.emit('fault', e.message);
      this.#pull(socket, 'power cut');
      return;
    }
    this.emit('apdu', payload, response);
    const out = this.#card.faults.onOutgoingFrame(response);
    if (out === null) {
      this.emit('fault', this.#card.faults.events.at(-1)?.where ?? 'frame dropped');
      this.#pull(socket, 'frame dropped');
      return;
    }
    this.#reply(socket, out);
  }

  /** Powers the card up; a planned cut during start-up recovery pulls the card. */
  #powerUp(socket: Socket): boolean {
    try {
      this.#card.powerOn();
      return true;
    } catch (e) {
      if (!isPowerCut(e)) throw e;
      this.emit('fault', e.message);
      this.#pull(socket, 'power cut during power-up');
      return false;
    }
  }

  #reply(socket: Socket, payload: Uint8Array): void {
    if (payload.length > 0xffff) throw new RangeError('vpcd message too long');
    // The card was taken out while it processed the command: the answer is lost.
    if (socket.destroyed) return;
    const header = Buffer.alloc(2);
    header.writeUInt16BE(payload.length, 0);
    socket.write(Buffer.concat([header, payload]));
  }

  /** The card leaves the field: close the connection, come back later. */
  #pull(socket: Socket, reason: string): void {
    this.#card.powerOff();
    if (this.#socket === socket) this.#socket = undefined;
    socket.destroy();
    this.emit('disconnected', reason);
    this.#schedule(this.#reinsertDelayMs);
  }
}
