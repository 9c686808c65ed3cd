/**
 * `dt-pos serve`: the terminal as a long-running service.
 *
 * One {@link PosService} per data directory (the caller holds `dt-pos.lock`). It owns the
 * reader, the kernel and the journal; it runs one tap at a time for the cash register's
 * orders (a reference from the register, an amount), and syncs with the acquirer in the
 * background (store and forward, with backoff while the acquirer does not answer): a sync
 * never blocks a tap, a tap never waits for the network.
 *
 * Durability: an order is written before its tap starts; the payment of an approved tap is
 * linked to its order inside the journal's approval transaction ({@link Journal.setApprovalHook}),
 * so after a crash an order is either approved with its payment, or `interrupted` (the next
 * request with the same reference resumes it, and the kernel's torn-tap recovery pays the
 * card's signed transfer once).
 *
 * @module
 */
import { formatTenge, isTransportError, LIMITS, toHex, type TransportTimers, type Verifier } from '@dt/protocol';
import { nodeTimers } from '@dt/protocol/native';
import { backoffDelay } from '@dt/protocol/http';
import { isTerminalError } from '../errors.ts';
import type { TerminalIdentity } from '../identity.ts';
import {
  AdjustmentKind,
  OrderState,
  type AdjustmentRecord,
  type AdjustmentRefusal,
  type Journal,
  type OrderRecord,
  type PaymentRecord,
  type PaymentState,
} from '../journal/journal.ts';
import { AdjustmentRefusedError, adjustmentJson, adjustmentSummary, adjustPayment } from '../adjust.ts';
import { PaymentKernel } from '../kernel/kernel.ts';
import type { KernelState, TapOutcome } from '../kernel/outcome.ts';
import type { PinPad, PinPrompt } from '../kernel/pinpad.ts';
import { assessRisk, certifiedCrlMaxAge, type RiskPolicy } from '../policy.ts';
import { SyncClient, type SyncReport } from '../sync/client.ts';
import type { CardReader } from '../transports/reader.ts';
import type { KernelTimeouts } from '../kernel/kernel.ts';

/** How the reader is doing (for `GET /v1/status` and the screen). */
export interface ReaderStatus {
  /** The reader spec (`pcsc`, `pcsc:<name>`, `serial:<path>`, `hid:<path>`). */
  readonly spec: string;
  /** `ready` (reader there), `card` (a card is on it), `absent` (no reader: unplugged, not yet seen), `down` (pcscd unreachable). */
  readonly state: 'ready' | 'card' | 'absent' | 'down';
  readonly name?: string;
  readonly detail?: string;
}

/** Phases of a running tap, as the register and the screen see them. */
export type TapPhase = 'present_card' | 'card' | 'pin' | 'processing';

/** An event of the service (server-sent to the register and the screen). Never holds a PIN or a key. */
export type ServiceEvent =
  | { readonly type: 'payment'; readonly payment: PaymentView }
  | { readonly type: 'phase'; readonly reference: string; readonly phase: TapPhase; readonly triesLeft?: number }
  | { readonly type: 'present_card_again'; readonly reference: string; readonly reason: string }
  | { readonly type: 'outcome'; readonly reference: string; readonly outcome: string; readonly reason?: string; readonly detail?: string }
  | { readonly type: 'adjustment'; readonly reference: string; readonly adjustment: AdjustmentView }
  | { readonly type: 'sync'; readonly sync: SyncState }
  | { readonly type: 'reader'; readonly reader: ReaderStatus };

/** Background sync state. */
export interface SyncState {
  /** `idle` (waiting for the next round), `running`, `offline` (the acquirer did not answer; retried with backoff), `disabled` (no acquirer URL). */
  readonly state: 'idle' | 'running' | 'offline' | 'disabled';
  readonly lastOk: number | null;
  readonly lastAttempt: number | null;
  readonly lastProblem: string | null;
  /** When the next round starts (seconds), if one is planned. */
  readonly nextAt: number | null;
  /** While offline: the backoff of the failures so far before jitter (ms), `min(max, base · 2^(failures−1))`; 0 once a round succeeds. */
  readonly backoffMs: number;
}

