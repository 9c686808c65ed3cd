/**
 * The forwarder: takes pending batches from the store, groups batches of many
 * terminals into one `POST /v1/settle` (a settle request signed with the
 * acquirer key, fresh nonce and time for every call, retries and splits
 * included: SPEC.md §7.7.2), verifies every outcome the ledger returns, and
 * records them durably together with the batches' new state.
 *
 * Failure handling:
 * - network errors, timeouts, 5xx, 408, 429, and answers that fail
 *   verification: the group stays pending; the loop retries with the one
 *   backoff of `@dt/protocol/http` (`backoffDelay`, SPEC.md §8.4: exponential,
 *   equal jitter: half the delay fixed, half random).
 * - a refusal of the acquirer itself (its authentication: `ACQUIRER_AUTH`,
 *   `_STALE`, `_REPLAYED`, `_UNKNOWN`; or the media type): the batches are not
 *   at fault; they stay pending and are retried with backoff like an outage.
 * - other 4xx: resending the same request cannot succeed. A group is split
 *   and each batch forwarded alone so one poisoned batch cannot block others;
 *   a single batch refused this way is marked REJECTED with the ledger's code.
 *
 * Crash safety: nothing is recorded before the ledger answered and the answer
 * verified; outcomes and the SETTLED state are one transaction. A crash after
 * the ledger settled but before the record commits leaves the batch pending;
 * it is sent again and the ledger, being idempotent, answers ALREADY_SETTLED
 * (never a second settlement).
 *
 * @module
 */
import { bytesEqual, isDtError, verifySigned, type CborValue, type Verifier, type VerifiedCertificate } from '@dt/protocol';
import { backoffDelay } from '@dt/protocol/http';
import { performance } from 'node:perf_hooks';
import { LedgerCallError, type LedgerClient } from './ledger-client.ts';
import type { AcquirerStore, StoredBatch } from './store.ts';
import type { Metrics } from './metrics.ts';

/** Forwarder tuning. */
export interface ForwarderOptions {
  /** Most batches in one settle call (default 32). */
  readonly maxBatchesPerCall: number;
  /** Most bytes of batches in one settle call, beyond the first batch (default 16 MiB). */
  readonly maxBytesPerCall: number;
  /**
   * Most handovers in one settle call, beyond the first batch (default 2000):
   * the ledger validates every handover before it answers, so this bounds how
   * long one call takes and keeps it well inside the ledger call timeout.
   */
  readonly maxHandoversPerCall: number;
  /** First retry delay (ms, default 250). */
  readonly backoffBaseMs: number;
  /** Largest retry delay (ms, default 30 000). */
  readonly backoffMaxMs: number;
  /** How long new batches may wait to be grouped with others (ms, default 50). */
  readonly lingerMs: number;
  /** Uniform random number in [0, 1) for jitter. */
  readonly random: () => number;
  /** Wall clock (ms) for recorded timestamps; backoff and timers use a monotonic clock. */
  readonly now: () => number;
  /**
   * Test-only fault injection: called after a settle answer verified and
   * before it is recorded (the window where a crash leaves the ledger ahead).
   */
  readonly beforeRecord?: () => void;
}

/** What one forwarding pass did. */
export interface ForwardResult {
  /** Batches settled (outcomes recorded) in this pass. */
  readonly settled: number;
  /** Batches the ledger refused as a whole in this pass. */
  readonly rejected: number;
  /** Batches still pending after the pass. */
  readonly pending: number;
  /** The last error, when the pass stopped on one. */
  readonly error?: string;
}

/** A verified settle answer for one batch. */
interface VerifiedAnswer {
  readonly batch: StoredBatch;
  readonly outcomes: Array<{ status: number; bytes: Uint8Array }>;
}

class BadLedgerAnswer extends Error {}

