/**
 * The sync client: when the terminal is online it signs and sends its
 * pending payments to the acquirer in batches, fetches the ledger's
 * outcomes and applies them, and fetches the revocation list.
 *
 * Wire contract (acquirer/README.md, SPEC.md §7.7.1; the objects are defined
 * once in `@dt/protocol`): `POST /v1/batches` (signed Batch,
 * `application/cose`) answers a CBOR BatchAck; `GET
 * /v1/terminals/:kid/outcomes?after=N` with a `DT-COSE` signed authorization
 * (`signAcquirerRequest`) answers a CBOR OutcomePage; `GET /v1/crl` answers
 * the signed RevocationList. Errors carry the stable codes of SPEC.md §8.3.
 * The HTTP calls go through `AcquirerClient` of `@dt/protocol/http` (bounded
 * reads, the one error-body parser, the one retry policy of SPEC.md §8.4);
 * this module maps its typed errors onto the terminal's.
 *
 * Why it cannot lose or duplicate a payment:
 * - a batch is built, signed and stored in one journal transaction before it
 *   is sent, and the very same bytes are resent until acknowledged (the
 *   acquirer answers an identical resend with the same ack);
 * - payments (and voids and refunds) become `submitted` only after a verified
 *   ack naming this terminal, this sequence number, the SHA-256 of these bytes
 *   and their handover and adjustment counts;
 * - outcomes are verified with the pinned ledger key and applied together
 *   with the cursor in one transaction.
 *
 * With the acquirer down, `sync` returns a report saying so (and what is
 * pending since when); nothing is lost, everything is retried next time.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import {
  AcquirerErrorCode,
  bytesEqual,
  createTrustStore,
  isDtError,
  LIMITS,
  OutcomeStatus,
  sha256,
  signMessage,
  verifySigned,
} from '@dt/protocol';
import {
  AcquirerClient,
  DEFAULT_RETRY_POLICY,
  HttpBadResponseError,
  HttpRefusedError,
  HttpUnreachableError,
  isTransientStatus,
} from '@dt/protocol/http';
import { TerminalError, TerminalErrorCode } from '../errors.ts';
import type { TerminalIdentity } from '../identity.ts';
import {
  AdjustmentKind,
  PaymentState,
  type AdjustmentOutcomeUpdate,
  type Journal,
  type OutcomeUpdate,
  type PendingSummary,
} from '../journal/journal.ts';
import { abortReason } from '../util/abort.ts';
import { installRevocationList, type CrlInstallResult } from './crl.ts';

// ---------------------------------------------------------------- retries
/**
 * Retry policy of the HTTP calls: the one policy of `@dt/protocol/http` (SPEC.md §8.4: only unreachable, 5xx,
 * 429 and 408 are retried; exponential backoff with equal jitter) plus the per-request time limit.
 */
export interface RetryPolicy {
  /** Attempts per call, first included (default 4). */
  readonly attempts: number;
  /** First backoff (default 250 ms). */
  readonly baseMs: number;
  /** Largest backoff (default 4 s). */
  readonly maxMs: number;
  /** Per-request time limit (default 15 s). */
  readonly timeoutMs: number;
}

/** Default retry policy. */
export const DEFAULT_RETRY: RetryPolicy = { ...DEFAULT_RETRY_POLICY, timeoutMs: 15_000 };

/** An HTTP refusal by the acquirer: its status and its stable code (SPEC.md §8.3). */
export class AcquirerRefusedError extends TerminalError {
  /** Builds it from the HTTP status and the acquirer's stable code. */
  constructor(
    readonly status: number,
    readonly acquirerCode: string,
    message: string,
  ) {
    // The acquirer's code is this problem's code (SyncProblem.code): the message does not repeat it.
    super(TerminalErrorCode.NETWORK, `acquirer answered HTTP ${status}: ${message}`, { status, acquirerCode });
    this.name = 'AcquirerRefusedError';
  }
  /** True when retrying may help (overload, server error). */
  get transient(): boolean {
    return isTransientStatus(this.status);
  }
}