/** A void or refund as the register sees it (amounts in tiyn, ids and hashes in hex). */
export interface AdjustmentView {
  readonly id: string;
  readonly kind: 'void' | 'refund';
  readonly receipt: number;
  readonly transfer: string;
  readonly amount: number;
  /** The refund's reference (its idempotency key), null for a void. */
  readonly reference: string | null;
  /** `pending` (not yet sent), `submitted`, `accepted` (the ledger's VOIDED / REFUNDED), `refused` (INVALID, see `code`). */
  readonly state: 'pending' | 'submitted' | 'accepted' | 'refused';
  /** The ledger's code (`MERCHANT_VOID`, `VOID_TOO_LATE`, `REFUND_EXCEEDS`, `MERCHANT_FUNDS`, ...). */
  readonly code: string | null;
  readonly batch: number | null;
  readonly time: number;
}

/** A payment as the register sees it: its order and, once approved, the journalled payment. */
export interface PaymentView {
  readonly reference: string;
  /** Tiyn. */
  readonly amount: number;
  readonly amountText: string;
  /** The order's state (`started`, `approved`, `declined`, ...). */
  readonly state: OrderState;
  /** While started: the tap's phase. */
  readonly phase: TapPhase | null;
  readonly reason: string | null;
  readonly detail: string | null;
  readonly created: number;
  readonly updated: number;
  /** After approval: the settlement state and its text (`pending verification`, `submitted`, `settled`, `rejected`, `double spend covered`, `double spend NOT covered`). */
  readonly settlement: string | null;
  readonly payment: {
    readonly receipt: number;
    readonly state: PaymentState;
    readonly covered: boolean | null;
    readonly outcomeCode: string | null;
    readonly transfer: string;
    readonly card: string;
    readonly counter: number;
    readonly time: number;
    readonly cvm: 'PIN' | 'on device' | 'none';
    readonly batch: number | null;
    /** A void not refused by the ledger exists (pending its confirmation, or confirmed). */
    readonly voided: boolean;
    /** Sum of the refunds not refused (tiyn). */
    readonly refunded: number;
    /** What may still be refunded (tiyn; 0 unless settled). */
    readonly refundable: number;
    readonly adjustments: readonly AdjustmentView[];
  } | null;
}

/** A refusal of a service operation, with a stable code the ECR API maps to an HTTP status. */
export class ServiceError extends Error {
  /** Builds the error. */
  constructor(
    readonly code:
      | 'NOT_FOUND'
      | 'REFERENCE_CONFLICT'
      | 'BUSY'
      | 'NOT_CANCELLABLE'
      | 'NO_PIN_REQUESTED'
      | 'STOPPING'
      | 'INVALID'
      | Exclude<AdjustmentRefusal, 'NOT_FOUND' | 'REFERENCE_CONFLICT' | 'INVALID_AMOUNT' | 'NOT_PAYING_CARD'>,
    message: string,
  ) {
    super(message);
    this.name = 'ServiceError';
  }
}

/** Construction options of {@link PosService}. */
export interface PosServiceOptions {
  readonly identity: TerminalIdentity;
  readonly journal: Journal;
  readonly reader: CardReader;
  readonly readerStatus: () => ReaderStatus;
  readonly policy: RiskPolicy;
  readonly timeouts?: Partial<KernelTimeouts>;
  readonly verifier?: Verifier;
  /** Acquirer base URL; without one the service never syncs (`sync.state` is `disabled`). */
  readonly acquirerUrl?: string;
  /** Time between sync rounds while the acquirer answers (revocation list refresh, outcomes), ms (default 60 s). */
  readonly syncIntervalMs?: number;
  /**
   * First backoff delay after a failed round, ms (default 2 s); doubles with each failed round up to
   * {@link syncMaxBackoffMs}, with equal jitter (`backoffDelay` of `@dt/protocol/http`, SPEC.md §8.4).
   */
  readonly syncBackoffMs?: number;
  /** Largest backoff delay, ms (default 5 min). */
  readonly syncMaxBackoffMs?: number;
  /** Uniform in [0, 1) for the backoff jitter (default `Math.random`; tests inject it). */
  readonly random?: () => number;
  /** The timers of the sync loop's waits (default Node's, `nodeTimers`; tests inject them). */
  readonly timers?: TransportTimers;
  /** PRESENT CARD AGAIN answered by tapping again, at most this many times per order (default 2). */
  readonly presentCardRetries?: number;
  /** Clock in seconds. */
  readonly now?: () => number;
}

