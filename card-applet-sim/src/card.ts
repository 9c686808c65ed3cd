/**
 * A simulated card: the firmware's applet on a PC, with its persistent
 * memory in a {@link Storage} (a state file or memory), Node's CSPRNG, the
 * system clock, and fault injection.
 *
 * The card has power or not. Powering on calls the applet's `powerOn()`,
 * which re-reads the committed state from storage and clears RAM (chains in
 * progress, pending GET RESPONSE data, selection, PIN verification), as on a
 * real chip; without power no APDU gets through. A power cut
 * (see {@link FaultPlan}) behaves the same and makes the command in flight
 * fail with a {@link PowerCutError}.
 *
 * @module
 */

import { randomBytes } from 'node:crypto';
import { Applet, ATR } from '@dt/firmware';
import type { Hal, Storage } from '@dt/firmware';
import { ExchangeGuard, type AbortSignalLike } from '@dt/protocol';
import { FaultInjectingStorage, FaultInjector, PowerCutError } from './faults.ts';
import type { FaultPlan } from './faults.ts';

/**
 * The part of the firmware's applet the simulator drives. The factory's
 * result must be powered on already (the firmware's constructor does it).
 */
export interface AppletLike {
  /** Called at every later power-up, before the first APDU: re-reads committed state, clears volatile state. */
  powerOn(): void;
  /** One raw command APDU in, one raw response APDU (data | SW) out. */
  process(command: Uint8Array): Promise<Uint8Array>;
}

/** Builds an applet over the card's hardware abstraction. */
export type AppletFactory = (hal: Hal) => AppletLike;

/** The card is not powered: power it on (insert it in a reader) first. */
export class CardNotPoweredError extends Error {
  /** Stable code. */
  readonly code = 'SIM_NOT_POWERED';

  /** Builds the error. */
  constructor() {
    super('the simulated card has no power');
    this.name = 'CardNotPoweredError';
  }
}

/** Options of {@link SimulatedCard}. */
export interface SimulatedCardOptions {
  /** The card's persistent memory (a {@link FileStorage}, or the firmware's MemoryStorage in tests). */
  storage: Storage;
  /** Random bytes; default Node's CSPRNG (`crypto.randomBytes`). Tests may pass a seeded source. */
  random?: (length: number) => Uint8Array;
  /** The card's (untrusted) clock in seconds; default the system clock. `null`: the card has no clock. */
  now?: (() => number) | null;
  /** Holder confirmation of a hardware wallet with screen and button; absent on a plain card. */
  confirm?: Hal['confirm'];
  /** Faults to inject, or an injector shared with a transport. */
  faults?: FaultPlan | FaultInjector;
  /** Applet constructor; default the firmware's `Applet`. */
  createApplet?: AppletFactory;
  /** Answer to reset; default the firmware's `ATR`. */
  atr?: Uint8Array;
}

/** Node's CSPRNG as a HAL random source, returning plain `Uint8Array`s. */
export function nodeRandom(length: number): Uint8Array {
  return new Uint8Array(randomBytes(length));
}

/** The system clock in whole seconds. */
export function systemClock(): number {
  return Math.floor(Date.now() / 1000);
}

/** Resolves after `ms` milliseconds, or rejects when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignalLike): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The firmware applet hosted on a PC, with power control and fault injection.
 *
 * @example
 * const card = new SimulatedCard({ storage: FileStorage.open('alice.card') });
 * card.powerOn();
 * const r = await card.transmit(encodeCommand(selectCommand()));
 */
export class SimulatedCard {
  /** Counts events and fires the planned faults. */
  readonly faults: FaultInjector;
  /** The card's storage as the applet sees it (with the write-cut hook). */
  readonly storage: FaultInjectingStorage;
  readonly #hal: Hal;
  readonly #createApplet: AppletFactory;
  readonly #atr: Uint8Array;
  /** The applet while powered. */
  #applet: AppletLike | undefined;
  /** The applet instance (the chip), kept across power cycles. */
  #instance: AppletLike | undefined;
  /** One APDU at a time: a second one while the first runs gets the protocol's `TransportBusyError`. */
  readonly #guard = new ExchangeGuard('simulated card');
  #powerUps = 0;

