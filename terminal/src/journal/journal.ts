/**
 * The durable offline journal of the terminal (SQLite through better-sqlite3).
 *
 * Durability rules (why the pragmas are what they are):
 * - `journal_mode=WAL` + `synchronous=FULL`: a committed transaction is on
 *   disk (WAL fsynced) when `commit` returns, so a payment the terminal showed
 *   as APPROVED survives a power cut or SIGKILL right after.
 * - Every state change is one transaction: a payment row and its spent inputs
 *   and the attempt that produced it change together or not at all.
 * - Uniqueness is enforced by the database, not by the code: a transfer hash
 *   and a `(card, counter)` pair appear at most once, so a payment can never be
 *   recorded twice, whatever crashes or retries happen.
 *
 * States of a payment (`PaymentState`): `pending` (approved offline, not yet
 * sent), `submitted` (in a batch the acquirer acknowledged), `settled`,
 * `rejected` (ledger said INVALID or VOIDED; VOIDED with code `MERCHANT_VOID` when this
 * terminal voided it), `double_spent` (with `covered`).
 *
 * Adjustments (schema v4): a void or a refund of a payment, signed by the terminal
 * (`SignedAdjustment`, SPEC §3) and committed here, with the terminal's own rules checked in the
 * same transaction, before anyone is shown it ({@link Journal.recordAdjustment}). States:
 * `pending` (not yet in an acknowledged batch), `submitted`, `accepted` (the ledger's outcome
 * VOIDED or REFUNDED), `refused` (INVALID, with the ledger's code, e.g. `VOID_TOO_LATE`).
 *
 * @module
 */
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { formatTenge, plainBytes, toHex } from '@dt/protocol';
import { TerminalError, TerminalErrorCode } from '../errors.ts';
import { JOURNAL_MIGRATIONS, JournalSchemaError, migrateJournal, type JournalMigration } from './schema.ts';
import { makeDirs } from '@dt/protocol/fs';

/** Lifecycle state of a journalled payment. */
export const PaymentState = {
  PENDING: 'pending',
  SUBMITTED: 'submitted',
  SETTLED: 'settled',
  REJECTED: 'rejected',
  DOUBLE_SPENT: 'double_spent',
} as const;
/** A payment state. */
export type PaymentState = (typeof PaymentState)[keyof typeof PaymentState];

/** Lifecycle state of a payment attempt (one PAY command sent to a card). */
export const AttemptState = {
  /** The PAY command may have reached the card; no answer recorded yet. */
  SENT: 'sent',
  /** The card answered and the payment was approved (a payment row exists). */
  APPROVED: 'approved',
  /** The card answered and the terminal declined (nothing was stored as paid). */
  DECLINED: 'declined',
  /** No answer (card left the field, crash): the card may have signed; retry with `retryOf`. */
  TORN: 'torn',
  /** Recovered by a later retry, or given up (the ledger voids an unsubmitted transfer). */
  CLOSED: 'closed',
} as const;
/** An attempt state. */
export type AttemptState = (typeof AttemptState)[keyof typeof AttemptState];

/** One journalled payment: what the kernel recorded (without the inputs) and its settlement state. */
export interface PaymentRecord extends Omit<NewPayment, 'inputs'> {
  /** Receipt number, local to the terminal, increasing. */
  readonly id: number;
  readonly state: PaymentState;
  readonly covered: boolean | undefined;
  readonly outcomeCode: string | undefined;
  readonly batchSeq: number | undefined;
  readonly updatedAt: number;
}

/** What the kernel records when it approves. */
export interface NewPayment {
  readonly transferHash: Uint8Array;
  readonly card: Uint8Array;
  readonly counter: number;
  readonly amount: number;
  readonly currency: number;
  /** Nonce of the request the card answered (the interrupted one after a torn-tap retry). */
  readonly nonce: Uint8Array;
  /** Transfer time (terminal time copied into the transfer), seconds. */
  readonly time: number;
  /** When the terminal approved, seconds. */
  readonly approvedAt: number;
  readonly cvm: number;
  readonly merchant: string;
  readonly mcc: number;
  readonly handover: Uint8Array;
  /** Ids of the coins the paying transfer spends (token serials or output ids). */
  readonly inputs: readonly Uint8Array[];
}

/** Result of {@link Journal.recordApproval}. */
export type RecordResult =
  | { readonly kind: 'recorded'; readonly payment: PaymentRecord }
  /** The same transfer was already recorded (a replayed handover): not a second payment. */
  | { readonly kind: 'duplicate'; readonly payment: PaymentRecord }
  /** Another transfer of this card reuses the counter or an input we already accepted: a double spend. */
  | { readonly kind: 'conflict'; readonly existing: PaymentRecord; readonly reason: 'counter' | 'input' };

/** One payment attempt. */
export interface AttemptRecord {
  readonly nonce: Uint8Array;
  readonly amount: number;
  readonly created: number;
  readonly card: Uint8Array | undefined;
  readonly retryOf: Uint8Array | undefined;
  readonly state: AttemptState;
  /** The signed PaymentRequest sent (public data). */
  readonly request: Uint8Array;
  readonly time: number;
}

/** One stored batch. */
export interface BatchRecord {
  readonly seq: number;
  readonly created: number;
  readonly bytes: Uint8Array;
  readonly state: 'built' | 'acked';
  /** Handovers in the batch, and their value. */
  readonly count: number;
  readonly total: number;
  /** Adjustments (voids, refunds) in the batch. */
  readonly adjustments: number;
}

/** Totals of one state (or day). */
export interface Totals {
  readonly count: number;
  readonly amount: number;
}

/** Summary of what is not yet verified by the ledger. */
export interface PendingSummary extends Totals {
  /** Approval time (seconds) of the oldest unverified payment, when any. */
  readonly since: number | undefined;
}

/** A verified ledger outcome to apply to a payment. */
export interface OutcomeUpdate {
  readonly transferHash: Uint8Array;
  readonly state: PaymentState;
  readonly covered: boolean;
  readonly code?: string;
  /** The signed Outcome, kept as evidence. */
  readonly bytes: Uint8Array;
}

/** Kind of an adjustment of a payment. */
export const AdjustmentKind = { VOID: 'void', REFUND: 'refund' } as const;
/** An adjustment kind. */
export type AdjustmentKind = (typeof AdjustmentKind)[keyof typeof AdjustmentKind];

/** Lifecycle state of an adjustment. */
export const AdjustmentState = {
  /** Signed and journalled; not yet in a batch the acquirer acknowledged. */
  PENDING: 'pending',
  /** In an acknowledged batch; the ledger's outcome not yet fetched. */
  SUBMITTED: 'submitted',
  /** The ledger's outcome VOIDED (a void) or REFUNDED (a refund). */
  ACCEPTED: 'accepted',
  /** The ledger's outcome INVALID (its code says why, e.g. `VOID_TOO_LATE`, `MERCHANT_FUNDS`). */
  REFUSED: 'refused',
} as const;
/** An adjustment state. */
export type AdjustmentState = (typeof AdjustmentState)[keyof typeof AdjustmentState];