const MAX_LISTENERS = 64;

/** A PIN pad whose digits come from the attendant screen or the register (`POST /v1/payments/:reference/pin`). */
class RemotePinPad implements PinPad {
  #waiting: { resolve: (pin: Uint8Array | null) => void } | undefined;
  constructor(readonly onAsk: (prompt: PinPrompt) => void) {}

  get waiting(): boolean {
    return this.#waiting !== undefined;
  }

  requestPin(prompt: PinPrompt, signal: AbortSignal): Promise<Uint8Array | null> {
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiting = undefined;
        reject(signal.reason as Error);
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiting = {
        resolve: (pin) => {
          signal.removeEventListener('abort', onAbort);
          this.#waiting = undefined;
          resolve(pin);
        },
      };
      this.onAsk(prompt);
    });
  }

  /** Hands the PIN (ASCII digits; the kernel wipes the buffer) or `null` (the holder cancels). */
  give(pin: Uint8Array | null): boolean {
    if (!this.#waiting) return false;
    this.#waiting.resolve(pin);
    return true;
  }
}

interface ActiveTap {
  readonly reference: string;
  readonly ctl: AbortController;
  phase: TapPhase;
  /** Set once PAY may have left: from then on the tap is finished, never cancelled. */
  committed: boolean;
  cancelReason?: 'CANCELLED' | 'SERVICE_STOPPED';
  readonly done: Promise<void>;
}

const PHASE: Partial<Record<KernelState, TapPhase>> = {
  WAITING_FOR_CARD: 'present_card',
  CARD_DETECTED: 'card',
  SELECTING: 'card',
  PIN_ENTRY: 'pin',
  PAYING: 'processing',
  VALIDATING: 'processing',
  COMMITTING: 'processing',
};

/** The text of a payment's settlement state for people (with its voids and refunds, when given). */
export function settlementText(p: PaymentRecord, adjustments: readonly AdjustmentRecord[] = []): string {
  const { voided, refunded } = adjustmentSummary(p, adjustments);
  if (p.state === 'rejected' && p.outcomeCode === 'MERCHANT_VOID') return 'voided';
  if (voided && (p.state === 'pending' || p.state === 'submitted')) return 'voided (pending ledger confirmation)';
  if (p.state === 'settled' && refunded > 0) return refunded >= p.amount ? 'settled, refunded' : 'settled, partly refunded';
  switch (p.state) {
    case 'pending':
      return 'pending verification';
    case 'double_spent':
      return p.covered ? 'double spend covered' : 'double spend NOT covered';
    default:
      return p.state;
  }
}

/** References the register may use: 1-64 characters of letters, digits and `._:-`. */
export const REFERENCE_PATTERN = '^[A-Za-z0-9._:-]{1,64}$';
const REFERENCE_RE = new RegExp(REFERENCE_PATTERN);

/**
 * The terminal service. Construct, {@link start}, and {@link stop} on SIGTERM.
 *
 * @example
 * const service = new PosService({ identity, journal, reader, readerStatus, policy, acquirerUrl });
 * service.start();
 * const { payment } = service.startPayment('till-1-0042', 15050);
 */
export class PosService {
  readonly #o: PosServiceOptions;
  readonly #kernel: PaymentKernel;
  readonly #pinPad: RemotePinPad;
  readonly #listeners = new Set<(e: ServiceEvent) => void>();
  readonly #now: () => number;
  #active: ActiveTap | undefined;
  #stopping = false;
  #stopped: Promise<void> | undefined;
  #sync: SyncState;
  readonly #syncCtl = new AbortController();
  #syncWake: (() => void) | undefined;
  #syncLoop: Promise<void> | undefined;
  #lastReader: string | undefined;

