/**
 * `@dt/protocol/http`: the one HTTP client layer of the DT packages, on the
 * platform's `fetch` (Node, browsers, other JS runtimes with fetch and
 * timers; not the firmware, which has neither, so the pure entry point
 * `@dt/protocol` does not re-export it).
 *
 * - {@link httpRequest}: one exchange, a time limit through an `AbortSignal`,
 *   the body read within a byte bound;
 * - {@link parseErrorBody}: the error bodies of SPEC.md §8.4 (JSON or CBOR);
 * - {@link withRetry}, {@link backoffDelay}, {@link isRetryable}: the one retry
 *   policy (unreachable, 5xx, 429, 408 only; exponential backoff, equal jitter);
 * - {@link HttpUnreachableError}, {@link HttpRefusedError},
 *   {@link HttpBadResponseError}: the three ways a call fails;
 * - {@link AcquirerClient}: the acquirer API on top of them.
 *
 * The terminal's sync and card sync, the acquirer's ledger client and the lab
 * use nothing else to speak HTTP.
 *
 * @module
 */
export * from './errors.ts';
export * from './error-body.ts';
export * from './request.ts';
export * from './retry.ts';
export * from './acquirer.ts';