/** Most adjustments one batch carries (SPEC §7.7.1 Batch key 7). */
export const MAX_BATCH_ADJUSTMENTS = 1000;

/** One journalled void or refund. */
export interface AdjustmentRecord {
  /** The Adjustment's id (16 random bytes): the ledger's idempotency key with this terminal. */
  readonly id: Uint8Array;
  readonly kind: AdjustmentKind;
  /** Receipt id of the payment adjusted. */
  readonly paymentId: number;
  readonly transferHash: Uint8Array;
  /** Void: the payment's amount; refund: the refunded amount (tiyn). */
  readonly amount: number;
  /** The register's or operator's reference (refunds: the idempotency key of the ECR API). */
  readonly reference: string | undefined;
  /** The SignedAdjustment sent to the acquirer. */
  readonly signed: Uint8Array;
  readonly state: AdjustmentState;
  /** The ledger's outcome code (`MERCHANT_VOID`, `VOID_TOO_LATE`, `REFUND_EXCEEDS`, ...). */
  readonly code: string | undefined;
  readonly batchSeq: number | undefined;
  /** Terminal time in the Adjustment, seconds. */
  readonly time: number;
  readonly updatedAt: number;
}

/** Why the terminal refuses a void or refund by its own rules (nothing is recorded). */
export type AdjustmentRefusal =
  /** No payment with that receipt id. */
  | 'NOT_FOUND'
  /** Void: the ledger already settled the payment to the merchant (refund it instead). */
  | 'ALREADY_SETTLED'
  /** Void: the payment has another final outcome (rejected, double spend): there is nothing to void. */
  | 'NOT_VOIDABLE'
  /** Refund: the payment is not (yet) settled (void it while unsettled). */
  | 'NOT_SETTLED'
  /** Refund: this amount plus the refunds already made (accepted or pending) exceed the payment. */
  | 'REFUND_EXCEEDS'
  /** The reference names another adjustment (another payment, kind or amount). */
  | 'REFERENCE_CONFLICT'
  /** The amount is not one this adjustment can have (a void is always the whole payment). */
  | 'INVALID_AMOUNT'
  /** `refund --tap`: the card on the reader is not the one that paid (checked before anything is recorded). */
  | 'NOT_PAYING_CARD';

/** What {@link Journal.recordAdjustment} signs: the Adjustment's content but its kind and reference. */
export interface AdjustmentContent {
  readonly id: Uint8Array;
  readonly transfer: Uint8Array;
  readonly card: Uint8Array;
  readonly amount: number;
  readonly currency: number;
  readonly time: number;
}

/** Result of {@link Journal.recordAdjustment}. */
export type AdjustmentResult =
  | { readonly kind: 'recorded'; readonly adjustment: AdjustmentRecord }
  /** The same void or refund (same reference, or the one void of the payment) was already recorded: not a second one. */
  | { readonly kind: 'existing'; readonly adjustment: AdjustmentRecord }
  | { readonly kind: 'refused'; readonly reason: AdjustmentRefusal; readonly message: string };

/** A verified ledger outcome answering one adjustment (Outcome key 10). */
export interface AdjustmentOutcomeUpdate {
  /** The adjustment id the outcome names. */
  readonly id: Uint8Array;
  /** The outcome's transfer: must be the adjusted payment's. */
  readonly transferHash: Uint8Array;
  /** VOIDED / REFUNDED: accepted; INVALID: refused. */
  readonly accepted: boolean;
  readonly code?: string;
  readonly bytes: Uint8Array;
}

/** The revocation list the terminal holds. */
export interface StoredCrl {
  readonly version: number;
  readonly issued: number;
  readonly fetchedAt: number;
  readonly count: number;
}

/**
 * Most torn attempts kept open per card (per announced card id; attempts of cards that
 * announce none count as one card). Older ones are closed: a card can only answer a
 * retry of its last transfer, and the kernel retries the newest, so anything older is
 * already given up (the ledger voids such an orphan at the card's sync). A card that
 * never answers cannot grow the torn set beyond this.
 */
export const MAX_TORN_PER_CARD = 4;

/** Most torn attempts kept open in all (cards that announce a new id at every tap). */
export const MAX_TORN_ATTEMPTS = 64;

interface PaymentRow {
  id: number;
  transfer_hash: Uint8Array;
  card: Uint8Array;
  counter: number;
  amount: number;
  currency: number;
  nonce: Uint8Array;
  time: number;
  approved_at: number;
  cvm: number;
  merchant: string;
  mcc: number;
  handover: Uint8Array;
  state: PaymentState;
  covered: number | null;
  outcome_code: string | null;
  batch_seq: number | null;
  updated_at: number;
}

interface AttemptRow {
  nonce: Uint8Array;
  amount: number;
  created: number;
  time: number;
  card: Uint8Array | null;
  retry_of: Uint8Array | null;
  state: AttemptState;
  request: Uint8Array;
}

function toPayment(r: PaymentRow): PaymentRecord {
  return {
    id: r.id,
    transferHash: plainBytes(r.transfer_hash),
    card: plainBytes(r.card),
    counter: r.counter,
    amount: r.amount,
    currency: r.currency,
    nonce: plainBytes(r.nonce),
    time: r.time,
    approvedAt: r.approved_at,
    cvm: r.cvm,
    merchant: r.merchant,
    mcc: r.mcc,
    handover: plainBytes(r.handover),
    state: r.state,
    covered: r.covered === null ? undefined : r.covered === 1,
    outcomeCode: r.outcome_code ?? undefined,
    batchSeq: r.batch_seq ?? undefined,
    updatedAt: r.updated_at,
  };
}

function toAttempt(r: AttemptRow): AttemptRecord {
  return {
    nonce: plainBytes(r.nonce),
    amount: r.amount,
    created: r.created,
    time: r.time,
    card: r.card === null ? undefined : plainBytes(r.card),
    retryOf: r.retry_of === null ? undefined : plainBytes(r.retry_of),
    state: r.state,
    request: plainBytes(r.request),
  };
}

interface AdjustmentRow {
  id: Uint8Array;
  kind: AdjustmentKind;
  payment_id: number;
  transfer_hash: Uint8Array;
  amount: number;
  reference: string | null;
  signed: Uint8Array;
  state: AdjustmentState;
  code: string | null;
  batch_seq: number | null;
  time: number;
  updated_at: number;
}

function toAdjustment(r: AdjustmentRow): AdjustmentRecord {
  return {
    id: plainBytes(r.id),
    kind: r.kind,
    paymentId: r.payment_id,
    transferHash: plainBytes(r.transfer_hash),
    amount: r.amount,
    reference: r.reference ?? undefined,
    signed: plainBytes(r.signed),
    state: r.state,
    code: r.code ?? undefined,
    batchSeq: r.batch_seq ?? undefined,
    time: r.time,
    updatedAt: r.updated_at,
  };
}

