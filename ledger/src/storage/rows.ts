/**
 * Typed row mapping: one row type and one mapping function per table of the
 * ledger schema (`SCHEMA`, types.ts), plus the column list the store selects.
 * A mapping function reads each column by name and checks its type (a blob is
 * a `Uint8Array`, an integer a safe JS integer, a state one of its values);
 * anything else is a {@link RowTypeError}, never a silently wrong value. Both
 * backends hand rows over in the same shape (types.ts `SqlValue`), so these
 * functions are the same for SQLite and PostgreSQL.
 *
 * @module
 */
import type { Row, SqlValue } from './types.ts';

/** A column holds a value of another type than its table's row type says (a schema or backend mismatch: an internal error). */
export class RowTypeError extends Error {
  constructor(
    readonly table: string,
    readonly column: string,
    expected: string,
  ) {
    super(`${table}.${column}: expected ${expected}`);
    this.name = 'RowTypeError';
  }
}

/** Reads the columns of one row of `table`, checking their types. */
class Columns {
  constructor(
    private readonly row: Row,
    private readonly table: string,
  ) {}
  #value(col: string): SqlValue | undefined {
    return this.row[col];
  }
  blob(col: string): Uint8Array {
    const v = this.#value(col);
    if (v instanceof Uint8Array) return v;
    throw new RowTypeError(this.table, col, 'a blob');
  }
  blobOrNull(col: string): Uint8Array | null {
    const v = this.#value(col);
    if (v === null) return null;
    if (v instanceof Uint8Array) return v;
    throw new RowTypeError(this.table, col, 'a blob or NULL');
  }
  int(col: string): number {
    const v = this.#value(col);
    if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
    throw new RowTypeError(this.table, col, 'a safe integer');
  }
  text(col: string): string {
    const v = this.#value(col);
    if (typeof v === 'string') return v;
    throw new RowTypeError(this.table, col, 'text');
  }
  textOrNull(col: string): string | null {
    const v = this.#value(col);
    if (v === null || typeof v === 'string') return v;
    throw new RowTypeError(this.table, col, 'text or NULL');
  }
  oneOf<S extends string>(col: string, values: readonly S[]): S {
    const v = this.#value(col);
    if (isOneOf(v, values)) return v;
    throw new RowTypeError(this.table, col, `one of ${values.join(', ')}`);
  }
}

const columns = (row: Row, table: string) => new Columns(row, table);

function isOneOf<S extends string>(v: SqlValue | undefined, values: readonly S[]): v is S {
  return values.some((x) => x === v);
}

/**
 * An aggregate (`COUNT`, `COALESCE(SUM(...), 0)`) read as a safe integer. PostgreSQL answers
 * `SUM` over BIGINT as NUMERIC, which `pg` hands over as a decimal string; SQLite as an integer.
 */
export function aggregate(row: Row | undefined, col: string): number {
  const v = row?.[col];
  const x = typeof v === 'string' && /^-?[0-9]+$/.test(v) ? Number(v) : v;
  if (typeof x === 'number' && Number.isSafeInteger(x)) return x;
  throw new RowTypeError('(aggregate)', col, 'a safe integer');
}

// ------------------------------------------------------------ meta
export interface MetaRow {
  readonly k: string;
  readonly v: number;
}
export const META_COLUMNS = 'k, v';
export function metaRow(r: Row): MetaRow {
  const c = columns(r, 'meta');
  return { k: c.text('k'), v: c.int('v') };
}

// ------------------------------------------------------------ allocations
export interface AllocationRow {
  readonly id: Uint8Array;
  readonly bank: Uint8Array;
  readonly amount: number;
  readonly time: number;
}
export const ALLOCATION_COLUMNS = 'id, bank, amount, time';
export function allocationRow(r: Row): AllocationRow {
  const c = columns(r, 'allocations');
  return { id: c.blob('id'), bank: c.blob('bank'), amount: c.int('amount'), time: c.int('time') };
}

// ------------------------------------------------------------ banks
export interface BankRow {
  readonly kid: Uint8Array;
  readonly cert: Uint8Array;
  readonly perms: number;
  readonly balance: number;
  /** How far below zero the balance may go (its floor is `-creditLine`, SPEC §7.6.2). */
  readonly creditLine: number;
}
export const BANK_COLUMNS = 'kid, cert, perms, balance, credit_line';
export function bankRow(r: Row): BankRow {
  const c = columns(r, 'banks');
  return { kid: c.blob('kid'), cert: c.blob('cert'), perms: c.int('perms'), balance: c.int('balance'), creditLine: c.int('credit_line') };
}