/** Verifies the ledger's settle answer against the batches sent. */
export function verifySettleAnswer(
  answer: CborValue,
  group: readonly StoredBatch[],
  ledger: VerifiedCertificate,
  verifier: Verifier,
): VerifiedAnswer[] {
  if (!Array.isArray(answer) || answer.length !== group.length) throw new BadLedgerAnswer('settle answer must have one entry per batch');
  return group.map((batch, i) => {
    const entry = answer[i];
    if (!Array.isArray(entry) || entry.length !== batch.handovers + batch.adjustments)
      throw new BadLedgerAnswer(`batch ${i}: one outcome per handover and per adjustment expected`);
    const outcomes = entry.map((o, j) => {
      if (!(o instanceof Uint8Array)) throw new BadLedgerAnswer(`batch ${i} outcome ${j}: not a byte string`);
      let msg;
      try {
        msg = verifySigned('Outcome', o, ledger.publicKey, verifier).message;
      } catch (e) {
        throw new BadLedgerAnswer(`batch ${i} outcome ${j}: ${isDtError(e) ? e.code : 'does not verify'}`);
      }
      // The outcome must be about this very transfer, paid to this terminal; an adjustment's (index handovers + k,
      // SPEC §7.7.1) about the transfer adjustment k names.
      const named = j < batch.handovers ? batch.transferHashes[j]! : batch.adjustmentTransfers[j - batch.handovers]!;
      if (!bytesEqual(msg.transfer, named) || !bytesEqual(msg.terminal, batch.terminal)) {
        throw new BadLedgerAnswer(`batch ${i} outcome ${j}: names another transfer or terminal`);
      }
      return { status: msg.status, bytes: o };
    });
    return { batch, outcomes };
  });
}

/** Moves pending batches to the ledger; see the module comment for the failure rules. */
export class Forwarder {
  #failures = 0;
  #nextAttemptAt = 0;
  #running: Promise<ForwardResult> | null = null;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = 0;
  #stopped = true; // background loop off until start(); forwardNow() works either way
  #closed = false;
  #lastError: string | undefined;
  #lastSuccessAt: number | undefined;

  constructor(
    private readonly store: AcquirerStore,
    private readonly ledger: LedgerClient,
    private readonly ledgerCert: VerifiedCertificate,
    private readonly verifier: Verifier,
    private readonly metrics: Metrics,
    private readonly opts: ForwarderOptions,
    private readonly onSettled: () => Promise<void>,
    /** Wraps the batches of one call in a settle request signed with the acquirer key (fresh nonce and time each call). */
    private readonly seal: (batches: readonly Uint8Array[]) => Uint8Array,
  ) {}

  /** The last forwarding error (cleared by a success). */
  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** When the ledger last answered a settle call (ms). */
  get lastSuccessAt(): number | undefined {
    return this.#lastSuccessAt;
  }

  /** Starts the background loop. */
  start(): void {
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Stops the loop and waits for an in-flight pass. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#running) await this.#running.catch(() => undefined);
  }

