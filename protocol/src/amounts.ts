/**
 * Amount arithmetic in minor units (tiyn) that cannot overflow silently:
 * every result is checked against 2^53-1 (the largest amount the wire format
 * carries and the largest integer a JS number holds exactly).
 *
 * @module
 */
import { DtError, ErrorCode } from './errors.ts';
import { LIMITS } from './schema/messages.ts';

function check(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < 0 || v > LIMITS.maxAmount) {
    throw new DtError(ErrorCode.AMOUNT_OVERFLOW, `${what} is not an amount in [0, 2^53-1]`);
  }
  return v;
}

/** True for a valid amount. */
export function isAmount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= LIMITS.maxAmount;
}

/** a + b, or `AMOUNT_OVERFLOW`. */
export function addAmounts(a: number, b: number): number {
  check(a, 'left operand');
  check(b, 'right operand');
  return check(a + b, 'sum');
}

/** a - b, or `AMOUNT_OVERFLOW` when b > a. */
export function subtractAmounts(a: number, b: number): number {
  check(a, 'left operand');
  check(b, 'right operand');
  if (b > a) throw new DtError(ErrorCode.AMOUNT_OVERFLOW, 'difference would be negative');
  return a - b;
}

/** Sum of any number of amounts; each partial sum is checked, so the sum of many amounts cannot wrap or lose precision. */
export function sumAmounts(values: Iterable<number>): number {
  let s = 0;
  for (const v of values) s = addAmounts(s, v);
  return s;
}

/**
 * An amount in tiyn as a person reads it: tenge with two decimals and the
 * currency, no digit grouping, e.g. `150000` → `"1500.00 KZT"`, `-5` →
 * `"-0.05 KZT"` (a difference). Every command line and report of the toolkit
 * shows amounts this way; JSON output keeps integer tiyn.
 */
export function formatTenge(tiyn: number): string {
  if (!Number.isSafeInteger(tiyn)) throw new DtError(ErrorCode.AMOUNT_OVERFLOW, 'not an integer amount of tiyn');
  const sign = tiyn < 0 ? '-' : '';
  const abs = Math.abs(tiyn);
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, '0')} KZT`;
}