// ------------------------------------------------------------ cards
export interface CardRow {
  readonly kid: Uint8Array;
  /** The issuing bank's kid. */
  readonly bank: Uint8Array;
  readonly cert: Uint8Array;
  /** Hash the card's next signed object must chain from, and its counter. */
  readonly anchor: Uint8Array;
  readonly anchorCounter: number;
  /** The sync request whose receipt set the anchor (its tokens are the card's coins), NULL before the first sync. */
  readonly anchorSync: Uint8Array | null;
}
export const CARD_COLUMNS = 'kid, bank, cert, anchor, anchor_counter, anchor_sync';
export function cardRow(r: Row): CardRow {
  const c = columns(r, 'cards');
  return {
    kid: c.blob('kid'),
    bank: c.blob('bank'),
    cert: c.blob('cert'),
    anchor: c.blob('anchor'),
    anchorCounter: c.int('anchor_counter'),
    anchorSync: c.blobOrNull('anchor_sync'),
  };
}

// ------------------------------------------------------------ loads
export const LOAD_STATES = ['pending', 'delivered', 'cancelled'] as const;
export type LoadState = (typeof LOAD_STATES)[number];
export interface LoadRow {
  readonly id: Uint8Array;
  readonly card: Uint8Array;
  readonly bank: Uint8Array;
  readonly amount: number;
  readonly state: LoadState;
  /** The sync that delivered or cancelled it. */
  readonly sync: Uint8Array | null;
  readonly time: number;
  /** Deterministic CBOR of the load order's Mark (SPEC §3.4), NULL when unmarked. */
  readonly mark: Uint8Array | null;
}
export const LOAD_COLUMNS = 'id, card, bank, amount, state, sync, time, mark';
export function loadRow(r: Row): LoadRow {
  const c = columns(r, 'loads');
  return {
    id: c.blob('id'),
    card: c.blob('card'),
    bank: c.blob('bank'),
    amount: c.int('amount'),
    state: c.oneOf('state', LOAD_STATES),
    sync: c.blobOrNull('sync'),
    time: c.int('time'),
    mark: c.blobOrNull('mark'),
  };
}

// ------------------------------------------------------------ tokens
export interface TokenRow {
  readonly serial: Uint8Array;
  readonly card: Uint8Array;
  readonly value: number;
  /** The sync request whose receipt carried it. */
  readonly sync: Uint8Array;
  /** The signed Token. */
  readonly bytes: Uint8Array;
}
export const TOKEN_COLUMNS = 'serial, card, value, sync, bytes';
export function tokenRow(r: Row): TokenRow {
  const c = columns(r, 'tokens');
  return { serial: c.blob('serial'), card: c.blob('card'), value: c.int('value'), sync: c.blob('sync'), bytes: c.blob('bytes') };
}

// ------------------------------------------------------------ spent (input claims)
export interface SpentRow {
  readonly card: Uint8Array;
  readonly id: Uint8Array;
  /** Payload hash of the first card-signed object that named the input. */
  readonly byHash: Uint8Array;
}
export const SPENT_COLUMNS = 'card, id, by_hash';
export function spentRow(r: Row): SpentRow {
  const c = columns(r, 'spent');
  return { card: c.blob('card'), id: c.blob('id'), byHash: c.blob('by_hash') };
}

// ------------------------------------------------------------ counters (counter claims)
export interface CounterRow {
  readonly card: Uint8Array;
  readonly counter: number;
  readonly hash: Uint8Array;
}
export const COUNTER_COLUMNS = 'card, counter, hash';
export function counterRow(r: Row): CounterRow {
  const c = columns(r, 'counters');
  return { card: c.blob('card'), counter: c.int('counter'), hash: c.blob('hash') };
}

// ------------------------------------------------------------ objects (evidence)
export interface ObjectRow {
  readonly hash: Uint8Array;
  readonly bytes: Uint8Array;
}
export const OBJECT_COLUMNS = 'hash, bytes';
export function objectRow(r: Row): ObjectRow {
  const c = columns(r, 'objects');
  return { hash: c.blob('hash'), bytes: c.blob('bytes') };
}

