/**
 * Amount arithmetic (SPEC.md §6.5): checked addition, subtraction and sums in
 * [0, 2^53-1], compared against exact BigInt arithmetic. Money is never
 * created by wrap-around or lost by rounding: every result is exact or an
 * AMOUNT_OVERFLOW error.
 */
import test from 'ava';
import fc from 'fast-check';

import { addAmounts, DtError, ErrorCode, formatTenge, isAmount, LIMITS, subtractAmounts, sumAmounts } from '../src/index.ts';
import { SEED } from './helpers/arbitrary.ts';

const MAX = LIMITS.maxAmount;

function overflow(t: import('ava').ExecutionContext, fn: () => unknown, what: string): void {
  const err = t.throws(fn, undefined, what);
  t.true(err instanceof DtError && err.code === ErrorCode.AMOUNT_OVERFLOW, `${what}: ${String(err)}`);
}

test('the amount range is [0, 2^53-1]', (t) => {
  t.is(MAX, 9007199254740991);
  t.true(isAmount(0));
  t.true(isAmount(MAX));
  t.false(isAmount(MAX + 1));
  t.false(isAmount(-1));
  t.false(isAmount(1.5));
  t.false(isAmount(Number.NaN));
  t.false(isAmount(Number.POSITIVE_INFINITY));
  t.false(isAmount('1'));
  t.false(isAmount(1n));
  t.false(isAmount(null));
});

test('addition is exact up to the maximum', (t) => {
  t.is(addAmounts(0, 0), 0);
  t.is(addAmounts(150_00, 25_50), 175_50);
  t.is(addAmounts(MAX - 1, 1), MAX);
  t.is(addAmounts(0, MAX), MAX);
});

test('addition beyond 2^53-1 is AMOUNT_OVERFLOW, never a rounded float', (t) => {
  overflow(t, () => addAmounts(MAX, 1), 'MAX + 1');
  overflow(t, () => addAmounts(MAX, MAX), 'MAX + MAX');
  // In floating point 2^53-1 + 2 = 2^53+1 rounds to 2^53: the check must not be fooled.
  overflow(t, () => addAmounts(MAX, 2), 'MAX + 2');
  overflow(t, () => addAmounts(2 ** 52, 2 ** 52), '2^52 + 2^52');
});

test('negative, fractional and non-numeric operands are rejected', (t) => {
  const bad: unknown[] = [
    -1,
    -0.5,
    0.5,
    1.000001,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    MAX + 1,
    '5',
    5n,
    null,
    undefined,
  ];
  for (const b of bad) {
    overflow(t, () => addAmounts(b as number, 1), `add(${String(b)}, 1)`);
    overflow(t, () => addAmounts(1, b as number), `add(1, ${String(b)})`);
    overflow(t, () => subtractAmounts(10, b as number), `sub(10, ${String(b)})`);
    overflow(t, () => sumAmounts([1, b as number]), `sum([1, ${String(b)}])`);
  }
});

test('subtraction is exact and never goes below zero', (t) => {
  t.is(subtractAmounts(MAX, MAX), 0);
  t.is(subtractAmounts(MAX, 1), MAX - 1);
  t.is(subtractAmounts(100, 40), 60);
  overflow(t, () => subtractAmounts(0, 1), '0 - 1');
  overflow(t, () => subtractAmounts(40, 100), '40 - 100');
});

test('sums of many amounts: every partial sum is checked', (t) => {
  t.is(sumAmounts([]), 0);
  t.is(sumAmounts([1, 2, 3]), 6);
  // The overflow happens at the second term; the rest cannot bring it back.
  overflow(t, () => sumAmounts([MAX, 1, 0, 0]), 'MAX, 1, ...');
  overflow(t, () => sumAmounts([MAX, MAX]), 'MAX, MAX');
});

test('a sum of 1024 amounts of 2^43 (= 2^53) overflows; 1023 of them plus 2^43-1 is exactly the maximum', (t) => {
  overflow(t, () => sumAmounts(Array.from({ length: 1024 }, () => 2 ** 43)), '1024 x 2^43');
  t.is(sumAmounts([...Array.from({ length: 1023 }, () => 2 ** 43), 2 ** 43 - 1]), MAX);
});

test('sumAmounts accepts any iterable (e.g. a generator of output values)', (t) => {
  function* values() {
    yield 10;
    yield 20;
  }
  t.is(sumAmounts(values()), 30);
});

test('property: addAmounts equals exact BigInt addition, or throws exactly when the exact sum exceeds 2^53-1', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX }), fc.integer({ min: 0, max: MAX }), (a, b) => {
        const exact = BigInt(a) + BigInt(b);
        let got: number | 'overflow';
        try {
          got = addAmounts(a, b);
        } catch (e) {
          if (!(e instanceof DtError && e.code === ErrorCode.AMOUNT_OVERFLOW)) throw e;
          got = 'overflow';
        }
        if (exact > BigInt(MAX) ? got !== 'overflow' : got === 'overflow' || BigInt(got) !== exact) {
          throw new Error(`${a} + ${b}: got ${String(got)}, exact ${exact}`);
        }
      }),
      { seed: SEED, numRuns: 2000 },
    ),
  );
});

test('property: sumAmounts of many values equals the exact sum or overflows exactly when it exceeds 2^53-1', (t) => {
  const big = fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: MAX }), fc.integer({ min: 2 ** 50, max: 2 ** 51 }));
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.array(big, { maxLength: 40 }), (values) => {
        const exact = values.reduce((s, v) => s + BigInt(v), 0n);
        let got: number | 'overflow';
        try {
          got = sumAmounts(values);
        } catch (e) {
          if (!(e instanceof DtError && e.code === ErrorCode.AMOUNT_OVERFLOW)) throw e;
          got = 'overflow';
        }
        const want = exact > BigInt(MAX) ? 'overflow' : Number(exact);
        if (got !== want) throw new Error(`sum: got ${String(got)}, want ${String(want)}`);
      }),
      { seed: SEED, numRuns: 1000 },
    ),
  );
});

test('property: (a + b) - b = a whenever a + b is an amount (no value created or lost)', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX }), fc.integer({ min: 0, max: MAX }), (a, b) => {
        if (BigInt(a) + BigInt(b) > BigInt(MAX)) return;
        if (subtractAmounts(addAmounts(a, b), b) !== a) throw new Error(`${a}, ${b}`);
      }),
      { seed: SEED, numRuns: 1000 },
    ),
  );
});

test('formatTenge: tenge with two decimals and the currency, for people; exact at the maximum', (t) => {
  t.is(formatTenge(0), '0.00 KZT');
  t.is(formatTenge(5), '0.05 KZT');
  t.is(formatTenge(15050), '150.50 KZT');
  t.is(formatTenge(150_000), '1500.00 KZT');
  t.is(formatTenge(-5), '-0.05 KZT');
  t.is(formatTenge(MAX), '90071992547409.91 KZT');
  t.throws(() => formatTenge(1.5), { instanceOf: DtError });
});
