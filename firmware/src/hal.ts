/**
 * Hardware abstraction of the DT wallet applet. Everything the applet needs
 * from the device it runs on comes through these interfaces, so the same code
 * runs on a PC (card-applet-sim), inside QuickJS, or on a microcontroller.
 *
 * @module
 */

/**
 * Persistent storage made of numbered slots (think EEPROM/flash pages).
 *
 * A `write` may be torn by a power cut: after power returns the slot can hold
 * the old bytes, the new bytes, or a mix (a prefix of the new bytes followed by
 * old or arbitrary bytes). The applet must detect torn slots itself (checksums,
 * sequence numbers, shadow copies) and must never rely on two writes being
 * atomic together.
 */
export interface Storage {
  /** Read a slot; `undefined` if it was never written. */
  read(slot: number): Uint8Array | undefined;
  /** Write a slot. May throw (power cut): then nothing after this call runs. */
  write(slot: number, data: Uint8Array): void;
}

/** What the cardholder is asked to confirm on a device with a screen and a button. */
export interface ConfirmationPrompt {
  readonly amount: number;
  readonly currency: number;
  readonly merchant: string;
  readonly mcc: number;
}

/** The device services the applet uses. */
export interface Hal {
  readonly storage: Storage;
  /** Cryptographically secure random bytes. */
  random(length: number): Uint8Array;
  /**
   * Current time in seconds if the device has a clock (untrusted); the applet
   * keeps a monotonic floor of the times it has seen and never goes below it.
   */
  now?(): number;
  /**
   * Optional user confirmation (hardware wallet with screen and button).
   * Resolves true when the holder approves.
   */
  confirm?(prompt: ConfirmationPrompt): Promise<boolean>;
}