// ------------------------------------------------------------ transfers (value records)
export const TRANSFER_STATES = ['recorded', 'settled', 'voided'] as const;
export type TransferState = (typeof TRANSFER_STATES)[number];
export interface TransferRow {
  readonly hash: Uint8Array;
  readonly card: Uint8Array;
  readonly counter: number;
  readonly amount: number;
  readonly payee: Uint8Array;
  /** Output id of the change, NULL without change. */
  readonly changeId: Uint8Array | null;
  readonly changeValue: number;
  /** The encoded Mark of the transfer's first input (marks survive a sync), NULL when unmarked. */
  readonly mark: Uint8Array | null;
  readonly time: number;
  readonly state: TransferState;
}
export const TRANSFER_COLUMNS = 'hash, card, counter, amount, payee, change_id, change_value, mark, time, state';
export function transferRow(r: Row): TransferRow {
  const c = columns(r, 'transfers');
  return {
    hash: c.blob('hash'),
    card: c.blob('card'),
    counter: c.int('counter'),
    amount: c.int('amount'),
    payee: c.blob('payee'),
    changeId: c.blobOrNull('change_id'),
    changeValue: c.int('change_value'),
    mark: c.blobOrNull('mark'),
    time: c.int('time'),
    state: c.oneOf('state', TRANSFER_STATES),
  };
}

// ------------------------------------------------------------ verdicts
export interface VerdictRow {
  readonly transfer: Uint8Array;
  /** The first Outcome's status (OutcomeStatus). */
  readonly status: number;
  readonly covered: boolean;
  readonly code: string | null;
  readonly time: number;
  readonly card: Uint8Array;
  readonly terminal: Uint8Array;
  readonly amount: number;
  readonly proof1: Uint8Array | null;
  readonly proof2: Uint8Array | null;
}
export const VERDICT_COLUMNS = 'transfer, status, covered, code, time, card, terminal, amount, proof1, proof2';
export function verdictRow(r: Row): VerdictRow {
  const c = columns(r, 'verdicts');
  const covered = c.int('covered');
  if (covered !== 0 && covered !== 1) throw new RowTypeError('verdicts', 'covered', '0 or 1');
  return {
    transfer: c.blob('transfer'),
    status: c.int('status'),
    covered: covered === 1,
    code: c.textOrNull('code'),
    time: c.int('time'),
    card: c.blob('card'),
    terminal: c.blob('terminal'),
    amount: c.int('amount'),
    proof1: c.blobOrNull('proof1'),
    proof2: c.blobOrNull('proof2'),
  };
}

// ------------------------------------------------------------ outcomes
export interface OutcomeRow {
  readonly batch: Uint8Array;
  readonly idx: number;
  /** The signed Outcome. */
  readonly bytes: Uint8Array;
}
export const OUTCOME_COLUMNS = 'batch, idx, bytes';
export function outcomeRow(r: Row): OutcomeRow {
  const c = columns(r, 'outcomes');
  return { batch: c.blob('batch'), idx: c.int('idx'), bytes: c.blob('bytes') };
}

// ------------------------------------------------------------ batches
export interface BatchRow {
  readonly hash: Uint8Array;
  readonly terminal: Uint8Array;
  readonly seq: number;
  readonly count: number;
  readonly time: number;
}
export const BATCH_COLUMNS = 'hash, terminal, seq, count, time';
export function batchRow(r: Row): BatchRow {
  const c = columns(r, 'batches');
  return { hash: c.blob('hash'), terminal: c.blob('terminal'), seq: c.int('seq'), count: c.int('count'), time: c.int('time') };
}

// ------------------------------------------------------------ merchants
export interface MerchantRow {
  readonly kid: Uint8Array;
  readonly balance: number;
}
export const MERCHANT_COLUMNS = 'kid, balance';
export function merchantRow(r: Row): MerchantRow {
  const c = columns(r, 'merchants');
  return { kid: c.blob('kid'), balance: c.int('balance') };
}

// ------------------------------------------------------------ covers
export interface CoverRow {
  readonly transfer: Uint8Array;
  /** The issuing bank that paid. */
  readonly bank: Uint8Array;
  readonly terminal: Uint8Array;
  readonly card: Uint8Array;
  readonly counter: number;
  readonly amount: number;
}
export const COVER_COLUMNS = 'transfer, bank, terminal, card, counter, amount';
export function coverRow(r: Row): CoverRow {
  const c = columns(r, 'covers');
  return {
    transfer: c.blob('transfer'),
    bank: c.blob('bank'),
    terminal: c.blob('terminal'),
    card: c.blob('card'),
    counter: c.int('counter'),
    amount: c.int('amount'),
  };
}

