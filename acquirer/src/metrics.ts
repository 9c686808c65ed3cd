/**
 * Process metrics in the Prometheus text exposition format (version 0.0.4).
 * Counters count since process start (Prometheus handles resets); gauges are
 * read from the durable store at scrape time, so they survive restarts.
 *
 * @module
 */
import { performance } from 'node:perf_hooks';

/** Counter names kept in memory. */
export type CounterName =
  | 'batchesReceived'
  | 'batchesDuplicate'
  | 'batchesRefused'
  | 'batchesForwarded'
  | 'batchesRejectedByLedger'
  | 'settleCalls'
  | 'retries'
  | 'outcomesRecorded'
  | 'outcomeReads'
  | 'crlRefreshes'
  | 'crlRefreshFailures';

const COUNTERS: ReadonlyArray<[CounterName, string, string]> = [
  ['batchesReceived', 'dt_acquirer_batches_received_total', 'Batches accepted and stored (new, not resends).'],
  ['batchesDuplicate', 'dt_acquirer_batches_duplicate_total', 'Identical resends answered with the stored ack.'],
  ['batchesRefused', 'dt_acquirer_batches_refused_total', 'Batch submissions refused with a 4xx.'],
  ['batchesForwarded', 'dt_acquirer_batches_forwarded_total', 'Batches settled by the ledger with outcomes recorded.'],
  ['batchesRejectedByLedger', 'dt_acquirer_batches_rejected_by_ledger_total', 'Batches the ledger refused as a whole.'],
  ['settleCalls', 'dt_acquirer_settle_calls_total', 'POST /v1/settle calls made to the ledger.'],
  ['retries', 'dt_acquirer_forward_retries_total', 'Forwarding passes that failed and were scheduled for retry.'],
  ['outcomesRecorded', 'dt_acquirer_outcomes_recorded_total', 'Ledger outcomes verified and recorded.'],
  ['outcomeReads', 'dt_acquirer_outcome_reads_total', 'Authenticated outcome reads by terminals.'],
  ['crlRefreshes', 'dt_acquirer_crl_refreshes_total', 'Revocation list fetches that verified.'],
  ['crlRefreshFailures', 'dt_acquirer_crl_refresh_failures_total', 'Revocation list fetches that failed or did not verify.'],
];

/** Gauges read at scrape time. */
export interface GaugeValues {
  readonly pendingBatches: number;
  readonly pendingHandovers: number;
  readonly oldestPendingAgeSeconds: number;
  readonly crlVersion: number;
  readonly ledgerUp: boolean;
}

/** In-memory counters plus a renderer. */
export class Metrics {
  readonly #c = new Map<CounterName, number>();
  #ledgerUp = false;
  /** Monotonic time (ms) of the last ledger interaction, -Infinity before the first. */
  ledgerSeenAt = -Infinity;

  /** Whether the last call to the ledger got an HTTP answer. */
  get ledgerUp(): boolean {
    return this.#ledgerUp;
  }
  set ledgerUp(v: boolean) {
    this.#ledgerUp = v;
    this.ledgerSeenAt = performance.now();
  }

  /** Adds `by` (default 1) to a counter. */
  inc(name: CounterName, by = 1): void {
    this.#c.set(name, (this.#c.get(name) ?? 0) + by);
  }

  /** Current value of a counter. */
  get(name: CounterName): number {
    return this.#c.get(name) ?? 0;
  }

  /** Renders all metrics as Prometheus text. */
  render(g: GaugeValues): string {
    const lines: string[] = [];
    for (const [key, name, help] of COUNTERS) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${this.get(key)}`);
    }
    const gauges: Array<[string, string, number]> = [
      ['dt_acquirer_pending_batches', 'Batches stored and not yet settled by the ledger.', g.pendingBatches],
      ['dt_acquirer_pending_handovers', 'Handovers in pending batches.', g.pendingHandovers],
      ['dt_acquirer_oldest_pending_age_seconds', 'Age of the oldest pending batch (0 when none).', g.oldestPendingAgeSeconds],
      ['dt_acquirer_crl_version', 'Version of the latest verified revocation list (0 when none).', g.crlVersion],
      ['dt_acquirer_ledger_up', 'Whether the last ledger call got an answer (1) or not (0).', g.ledgerUp ? 1 : 0],
    ];
    for (const [name, help, v] of gauges) lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${v}`);
    return lines.join('\n') + '\n';
  }
}