  /** Builds the service (the kernel marks attempts a crash left `sent` as torn). */
  constructor(options: PosServiceOptions) {
    this.#o = options;
    this.#now = options.now ?? (() => Math.floor(Date.now() / 1000));
    this.#pinPad = new RemotePinPad((prompt) => {
      const a = this.#active;
      if (!a) return;
      a.phase = 'pin';
      this.#emit({
        type: 'phase',
        reference: a.reference,
        phase: 'pin',
        ...(prompt.triesLeft !== undefined ? { triesLeft: prompt.triesLeft } : {}),
      });
    });
    this.#kernel = new PaymentKernel({
      identity: options.identity,
      journal: options.journal,
      policy: options.policy,
      pinPad: this.#pinPad,
      ...(options.timeouts ? { timeouts: options.timeouts } : {}),
      ...(options.verifier ? { verifier: options.verifier } : {}),
      ...(options.now ? { now: options.now } : {}),
    });
    this.#sync = {
      state: options.acquirerUrl ? 'idle' : 'disabled',
      lastOk: numMeta(options.journal.getMeta('lastSyncOk')),
      lastAttempt: null,
      lastProblem: null,
      nextAt: null,
      backoffMs: 0,
    };
  }

  /** Starts the service: orders a stopped process left mid-tap become `interrupted`; the sync loop starts. */
  start(): void {
    this.#o.journal.interruptStartedOrders();
    if (this.#o.acquirerUrl) this.#syncLoop = this.#runSyncLoop(this.#o.acquirerUrl);
  }

  /** Subscribes to events; returns the unsubscribe function. */
  subscribe(listener: (e: ServiceEvent) => void): () => void {
    if (this.#listeners.size >= MAX_LISTENERS) throw new ServiceError('BUSY', `at most ${MAX_LISTENERS} event listeners`);
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Number of event listeners. */
  get listeners(): number {
    return this.#listeners.size;
  }

  #emit(e: ServiceEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /** Tells listeners the reader changed (the caller watches the adapter). */
  readerChanged(): void {
    const r = this.#o.readerStatus();
    const key = JSON.stringify(r);
    if (key === this.#lastReader) return;
    this.#lastReader = key;
    this.#emit({ type: 'reader', reader: r });
  }

  // ------------------------------------------------------------ payments
  /**
   * Starts a payment for the register's `reference`, idempotently: the same reference and
   * amount again returns the same payment (never a second tap, never a second charge), an
   * `interrupted` one is resumed; the same reference with another amount is a
   * `REFERENCE_CONFLICT`. One tap at a time: another running payment is `BUSY`.
   */
  startPayment(reference: string, amount: number): { status: 'created' | 'existing' | 'resumed'; payment: PaymentView } {
    if (!REFERENCE_RE.test(reference)) throw new ServiceError('INVALID', 'reference: 1 to 64 characters of A-Z a-z 0-9 . _ : -');
    if (!Number.isSafeInteger(amount) || amount <= 0 || amount > LIMITS.maxAmount)
      throw new ServiceError('INVALID', `amount: an integer number of tiyn from 1 to ${LIMITS.maxAmount}`);
    const journal = this.#o.journal;
    const existing = journal.getOrder(reference);
    if (existing && existing.amount !== amount)
      throw new ServiceError(
        'REFERENCE_CONFLICT',
        `reference ${reference} is a payment of ${formatTenge(existing.amount)}, not ${formatTenge(amount)}`,
      );
    if (existing && existing.state !== OrderState.INTERRUPTED) return { status: 'existing', payment: this.view(existing) };
    if (this.#stopping) throw new ServiceError('STOPPING', 'the service is stopping');
    if (this.#active)
      throw new ServiceError(
        'BUSY',
        `payment ${this.#active.reference} is in progress (one tap at a time; cancel it or wait for its outcome)`,
      );
    let status: 'created' | 'resumed';
    if (existing) {
      if (!journal.setOrderState(reference, OrderState.STARTED))
        return { status: 'existing', payment: this.view(journal.getOrder(reference)!) };
      status = 'resumed';
    } else {
      const r = journal.createOrder(reference, amount);
      if (!r.created) return { status: 'existing', payment: this.view(r.order) };
      status = 'created';
    }
    this.#begin(reference, amount);
    const view = this.view(journal.getOrder(reference)!);
    this.#emit({ type: 'payment', payment: view });
    return { status, payment: view };
  }

  #begin(reference: string, amount: number): void {
    const ctl = new AbortController();
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => (resolveDone = r));
    const active: ActiveTap = { reference, ctl, phase: 'present_card', committed: false, done };
    this.#active = active;
    void this.#run(active, amount).finally(() => {
      this.#active = undefined;
      resolveDone();
    });
  }

  async #run(active: ActiveTap, amount: number): Promise<void> {
    const { journal } = this.#o;
    const reference = active.reference;
    // The payment is linked to the order in the approval's own transaction.
    journal.setApprovalHook(({ payment }) => {
      journal.linkOrderPayment(reference, payment.id);
    });
    let outcome: TapOutcome | undefined;
    let failure: string | undefined;
    try {
      for (let round = 0; ; round++) {
        outcome = await this.#kernel.charge(this.#o.reader, amount, {
          signal: active.ctl.signal,
          onProgress: (state) => {
            if (state === 'PAYING') active.committed = true;
            const phase = PHASE[state];
            if (phase && phase !== active.phase) {
              active.phase = phase;
              if (phase !== 'pin') this.#emit({ type: 'phase', reference, phase });
            }
          },
        });
        if (outcome.kind !== 'PRESENT_CARD_AGAIN' || round >= (this.#o.presentCardRetries ?? 2) || active.ctl.signal.aborted) break;
        this.#emit({ type: 'present_card_again', reference, reason: outcome.reason });
        active.phase = 'present_card';
        active.committed = false;
      }
    } catch (e) {
      failure = isTerminalError(e) || isTransportError(e) ? e.code : 'INTERNAL';
    } finally {
      journal.setApprovalHook(undefined);
    }
    const [state, reason, detail] = this.#orderResult(active, outcome, failure);
    if (state !== OrderState.APPROVED) journal.setOrderState(reference, state, reason, detail);
    const order = journal.getOrder(reference)!;
    this.#emit({
      type: 'outcome',
      reference,
      outcome: order.state === OrderState.APPROVED ? 'APPROVED' : (outcome?.kind ?? 'END'),
      ...(order.reason ? { reason: order.reason } : {}),
      ...(order.detail ? { detail: order.detail } : {}),
    });
    this.#emit({ type: 'payment', payment: this.view(order) });
    if (order.state === OrderState.APPROVED) this.#syncWake?.();
  }

  #orderResult(active: ActiveTap, o: TapOutcome | undefined, failure: string | undefined): [OrderState, string?, string?] {
    if (!o) return [OrderState.ENDED, failure ?? 'INTERNAL'];
    const detail = 'detail' in o && o.detail ? o.detail : undefined;
    switch (o.kind) {
      case 'APPROVED': {
        const order = this.#o.journal.getOrder(active.reference);
        if (order?.state === OrderState.APPROVED) return [OrderState.APPROVED];
        // The card answered a handover already recorded for another sale: not a second payment.
        return [OrderState.DECLINED, 'ALREADY_RECORDED', `receipt #${o.payment.id}`];
      }
      case 'DECLINED':
        return [OrderState.DECLINED, o.reason, detail];
      case 'ONLINE_REQUIRED':
        return [OrderState.ONLINE_REQUIRED, o.reason];
      case 'PRESENT_CARD_AGAIN':
        return [OrderState.ENDED, 'PRESENT_CARD_AGAIN', o.reason];
      case 'END':
        if (o.reason === 'CANCELLED')
          return active.cancelReason === 'SERVICE_STOPPED'
            ? [OrderState.INTERRUPTED, 'SERVICE_STOPPED']
            : [OrderState.CANCELLED, 'CANCELLED'];
        return [OrderState.ENDED, o.reason, detail];
    }
  }

  /**
   * Cancels the register's payment while no card has been charged: waiting for the card,
   * reading it, or at the PIN. Once PAY may have left the terminal the tap is finished, never
   * cut (`NOT_CANCELLABLE`, as for a payment that already has its outcome); an `interrupted`
   * payment is cancelled at once.
   */
  async cancel(reference: string): Promise<PaymentView> {
    const journal = this.#o.journal;
    const order = journal.getOrder(reference);
    if (!order) throw new ServiceError('NOT_FOUND', `no payment with reference ${reference}`);
    const a = this.#active;
    if (a?.reference === reference) {
      if (a.committed || a.phase === 'processing')
        throw new ServiceError('NOT_CANCELLABLE', `payment ${reference} is being processed by the card; wait for its outcome`);
      a.cancelReason = 'CANCELLED';
      a.ctl.abort();
      await a.done;
      return this.view(journal.getOrder(reference)!);
    }
    if (order.state === OrderState.INTERRUPTED) {
      journal.setOrderState(reference, OrderState.STARTED);
      journal.setOrderState(reference, OrderState.CANCELLED, 'CANCELLED');
      const v = this.view(journal.getOrder(reference)!);
      this.#emit({ type: 'payment', payment: v });
      return v;
    }
    if (order.state === OrderState.CANCELLED) return this.view(order);
    throw new ServiceError('NOT_CANCELLABLE', `payment ${reference} is ${order.state}; it cannot be cancelled`);
  }

  /** The PIN for the running payment (`null`: the holder cancels). The digits go to the card only. */
  submitPin(reference: string, pin: string | null): void {
    if (this.#active?.reference !== reference || !this.#pinPad.waiting)
      throw new ServiceError('NO_PIN_REQUESTED', `payment ${reference} is not waiting for a PIN`);
    if (pin !== null && !/^[0-9]{4,12}$/.test(pin)) throw new ServiceError('INVALID', 'a PIN is 4 to 12 digits');
    let bytes: Uint8Array | null = null;
    if (pin !== null) {
      bytes = new Uint8Array(pin.length);
      for (let i = 0; i < pin.length; i++) bytes[i] = pin.charCodeAt(i);
    }
    this.#pinPad.give(bytes);
  }

  // ------------------------------------------------------------ voids and refunds
  /**
   * Voids the register's payment `reference` while the ledger has not settled it: signed and
   * journalled before this returns (and before any event shows it), sent at the next sync
   * round (woken at once). Idempotent: a payment has one void (`existing` again).
   */
  voidPayment(reference: string): { status: 'created' | 'existing'; payment: PaymentView; adjustment: AdjustmentView } {
    return this.#adjust(reference, { kind: AdjustmentKind.VOID });
  }

  /**
   * Refunds the register's settled payment `reference`, `amount` tiyn (default: all that is
   * left), idempotently on `refundReference`: the same reference again returns the same refund
   * (never a second one); with another payment or amount it is a `REFERENCE_CONFLICT`.
   */
  refundPayment(
    reference: string,
    refundReference: string,
    amount?: number,
  ): { status: 'created' | 'existing'; payment: PaymentView; adjustment: AdjustmentView } {
    if (!REFERENCE_RE.test(refundReference))
      throw new ServiceError('INVALID', 'refundReference: 1 to 64 characters of A-Z a-z 0-9 . _ : -');
    if (amount !== undefined && (!Number.isSafeInteger(amount) || amount <= 0 || amount > LIMITS.maxAmount))
      throw new ServiceError('INVALID', `amount: an integer number of tiyn from 1 to ${LIMITS.maxAmount}`);
    return this.#adjust(reference, {
      kind: AdjustmentKind.REFUND,
      reference: refundReference,
      ...(amount !== undefined ? { amount } : {}),
    });
  }

  #adjust(
    reference: string,
    req: { kind: AdjustmentKind; reference?: string; amount?: number },
  ): { status: 'created' | 'existing'; payment: PaymentView; adjustment: AdjustmentView } {
    const { journal, identity } = this.#o;
    const order = journal.getOrder(reference);
    if (!order) throw new ServiceError('NOT_FOUND', `no payment with reference ${reference}`);
    if (order.paymentId === undefined)
      throw new ServiceError(
        req.kind === AdjustmentKind.VOID ? 'NOT_VOIDABLE' : 'NOT_SETTLED',
        `payment ${reference} is ${order.state}: nothing was paid`,
      );
    let r;
    try {
      r = adjustPayment(journal, identity, { ...req, paymentId: order.paymentId });
    } catch (e) {
      if (e instanceof AdjustmentRefusedError) {
        if (e.reason === 'INVALID_AMOUNT' || e.reason === 'NOT_PAYING_CARD') throw new ServiceError('INVALID', e.message);
        throw new ServiceError(e.reason, e.message);
      }
      throw e;
    }
    const view = this.view(journal.getOrder(reference)!);
    const adjustment = adjustmentView(r.adjustment);
    if (!r.existing) {
      this.#emit({ type: 'adjustment', reference, adjustment });
      this.#emit({ type: 'payment', payment: view });
      this.#syncWake?.();
    }
    return { status: r.existing ? 'existing' : 'created', payment: view, adjustment };
  }

  /** One payment by reference. */
  getPayment(reference: string): PaymentView {
    const order = this.#o.journal.getOrder(reference);
    if (!order) throw new ServiceError('NOT_FOUND', `no payment with reference ${reference}`);
    return this.view(order);
  }

  /** Payments, newest first. */
  listPayments(limit = 100): PaymentView[] {
    return this.#o.journal.listOrders({ limit }).map((o) => this.view(o));
  }

  /** The register's view of an order. */
  view(order: OrderRecord): PaymentView {
    const p = order.paymentId !== undefined ? this.#o.journal.getPayment(order.paymentId) : undefined;
    const adjustments = p ? this.#o.journal.adjustmentsOf(p.id) : [];
    const summary = p ? adjustmentSummary(p, adjustments) : undefined;
    const active = this.#active?.reference === order.reference ? this.#active : undefined;
    return {
      reference: order.reference,
      amount: order.amount,
      amountText: formatTenge(order.amount),
      state: order.state,
      phase: order.state === OrderState.STARTED && active ? active.phase : null,
      reason: order.reason ?? null,
      detail: order.detail ?? null,
      created: order.created,
      updated: order.updated,
      settlement: p ? settlementText(p, adjustments) : null,
      payment: p
        ? {
            receipt: p.id,
            state: p.state,
            covered: p.covered ?? null,
            outcomeCode: p.outcomeCode ?? null,
            transfer: toHex(p.transferHash),
            card: toHex(p.card),
            counter: p.counter,
            time: p.time,
            cvm: p.cvm === 1 ? 'PIN' : p.cvm === 2 ? 'on device' : 'none',
            batch: p.batchSeq ?? null,
            voided: summary!.voided,
            refunded: summary!.refunded,
            refundable: summary!.refundable,
            adjustments: adjustments.map(adjustmentView),
          }
        : null,
    };
  }

  // ------------------------------------------------------------ status and report
  /** Reader, sync, revocation list, pending value, the running payment. */
  status(): Record<string, unknown> {
    const { journal, identity } = this.#o;
    const t = this.#now();
    const crl = journal.crl();
    const pending = journal.pendingSummary();
    const risk = assessRisk(this.#o.policy, {
      amount: 1,
      pending: pending.amount,
      crlIssued: crl?.issued,
      now: t,
      certifiedCrlMaxAge: certifiedCrlMaxAge(identity.chain[0]!),
    });
    return {
      terminal: toHex(identity.kid),
      merchant: identity.merchant,
      reader: this.#o.readerStatus(),
      sync: this.#sync,
      crl: crl
        ? { version: crl.version, issued: crl.issued, fetchedAt: crl.fetchedAt, ageSeconds: t - crl.issued, revoked: crl.count }
        : null,
      offlineAcceptance: risk.offline ? (risk.narrowed ? 'narrowed' : 'normal') : `stopped (${risk.reason})`,
      pending: { count: pending.count, amount: pending.amount, since: pending.since ?? null },
      active: this.#active ? { reference: this.#active.reference, phase: this.#active.phase } : null,
      stopping: this.#stopping,
      now: t,
    };
  }

  /** End-of-day report: totals by state and day (all payments), and the open batch since the last close. */
  report(): Record<string, unknown> {
    const j = this.#o.journal;
    const last = j.lastDayClose();
    return {
      byState: j.totalsByState(),
      byDay: j.totalsByDay(),
      doubleSpent: j.doubleSpent(),
      adjustments: j.adjustmentTotals(),
      openBatch: {
        since: last?.closedAt ?? null,
        afterReceipt: last?.throughPayment ?? 0,
        byState: j.totalsByStateSince(last?.throughPayment ?? 0),
      },
      lastClose: last ?? null,
    };
  }

  /**
   * Closes the day's batch: the totals since the last close are recorded (durably) and a sync
   * round is started at once to send what is pending (the close does not wait for the network).
   */
  closeBatch(): Record<string, unknown> {
    const close = this.#o.journal.closeDay();
    this.#syncWake?.();
    return { close, report: this.report() };
  }

  // ------------------------------------------------------------ sync
  async #runSyncLoop(acquirerUrl: string): Promise<void> {
    const { identity, journal } = this.#o;
    const interval = this.#o.syncIntervalMs ?? 60_000;
    const base = this.#o.syncBackoffMs ?? 2000;
    const max = this.#o.syncMaxBackoffMs ?? 300_000;
    const policy = { baseMs: base, maxMs: max };
    const timers = this.#o.timers ?? nodeTimers;
    const signal = this.#syncCtl.signal;
    let failures = 0;
    while (!signal.aborted) {
      this.#setSync({ state: 'running', lastAttempt: this.#now(), nextAt: null });
      let report: SyncReport | undefined;
      let problem: string | null;
      try {
        report = await new SyncClient({ identity, journal, acquirerUrl, retry: { attempts: 1 } }).sync({ signal });
        if (report.online) journal.setMeta('lastSyncOk', String(this.#now()));
        problem = report.problems.length ? report.problems.map((p) => `${p.step}: ${p.code}`).join('; ') : null;
      } catch (e) {
        if (signal.aborted) break;
        problem = isTerminalError(e) ? e.code : (e as Error).name;
      }
      const ok = report?.online === true && problem === null;
      failures = ok ? 0 : failures + 1;
      // The one retry policy (SPEC.md §8.4): exponential, capped, equal jitter, so that many
      // terminals coming back do not sync in step. `random = 1` gives the delay before jitter.
      const backoff = ok ? 0 : backoffDelay(failures, policy, () => 1);
      const delay = ok ? interval : backoffDelay(failures, policy, this.#o.random);
      this.#setSync({
        state: report?.online === false || (!report && problem) ? 'offline' : 'idle',
        ...(report?.online ? { lastOk: this.#now() } : {}),
        lastProblem: problem,
        backoffMs: backoff,
        nextAt: this.#now() + Math.ceil(delay / 1000),
      });
      if (report && report.outcomes.applied > 0)
        for (const v of this.listPayments(100)) if (v.payment) this.#emit({ type: 'payment', payment: v });
      await new Promise<void>((resolve) => {
        const timer = timers.schedule(done, delay);
        function done(): void {
          timers.cancel(timer);
          signal.removeEventListener('abort', done);
          resolve();
        }
        // An approval or a batch close wakes the loop early, unless the acquirer is in backoff.
        this.#syncWake = ok ? done : undefined;
        signal.addEventListener('abort', done, { once: true });
      });
      this.#syncWake = undefined;
    }
  }

  #setSync(patch: Partial<SyncState>): void {
    this.#sync = { ...this.#sync, ...patch };
    this.#emit({ type: 'sync', sync: this.#sync });
  }

  /** The current sync state. */
  get syncState(): SyncState {
    return this.#sync;
  }

  // ------------------------------------------------------------ stop
  /**
   * Stops: no new payment is accepted; a tap still waiting for its card (or its PIN) is
   * stopped (the order becomes `interrupted`, nothing was charged), a tap whose card is being
   * charged is finished; then the sync loop stops. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      this.#stopping = true;
      const a = this.#active;
      if (a) {
        if (!a.committed && a.phase !== 'processing') {
          a.cancelReason = 'SERVICE_STOPPED';
          a.ctl.abort();
        }
        await a.done;
      }
      this.#syncCtl.abort();
      await this.#syncLoop;
    })();
    return this.#stopped;
  }
}

/** The register's view of an adjustment. */
export function adjustmentView(a: AdjustmentRecord): AdjustmentView {
  return adjustmentJson(a) as unknown as AdjustmentView;
}

function numMeta(v: string | undefined): number | null {
  return v === undefined ? null : Number(v);
}