  /** Builds an unpowered card; call {@link powerOn} before sending APDUs. */
  constructor(options: SimulatedCardOptions) {
    const random = options.random ?? nodeRandom;
    this.faults = options.faults instanceof FaultInjector ? options.faults : new FaultInjector(options.faults ?? {});
    this.storage = new FaultInjectingStorage(options.storage, this.faults);
    const hal: Hal = { storage: this.storage, random };
    const now = options.now === undefined ? systemClock : options.now;
    if (now !== null) hal.now = now;
    if (options.confirm !== undefined) hal.confirm = options.confirm;
    this.#hal = hal;
    this.#createApplet = options.createApplet ?? ((h) => new Applet(h));
    this.#atr = (options.atr ?? ATR).slice();
  }

  /** True while the card has power. */
  get powered(): boolean {
    return this.#applet !== undefined;
  }

  /** The answer to reset. */
  get atr(): Uint8Array {
    return this.#atr.slice();
  }

  /** How many times the card was powered up. */
  get powerUps(): number {
    return this.#powerUps;
  }

  /** True while an APDU is being processed. */
  get busy(): boolean {
    return this.#guard.held;
  }

  /**
   * Powers the card on (cold reset): a fresh applet instance over the same
   * storage, then its `powerOn()`. Powering an already powered card first
   * powers it off. Returns the ATR.
   *
   * @throws PowerCutError when the planned cut hits a write during the
   *   applet's start-up recovery; the card stays unpowered.
   */
  powerOn(): Uint8Array {
    this.#applet = undefined;
    this.storage.revive();
    // The applet object stands for the chip: built once, and `powerOn()`
    // re-reads the committed state and clears everything volatile at every
    // power-up (the firmware's constructor already powers on the first time).
    let applet = this.#instance;
    if (applet === undefined) this.#instance = applet = this.#createApplet(this.#hal);
    else applet.powerOn();
    if (this.storage.cut !== undefined) throw this.storage.cut;
    this.#applet = applet;
    this.#powerUps++;
    return this.atr;
  }

  /** Removes power: everything volatile is lost. */
  powerOff(): void {
    this.#applet = undefined;
  }

  /** Warm reset: same effect on the applet as a power cycle. Returns the ATR. */
  reset(): Uint8Array {
    this.powerOff();
    return this.powerOn();
  }

  /**
   * Sends one command APDU to the applet and returns its response APDU,
   * applying the planned faults and the response delay.
   *
   * @throws CardNotPoweredError without power; TransportBusyError when another APDU
   *   is in progress; PowerCutError when a planned cut fires (the card is
   *   then unpowered, and the response, if any, is lost).
   */
  async transmit(apdu: Uint8Array, options: { signal?: AbortSignalLike } = {}): Promise<Uint8Array> {
    const applet = this.#applet;
    if (applet === undefined) throw new CardNotPoweredError();
    this.#guard.acquire();
    try {
      const when = this.faults.onApdu(apdu);
      if (when === 'before') this.#cutPower(new PowerCutError(this.faults.events.at(-1)!.where));
      let response: Uint8Array;
      try {
        response = await applet.process(apdu.slice());
      } catch (e) {
        // A cut inside the applet, possibly wrapped: the storage knows.
        if (this.storage.cut !== undefined) this.#cutPower(this.storage.cut);
        throw e;
      }
      // An applet that caught the cut and answered anyway (e.g. 6F00) must
      // not get that answer out: without power nothing leaves the chip.
      if (this.storage.cut !== undefined) this.#cutPower(this.storage.cut);
      if (this.#applet !== applet) throw new CardNotPoweredError();
      if (when === 'after') this.#cutPower(new PowerCutError(this.faults.events.at(-1)!.where));
      if (this.faults.delayMs > 0) await sleep(this.faults.delayMs, options.signal);
      return response;
    } finally {
      this.#guard.release();
    }
  }

  #cutPower(error: PowerCutError): never {
    this.#applet = undefined;
    throw error;
  }
}
