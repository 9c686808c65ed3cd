/**
 * Outcomes of a tap, in the spirit of the EMV contactless outcomes
 * (Book A, "Outcome"): APPROVED, DECLINED, PRESENT CARD AGAIN (try again),
 * ONLINE REQUIRED and END APPLICATION.
 *
 * @module
 */
import type { PaymentRecord } from '../journal/journal.ts';

/** Outcome kinds. */
export const OutcomeKind = {
  APPROVED: 'APPROVED',
  DECLINED: 'DECLINED',
  PRESENT_CARD_AGAIN: 'PRESENT_CARD_AGAIN',
  ONLINE_REQUIRED: 'ONLINE_REQUIRED',
  END: 'END',
} as const;
/** An outcome kind. */
export type OutcomeKind = (typeof OutcomeKind)[keyof typeof OutcomeKind];

/**
 * Reason codes a merchant can read (stable strings). Handover validation
 * failures use the protocol's codes (`HANDOVER_CHAIN`, `CARD_REVOKED`, ...).
 */
export const DeclineReason = {
  /** The card refused the PIN too many times, or it is blocked. */
  PIN_BLOCKED: 'PIN_BLOCKED',
  /** Wrong PIN and the holder gave up (or the terminal's PIN tries are used up). */
  WRONG_PIN: 'WRONG_PIN',
  /** The holder cancelled PIN entry. */
  PIN_CANCELLED: 'PIN_CANCELLED',
  /** PIN needed, but this terminal has no PIN pad. */
  NO_PIN_PAD: 'NO_PIN_PAD',
  /** The card refused the request (6A80: e.g. it does not trust this terminal's certificate). */
  CARD_REFUSED: 'CARD_REFUSED',
  /** The card saw this nonce before (6984): replay refused. */
  NONCE_REPLAY: 'NONCE_REPLAY',
  /** The holder declined on the device, or the card answered another error. */
  CARD_ERROR: 'CARD_ERROR',
  /** This card already paid this terminal with the same counter or coins: a double spend. */
  DOUBLE_SPEND_DETECTED: 'DOUBLE_SPEND_DETECTED',
  /** The card's currency is not the terminal's. */
  CURRENCY: 'CURRENCY',
  /**
   * The card's answer to a torn-tap retry was damaged again (it does not decode, or a
   * certificate, token or transfer signature or a history link does not verify, or it is no
   * APDU answer: no status word, an empty 61xx chain, too long; `detail`
   * names the check): one PRESENT CARD AGAIN per attempt chain, then this. A faulty or
   * hostile card; the signed transfer, if any, is an orphan the ledger voids at its sync.
   */
  CARD_ANSWER_INVALID: 'CARD_ANSWER_INVALID',
} as const;

/** Reasons for END (the tap did not reach a payment decision). */
export const EndReason = {
  /** The card has no DT applet (SELECT failed): not a DT card. */
  NOT_DT_CARD: 'NOT_DT_CARD',
  /** The DT applet is not personalized or does not support PAY. */
  CARD_NOT_USABLE: 'CARD_NOT_USABLE',
  /** No card was presented in time. */
  NO_CARD: 'NO_CARD',
  /** The operator cancelled. */
  CANCELLED: 'CANCELLED',
  /** The reader is busy or gone. */
  READER: 'READER',
  /**
   * A bug, not the card: an exchange refused because another was in flight
   * (`TransportBusyError`), or an error no transport or protocol layer typed.
   * `detail` names the error's code (or name). Nothing is approved; a PAY
   * attempt that may have reached the card stays torn in the journal.
   */
  INTERNAL_ERROR: 'INTERNAL_ERROR',
  /**
   * The terminal's own trust anchors (root, ledger certificate) do not verify
   * now: no card is touched, nothing is signed (fix the identity, `dt-pos status`).
   */
  TERMINAL_TRUST: 'TERMINAL_TRUST',
} as const;

/** Result of one tap. */
export type TapOutcome =
  | {
      readonly kind: 'APPROVED';
      readonly payment: PaymentRecord;
      /** True when this handover was already in the journal (a replay): approved once, not twice. */
      readonly alreadyRecorded: boolean;
      /** True when the payment came from a torn-tap retry (`retryOf`). */
      readonly recovered: boolean;
    }
  | { readonly kind: 'DECLINED'; readonly reason: string; readonly detail?: string }
  | { readonly kind: 'PRESENT_CARD_AGAIN'; readonly reason: string; readonly detail?: string; readonly tornAttempt?: string }
  | { readonly kind: 'ONLINE_REQUIRED'; readonly reason: string }
  | { readonly kind: 'END'; readonly reason: string; readonly detail?: string };

/** Progress states reported while a tap runs. */
export type KernelState =
  'WAITING_FOR_CARD' | 'CARD_DETECTED' | 'SELECTING' | 'PIN_ENTRY' | 'PAYING' | 'VALIDATING' | 'COMMITTING' | 'DONE';