/** State of a cash-register (ECR) order: one payment the register asked for, by its own reference. */
export const OrderState = {
  /** The tap runs (waiting for the card, PIN, processing). */
  STARTED: 'started',
  /** Paid: `paymentId` names the journalled payment (linked in the approval's own transaction). */
  APPROVED: 'approved',
  DECLINED: 'declined',
  ONLINE_REQUIRED: 'online_required',
  /** The tap ended without a payment decision (no card, not a DT card, reader, PRESENT CARD AGAIN left unanswered). */
  ENDED: 'ended',
  CANCELLED: 'cancelled',
  /** The process stopped during the tap (crash, power cut): a new request with the same reference resumes it. */
  INTERRUPTED: 'interrupted',
} as const;
/** An order state. */
export type OrderState = (typeof OrderState)[keyof typeof OrderState];

/** One ECR order. */
export interface OrderRecord {
  readonly reference: string;
  readonly amount: number;
  readonly created: number;
  readonly updated: number;
  readonly state: OrderState;
  readonly reason: string | undefined;
  readonly detail: string | undefined;
  readonly paymentId: number | undefined;
}

interface OrderRow {
  reference: string;
  amount: number;
  created: number;
  updated: number;
  state: OrderState;
  reason: string | null;
  detail: string | null;
  payment_id: number | null;
}

function toOrder(r: OrderRow): OrderRecord {
  return {
    reference: r.reference,
    amount: r.amount,
    created: r.created,
    updated: r.updated,
    state: r.state,
    reason: r.reason ?? undefined,
    detail: r.detail ?? undefined,
    paymentId: r.payment_id ?? undefined,
  };
}

/** One end-of-day close of the batch. */
export interface DayClose extends Totals {
  readonly id: number;
  readonly closedAt: number;
  /** The last receipt id the close covers (the next close starts after it). */
  readonly throughPayment: number;
}

/**
 * Runs inside the transaction of {@link Journal.recordApproval} when a payment is recorded (or
 * found already recorded): what it writes commits with the payment, or not at all.
 */
export type ApprovalHook = (result: { kind: 'recorded' | 'duplicate'; payment: PaymentRecord }) => void;

/** Options of {@link Journal.open}. */
export interface JournalOptions {
  /** Clock in seconds (injected for tests); defaults to the system clock. */
  readonly now?: () => number;
  /**
   * The schema migrations to apply at open (default {@link JOURNAL_MIGRATIONS}); tests of the
   * upgrade path pass a longer list. Version 1 must stay the journal's own.
   */
  readonly migrations?: readonly JournalMigration[];
}

/**
 * The terminal's journal. Open it once per process (SQLite serializes writers
 * across processes anyway; a second terminal process on the same file waits
 * on the lock for up to 5 s, then fails closed).
 *
 * @example
 * const journal = Journal.open('/var/lib/dt-pos/journal.sqlite');
 * const pending = journal.pendingSummary();
 */
export class Journal {
  readonly #db: Database.Database;
  readonly #now: () => number;
  #approvalHook: ApprovalHook | undefined;

  private constructor(db: Database.Database, now: () => number) {
    this.#db = db;
    this.#now = now;
  }

  /** Opens (creating if needed) the journal at `path` (`:memory:` for a throwaway one). */
  static open(path: string, options: JournalOptions = {}): Journal {
    if (path !== ':memory:') makeDirs(dirname(path));
    let db: Database.Database | undefined;
    try {
      db = new Database(path, { timeout: 5000 });
      // FULL: the WAL is fsynced at every commit; an approval depends on it.
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      // Creates the schema in a new file, upgrades an older one, refuses a newer one or one of
      // another kind (./schema.ts); before the switch to WAL, so a refused file is left as it was.
      migrateJournal(db, options.migrations ?? JOURNAL_MIGRATIONS);
      if (path !== ':memory:') {
        const mode = db.pragma('journal_mode = WAL', { simple: true });
        if (String(mode).toLowerCase() !== 'wal') throw new Error(`journal_mode is ${String(mode)}, not wal`);
      }
    } catch (e) {
      db?.close();
      const details: Record<string, string | number> = { path };
      if (e instanceof JournalSchemaError) {
        details.problem = e.problem;
        if (e.version !== undefined) details.version = e.version;
      }
      throw new TerminalError(TerminalErrorCode.JOURNAL, `cannot open the journal at ${path}: ${(e as Error).message}`, details, e);
    }
    return new Journal(db, options.now ?? (() => Math.floor(Date.now() / 1000)));
  }

  /** Closes the database. */
  close(): void {
    this.#db.close();
  }

