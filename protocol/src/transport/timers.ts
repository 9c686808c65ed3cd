/**
 * Time for the host-side transports without touching the host's timers:
 * `protocol/src` is pure (no timers; ARCHITECTURE), so the transports that
 * need frame timeouts take a {@link TransportTimers} from the caller. On
 * Node it is `nodeTimers` from `@dt/protocol/native`.
 *
 * @module
 */
import type { AbortSignalLike } from '../apdu/exchange.ts';
import { AbortError } from '../apdu/exchange.ts';

/** One-shot timers, as the host provides them (on Node: its timer functions, `nodeTimers`). */
export interface TransportTimers {
  /** Calls `fn` once after `ms` milliseconds; returns a handle for `cancel`. */
  readonly schedule: (fn: () => void, ms: number) => unknown;
  /** Cancels a timer; a handle that already fired or was cancelled is ignored. */
  readonly cancel: (handle: unknown) => void;
}

/**
 * A cancellation signal of the transports' own (the pure package has no
 * `AbortController`): aborts once, with a reason, when {@link abort} is
 * called or the parent signal aborts.
 */
export class LocalAbort implements AbortSignalLike {
  #aborted = false;
  #reason: unknown;
  #listeners: (() => void)[] = [];
  readonly #parent: AbortSignalLike | undefined;
  readonly #onParent = (): void => this.abort(this.#parent?.reason ?? new AbortError());

  /** Creates the signal, following `parent` when given. */
  constructor(parent?: AbortSignalLike) {
    this.#parent = parent;
    if (parent?.aborted) this.abort(parent.reason ?? new AbortError());
    else parent?.addEventListener('abort', this.#onParent, { once: true });
  }

  /** {@inheritDoc AbortSignalLike.aborted} */
  get aborted(): boolean {
    return this.#aborted;
  }

  /** {@inheritDoc AbortSignalLike.reason} */
  get reason(): unknown {
    return this.#reason;
  }

  /** Aborts with `reason` (the first call wins) and runs the listeners once. */
  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    const listeners = this.#listeners;
    this.#listeners = [];
    for (const l of listeners) l();
  }

  /** {@inheritDoc AbortSignalLike.addEventListener} */
  addEventListener(_type: 'abort', listener: () => void): void {
    if (!this.#aborted) this.#listeners.push(listener);
  }

  /** {@inheritDoc AbortSignalLike.removeEventListener} */
  removeEventListener(_type: 'abort', listener: () => void): void {
    this.#listeners = this.#listeners.filter((l) => l !== listener);
  }

  /** Stops following the parent (call when the operation is over). */
  dispose(): void {
    this.#parent?.removeEventListener('abort', this.#onParent);
    this.#listeners = [];
  }
}

/** Waits `ms` on `timers`; rejects with the signal's reason when it aborts first. */
export function delay(timers: TransportTimers, ms: number, signal?: AbortSignalLike): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the abort reason, passed on as it came
      reject(signal.reason ?? new AbortError());
      return;
    }
    const onAbort = (): void => {
      timers.cancel(handle);
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the abort reason, passed on as it came
      reject(signal?.reason ?? new AbortError());
    };
    const handle = timers.schedule(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
