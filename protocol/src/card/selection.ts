/**
 * Input selection (SPEC §10.7 "Input selection"): which coins pay an amount.
 * The one rule the applet (`@dt/firmware`) and the reference wallet
 * (`wallet.ts`) both call, so that for the same holdings and request they
 * build byte-identical transfers.
 *
 * @module
 */
import { addAmounts } from '../amounts.ts';
import { markAllows, markKey } from '../handover.ts';
import { LIMITS } from '../schema/messages.ts';
import type { SpendableCoin } from './types.ts';

/**
 * Deterministic input selection.
 *
 * Coins are eligible when not expired at `at` (`expires < at` is expired;
 * the applet passes `max(request.time, floor)`, SPEC §10.8) and their mark
 * allows the merchant id or MCC (unmarked coins always do). Eligible coins
 * are grouped by mark class (equal encoded mark; one class per transfer,
 * SPEC §7.3). Marked classes are tried first, in the order their first coin
 * appears in `coins`, then the unmarked class, so purpose-bound value is spent
 * where it is accepted. Within a class, coins are taken by value, largest
 * first (holdings order among equal values), until the amount is covered, at
 * most {@link LIMITS}.maxInputs of them. The first class that covers the
 * amount wins; if none does: `undefined`.
 *
 * @example
 * const inputs = selectInputs(coins, 1500, merchantId, 5411, Math.max(request.time, floor));
 * if (!inputs) refuse(); // 6985 on a card
 */
export function selectInputs<C extends SpendableCoin>(
  coins: readonly C[],
  amount: number,
  merchant: string,
  mcc: number,
  at: number,
): C[] | undefined {
  const classes = new Map<string, C[]>();
  for (const c of coins) {
    if (c.expires !== undefined && c.expires < at) continue;
    if (!markAllows(c.mark, merchant, mcc)) continue;
    const k = markKey(c.mark);
    let list = classes.get(k);
    if (!list) classes.set(k, (list = []));
    list.push(c);
  }
  const order = [...classes.keys()].filter((k) => k !== '');
  if (classes.has('')) order.push('');
  for (const k of order) {
    // Array.prototype.sort is stable (ES2019), so equal values keep holdings order.
    const sorted = [...classes.get(k)!].sort((a, b) => b.value - a.value);
    const picked: C[] = [];
    let sum = 0;
    for (const c of sorted) {
      if (sum >= amount || picked.length >= LIMITS.maxInputs) break;
      picked.push(c);
      sum = addAmounts(sum, c.value);
    }
    if (sum >= amount) return picked;
  }
  return undefined;
}