// ---------------------------------------------------------------- client
/** Options of {@link SyncClient}. */
export interface SyncClientOptions {
  readonly identity: TerminalIdentity;
  readonly journal: Journal;
  /** Base URL of the acquirer, e.g. `http://127.0.0.1:8081`. */
  readonly acquirerUrl: string;
  readonly retry?: Partial<RetryPolicy>;
  /** Clock in seconds. */
  readonly now?: () => number;
  /** Handovers per batch (default 500). */
  readonly maxBatchHandovers?: number;
  /** `fetch` implementation (default the global one). */
  readonly fetch?: typeof fetch;
  /** Random numbers for jitter and nonces (default node:crypto). */
  readonly random?: (n: number) => Uint8Array;
  /** Hook called between steps (tests use it to observe and to crash at chosen points). */
  readonly onStep?: (step: string, info?: Record<string, number>) => void;
}

/** One step's failure. */
export interface SyncProblem {
  readonly step: 'crl' | 'batches' | 'outcomes';
  readonly code: string;
  readonly message: string;
}

/** What one sync did. */
export interface SyncReport {
  /** True when every step reached the acquirer. */
  readonly online: boolean;
  readonly batches: { seq: number; count: number; total: number; adjustments: number }[];
  readonly outcomes: {
    applied: number;
    unknown: number;
    byState: Partial<Record<PaymentState, number>>;
    /** Outcomes of this terminal's voids and refunds (Outcome key 10): accepted (VOIDED, REFUNDED) or refused (INVALID). */
    adjustments: { accepted: number; refused: number };
  };
  readonly crl?: CrlInstallResult;
  readonly problems: SyncProblem[];
  /** What is still unverified after this sync, and since when. */
  readonly pending: PendingSummary;
}

const OUTCOME_STATE: Record<number, PaymentState> = {
  [OutcomeStatus.SETTLED]: PaymentState.SETTLED,
  [OutcomeStatus.ALREADY_SETTLED]: PaymentState.SETTLED,
  [OutcomeStatus.DOUBLE_SPEND]: PaymentState.DOUBLE_SPENT,
  [OutcomeStatus.INVALID]: PaymentState.REJECTED,
  [OutcomeStatus.VOIDED]: PaymentState.REJECTED,
};

/**
 * Sync client of one terminal.
 *
 * @example
 * const report = await new SyncClient({ identity, journal, acquirerUrl }).sync();
 * if (!report.online) console.log(`offline: ${report.pending.amount} pending since ${report.pending.since}`);
 */
export class SyncClient {
  readonly #o: SyncClientOptions;
  readonly #now: () => number;
  readonly #acquirer: AcquirerClient;

