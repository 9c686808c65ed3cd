/**
 * The PIN pad the kernel asks for the cardholder's PIN.
 *
 * The PIN is handed to the kernel as ASCII digits in a fresh buffer that the
 * kernel sends to the card (VERIFY PIN) and then wipes; it is never stored,
 * logged, or put in an error message.
 *
 * @module
 */

/** What the PIN pad shows while asking. */
export interface PinPrompt {
  readonly amount: number;
  readonly currency: number;
  /** Tries the card says are left, after a wrong PIN. */
  readonly triesLeft?: number;
}

/** A PIN entry device. */
export interface PinPad {
  /**
   * Asks the holder for the PIN. Resolves with the digits as ASCII bytes (a
   * buffer the kernel will wipe), or `null` when the holder cancels. Must
   * reject when `signal` aborts (timeout or operator cancel).
   */
  requestPin(prompt: PinPrompt, signal: AbortSignal): Promise<Uint8Array | null>;
}

/** ASCII digits of a PIN string, refusing anything but 4 to 12 digits. */
export function pinBytes(pin: string): Uint8Array {
  if (!/^[0-9]{4,12}$/.test(pin)) throw new RangeError('a PIN is 4 to 12 digits');
  const out = new Uint8Array(pin.length);
  for (let i = 0; i < pin.length; i++) out[i] = pin.charCodeAt(i);
  return out;
}
