/**
 * Result types of the card's command set (host side): what the parsers of
 * `decode.ts` and the calls of `command-set.ts` return.
 *
 * @module
 */
import type { Mark } from '../schema/messages.ts';

/**
 * The facts a host needs from a SELECT answer, read leniently
 * ({@link parseApplicationInfo}): a later applet version may add keys or
 * capability bits without turning a DT card into "not a DT card".
 */
export interface ApplicationInfo {
  /** Applet version, when the answer carries a valid one. */
  readonly applet?: number;
  /** Protocol version, when the answer carries a valid one. */
  readonly protocol?: number;
  /** Capability bits (see `Capability`). */
  readonly capabilities: number;
  /** Personalization locked: the card is operational (anything but `true` counts as not locked). */
  readonly locked: boolean;
  /** Largest (chained) command data the applet accepts, when it announces a valid one (at least 255). */
  readonly maxCommand?: number;
  /** The card key id (16 bytes), when the applet announces it. */
  readonly card?: Uint8Array;
}

/**
 * What the card said to a PIN command (VERIFY, CHANGE or UNBLOCK PIN), from
 * its status word ({@link parsePinResult}).
 */
export type PinResult =
  /** 9000: the PIN (or PUK) matched. */
  | { readonly kind: 'verified' }
  /** 63Cx: it did not; `remaining` tries are left (0: now blocked). */
  | { readonly kind: 'wrong'; readonly remaining: number }
  /** 6983: blocked, nothing was compared. */
  | { readonly kind: 'blocked' }
  /** Any other status word (6A80 bad format, 6985 not operational, ...). */
  | { readonly kind: 'refused'; readonly sw: number };

/**
 * A coin input selection can take (SPEC §10.7 "Input selection"): the
 * applet's stored coins and the reference wallet's holdings both have this
 * shape.
 */
export interface SpendableCoin {
  /** 16-byte token serial or 32-byte output id. */
  readonly id: Uint8Array;
  /** Value in tiyn. */
  readonly value: number;
  /** Purpose binding, if any. */
  readonly mark?: Mark;
  /** Earliest expiry (seconds) of the ledger tokens the coin derives from, if any. */
  readonly expires?: number;
}