/** A query result, not a table row: cover paid per card (`SUM(covers.amount)`), with the card's certificate (the audit's cover bound). */
export interface CoverTotalRow {
  readonly card: Uint8Array;
  readonly covered: number;
  readonly cert: Uint8Array;
}
export function coverTotalRow(r: Row): CoverTotalRow {
  const c = columns(r, 'covers JOIN cards');
  return { card: c.blob('card'), covered: aggregate(r, 'covered'), cert: c.blob('cert') };
}

// ------------------------------------------------------------ cover_coins
export interface CoverCoinRow {
  readonly card: Uint8Array;
  readonly id: Uint8Array;
  readonly transfer: Uint8Array;
}
export const COVER_COIN_COLUMNS = 'card, id, transfer';
export function coverCoinRow(r: Row): CoverCoinRow {
  const c = columns(r, 'cover_coins');
  return { card: c.blob('card'), id: c.blob('id'), transfer: c.blob('transfer') };
}

// ------------------------------------------------------------ proofs
export interface ProofRow {
  /** Payload hashes of the two card-signed objects (their bytes are in `objects`). */
  readonly first: Uint8Array;
  readonly second: Uint8Array;
  readonly card: Uint8Array;
  readonly time: number;
}
export const PROOF_COLUMNS = 'first, second, card, time';
export function proofRow(r: Row): ProofRow {
  const c = columns(r, 'proofs');
  return { first: c.blob('first'), second: c.blob('second'), card: c.blob('card'), time: c.int('time') };
}

// ------------------------------------------------------------ revocations
export interface RevocationRow {
  readonly card: Uint8Array;
  /** The revocation-list version that first names the card. */
  readonly version: number;
  readonly time: number;
}
export const REVOCATION_COLUMNS = 'card, version, time';
export function revocationRow(r: Row): RevocationRow {
  const c = columns(r, 'revocations');
  return { card: c.blob('card'), version: c.int('version'), time: c.int('time') };
}

// ------------------------------------------------------------ crls
export interface CrlRow {
  readonly version: number;
  readonly issued: number;
  /** The signed RevocationList. */
  readonly bytes: Uint8Array;
}
export const CRL_COLUMNS = 'version, issued, bytes';
export function crlRow(r: Row): CrlRow {
  const c = columns(r, 'crls');
  return { version: c.int('version'), issued: c.int('issued'), bytes: c.blob('bytes') };
}

// ------------------------------------------------------------ syncs
export interface SyncRow {
  /** Payload hash of the SyncRequest. */
  readonly request: Uint8Array;
  readonly card: Uint8Array;
  /** The signed SyncReceipt. */
  readonly receipt: Uint8Array;
}
export const SYNC_COLUMNS = 'request, card, receipt';
export function syncRow(r: Row): SyncRow {
  const c = columns(r, 'syncs');
  return { request: c.blob('request'), card: c.blob('card'), receipt: c.blob('receipt') };
}

// ------------------------------------------------------------ acquirer_blocks
export interface AcquirerBlockRow {
  readonly kid: Uint8Array;
  readonly reason: string;
  readonly time: number;
}
export const ACQUIRER_BLOCK_COLUMNS = 'kid, reason, time';
export function acquirerBlockRow(r: Row): AcquirerBlockRow {
  const c = columns(r, 'acquirer_blocks');
  return { kid: c.blob('kid'), reason: c.text('reason'), time: c.int('time') };
}

// ------------------------------------------------------------ card_blocks (SPEC §7.9)
export interface CardBlockRow {
  readonly card: Uint8Array;
  /** The issuing bank that blocked it. */
  readonly bank: Uint8Array;
  /** Ledger time of the block. */
  readonly time: number;
  /** Payload hash of the restitution record (a row of `syncs`), NULL until restored. */
  readonly restored: Uint8Array | null;
}
export const CARD_BLOCK_COLUMNS = 'card, bank, time, restored';
export function cardBlockRow(r: Row): CardBlockRow {
  const c = columns(r, 'card_blocks');
  return { card: c.blob('card'), bank: c.blob('bank'), time: c.int('time'), restored: c.blobOrNull('restored') };
}