  /** Tells the loop new batches arrived (they are grouped for `lingerMs`). */
  notify(): void {
    if (this.#stopped) return;
    const wait = Math.max(this.opts.lingerMs, this.#nextAttemptAt - performance.now());
    this.#schedule(wait);
  }

  /**
   * Forwards everything pending now, ignoring any backoff, and resolves when
   * the pass ends (all pending settled, or the first failure). Never rejects.
   */
  async forwardNow(): Promise<ForwardResult> {
    // Wait for an in-flight pass so two passes never send the same batch concurrently.
    while (this.#running) await this.#running.catch(() => undefined);
    if (this.#closed) return { settled: 0, rejected: 0, pending: 0, error: 'acquirer closed' };
    return this.#pass();
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    const at = performance.now() + Math.max(0, delayMs);
    if (this.#timer) {
      // Keep whichever wake-up comes first.
      if (this.#timerAt <= at) return;
      clearTimeout(this.#timer);
    }
    this.#timerAt = at;
    this.#timer = setTimeout(
      () => {
        this.#timer = null;
        void this.#tick();
      },
      Math.max(0, delayMs),
    );
  }

  async #tick(): Promise<void> {
    if (this.#stopped) return;
    while (this.#running) await this.#running.catch(() => undefined);
    if (this.#stopped) return;
    const wait = this.#nextAttemptAt - performance.now();
    if (wait > 0) return this.#schedule(wait);
    const r = await this.#pass();
    // After a failure, come back after the backoff; after success, only when notified
    // (plus a slow poll in case a notify was missed while a pass ran).
    if (r.error !== undefined) this.#schedule(this.#nextAttemptAt - performance.now());
    else if (r.pending > 0) this.#schedule(0);
    else this.#schedule(5_000);
  }

  #pass(): Promise<ForwardResult> {
    const p = this.#doPass();
    this.#running = p;
    return p.finally(() => {
      if (this.#running === p) this.#running = null;
    });
  }

  async #doPass(): Promise<ForwardResult> {
    let settled = 0;
    let rejected = 0;
    let error: string | undefined;
    try {
      for (;;) {
        if (this.#closed) break;
        const group = this.store.pendingBatches(this.opts.maxBatchesPerCall, this.opts.maxBytesPerCall, this.opts.maxHandoversPerCall);
        if (group.length === 0) break;
        const r = await this.#send(group);
        settled += r.settled;
        rejected += r.rejected;
      }
    } catch (e) {
      error = e instanceof Error ? e.message : String(e);
      this.#failures++;
      const delay = backoffDelay(this.#failures, { baseMs: this.opts.backoffBaseMs, maxMs: this.opts.backoffMaxMs }, this.opts.random);
      this.#nextAttemptAt = performance.now() + delay;
      this.#lastError = error;
      this.metrics.inc('retries');
      // Unreachable, timed out or 5xx: the ledger is down for us. (An answer that failed
      // verification, or a 4xx refusing the acquirer itself, came from a reachable ledger;
      // it is reported through lastError.)
      if (e instanceof LedgerCallError && !(e.status >= 400 && e.status < 500)) this.metrics.ledgerUp = false;
    }
    if (settled > 0) {
      await this.onSettled().catch(() => undefined);
    }
    return { settled, rejected, pending: this.store.queueStats().pendingBatches, ...(error !== undefined ? { error } : {}) };
  }

  /** Sends one group; on a whole-request 4xx splits it. Throws on retryable failures. */
  async #send(group: StoredBatch[]): Promise<{ settled: number; rejected: number }> {
    this.store.countAttempt(group.map((b) => b.id));
    this.metrics.inc('settleCalls');
    let answer: CborValue;
    try {
      answer = await this.ledger.settle(this.seal(group.map((b) => b.bytes)), group.length);
    } catch (e) {
      if (e instanceof LedgerCallError && e.kind === 'reject') {
        this.metrics.ledgerUp = true;
        if (group.length > 1) {
          let settled = 0;
          let rejected = 0;
          for (const b of group) {
            const r = await this.#send([b]);
            settled += r.settled;
            rejected += r.rejected;
          }
          return { settled, rejected };
        }
        this.store.rejectBatch(group[0]!.id, e.code, this.opts.now());
        this.metrics.inc('batchesRejectedByLedger');
        return { settled: 0, rejected: 1 };
      }
      throw e;
    }
    this.metrics.ledgerUp = true;
    let verified: VerifiedAnswer[];
    try {
      verified = verifySettleAnswer(answer, group, this.ledgerCert, this.verifier);
    } catch (e) {
      // Fail closed: an answer we cannot verify is not recorded; retry later.
      throw new Error(`LEDGER_BAD_RESPONSE: ${(e as Error).message}`, { cause: e });
    }
    this.opts.beforeRecord?.();
    const n = this.store.recordOutcomes(verified, this.opts.now());
    this.#failures = 0;
    this.#nextAttemptAt = 0;
    this.#lastError = undefined;
    this.#lastSuccessAt = this.opts.now();
    this.metrics.inc('batchesForwarded', group.length);
    this.metrics.inc('outcomesRecorded', n);
    return { settled: group.length, rejected: 0 };
  }
}
