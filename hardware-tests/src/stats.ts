/**
 * Latency statistics of the timing suite and the benchmark.
 *
 * Percentiles use the NEAREST-RANK method: for `n` sorted samples, the p-th
 * percentile is the sample at rank `ceil(p / 100 * n)` (1-based). Every
 * percentile is therefore a latency that was actually measured (no
 * interpolation between two taps), p100 is the maximum and, for n < 20, p95
 * is the maximum too: with few taps the tail figures are honest rather than
 * smooth.
 *
 * All figures are rounded to 0.001 ms (one microsecond): `performance.now()`
 * resolution is finer, but anything below a microsecond is noise for a tap.
 *
 * @module
 */
import type { PhaseStats } from './model.ts';

/** Rounds milliseconds to 0.001 ms. */
export function roundMs(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/**
 * The nearest-rank `p`-th percentile (0 < p <= 100) of `sorted` (ascending).
 * Returns NaN for an empty array.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile must be in (0, 100], got ${p}`);
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/**
 * Statistics of one phase from its samples (milliseconds, tap order).
 * With no samples (`n = 0`) every figure is 0: JSON has no NaN, and `n`
 * says that there is nothing behind them. Non-finite or negative samples are
 * a measurement bug and are refused.
 */
export function phaseStats(samples: readonly number[]): PhaseStats {
  for (const s of samples) {
    if (!Number.isFinite(s) || s < 0) throw new RangeError(`latency sample must be a finite, non-negative number of ms, got ${s}`);
  }
  const kept = samples.map(roundMs);
  if (kept.length === 0) return { n: 0, min: 0, max: 0, mean: 0, p50: 0, p95: 0, p99: 0, samples: [] };
  const sorted = [...kept].sort((a, b) => a - b);
  const sum = kept.reduce((a, b) => a + b, 0);
  return {
    n: kept.length,
    min: sorted[0]!,
    max: sorted[sorted.length - 1]!,
    mean: roundMs(sum / kept.length),
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    samples: kept,
  };
}

/** A histogram bin: `[lo, hi)` (the last bin includes `hi`). */
export interface HistogramBin {
  readonly lo: number;
  readonly hi: number;
  readonly count: number;
}

/**
 * Equal-width histogram of `samples` with `bins` bins (default: the
 * square-root rule, 5..40 bins). Samples all equal give one bin. Used by the
 * HTML report's script (which has its own copy: the report must work
 * offline without this module) and by tests that check the drawn bars.
 */
export function histogram(samples: readonly number[], bins?: number): HistogramBin[] {
  if (samples.length === 0) return [];
  const min = Math.min(...samples);
  const max = Math.max(...samples);
  if (max === min) return [{ lo: min, hi: max, count: samples.length }];
  const k = bins ?? Math.min(40, Math.max(5, Math.ceil(Math.sqrt(samples.length))));
  const width = (max - min) / k;
  const out = Array.from({ length: k }, (_, i) => ({ lo: min + i * width, hi: i === k - 1 ? max : min + (i + 1) * width, count: 0 }));
  for (const s of samples) out[Math.min(k - 1, Math.floor((s - min) / width))]!.count++;
  return out;
}