// ------------------------------------------------------------ adjustments (SPEC §7.7.3)
export interface AdjustmentRow {
  readonly terminal: Uint8Array;
  readonly id: Uint8Array;
  /** Payload hash of the SignedAdjustment. */
  readonly hash: Uint8Array;
  /** 1 void, 2 refund. */
  readonly kind: number;
  readonly transfer: Uint8Array;
  readonly card: Uint8Array;
  readonly amount: number;
  /** Its Outcome's status (5 VOIDED accepted void, 6 REFUNDED accepted refund, 4 INVALID refused). */
  readonly status: number;
  readonly code: string | null;
  /** The signed Outcome answered (again) for it. */
  readonly outcome: Uint8Array;
  readonly time: number;
}
export const ADJUSTMENT_COLUMNS = 'terminal, id, hash, kind, transfer, card, amount, status, code, outcome, time';
export function adjustmentRow(r: Row): AdjustmentRow {
  const c = columns(r, 'adjustments');
  return {
    terminal: c.blob('terminal'),
    id: c.blob('id'),
    hash: c.blob('hash'),
    kind: c.int('kind'),
    transfer: c.blob('transfer'),
    card: c.blob('card'),
    amount: c.int('amount'),
    status: c.int('status'),
    code: c.textOrNull('code'),
    outcome: c.blob('outcome'),
    time: c.int('time'),
  };
}

export const REFUND_CREDIT_STATES = ['pending', 'delivered', 'redeemed'] as const;
export type RefundCreditState = (typeof REFUND_CREDIT_STATES)[number];
export interface RefundCreditRow {
  /** Payload hash of the accepted refund. */
  readonly adjustment: Uint8Array;
  readonly card: Uint8Array;
  readonly amount: number;
  /** Deterministic CBOR of the mark of the value the card paid with (SPEC §7.7.3), NULL when unmarked. */
  readonly mark: Uint8Array | null;
  readonly state: RefundCreditState;
  /** The sync that delivered or redeemed it. */
  readonly sync: Uint8Array | null;
  readonly time: number;
}
export const REFUND_CREDIT_COLUMNS = 'adjustment, card, amount, mark, state, sync, time';
export function refundCreditRow(r: Row): RefundCreditRow {
  const c = columns(r, 'refund_credits');
  return {
    adjustment: c.blob('adjustment'),
    card: c.blob('card'),
    amount: c.int('amount'),
    mark: c.blobOrNull('mark'),
    state: c.oneOf('state', REFUND_CREDIT_STATES),
    sync: c.blobOrNull('sync'),
    time: c.int('time'),
  };
}

/** Every table's mapping and column list (for tests that map every stored row). */
export const TABLE_ROWS: { readonly [table: string]: { readonly columns: string; readonly map: (r: Row) => unknown } } = {
  meta: { columns: META_COLUMNS, map: metaRow },
  allocations: { columns: ALLOCATION_COLUMNS, map: allocationRow },
  banks: { columns: BANK_COLUMNS, map: bankRow },
  cards: { columns: CARD_COLUMNS, map: cardRow },
  loads: { columns: LOAD_COLUMNS, map: loadRow },
  tokens: { columns: TOKEN_COLUMNS, map: tokenRow },
  spent: { columns: SPENT_COLUMNS, map: spentRow },
  counters: { columns: COUNTER_COLUMNS, map: counterRow },
  objects: { columns: OBJECT_COLUMNS, map: objectRow },
  transfers: { columns: TRANSFER_COLUMNS, map: transferRow },
  verdicts: { columns: VERDICT_COLUMNS, map: verdictRow },
  outcomes: { columns: OUTCOME_COLUMNS, map: outcomeRow },
  batches: { columns: BATCH_COLUMNS, map: batchRow },
  merchants: { columns: MERCHANT_COLUMNS, map: merchantRow },
  covers: { columns: COVER_COLUMNS, map: coverRow },
  cover_coins: { columns: COVER_COIN_COLUMNS, map: coverCoinRow },
  proofs: { columns: PROOF_COLUMNS, map: proofRow },
  revocations: { columns: REVOCATION_COLUMNS, map: revocationRow },
  crls: { columns: CRL_COLUMNS, map: crlRow },
  syncs: { columns: SYNC_COLUMNS, map: syncRow },
  acquirer_blocks: { columns: ACQUIRER_BLOCK_COLUMNS, map: acquirerBlockRow },
  card_blocks: { columns: CARD_BLOCK_COLUMNS, map: cardBlockRow },
  adjustments: { columns: ADJUSTMENT_COLUMNS, map: adjustmentRow },
  refund_credits: { columns: REFUND_CREDIT_COLUMNS, map: refundCreditRow },
};