  /** The synchronous pragma in force (2 = FULL); exposed so tests can prove durability settings. */
  get pragmas(): { journalMode: string; synchronous: number } {
    return {
      journalMode: String(this.#db.pragma('journal_mode', { simple: true })),
      synchronous: Number(this.#db.pragma('synchronous', { simple: true })),
    };
  }

  // ------------------------------------------------------------ meta
  /** Reads a metadata value. */
  getMeta(key: string): string | undefined {
    return (this.#db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  /** Writes a metadata value (durably). */
  setMeta(key: string, value: string): void {
    this.#db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  // ------------------------------------------------------------ attempts
  /**
   * Records that a PAY command is about to be sent. Committed before the
   * command leaves the terminal, so a crash while the card signs is found at
   * the next start ({@link markSentAttemptsTorn}) and retried with `retryOf`.
   */
  recordAttempt(a: {
    nonce: Uint8Array;
    amount: number;
    time: number;
    card?: Uint8Array;
    retryOf?: Uint8Array;
    request: Uint8Array;
  }): void {
    this.#db
      .prepare('INSERT INTO attempts (nonce, created, amount, time, card, retry_of, request, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(a.nonce, this.#now(), a.amount, a.time, a.card ?? null, a.retryOf ?? null, a.request, AttemptState.SENT);
  }

  /**
   * Moves an attempt to `state` (only from `sent` or `torn`). A move to `torn` also enforces
   * the bounds on open torn attempts ({@link MAX_TORN_PER_CARD}, {@link MAX_TORN_ATTEMPTS}),
   * in the same transaction.
   */
  setAttemptState(nonce: Uint8Array, state: AttemptState): void {
    this.#db
      .transaction(() => {
        this.#db.prepare(`UPDATE attempts SET state = ? WHERE nonce = ? AND state IN ('sent','torn')`).run(state, nonce);
        if (state === AttemptState.TORN) this.#boundTorn();
      })
      .immediate();
  }

  /** At start-up: attempts left `sent` by a crash become `torn` (the card may have signed). Returns how many. */
  markSentAttemptsTorn(): number {
    return this.#db
      .transaction(() => {
        const n = this.#db.prepare(`UPDATE attempts SET state = 'torn' WHERE state = 'sent'`).run().changes;
        if (n > 0) this.#boundTorn();
        return n;
      })
      .immediate();
  }

  /**
   * Closes torn attempts created more than `maxAgeSeconds` ago: past the retry window no
   * tap names them any more (the card's orphan is voided by the ledger at its sync), so
   * keeping them open would only let them pile up. Returns how many were closed.
   */
  closeStaleTornAttempts(maxAgeSeconds: number): number {
    return this.#db.prepare(`UPDATE attempts SET state = 'closed' WHERE state = 'torn' AND created < ?`).run(this.#now() - maxAgeSeconds)
      .changes;
  }

  /** Closes open torn attempts beyond the per-card and the total bound, oldest first. */
  #boundTorn(): void {
    // PARTITION BY card groups the attempts of cards without an id (NULL) together.
    this.#db
      .prepare(
        `UPDATE attempts SET state = 'closed' WHERE rowid IN (
           SELECT rowid FROM (
             SELECT rowid, row_number() OVER (PARTITION BY card ORDER BY created DESC, rowid DESC) AS n FROM attempts WHERE state = 'torn'
           ) WHERE n > ?)`,
      )
      .run(MAX_TORN_PER_CARD);
    this.#db
      .prepare(
        `UPDATE attempts SET state = 'closed' WHERE rowid IN (SELECT rowid FROM attempts WHERE state = 'torn' ORDER BY created DESC, rowid DESC LIMIT -1 OFFSET ?)`,
      )
      .run(MAX_TORN_ATTEMPTS);
  }

  /** One attempt by nonce. */
  getAttempt(nonce: Uint8Array): AttemptRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM attempts WHERE nonce = ?').get(nonce) as AttemptRow | undefined;
    return r && toAttempt(r);
  }

  /**
   * The torn attempt to name in `retryOf` for the next tap: the most recent
   * torn attempt of this card (or of an unknown card) for the same amount,
   * not older than `maxAgeSeconds`.
   */
  findTornAttempt(amount: number, card: Uint8Array | undefined, maxAgeSeconds: number): AttemptRecord | undefined {
    const since = this.#now() - maxAgeSeconds;
    const rows = this.#db
      .prepare(`SELECT * FROM attempts WHERE state = 'torn' AND amount = ? AND created >= ? ORDER BY created DESC, rowid DESC`)
      .all(amount, since) as AttemptRow[];
    const match = rows.find((r) => card === undefined || r.card === null || toHex(r.card) === toHex(card));
    return match && toAttempt(match);
  }

  /** Torn attempts (the card may hold a signed transfer the terminal never received). */
  tornAttempts(): AttemptRecord[] {
    return (this.#db.prepare(`SELECT * FROM attempts WHERE state = 'torn' ORDER BY created`).all() as AttemptRow[]).map(toAttempt);
  }

  // ------------------------------------------------------------ payments
  /**
   * Records an approved payment durably, in one transaction with its spent
   * inputs and its attempt(s). Call it BEFORE telling anyone it is approved.
   * Idempotent for the same transfer; refuses a conflicting one.
   */
  recordApproval(p: NewPayment, attemptNonces: readonly Uint8Array[] = []): RecordResult {
    const tx = this.#db.transaction((): RecordResult => {
      const same = this.#db.prepare('SELECT * FROM payments WHERE transfer_hash = ?').get(p.transferHash) as PaymentRow | undefined;
      if (same) {
        for (const n of attemptNonces) this.setAttemptState(n, AttemptState.CLOSED);
        const dup = { kind: 'duplicate' as const, payment: toPayment(same) };
        this.#approvalHook?.(dup);
        return dup;
      }
      const byCounter = this.#db.prepare('SELECT * FROM payments WHERE card = ? AND counter = ?').get(p.card, p.counter) as
        PaymentRow | undefined;
      if (byCounter) return { kind: 'conflict', existing: toPayment(byCounter), reason: 'counter' };
      for (const input of p.inputs) {
        const hit = this.#db
          .prepare('SELECT p.* FROM spent_inputs s JOIN payments p ON p.id = s.payment_id WHERE s.input = ?')
          .get(input) as PaymentRow | undefined;
        if (hit) return { kind: 'conflict', existing: toPayment(hit), reason: 'input' };
      }
      const now = this.#now();
      const info = this.#db
        .prepare(
          // crl_version: the list held when approving; the batch reports it so the ledger can tell whether the merchant is covered.
          `INSERT INTO payments (transfer_hash, card, counter, amount, currency, nonce, time, approved_at, cvm, merchant, mcc, handover, state, crl_version, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', coalesce((SELECT version FROM crl WHERE id = 1), 0), ?)`,
        )
        .run(
          p.transferHash,
          p.card,
          p.counter,
          p.amount,
          p.currency,
          p.nonce,
          p.time,
          p.approvedAt,
          p.cvm,
          p.merchant,
          p.mcc,
          p.handover,
          now,
        );
      const id = Number(info.lastInsertRowid);
      const ins = this.#db.prepare('INSERT INTO spent_inputs (input, payment_id) VALUES (?, ?)');
      for (const input of p.inputs) ins.run(input, id);
      for (const n of attemptNonces) {
        this.#db.prepare(`UPDATE attempts SET state = 'closed' WHERE nonce = ? AND state = 'torn'`).run(n);
        this.#db.prepare(`UPDATE attempts SET state = 'approved' WHERE nonce = ? AND state = 'sent'`).run(n);
      }
      const rec = {
        kind: 'recorded' as const,
        payment: toPayment(this.#db.prepare('SELECT * FROM payments WHERE id = ?').get(id) as PaymentRow),
      };
      this.#approvalHook?.(rec);
      return rec;
    });
    try {
      // IMMEDIATE: take the write lock before reading, so two processes cannot both pass the checks.
      return tx.immediate();
    } catch (e) {
      throw new TerminalError(TerminalErrorCode.JOURNAL, `cannot record the payment: ${(e as Error).message}`, {}, e);
    }
  }

  /** One payment by receipt id. */
  getPayment(id: number): PaymentRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM payments WHERE id = ?').get(id) as PaymentRow | undefined;
    return r && toPayment(r);
  }

  /**
   * The transfer hash of the newest payment (highest counter) of `card` in the journal, if any:
   * the journal holds its handover with the whole chain since the card's anchor, which a request
   * names so that the card need not send it again (SPEC §3.6 held, §3.8 after).
   */
  newestTransferOf(card: Uint8Array): Uint8Array | undefined {
    const r = this.#db.prepare('SELECT transfer_hash FROM payments WHERE card = ? ORDER BY counter DESC LIMIT 1').get(card) as
      { transfer_hash: Buffer } | undefined;
    return r ? new Uint8Array(r.transfer_hash) : undefined;
  }

  /** One payment by transfer hash. */
  getPaymentByTransfer(hash: Uint8Array): PaymentRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM payments WHERE transfer_hash = ?').get(hash) as PaymentRow | undefined;
    return r && toPayment(r);
  }

  /** Payments, oldest first, optionally of one state. */
  listPayments(opts: { state?: PaymentState; limit?: number; afterId?: number } = {}): PaymentRecord[] {
    const where: string[] = ['id > ?'];
    const args: (string | number)[] = [opts.afterId ?? 0];
    if (opts.state) {
      where.push('state = ?');
      args.push(opts.state);
    }
    const sql = `SELECT * FROM payments WHERE ${where.join(' AND ')} ORDER BY id LIMIT ?`;
    return (this.#db.prepare(sql).all(...args, opts.limit ?? -1) as PaymentRow[]).map(toPayment);
  }

  /**
   * Value not yet verified by the ledger (pending + submitted) and since when:
   * the exposure the risk policy caps, and what the merchant is told when offline.
   */
  pendingSummary(): PendingSummary {
    const r = this.#db
      .prepare(
        `SELECT count(*) AS count, coalesce(sum(amount), 0) AS amount, min(approved_at) AS since FROM payments WHERE state IN ('pending','submitted')`,
      )
      .get() as { count: number; amount: number; since: number | null };
    return { count: r.count, amount: r.amount, since: r.since ?? undefined };
  }

  /** Totals by state. */
  totalsByState(): Record<PaymentState, Totals> {
    const out = Object.fromEntries(Object.values(PaymentState).map((s) => [s, { count: 0, amount: 0 }])) as Record<PaymentState, Totals>;
    for (const r of this.#db.prepare('SELECT state, count(*) AS count, sum(amount) AS amount FROM payments GROUP BY state').all() as {
      state: PaymentState;
      count: number;
      amount: number;
    }[]) {
      out[r.state] = { count: r.count, amount: r.amount };
    }
    return out;
  }

  /** Totals per UTC day (YYYY-MM-DD of the approval time) and state, days ascending. */
  totalsByDay(): { day: string; state: PaymentState; count: number; amount: number }[] {
    return this.#db
      .prepare(
        `SELECT strftime('%Y-%m-%d', approved_at, 'unixepoch') AS day, state, count(*) AS count, sum(amount) AS amount
         FROM payments GROUP BY day, state ORDER BY day, state`,
      )
      .all() as { day: string; state: PaymentState; count: number; amount: number }[];
  }

  /** Double-spent payments with whether the merchant is covered. */
  doubleSpent(): { covered: Totals; uncovered: Totals } {
    const rows = this.#db
      .prepare(
        `SELECT coalesce(covered, 0) AS covered, count(*) AS count, sum(amount) AS amount FROM payments WHERE state = 'double_spent' GROUP BY coalesce(covered, 0)`,
      )
      .all() as { covered: number; count: number; amount: number }[];
    const pick = (c: number): Totals => {
      const r = rows.find((x) => x.covered === c);
      return { count: r?.count ?? 0, amount: r?.amount ?? 0 };
    };
    return { covered: pick(1), uncovered: pick(0) };
  }

  // ------------------------------------------------------------ batches
  /**
   * Builds the next batch from unbatched pending payments and adjustments in one
   * transaction: `build` gets the sequence number, the handovers, the revocation list
   * version and the signed adjustments, and returns the signed Batch bytes, which are
   * stored before anything is sent (so a retry after a crash resends the very same
   * bytes: idempotent). Returns undefined when nothing is pending. An unacknowledged
   * batch is returned as is instead of building a new one (one batch in flight).
   *
   * An adjustment goes into a batch only with or after its payment's handover: a void of
   * an unbatched payment travels in the same batch as the handover (which still goes to
   * the acquirer: it is the evidence the ledger judges, and voids); a batch may carry
   * adjustments alone (a refund of a settled payment).
   */
  nextBatch(
    maxHandovers: number,
    build: (seq: number, handovers: Uint8Array[], crlVersion: number, adjustments: Uint8Array[]) => Uint8Array,
    maxAdjustments: number = MAX_BATCH_ADJUSTMENTS,
  ): BatchRecord | undefined {
    const tx = this.#db.transaction((): BatchRecord | undefined => {
      const open = this.#db.prepare(`SELECT seq FROM batches WHERE state = 'built' ORDER BY seq LIMIT 1`).get() as
        { seq: number } | undefined;
      if (open) return this.getBatch(open.seq);
      // One batch carries payments approved under one revocation list version (the oldest first),
      // so the version it reports is exactly the one each of its payments was checked against.
      const first = this.#db
        .prepare(`SELECT crl_version FROM payments WHERE state = 'pending' AND batch_seq IS NULL ORDER BY id LIMIT 1`)
        .get() as { crl_version: number } | undefined;
      const rows = first
        ? (this.#db
            .prepare(
              `SELECT id, handover FROM payments WHERE state = 'pending' AND batch_seq IS NULL AND crl_version = ? ORDER BY id LIMIT ?`,
            )
            .all(first.crl_version, maxHandovers) as { id: number; handover: Uint8Array }[])
        : [];
      const inThis = new Set(rows.map((r) => r.id));
      const adjustments = (
        this.#db
          .prepare(
            `SELECT a.id, a.signed, a.payment_id, p.batch_seq AS payment_batch FROM adjustments a JOIN payments p ON p.id = a.payment_id
             WHERE a.state = 'pending' AND a.batch_seq IS NULL ORDER BY a.time, a.rowid`,
          )
          .all() as { id: Uint8Array; signed: Uint8Array; payment_id: number; payment_batch: number | null }[]
      )
        .filter((a) => a.payment_batch !== null || inThis.has(a.payment_id))
        .slice(0, maxAdjustments);
      if (rows.length === 0 && adjustments.length === 0) return undefined;
      const crlVersion =
        first?.crl_version ??
        (this.#db.prepare('SELECT version FROM crl WHERE id = 1').get() as { version: number } | undefined)?.version ??
        0;
      const last = this.#db.prepare('SELECT max(seq) AS seq FROM batches').get() as { seq: number | null };
      const seq = (last.seq ?? 0) + 1;
      const bytes = build(
        seq,
        rows.map((r) => plainBytes(r.handover)),
        crlVersion,
        adjustments.map((a) => plainBytes(a.signed)),
      );
      this.#db
        .prepare(`INSERT INTO batches (seq, created, bytes, state, adjustments) VALUES (?, ?, ?, 'built', ?)`)
        .run(seq, this.#now(), bytes, adjustments.length);
      const upd = this.#db.prepare('UPDATE payments SET batch_seq = ?, updated_at = ? WHERE id = ?');
      for (const r of rows) upd.run(seq, this.#now(), r.id);
      const updA = this.#db.prepare('UPDATE adjustments SET batch_seq = ?, updated_at = ? WHERE id = ?');
      for (const a of adjustments) updA.run(seq, this.#now(), a.id);
      return this.getBatch(seq);
    });
    return tx.immediate();
  }

  /** A stored batch. */
  getBatch(seq: number): BatchRecord | undefined {
    // `adjustments` (schema v4) is absent from a file opened with an older migration list (tests of the upgrade path).
    const b = this.#db.prepare('SELECT * FROM batches WHERE seq = ?').get(seq) as
      { seq: number; created: number; bytes: Uint8Array; state: 'built' | 'acked'; adjustments?: number } | undefined;
    if (!b) return undefined;
    const t = this.#db
      .prepare('SELECT count(*) AS count, coalesce(sum(amount), 0) AS total FROM payments WHERE batch_seq = ?')
      .get(seq) as { count: number; total: number };
    return {
      seq: b.seq,
      created: b.created,
      bytes: plainBytes(b.bytes),
      state: b.state,
      count: t.count,
      total: t.total,
      adjustments: b.adjustments ?? 0,
    };
  }

  /** Marks a batch acknowledged by the acquirer; its pending payments and adjustments become `submitted`. */
  ackBatch(seq: number): void {
    this.#db
      .transaction(() => {
        this.#db.prepare(`UPDATE batches SET state = 'acked', acked_at = ? WHERE seq = ? AND state = 'built'`).run(this.#now(), seq);
        this.#db
          .prepare(`UPDATE payments SET state = 'submitted', updated_at = ? WHERE batch_seq = ? AND state = 'pending'`)
          .run(this.#now(), seq);
        this.#db
          .prepare(`UPDATE adjustments SET state = 'submitted', updated_at = ? WHERE batch_seq = ? AND state = 'pending'`)
          .run(this.#now(), seq);
      })
      .immediate();
  }

  /** The batch waiting for an acknowledgement, if any. */
  openBatch(): BatchRecord | undefined {
    const r = this.#db.prepare(`SELECT seq FROM batches WHERE state = 'built' ORDER BY seq LIMIT 1`).get() as { seq: number } | undefined;
    return r && this.getBatch(r.seq);
  }

  // ------------------------------------------------------------ outcomes
  /**
   * Applies verified ledger outcomes (of payments, and of adjustments: Outcome key 10) and
   * advances the outcome cursor in one transaction. Outcomes for unknown transfers or
   * adjustments are ignored (counted); a final state is never changed again.
   */
  applyOutcomes(
    outcomes: readonly OutcomeUpdate[],
    cursor: string | undefined,
    adjustmentOutcomes: readonly AdjustmentOutcomeUpdate[] = [],
  ): { applied: number; unknown: number } {
    return this.#db
      .transaction(() => {
        let applied = 0;
        let unknown = 0;
        const updA = this.#db.prepare(
          `UPDATE adjustments SET state = ?, code = ?, outcome = ?, updated_at = ?
           WHERE id = ? AND transfer_hash = ? AND state IN ('pending','submitted')`,
        );
        for (const o of adjustmentOutcomes) {
          const r = updA.run(o.accepted ? 'accepted' : 'refused', o.code ?? null, o.bytes, this.#now(), o.id, o.transferHash);
          if (r.changes === 1) applied++;
          else if (!this.getAdjustment(o.id)) unknown++;
        }
        const upd = this.#db.prepare(
          `UPDATE payments SET state = ?, covered = ?, outcome = ?, outcome_code = ?, updated_at = ?
         WHERE transfer_hash = ? AND state IN ('pending','submitted')`,
        );
        for (const o of outcomes) {
          const r = upd.run(o.state, o.covered ? 1 : 0, o.bytes, o.code ?? null, this.#now(), o.transferHash);
          if (r.changes === 1) applied++;
          else if (!this.getPaymentByTransfer(o.transferHash)) unknown++;
        }
        if (cursor !== undefined) this.setMeta('outcomeCursor', cursor);
        return { applied, unknown };
      })
      .immediate();
  }

  // ------------------------------------------------------------ adjustments (voids, refunds)
  /**
   * Records a void or a refund of payment `paymentId`, durably, in one transaction with the
   * terminal's own rules: call it BEFORE anyone is shown the void or refund.
   *
   * - void: allowed while the journal holds no outcome for the payment (pending or
   *   submitted); its amount is the payment's; one void per payment (again: `existing`);
   * - refund: only of a settled payment; `amount` (default: what is left) plus the payment's
   *   refunds not refused (accepted or on their way) must not exceed the payment's amount;
   * - `reference` (optional, unique in the journal) makes the request idempotent: the same
   *   reference for the same payment, kind and amount returns the recorded one (`existing`),
   *   for anything else `REFERENCE_CONFLICT`.
   *
   * `sign` gets the Adjustment's content (a fresh random id, the payment's transfer, card
   * and currency, the amount, the journal's clock) and returns the SignedAdjustment bytes,
   * stored in the same transaction. A refusal records nothing.
   */
  recordAdjustment(
    req: { kind: AdjustmentKind; paymentId: number; amount?: number; reference?: string },
    sign: (content: AdjustmentContent) => Uint8Array,
  ): AdjustmentResult {
    const tx = this.#db.transaction((): AdjustmentResult => {
      const refuse = (reason: AdjustmentRefusal, message: string): AdjustmentResult => ({ kind: 'refused', reason, message });
      const p = this.getPayment(req.paymentId);
      if (!p) return refuse('NOT_FOUND', `no payment with receipt #${req.paymentId}`);
      if (req.reference !== undefined) {
        const same = this.getAdjustmentByReference(req.reference);
        if (same) {
          const matches = same.kind === req.kind && same.paymentId === p.id && (req.amount === undefined || req.amount === same.amount);
          return matches
            ? { kind: 'existing', adjustment: same }
            : refuse(
                'REFERENCE_CONFLICT',
                `reference ${req.reference} names a ${same.kind} of ${formatTenge(same.amount)} of receipt #${same.paymentId}`,
              );
        }
      }
      let amount: number;
      if (req.kind === AdjustmentKind.VOID) {
        const existing = this.adjustmentsOf(p.id).find((a) => a.kind === AdjustmentKind.VOID);
        if (existing) return { kind: 'existing', adjustment: existing };
        if (p.state === PaymentState.SETTLED)
          return refuse('ALREADY_SETTLED', `receipt #${p.id} is settled to the merchant: refund it instead`);
        if (p.state !== PaymentState.PENDING && p.state !== PaymentState.SUBMITTED)
          return refuse('NOT_VOIDABLE', `receipt #${p.id} is ${p.state}${p.outcomeCode ? ` (${p.outcomeCode})` : ''}: nothing to void`);
        if (req.amount !== undefined && req.amount !== p.amount)
          return refuse('INVALID_AMOUNT', `a void is of the whole payment (${formatTenge(p.amount)})`);
        amount = p.amount;
      } else {
        if (p.state !== PaymentState.SETTLED)
          return refuse('NOT_SETTLED', `receipt #${p.id} is ${p.state}, not settled: only a settled payment is refunded (void it instead)`);
        const left = p.amount - this.refundedOf(p.id);
        amount = req.amount ?? left;
        if (!Number.isSafeInteger(amount) || amount <= 0) {
          return left <= 0
            ? refuse('REFUND_EXCEEDS', `receipt #${p.id} is refunded in full already`)
            : refuse('INVALID_AMOUNT', 'a refund amount is a positive number of tiyn');
        }
        if (amount > left)
          return refuse(
            'REFUND_EXCEEDS',
            `receipt #${p.id}: ${formatTenge(amount)} exceeds what is left to refund (${formatTenge(left)} of ${formatTenge(p.amount)})`,
          );
      }
      const id = new Uint8Array(randomBytes(16));
      const time = this.#now();
      const signed = sign({ id, transfer: p.transferHash, card: p.card, amount, currency: p.currency, time });
      this.#db
        .prepare(
          `INSERT INTO adjustments (id, kind, payment_id, transfer_hash, amount, reference, signed, state, time, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)`,
        )
        .run(id, req.kind, p.id, p.transferHash, amount, req.reference ?? null, signed, time, time);
      return { kind: 'recorded', adjustment: this.getAdjustment(id)! };
    });
    try {
      // IMMEDIATE: the rules are checked under the write lock, so two processes cannot both pass them.
      return tx.immediate();
    } catch (e) {
      throw new TerminalError(TerminalErrorCode.JOURNAL, `cannot record the ${req.kind}: ${(e as Error).message}`, {}, e);
    }
  }

  /** One adjustment by id. */
  getAdjustment(id: Uint8Array): AdjustmentRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM adjustments WHERE id = ?').get(id) as AdjustmentRow | undefined;
    return r && toAdjustment(r);
  }

  /** One adjustment by its reference. */
  getAdjustmentByReference(reference: string): AdjustmentRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM adjustments WHERE reference = ?').get(reference) as AdjustmentRow | undefined;
    return r && toAdjustment(r);
  }

  /** The adjustments of a payment, oldest first. */
  adjustmentsOf(paymentId: number): AdjustmentRecord[] {
    return (this.#db.prepare('SELECT * FROM adjustments WHERE payment_id = ? ORDER BY time, rowid').all(paymentId) as AdjustmentRow[]).map(
      toAdjustment,
    );
  }

  /** Adjustments, oldest first, optionally of one state. */
  listAdjustments(opts: { state?: AdjustmentState; limit?: number } = {}): AdjustmentRecord[] {
    const rows = opts.state
      ? this.#db.prepare('SELECT * FROM adjustments WHERE state = ? ORDER BY time, rowid LIMIT ?').all(opts.state, opts.limit ?? -1)
      : this.#db.prepare('SELECT * FROM adjustments ORDER BY time, rowid LIMIT ?').all(opts.limit ?? -1);
    return (rows as AdjustmentRow[]).map(toAdjustment);
  }

  /** Sum of the refunds of a payment that the ledger did not refuse (accepted, or on their way). */
  refundedOf(paymentId: number): number {
    return (
      this.#db
        .prepare(`SELECT coalesce(sum(amount), 0) AS s FROM adjustments WHERE payment_id = ? AND kind = 'refund' AND state != 'refused'`)
        .get(paymentId) as { s: number }
    ).s;
  }

  /** Totals of adjustments by kind and state. */
  adjustmentTotals(): Record<AdjustmentKind, Record<AdjustmentState, Totals>> {
    const zero = (): Record<AdjustmentState, Totals> =>
      Object.fromEntries(Object.values(AdjustmentState).map((st) => [st, { count: 0, amount: 0 }])) as Record<AdjustmentState, Totals>;
    const out = { void: zero(), refund: zero() };
    for (const r of this.#db
      .prepare('SELECT kind, state, count(*) AS count, sum(amount) AS amount FROM adjustments GROUP BY kind, state')
      .all() as { kind: AdjustmentKind; state: AdjustmentState; count: number; amount: number }[]) {
      out[r.kind][r.state] = { count: r.count, amount: r.amount };
    }
    return out;
  }

  // ------------------------------------------------------------ revocation list
  /**
   * Replaces the held revocation list by a newer one (caller verified its
   * signature). Refuses to go back to an older version.
   */
  storeCrl(crl: { version: number; issued: number; bytes: Uint8Array; revoked: readonly Uint8Array[] }): boolean {
    return this.#db
      .transaction(() => {
        const cur = this.#db.prepare('SELECT version FROM crl WHERE id = 1').get() as { version: number } | undefined;
        if (cur && crl.version < cur.version) return false;
        if (cur && crl.version === cur.version) {
          // Same list: only the freshness changes.
          this.#db.prepare('UPDATE crl SET fetched_at = ? WHERE id = 1').run(this.#now());
          return true;
        }
        this.#db.prepare('DELETE FROM revoked').run();
        const ins = this.#db.prepare('INSERT OR IGNORE INTO revoked (kid) VALUES (?)');
        for (const k of crl.revoked) ins.run(k);
        this.#db
          .prepare(
            'INSERT INTO crl (id, version, issued, fetched_at, bytes) VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version, issued = excluded.issued, fetched_at = excluded.fetched_at, bytes = excluded.bytes',
          )
          .run(crl.version, crl.issued, this.#now(), crl.bytes);
        return true;
      })
      .immediate();
  }

  /** The held revocation list's metadata, if any. */
  crl(): StoredCrl | undefined {
    const r = this.#db.prepare('SELECT version, issued, fetched_at FROM crl WHERE id = 1').get() as
      { version: number; issued: number; fetched_at: number } | undefined;
    if (!r) return undefined;
    const c = this.#db.prepare('SELECT count(*) AS n FROM revoked').get() as { n: number };
    return { version: r.version, issued: r.issued, fetchedAt: r.fetched_at, count: c.n };
  }

  /** True when the card key id is on the held revocation list. */
  isRevoked(kid: Uint8Array): boolean {
    return this.#db.prepare('SELECT 1 FROM revoked WHERE kid = ?').get(kid) !== undefined;
  }

  // ------------------------------------------------------------ issuing-bank certificates (SPEC §3.6 banks)
  /**
   * Keeps an issuing bank's certificate, which the caller has verified under the pinned root
   * (the kernel does so before it calls this; validation verifies it again with every chain it
   * completes, so a wrong entry can only make a payment decline, never approve). Idempotent; the
   * certificate of a known kid is replaced (a renewed certificate of the same key).
   */
  storeBankCertificate(b: { kid: Uint8Array; cert: Uint8Array; nbf: number; exp: number }): void {
    const now = this.#now();
    this.#db
      .prepare(
        `INSERT INTO bank_certs (kid, cert, nbf, exp, added, last_used) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (kid) DO UPDATE SET cert = excluded.cert, nbf = excluded.nbf, exp = excluded.exp, last_used = excluded.last_used
         WHERE excluded.exp >= bank_certs.exp`,
      )
      .run(b.kid, b.cert, b.nbf, b.exp, now, now);
  }

  /** The held certificate of the bank `kid`, if any. */
  bankCertificate(kid: Uint8Array): Uint8Array | undefined {
    const r = this.#db.prepare('SELECT cert FROM bank_certs WHERE kid = ?').get(kid) as { cert: Buffer } | undefined;
    return r ? new Uint8Array(r.cert) : undefined;
  }

  /** Key ids of the held bank certificates valid at `at`, most recently used first, at most `limit`. */
  heldBanks(at: number, limit: number): Uint8Array[] {
    return (
      this.#db
        .prepare('SELECT kid FROM bank_certs WHERE nbf <= ? AND exp >= ? ORDER BY last_used DESC, kid LIMIT ?')
        .all(at, at, limit) as {
        kid: Buffer;
      }[]
    ).map((r) => new Uint8Array(r.kid));
  }

  /** Marks the bank `kid` as used now (it then comes first in {@link heldBanks}). */
  touchBankCertificate(kid: Uint8Array): void {
    this.#db.prepare('UPDATE bank_certs SET last_used = ? WHERE kid = ?').run(this.#now(), kid);
  }

  // ------------------------------------------------------------ cash-register orders (dt-pos serve)
  /**
   * Sets the hook run inside every approval's transaction (one at a time; `undefined` removes it).
   * The service links the payment to the register's order there, so an approved payment and its
   * order change together: a crash cannot leave a payment without its reference.
   */
  setApprovalHook(hook: ApprovalHook | undefined): void {
    this.#approvalHook = hook;
  }

  /** One order by the register's reference. */
  getOrder(reference: string): OrderRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM ecr_orders WHERE reference = ?').get(reference) as OrderRow | undefined;
    return r && toOrder(r);
  }

  /** The order a payment was linked to, if any. */
  orderOfPayment(paymentId: number): OrderRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM ecr_orders WHERE payment_id = ?').get(paymentId) as OrderRow | undefined;
    return r && toOrder(r);
  }

  /**
   * Creates an order in state `started`, or returns the existing one of that reference
   * (`created: false`): the register's reference is the idempotency key. One transaction.
   */
  createOrder(reference: string, amount: number): { created: boolean; order: OrderRecord } {
    return this.#db
      .transaction(() => {
        const cur = this.getOrder(reference);
        if (cur) return { created: false, order: cur };
        const t = this.#now();
        this.#db
          .prepare(`INSERT INTO ecr_orders (reference, amount, created, updated, state) VALUES (?, ?, ?, ?, 'started')`)
          .run(reference, amount, t, t);
        return { created: true, order: this.getOrder(reference)! };
      })
      .immediate();
  }

  /**
   * Moves an order to `state` with its reason; only from `started` (or from `interrupted` back to
   * `started`, a resume). Returns false when the order was not in such a state (a final state never changes).
   */
  setOrderState(reference: string, state: OrderState, reason?: string, detail?: string): boolean {
    const from = state === OrderState.STARTED ? OrderState.INTERRUPTED : OrderState.STARTED;
    return (
      this.#db
        .prepare(
          `UPDATE ecr_orders SET state = ?, reason = ?, detail = ?, updated = ? WHERE reference = ? AND state = ? AND payment_id IS NULL`,
        )
        .run(state, reason ?? null, detail ?? null, this.#now(), reference, from).changes === 1
    );
  }

  /**
   * Links a payment to a started order (state `approved`). Call it from the approval hook, so
   * that it commits with the payment. False when the order is not started or the payment is
   * already linked (a replayed handover is never a second sale).
   */
  linkOrderPayment(reference: string, paymentId: number): boolean {
    return (
      this.#db
        .prepare(
          `UPDATE ecr_orders SET state = 'approved', payment_id = ?, reason = NULL, detail = NULL, updated = ?
           WHERE reference = ? AND state = 'started' AND payment_id IS NULL AND NOT EXISTS (SELECT 1 FROM ecr_orders WHERE payment_id = ?)`,
        )
        .run(paymentId, this.#now(), reference, paymentId).changes === 1
    );
  }

  /** At start-up: orders left `started` by a process that stopped mid-tap become `interrupted`. Returns how many. */
  interruptStartedOrders(): number {
    return this.#db.prepare(`UPDATE ecr_orders SET state = 'interrupted', updated = ? WHERE state = 'started'`).run(this.#now()).changes;
  }

  /** Orders, newest first (at most `limit`, default 100). */
  listOrders(opts: { limit?: number } = {}): OrderRecord[] {
    return (
      this.#db.prepare('SELECT * FROM ecr_orders ORDER BY created DESC, rowid DESC LIMIT ?').all(opts.limit ?? 100) as OrderRow[]
    ).map(toOrder);
  }

  /**
   * Closes the day's batch: records the totals of the payments approved since the last close
   * (through the newest receipt), in one transaction; returns the close.
   */
  closeDay(): DayClose {
    return this.#db
      .transaction(() => {
        const last = this.lastDayClose();
        const from = last?.throughPayment ?? 0;
        const r = this.#db
          .prepare(
            'SELECT count(*) AS count, coalesce(sum(amount), 0) AS amount, coalesce(max(id), ?) AS through FROM payments WHERE id > ?',
          )
          .get(from, from) as { count: number; amount: number; through: number };
        const info = this.#db
          .prepare('INSERT INTO day_closes (closed_at, through_payment, count, amount) VALUES (?, ?, ?, ?)')
          .run(this.#now(), r.through, r.count, r.amount);
        return { id: Number(info.lastInsertRowid), closedAt: this.#now(), throughPayment: r.through, count: r.count, amount: r.amount };
      })
      .immediate();
  }

  /** The last day close, if any. */
  lastDayClose(): DayClose | undefined {
    const r = this.#db.prepare('SELECT * FROM day_closes ORDER BY id DESC LIMIT 1').get() as
      { id: number; closed_at: number; through_payment: number; count: number; amount: number } | undefined;
    return r && { id: r.id, closedAt: r.closed_at, throughPayment: r.through_payment, count: r.count, amount: r.amount };
  }

  /** Totals by state of the payments after receipt `afterId` (the open batch of the day: after the last close). */
  totalsByStateSince(afterId: number): Record<PaymentState, Totals> {
    const out = Object.fromEntries(Object.values(PaymentState).map((s) => [s, { count: 0, amount: 0 }])) as Record<PaymentState, Totals>;
    for (const r of this.#db
      .prepare('SELECT state, count(*) AS count, sum(amount) AS amount FROM payments WHERE id > ? GROUP BY state')
      .all(afterId) as { state: PaymentState; count: number; amount: number }[]) {
      out[r.state] = { count: r.count, amount: r.amount };
    }
    return out;
  }
}
