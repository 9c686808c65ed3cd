/**
 * Voids and refunds of journalled payments (SPEC §3 Adjustment, §7.7.3): the one place that
 * signs them, used by `dt-pos void` / `dt-pos refund` and by `dt-pos serve` (the ECR API and
 * the attendant screen).
 *
 * An adjustment is signed with the terminal key and committed to the journal, with the
 * terminal's own rules checked in that same transaction ({@link Journal.recordAdjustment}),
 * before anything shows it; the next sync sends it to the acquirer in a batch and the ledger's
 * outcome (Outcome key 10) says whether it was accepted:
 * - void: while the journal has no outcome for the payment; the payment's handover still goes
 *   to the acquirer (the evidence the ledger judges), in the same batch as the void when not
 *   yet sent; the ledger never credits the merchant and the value returns to the card at its
 *   next sync. Too late (the ledger had settled it): outcome INVALID `VOID_TOO_LATE`, refund it.
 * - refund: of a settled payment, at most what is left of its amount after the refunds not
 *   refused; the ledger debits the merchant and credits the card at its next sync.
 *
 * @module
 */
import {
  exchange,
  MAX_SELECT_ANSWER,
  parseApplicationInfo,
  selectCommand,
  signAdjustment,
  SW,
  toHex,
  type ApplicationInfo,
} from '@dt/protocol';
import { TerminalError, TerminalErrorCode } from './errors.ts';
import type { TerminalIdentity } from './identity.ts';
import { AdjustmentKind, type AdjustmentRecord, type AdjustmentRefusal, type Journal, type PaymentRecord } from './journal/journal.ts';
import type { CardReader } from './transports/reader.ts';

/** Adjustment kinds on the wire (SPEC §3: 1 void, 2 refund). */
export const ADJUSTMENT_WIRE_KIND = { void: 1, refund: 2 } as const;

/** What to adjust. */
export interface AdjustmentRequest {
  readonly kind: AdjustmentKind;
  /** Receipt id of the payment. */
  readonly paymentId: number;
  /** Refund: tiyn (default: what is left to refund). A void is always of the whole payment. */
  readonly amount?: number;
  /** The register's or operator's reference (1-64 characters; the idempotency key of a refund). */
  readonly reference?: string;
}

/** A refusal of a void or refund by the terminal's own rules: nothing was recorded. */
export class AdjustmentRefusedError extends TerminalError {
  /** Builds it from the journal's refusal. */
  constructor(
    readonly reason: AdjustmentRefusal,
    message: string,
  ) {
    super(reason === 'NOT_FOUND' ? TerminalErrorCode.NOT_FOUND : TerminalErrorCode.REFUSED, message, { reason });
    this.name = 'AdjustmentRefusedError';
  }
}

/**
 * Signs and journals a void or refund (durable when this returns). Returns the recorded one,
 * or the one recorded before for the same request (`existing`: the same reference, or the
 * payment's one void).
 *
 * @throws {AdjustmentRefusedError} when the terminal's rules refuse it (NOT_FOUND, ALREADY_SETTLED, NOT_SETTLED, REFUND_EXCEEDS, ...)
 */
export function adjustPayment(
  journal: Journal,
  identity: TerminalIdentity,
  req: AdjustmentRequest,
): { adjustment: AdjustmentRecord; existing: boolean } {
  const r = journal.recordAdjustment(
    {
      kind: req.kind,
      paymentId: req.paymentId,
      ...(req.amount !== undefined ? { amount: req.amount } : {}),
      ...(req.reference !== undefined ? { reference: req.reference } : {}),
    },
    (c) =>
      signAdjustment(
        {
          kind: ADJUSTMENT_WIRE_KIND[req.kind],
          id: c.id,
          terminal: identity.kid,
          transfer: c.transfer,
          card: c.card,
          amount: c.amount,
          currency: c.currency,
          time: c.time,
          ...(req.reference !== undefined ? { reference: req.reference } : {}),
        },
        identity.signer,
      ),
  );
  if (r.kind === 'refused') throw new AdjustmentRefusedError(r.reason, r.message);
  return { adjustment: r.adjustment, existing: r.kind === 'existing' };
}

/** The state of an adjustment for people: `pending ledger confirmation`, `accepted`, `refused (CODE)`. */
export function adjustmentStateText(a: AdjustmentRecord): string {
  switch (a.state) {
    case 'pending':
      return 'pending ledger confirmation (sent at the next sync)';
    case 'submitted':
      return 'pending ledger confirmation (sent)';
    case 'accepted':
      return a.kind === 'void' ? 'confirmed by the ledger' : 'confirmed by the ledger: credited to the card at its next sync';
    case 'refused':
      return `refused by the ledger${a.code ? ` (${a.code})` : ''}${a.code === 'VOID_TOO_LATE' ? ': the payment was settled, refund it instead' : ''}`;
  }
}

/** An adjustment as JSON (the CLI's `--json`, the ECR API): ids and hashes in hex, amounts in tiyn. */
export function adjustmentJson(a: AdjustmentRecord): Record<string, unknown> {
  return {
    id: toHex(a.id),
    kind: a.kind,
    receipt: a.paymentId,
    transfer: toHex(a.transferHash),
    amount: a.amount,
    reference: a.reference ?? null,
    state: a.state,
    code: a.code ?? null,
    batch: a.batchSeq ?? null,
    time: a.time,
  };
}

/** What a payment's adjustments mean for it: voided (a void not refused), the refunds not refused, what is left to refund. */
export function adjustmentSummary(
  p: PaymentRecord,
  adjustments: readonly AdjustmentRecord[],
): { voided: boolean; refunded: number; refundable: number } {
  const voided = adjustments.some((a) => a.kind === 'void' && a.state !== 'refused');
  const refunded = adjustments.filter((a) => a.kind === 'refund' && a.state !== 'refused').reduce((s, a) => s + a.amount, 0);
  return { voided, refunded, refundable: p.state === 'settled' ? Math.max(0, p.amount - refunded) : 0 };
}

/**
 * Reads which card is on the reader (for `dt-pos refund --tap`): waits for a card, SELECTs the
 * DT applet and returns the card id it announces. The id is not authenticated, and need not
 * be: a refund is credited by the ledger to the paying card of the original transfer whoever
 * taps; the tap only lets the terminal show the holder that it is their card.
 *
 * @throws {TerminalError} NOT_FOUND when the card is not a DT card or announces no id; the reader's
 *   own errors (TIMEOUT, transport errors) as they come
 */
export async function readPresentedCard(
  reader: CardReader,
  options: { signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<Uint8Array> {
  const session = await reader.waitForCard(options);
  try {
    const r = await exchange(session, selectCommand(), {
      ...(options.signal ? { signal: options.signal } : {}),
      maxResponse: MAX_SELECT_ANSWER,
    });
    if (r.sw !== SW.OK) throw new TerminalError(TerminalErrorCode.NOT_FOUND, 'the card on the reader is not a DT card');
    let info: ApplicationInfo;
    try {
      info = parseApplicationInfo(r.data, MAX_SELECT_ANSWER);
    } catch {
      throw new TerminalError(TerminalErrorCode.NOT_FOUND, 'the card on the reader is not a DT card');
    }
    if (!info.card) throw new TerminalError(TerminalErrorCode.NOT_FOUND, 'the card on the reader does not say which card it is');
    return info.card;
  } finally {
    await session.release().catch(() => {});
  }
}
