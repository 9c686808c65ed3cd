/**
 * Timeouts and cancellation helpers: every wait in the terminal has a time
 * limit and an AbortSignal, and both end in a typed error.
 *
 * @module
 */
import { TerminalError, TerminalErrorCode, TimeoutError } from '../errors.ts';

/** A child signal that aborts with a {@link TimeoutError} after `ms`, or with the parent's reason. */
export interface Deadline {
  readonly signal: AbortSignal;
  /** Stops the timer and detaches from the parent (call it when the wait is over). */
  dispose(): void;
}

/** The error to throw for an aborted signal: its reason when it is an Error, else an ABORTED TerminalError. */
export function abortReason(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  if (r instanceof Error) return r;
  return new TerminalError(TerminalErrorCode.ABORTED, 'operation aborted');
}

/** Throws the abort reason when `signal` has aborted. */
export function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortReason(signal);
}

/**
 * Creates a deadline of `ms` milliseconds under `parent`. `what` names the
 * wait in the timeout error ("card", "pin", "tap", "http"); `timeoutError`
 * builds another error instead (the per-APDU limit throws the protocol's
 * `TransportTimeoutError`).
 */
export function deadline(parent: AbortSignal | undefined, ms: number, what: string, timeoutError?: () => Error): Deadline {
  const ctl = new AbortController();
  const onParent = (): void => ctl.abort(parent!.reason ?? new TerminalError(TerminalErrorCode.ABORTED, 'operation aborted'));
  if (parent?.aborted) onParent();
  else parent?.addEventListener('abort', onParent, { once: true });
  const timer = Number.isFinite(ms) ? setTimeout(() => ctl.abort(timeoutError?.() ?? new TimeoutError(what, ms)), ms) : undefined;
  // A pending deadline must not keep a finished CLI process alive.
  timer?.unref?.();
  return {
    signal: ctl.signal,
    dispose() {
      if (timer !== undefined) clearTimeout(timer);
      parent?.removeEventListener('abort', onParent);
    },
  };
}

/** Runs `fn` under a deadline and always disposes it. */
export async function withDeadline<T>(
  parent: AbortSignal | undefined,
  ms: number,
  what: string,
  fn: (signal: AbortSignal) => Promise<T>,
  timeoutError?: () => Error,
): Promise<T> {
  const d = deadline(parent, ms, what, timeoutError);
  try {
    checkAborted(d.signal);
    return await raceAbort(fn(d.signal), d.signal);
  } finally {
    d.dispose();
  }
}

/**
 * Resolves like `promise`, but rejects as soon as `signal` aborts (the
 * underlying operation is expected to observe the same signal and stop).
 */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(abortReason(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      promise.catch(() => {});
      reject(abortReason(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** Sleeps `ms`, rejecting early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return raceAbort(
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      signal?.addEventListener('abort', () => clearTimeout(t), { once: true });
    }),
    signal,
  );
}
