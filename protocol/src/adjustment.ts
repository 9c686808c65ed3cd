/**
 * Voids and refunds (SPEC.md §3.10, §7.7.3): a terminal signs an {@link Adjustment} of one
 * of its own payments and sends it to the ledger in a Batch (`adjustments`); the ledger
 * answers each with an Outcome whose `adjustment` member is the adjustment's id.
 *
 * @example
 * const signed = signAdjustment({ kind: AdjustmentKind.REFUND, id, terminal: kid, transfer: hash, card, amount: 5_000,
 *   currency: CURRENCY_KZT, time: now }, terminalSigner);
 * const { adjustment, hash } = openAdjustment(signed, terminalPublicKey);
 *
 * @module
 */
import { bytesEqual } from './bytes.ts';
import { payloadHash, signMessage, verifySigned } from './codec.ts';
import type { CoseSign1, Signer } from './cose/sign1.ts';
import { nobleVerifier, type Verifier } from './crypto/suite.ts';
import { DtError, ErrorCode } from './errors.ts';
import type { Adjustment } from './schema/messages.ts';

/**
 * The stable strings an Outcome's `code` carries for an adjustment (SPEC.md §7.7.3). Like
 * `INPUT_SPENT` or `VOIDED` they are ledger verdict codes, not protocol {@link ErrorCode}s.
 */
export const AdjustmentCode = {
  /** Void accepted (the adjustment's own outcome), or a payment voided by its payee terminal. */
  MERCHANT_VOID: 'MERCHANT_VOID',
  /** The adjustment does not open as a SignedAdjustment signed by the batch's terminal, or names another terminal. */
  ADJUSTMENT_INVALID: 'ADJUSTMENT_INVALID',
  /** The same adjustment id of the terminal was used before for another content. */
  ID_CONFLICT: 'ID_CONFLICT',
  /** The ledger holds no paying transfer with that hash. */
  TRANSFER_UNKNOWN: 'TRANSFER_UNKNOWN',
  /** The transfer pays another terminal. */
  NOT_PAYEE: 'NOT_PAYEE',
  /** Card, currency (or, for a void, amount) differ from the transfer's. */
  ADJUSTMENT_MISMATCH: 'ADJUSTMENT_MISMATCH',
  /** Void of a transfer already settled to the merchant: refund it instead. */
  VOID_TOO_LATE: 'VOID_TOO_LATE',
  /** Void of a transfer judged DOUBLE_SPEND or INVALID. */
  NOT_VOIDABLE: 'NOT_VOIDABLE',
  /** Refund of a transfer that is not settled. */
  NOT_SETTLED: 'NOT_SETTLED',
  /** The accepted refunds of the transfer plus this one would exceed its amount. */
  REFUND_EXCEEDS: 'REFUND_EXCEEDS',
  /** The merchant's balance is below the refund amount. */
  MERCHANT_FUNDS: 'MERCHANT_FUNDS',
  /** The card's pending refund credits already carry the most distinct marks (16): each is a token of its own at its next sync. */
  REFUND_MARKS: 'REFUND_MARKS',
} as const;
/** One of the {@link AdjustmentCode} strings. */
export type AdjustmentCode = (typeof AdjustmentCode)[keyof typeof AdjustmentCode];

/** Signs an adjustment with the terminal's key (COSE_Sign1, content format 65010, `kid` = the terminal's key id). */
export function signAdjustment(adjustment: Adjustment, signer: Signer): Uint8Array {
  if (!bytesEqual(adjustment.terminal, signer.kid))
    throw new DtError(ErrorCode.KEY_MISMATCH, 'an adjustment is signed by the terminal it names');
  return signMessage('Adjustment', adjustment, signer);
}

/** A SignedAdjustment that decoded and verified. */
export interface OpenedAdjustment {
  readonly cose: CoseSign1;
  readonly adjustment: Adjustment;
  /** Its payload hash (SPEC §6.2). */
  readonly hash: Uint8Array;
}

/**
 * Decodes a SignedAdjustment (at most 512 bytes, content format 65010 or the text content
 * type) and verifies it with `terminalPublicKey`: the `kid` must name that key, the signature
 * must verify, and the adjustment's `terminal` must be the signer. Throws a {@link DtError}
 * otherwise (`COSE_MALFORMED`, `COSE_WRONG_CONTENT_TYPE`, a schema code, `KEY_MISMATCH`, `BAD_SIGNATURE`).
 */
export function openAdjustment(bytes: Uint8Array, terminalPublicKey: Uint8Array, verifier: Verifier = nobleVerifier): OpenedAdjustment {
  const { cose, message } = verifySigned('Adjustment', bytes, terminalPublicKey, verifier);
  if (!bytesEqual(message.terminal, cose.kid))
    throw new DtError(ErrorCode.KEY_MISMATCH, 'the adjustment names another terminal than its signer');
  return { cose, adjustment: message, hash: payloadHash(cose) };
}