  /** Creates the client. */
  constructor(options: SyncClientOptions) {
    this.#o = options;
    const retry = { ...DEFAULT_RETRY, ...options.retry };
    this.#now = options.now ?? (() => Math.floor(Date.now() / 1000));
    this.#acquirer = new AcquirerClient({
      baseUrl: options.acquirerUrl,
      timeoutMs: retry.timeoutMs,
      retry: { attempts: retry.attempts, baseMs: retry.baseMs, maxMs: retry.maxMs },
      ...(options.fetch ? { fetch: options.fetch } : {}),
      random: options.random ?? ((n) => new Uint8Array(randomBytes(n))),
      now: this.#now,
    });
  }

  /** Runs one sync: batches, outcomes, revocation list. Never throws for network trouble: see the report. */
  async sync(options: { signal?: AbortSignal } = {}): Promise<SyncReport> {
    const { journal } = this.#o;
    const problems: SyncProblem[] = [];
    const batches: SyncReport['batches'] = [];
    const outcomes: SyncReport['outcomes'] = { applied: 0, unknown: 0, byState: {}, adjustments: { accepted: 0, refused: 0 } };
    let crl: CrlInstallResult | undefined;
    const note = (step: SyncProblem['step'], e: unknown): void => {
      if (options.signal?.aborted) throw abortReason(options.signal);
      const code =
        e instanceof AcquirerRefusedError ? e.acquirerCode : e instanceof TerminalError ? e.code : isDtError(e) ? e.code : 'NETWORK';
      problems.push({ step, code, message: (e as Error).message });
    };
    // Batches first: each reports the revocation list version its payments were checked against.
    try {
      await this.#submitBatches(batches, options.signal);
    } catch (e) {
      note('batches', e);
    }
    try {
      await this.#fetchOutcomes(outcomes, options.signal);
    } catch (e) {
      note('outcomes', e);
    }
    try {
      crl = await this.#fetchCrl(options.signal);
    } catch (e) {
      note('crl', e);
    }
    const now = this.#now();
    const online = !problems.some((p) => p.code === 'NETWORK' || p.code === TerminalErrorCode.NETWORK);
    if (problems.length === 0) {
      journal.setMeta('lastSyncOk', String(now));
      journal.setMeta('lastSyncError', '');
    } else {
      journal.setMeta('lastSyncError', JSON.stringify({ at: now, problems: problems.map((p) => ({ step: p.step, code: p.code })) }));
    }
    journal.setMeta('lastSyncAttempt', String(now));
    return { online, batches, outcomes, ...(crl ? { crl } : {}), problems, pending: journal.pendingSummary() };
  }

  // ------------------------------------------------------------ batches
  async #submitBatches(out: SyncReport['batches'], signal: AbortSignal | undefined): Promise<void> {
    const { journal, identity } = this.#o;
    const max = Math.min(this.#o.maxBatchHandovers ?? 500, LIMITS.maxBatchHandovers);
    for (;;) {
      const batch = journal.nextBatch(max, (seq, handovers, crlVersion, adjustments) =>
        signMessage(
          'Batch',
          {
            terminal: identity.kid,
            seq,
            time: this.#now(),
            chain: identity.chain,
            handovers,
            crlVersion,
            // Voids and refunds (SPEC §7.7.3); the key is absent when there are none.
            ...(adjustments.length > 0 ? { adjustments } : {}),
          },
          identity.signer,
        ),
      );
      if (!batch) return;
      this.#o.onStep?.('batch-built', { seq: batch.seq });
      const ack = await this.#call('/v1/batches', (o) => this.#acquirer.submitBatch(batch.bytes, o), signal);
      // The ack must name exactly what we sent; anything else is not an acknowledgement.
      if (
        !bytesEqual(ack.terminal, identity.kid) ||
        ack.seq !== batch.seq ||
        !bytesEqual(ack.hash, sha256(batch.bytes)) ||
        ack.handovers !== batch.count ||
        (ack.adjustments ?? 0) !== batch.adjustments
      ) {
        throw new TerminalError(TerminalErrorCode.BAD_RESPONSE, 'batch acknowledgement names another batch', { seq: batch.seq });
      }
      this.#o.onStep?.('batch-acked', { seq: batch.seq });
      journal.ackBatch(batch.seq);
      out.push({ seq: batch.seq, count: batch.count, total: batch.total, adjustments: batch.adjustments });
    }
  }

  // ------------------------------------------------------------ outcomes
  async #fetchOutcomes(out: SyncReport['outcomes'], signal: AbortSignal | undefined): Promise<void> {
    const { journal, identity } = this.#o;
    const trust = createTrustStore({ root: identity.root, ledgerCert: identity.ledgerCert, at: this.#now() });
    for (;;) {
      const cursor = journal.getMeta('outcomeCursor') ?? '0';
      let page;
      try {
        page = await this.#call('/v1/terminals/:kid/outcomes', (o) => this.#acquirer.fetchOutcomes(identity.signer, cursor, o), signal);
      } catch (e) {
        // The acquirer knows a terminal from its first accepted batch: before that there is nothing to fetch.
        if (e instanceof AcquirerRefusedError && e.acquirerCode === AcquirerErrorCode.TERMINAL_UNKNOWN && journal.getBatch(1) === undefined)
          return;
        throw e;
      }
      const applied: OutcomeUpdate[] = [];
      const adjusted: AdjustmentOutcomeUpdate[] = [];
      for (const bytes of page.outcomes) {
        let o;
        try {
          o = verifySigned('Outcome', bytes, trust.ledgerKey).message;
        } catch (e) {
          // One bad outcome: apply nothing from this page and keep the cursor (fail closed).
          throw new TerminalError(
            TerminalErrorCode.BAD_RESPONSE,
            `outcome does not verify with the ledger key: ${isDtError(e) ? e.code : 'error'}`,
            {},
            e,
          );
        }
        if (!bytesEqual(o.terminal, identity.kid)) throw new TerminalError(TerminalErrorCode.BAD_RESPONSE, 'outcome for another terminal');
        if (o.adjustment !== undefined) {
          // The answer to one of this terminal's voids or refunds (SPEC §7.7.3): it never changes the payment itself.
          const mine = journal.getAdjustment(o.adjustment);
          const accepts = mine?.kind === AdjustmentKind.VOID ? OutcomeStatus.VOIDED : OutcomeStatus.REFUNDED;
          if (mine && o.status !== accepts && o.status !== OutcomeStatus.INVALID)
            throw new TerminalError(TerminalErrorCode.BAD_RESPONSE, `outcome status ${o.status} does not answer a ${mine.kind}`);
          if (mine && !bytesEqual(mine.transferHash, o.transfer))
            throw new TerminalError(TerminalErrorCode.BAD_RESPONSE, `outcome of a ${mine.kind} names another transfer`);
          const accepted = o.status !== OutcomeStatus.INVALID;
          adjusted.push({ id: o.adjustment, transferHash: o.transfer, accepted, ...(o.code ? { code: o.code } : {}), bytes });
          if (accepted) out.adjustments.accepted++;
          else out.adjustments.refused++;
          continue;
        }
        const state = OUTCOME_STATE[o.status];
        if (!state) throw new TerminalError(TerminalErrorCode.BAD_RESPONSE, `unknown outcome status ${o.status}`);
        applied.push({ transferHash: o.transfer, state, covered: o.covered, ...(o.code ? { code: o.code } : {}), bytes });
        out.byState[state] = (out.byState[state] ?? 0) + 1;
      }
      if (String(page.cursor) === cursor && page.outcomes.length === 0) return;
      const r = journal.applyOutcomes(applied, String(page.cursor), adjusted);
      out.applied += r.applied;
      out.unknown += r.unknown;
      this.#o.onStep?.('outcomes-applied', { count: applied.length + adjusted.length });
      if (!page.more) return;
    }
  }

  // ------------------------------------------------------------ revocation list
  async #fetchCrl(signal: AbortSignal | undefined): Promise<CrlInstallResult | undefined> {
    let body: Uint8Array;
    try {
      body = await this.#call('/v1/crl', (o) => this.#acquirer.fetchCrl(o), signal);
    } catch (e) {
      if (e instanceof AcquirerRefusedError && e.acquirerCode === AcquirerErrorCode.CRL_UNAVAILABLE) return undefined;
      throw e;
    }
    return installRevocationList(this.#o.journal, body, this.#o.identity, this.#now());
  }

  // ------------------------------------------------------------ HTTP (retries inside AcquirerClient)
  /** One acquirer call (retried by the policy), its typed HTTP errors mapped onto the terminal's. */
  async #call<T>(path: string, call: (o: { signal?: AbortSignal }) => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    try {
      return await call(signal ? { signal } : {});
    } catch (e) {
      if (signal?.aborted) throw abortReason(signal);
      if (e instanceof HttpRefusedError) throw new AcquirerRefusedError(e.status, e.code, e.serverMessage ?? e.message);
      if (e instanceof HttpBadResponseError) throw new TerminalError(TerminalErrorCode.BAD_RESPONSE, e.message, { target: path }, e);
      if (e instanceof HttpUnreachableError)
        throw new TerminalError(TerminalErrorCode.NETWORK, `acquirer unreachable: ${e.message}`, { target: path }, e);
      throw e;
    }
  }
}
