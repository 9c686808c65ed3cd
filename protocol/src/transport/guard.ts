/**
 * The one-exchange-at-a-time guard of every host-side transport and reader.
 *
 * @module
 */
import { TransportBusyError } from './errors.ts';

/**
 * A one-holder guard: {@link acquire} fails at once with
 * {@link TransportBusyError} instead of queueing, because an exchange that
 * waits behind another is a bug the caller must see (a tap racing a tap, a
 * command sent while the previous answer is still coming).
 *
 * @example
 * const guard = new ExchangeGuard('serial:/dev/ttyACM0');
 * const answer = await guard.run(() => link.exchange(apdu));
 */
export class ExchangeGuard {
  #held = false;

  /** Creates the guard; `name` names the reader or transport in the busy error. */
  constructor(readonly name: string) {}

  /** True while an exchange holds the guard. */
  get held(): boolean {
    return this.#held;
  }

  /** Takes the guard or throws {@link TransportBusyError}. */
  acquire(): void {
    if (this.#held) throw new TransportBusyError(this.name);
    this.#held = true;
  }

  /** Releases the guard (idempotent). */
  release(): void {
    this.#held = false;
  }

  /** Runs `fn` holding the guard; throws {@link TransportBusyError} (without calling `fn`) while another run is in flight. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}
