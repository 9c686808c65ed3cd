/**
 * The one retry policy of the DT clients: a call is retried only when the
 * server was not reached or answered a transient status (5xx, 429, 408);
 * never on a 4xx business refusal, never on a bad 2xx answer. Between
 * attempts it waits {@link backoffDelay}: exponential from `baseMs`, capped at
 * `maxMs`, with equal jitter (half the delay fixed, half uniformly random), so
 * clients that failed together do not come back together and none comes back
 * at once.
 *
 * @module
 */
import { HttpRefusedError, HttpUnreachableError } from './errors.ts';

/** How often and how patiently a call is retried. */
export interface RetryPolicy {
  /** Attempts per call, the first included. */
  readonly attempts: number;
  /** Delay before the first retry, before jitter (ms). */
  readonly baseMs: number;
  /** Largest delay, before jitter (ms). */
  readonly maxMs: number;
}

/** Default policy of the terminal's calls: 4 attempts, 250 ms doubling up to 4 s. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = { attempts: 4, baseMs: 250, maxMs: 4000 };

/**
 * Wait after the `failures`-th consecutive failure (1 = the first): `d = min(maxMs, baseMs · 2^(failures−1))`,
 * then `d/2 + random()·d/2` rounded down, so always in `[d/2, d]`.
 *
 * @param random uniform in [0, 1) (default `Math.random`: jitter needs no secrecy)
 */
export function backoffDelay(failures: number, policy: Pick<RetryPolicy, 'baseMs' | 'maxMs'>, random: () => number = Math.random): number {
  const n = Math.max(1, Math.floor(failures));
  const d = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(n - 1, 30));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.floor(d / 2 + r * (d / 2));
}

/** True for the failures retrying may cure: the server not reached, or a transient status (`HttpRefusedError.transient`). */
export function isRetryable(e: unknown): boolean {
  return e instanceof HttpUnreachableError || (e instanceof HttpRefusedError && e.transient);
}

/** Options of {@link withRetry}. */
export interface WithRetryOptions extends Partial<RetryPolicy> {
  /** Cancels the waits and further attempts; its reason is thrown. */
  readonly signal?: AbortSignal;
  /** Uniform in [0, 1) for the jitter (default `Math.random`). */
  readonly random?: () => number;
  /** Which failures to retry (default {@link isRetryable}). */
  readonly retryable?: (e: unknown) => boolean;
  /** Called before each wait (attempt that failed, the wait in ms, its error). */
  readonly onRetry?: (attempt: number, delayMs: number, error: unknown) => void;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs `call(attempt)` (attempt 1, 2, ...) until it succeeds, fails with an error that is not retryable, or the
 * attempts are used up; then throws that last error unchanged.
 *
 * @example
 * const crl = await withRetry(() => httpRequest(url, { maxBytes }), { attempts: 4, baseMs: 250, maxMs: 4000 });
 */
export async function withRetry<T>(call: (attempt: number) => Promise<T>, options: WithRetryOptions = {}): Promise<T> {
  const policy = { ...DEFAULT_RETRY_POLICY, ...options };
  const attempts = Math.max(1, Math.floor(policy.attempts));
  const retryable = options.retryable ?? isRetryable;
  for (let attempt = 1; ; attempt++) {
    if (options.signal?.aborted) throw options.signal.reason;
    try {
      return await call(attempt);
    } catch (e) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (attempt >= attempts || !retryable(e)) throw e;
      const delay = backoffDelay(attempt, policy, options.random);
      options.onRetry?.(attempt, delay, e);
      await sleep(delay, options.signal);
    }
  }
}
