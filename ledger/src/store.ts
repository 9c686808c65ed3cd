/**
 * The ledger's store: every SQL statement the ledger runs, as named operations
 * over the storage interface (`storage/types.ts`), so SQLite and PostgreSQL go
 * through the same code and the rules (`ledger.ts`) never see SQL. Rows come
 * back through the typed mappings of `storage/rows.ts`. The schema itself
 * (CREATE TABLE) stays with the storage backends; their dialect differences
 * (placeholders, BLOB/BYTEA, integer parsing) stay in `storage/`.
 *
 * A {@link LedgerStore} opens transactions; a {@link StoreTx} is one open
 * transaction, and its operations are the statements: the caller decides what
 * goes in one transaction (one durable, atomic step of the ledger).
 *
 * @module
 */
import type { LedgerStorage, SqlTx, SqlValue } from './storage/types.ts';
import {
  acquirerBlockRow,
  adjustmentRow,
  refundCreditRow,
  ADJUSTMENT_COLUMNS,
  REFUND_CREDIT_COLUMNS,
  type AdjustmentRow,
  type RefundCreditRow,
  type RefundCreditState,
  aggregate,
  allocationRow,
  bankRow,
  cardRow,
  crlRow,
  loadRow,
  merchantRow,
  metaRow,
  objectRow,
  outcomeRow,
  coverTotalRow,
  proofRow,
  revocationRow,
  syncRow,
  tokenRow,
  transferRow,
  cardBlockRow,
  CARD_BLOCK_COLUMNS,
  type CardBlockRow,
  verdictRow,
  ACQUIRER_BLOCK_COLUMNS,
  ALLOCATION_COLUMNS,
  BANK_COLUMNS,
  CARD_COLUMNS,
  CRL_COLUMNS,
  LOAD_COLUMNS,
  MERCHANT_COLUMNS,
  META_COLUMNS,
  OBJECT_COLUMNS,
  OUTCOME_COLUMNS,
  PROOF_COLUMNS,
  REVOCATION_COLUMNS,
  SYNC_COLUMNS,
  TOKEN_COLUMNS,
  TRANSFER_COLUMNS,
  VERDICT_COLUMNS,
  type AcquirerBlockRow,
  type AllocationRow,
  type BankRow,
  type CardRow,
  type CoverTotalRow,
  type CrlRow,
  type LoadRow,
  type MerchantRow,
  type OutcomeRow,
  type ProofRow,
  type RevocationRow,
  type SyncRow,
  type TokenRow,
  type TransferRow,
  type TransferState,
  type VerdictRow,
} from './storage/rows.ts';

/** A value record to insert (SPEC §7.7: a validated chain transfer, its payee output pending). */
export type NewTransfer = Omit<TransferRow, 'state'>;

/** The sums of the supply invariant (see `Ledger.audit`). */
export interface SupplyTotals {
  readonly issued: number;
  readonly bankBalances: number;
  readonly pendingLoads: number;
  readonly unspentTokens: number;
  readonly unspentChange: number;
  readonly pendingPayee: number;
  readonly redeemed: number;
  /** Refunded value pending for cards until their next sync (SPEC §7.7.3). */
  readonly pendingRefunds: number;
  readonly covered: number;
  readonly crlVersion: number;
}

/** The ledger's statements over one storage backend. */
export class LedgerStore {
  constructor(readonly storage: LedgerStorage) {}

  /** Runs `fn` in one durable transaction of the storage (committed when it resolves, rolled back when it throws). */
  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.storage.transaction((sql) => fn(new StoreTx(sql)));
  }
}

/**
 * A coin's value is spent when its claim holder moved value: a value record or a completed sync
 * (SQL over `spent s` for the coin id column `col` of card column `card`).
 */
const valueSpent = (col: string, card: string) =>
  `EXISTS (SELECT 1 FROM spent s WHERE s.card = ${card} AND s.id = ${col} AND (EXISTS (SELECT 1 FROM transfers x WHERE x.hash = s.by_hash) OR EXISTS (SELECT 1 FROM syncs y WHERE y.request = s.by_hash)))`;

/** Keys of one `IN (...)` list at most (a longer list is read in parts). */
const IN_LIST_MAX = 256;

/**
 * `IN (?, ...)` lists take one of a few lengths (powers of two, the last key repeated to fill), so that
 * each set-based read is a handful of prepared statements, not one per list length.
 */
function inLists(keys: readonly Uint8Array[]): { marks: string; params: Uint8Array[] }[] {
  const out: { marks: string; params: Uint8Array[] }[] = [];
  for (let i = 0; i < keys.length; i += IN_LIST_MAX) {
    const part = keys.slice(i, i + IN_LIST_MAX);
    let n = 1;
    while (n < part.length) n *= 2;
    const params = [...part];
    while (params.length < n) params.push(part[part.length - 1]!);
    out.push({ marks: Array.from({ length: n }, () => '?').join(', '), params });
  }
  return out;
}

/** Rows of one multi-row statement at most (a longer list goes in parts). */
const ROWS_MAX = 128;

/**
 * Splits `n` rows into parts whose lengths are powers of two (at most {@link ROWS_MAX}), so that
 * each multi-row statement is one of a few prepared statements, whatever the number of rows.
 */
function rowParts(n: number): [start: number, length: number][] {
  const out: [number, number][] = [];
  let at = 0;
  while (at < n) {
    let len = ROWS_MAX;
    while (len > n - at) len /= 2;
    out.push([at, len]);
    at += len;
  }
  return out;
}

/** A card's counter and the object claiming it (set-based claims, SPEC §7.7 step E). */
export interface CounterClaim {
  readonly card: Uint8Array;
  readonly counter: number;
  readonly hash: Uint8Array;
}

/** A card's chain head (migration 5) and the chain state recorded with it (migration 6; validation.ts `encodeChainState`). */
export interface ChainHead extends CounterClaim {
  readonly state: Uint8Array | null;
}

/** A card's input (token serial or output id) and the object claiming it. */
export interface InputClaim {
  readonly card: Uint8Array;
  readonly id: Uint8Array;
  readonly hash: Uint8Array;
}

/** The statements of one open transaction. */
export class StoreTx {
  constructor(private readonly sql: SqlTx) {}

  /** Rows of `SELECT cols FROM table WHERE col IN (keys)`, read in parts of at most {@link IN_LIST_MAX} keys. */
  async #whereIn(select: string, col: string, keys: readonly Uint8Array[]): Promise<Record<string, SqlValue>[]> {
    const rows: Record<string, SqlValue>[] = [];
    for (const l of inLists(keys)) rows.push(...(await this.sql.all(`${select} WHERE ${col} IN (${l.marks})`, l.params)));
    return rows;
  }

  /** Inserts `rows` (each the values of `cols`) in multi-row statements: `INSERT INTO table (cols) VALUES (...), ... suffix`. */
  async #insertRows(table: string, cols: string, rows: readonly (readonly SqlValue[])[], suffix = ''): Promise<void> {
    const width = cols.split(',').length;
    const one = `(${Array.from({ length: width }, () => '?').join(', ')})`;
    for (const [at, len] of rowParts(rows.length)) {
      const params: SqlValue[] = [];
      for (let i = at; i < at + len; i++) params.push(...rows[i]!);
      await this.sql.run(`INSERT INTO ${table} (${cols}) VALUES ${Array.from({ length: len }, () => one).join(', ')}${suffix}`, params);
    }
  }

  /** Rows of `select` whose `(a, b)` is one of `pairs` (`WHERE (a = ? AND b = ?) OR ...`, each term an index search). */
  async #wherePairs(
    select: string,
    a: string,
    b: string,
    pairs: readonly (readonly [SqlValue, SqlValue])[],
  ): Promise<Record<string, SqlValue>[]> {
    const rows: Record<string, SqlValue>[] = [];
    const term = `(${a} = ? AND ${b} = ?)`;
    for (const [at, len] of rowParts(pairs.length)) {
      const params: SqlValue[] = [];
      for (let i = at; i < at + len; i++) params.push(pairs[i]![0], pairs[i]![1]);
      rows.push(...(await this.sql.all(`${select} WHERE ${Array.from({ length: len }, () => term).join(' OR ')}`, params)));
    }
    return rows;
  }

  async #sum(query: string, params: readonly SqlValue[] = []): Promise<number> {
    return aggregate(await this.sql.get(query, params), 's');
  }

  // ------------------------------------------------------------ meta
  /** Creates the counters `crl_version` and `issued` at 0 if they do not exist. */
  async initMeta(): Promise<void> {
    for (const k of ['crl_version', 'issued']) await this.sql.run(`INSERT INTO meta (k, v) VALUES (?, 0) ON CONFLICT (k) DO NOTHING`, [k]);
  }

  /** The issued total (every allocation so far). */
  async issued(): Promise<number> {
    return this.#meta('issued');
  }

  /** Adds newly allocated value to the issued total. */
  async addIssued(amount: number): Promise<void> {
    await this.sql.run(`UPDATE meta SET v = v + ? WHERE k = 'issued'`, [amount]);
  }

  async #meta(k: 'crl_version' | 'issued'): Promise<number> {
    const r = await this.sql.get(`SELECT ${META_COLUMNS} FROM meta WHERE k = ?`, [k]);
    if (!r) throw new Error(`meta: ${k} is not there (the ledger was not opened)`);
    return metaRow(r).v;
  }

  /** The latest revocation-list version. */
  async crlVersion(): Promise<number> {
    return this.#meta('crl_version');
  }

  /** Takes the next revocation-list version. */
  async nextCrlVersion(): Promise<number> {
    const r = await this.sql.get(`UPDATE meta SET v = v + 1 WHERE k = 'crl_version' RETURNING ${META_COLUMNS}`);
    if (!r) throw new Error('meta: crl_version is not there (the ledger was not opened)');
    return metaRow(r).v;
  }

  // ------------------------------------------------------------ crls
  async crl(version: number): Promise<CrlRow | undefined> {
    const r = await this.sql.get(`SELECT ${CRL_COLUMNS} FROM crls WHERE version = ?`, [version]);
    return r && crlRow(r);
  }

  async latestCrl(): Promise<CrlRow | undefined> {
    const r = await this.sql.get(`SELECT ${CRL_COLUMNS} FROM crls ORDER BY version DESC LIMIT 1`);
    return r && crlRow(r);
  }

  async insertCrl(c: CrlRow): Promise<void> {
    await this.sql.run(`INSERT INTO crls (version, issued, bytes) VALUES (?, ?, ?)`, [c.version, c.issued, c.bytes]);
  }

  // ------------------------------------------------------------ banks and allocations
  /** Registers a bank at balance 0 (nothing when it is registered). */
  async insertBank(kid: Uint8Array, cert: Uint8Array, perms: number): Promise<void> {
    await this.sql.run(`INSERT INTO banks (kid, cert, perms, balance) VALUES (?, ?, ?, 0) ON CONFLICT (kid) DO NOTHING`, [
      kid,
      cert,
      perms,
    ]);
  }

  async bank(kid: Uint8Array): Promise<BankRow | undefined> {
    const r = await this.sql.get(`SELECT ${BANK_COLUMNS} FROM banks WHERE kid = ?`, [kid]);
    return r && bankRow(r);
  }

  async banks(): Promise<BankRow[]> {
    return (await this.sql.all(`SELECT ${BANK_COLUMNS} FROM banks`)).map(bankRow);
  }

  /** Banks below their floor (minus their credit line). */
  async banksBelowFloor(): Promise<BankRow[]> {
    return (await this.sql.all(`SELECT ${BANK_COLUMNS} FROM banks WHERE balance < -credit_line`)).map(bankRow);
  }

  /** Adds `amount` to a bank's balance; false when the bank is not registered. */
  async creditBank(kid: Uint8Array, amount: number): Promise<boolean> {
    return (await this.sql.run(`UPDATE banks SET balance = balance + ? WHERE kid = ?`, [amount, kid])) === 1;
  }

  /** Takes `amount` from a bank's balance, which may go down to its floor (the caller checked it). */
  async debitBank(kid: Uint8Array, amount: number): Promise<void> {
    await this.sql.run(`UPDATE banks SET balance = balance - ? WHERE kid = ?`, [amount, kid]);
  }

  /** Takes `amount` from a bank's balance only if the balance stays at or above zero; false otherwise. */
  async debitBankFromOwnBalance(kid: Uint8Array, amount: number): Promise<boolean> {
    return (await this.sql.run(`UPDATE banks SET balance = balance - ? WHERE kid = ? AND balance >= ?`, [amount, kid, amount])) === 1;
  }

  async setCreditLine(kid: Uint8Array, amount: number): Promise<void> {
    await this.sql.run(`UPDATE banks SET credit_line = ? WHERE kid = ?`, [amount, kid]);
  }

  async allocation(id: Uint8Array): Promise<AllocationRow | undefined> {
    const r = await this.sql.get(`SELECT ${ALLOCATION_COLUMNS} FROM allocations WHERE id = ?`, [id]);
    return r && allocationRow(r);
  }

  async insertAllocation(a: AllocationRow): Promise<void> {
    await this.sql.run(`INSERT INTO allocations (id, bank, amount, time) VALUES (?, ?, ?, ?)`, [a.id, a.bank, a.amount, a.time]);
  }

  // ------------------------------------------------------------ cards
  async card(kid: Uint8Array): Promise<CardRow | undefined> {
    const r = await this.sql.get(`SELECT ${CARD_COLUMNS} FROM cards WHERE kid = ?`, [kid]);
    return r && cardRow(r);
  }

  /** The registered cards among `kids` (set-based: one statement per {@link IN_LIST_MAX} kids). */
  async cardsIn(kids: readonly Uint8Array[]): Promise<CardRow[]> {
    return (await this.#whereIn(`SELECT ${CARD_COLUMNS} FROM cards`, 'kid', kids)).map(cardRow);
  }

  /** Registers a card with its genesis anchor (nothing when it is registered). */
  async insertCard(kid: Uint8Array, bank: Uint8Array, cert: Uint8Array, anchor: Uint8Array): Promise<void> {
    await this.sql.run(
      `INSERT INTO cards (kid, bank, cert, anchor, anchor_counter, anchor_sync) VALUES (?, ?, ?, ?, 0, NULL) ON CONFLICT (kid) DO NOTHING`,
      [kid, bank, cert, anchor],
    );
  }

  /** Moves a card's anchor to a completed sync. */
  async setAnchor(kid: Uint8Array, anchor: Uint8Array, counter: number, sync: Uint8Array): Promise<void> {
    await this.sql.run(`UPDATE cards SET anchor = ?, anchor_counter = ?, anchor_sync = ? WHERE kid = ?`, [anchor, counter, sync, kid]);
  }

  // ------------------------------------------------------------ loads
  async load(id: Uint8Array): Promise<LoadRow | undefined> {
    const r = await this.sql.get(`SELECT ${LOAD_COLUMNS} FROM loads WHERE id = ?`, [id]);
    return r && loadRow(r);
  }

  /** `mark`: deterministic CBOR of the order's Mark, null when unmarked. */
  async insertPendingLoad(
    id: Uint8Array,
    card: Uint8Array,
    bank: Uint8Array,
    amount: number,
    time: number,
    mark: Uint8Array | null = null,
  ): Promise<void> {
    await this.sql.run(`INSERT INTO loads (id, card, bank, amount, state, sync, time, mark) VALUES (?, ?, ?, ?, 'pending', NULL, ?, ?)`, [
      id,
      card,
      bank,
      amount,
      time,
      mark,
    ]);
  }

  /** A card's pending loads, by id. */
  async pendingLoads(card: Uint8Array): Promise<LoadRow[]> {
    return (await this.sql.all(`SELECT ${LOAD_COLUMNS} FROM loads WHERE card = ? AND state = 'pending' ORDER BY id`, [card])).map(loadRow);
  }

  /** Closes every pending load of a card at a sync: delivered to the card, or cancelled (back to its bank). */
  async closePendingLoads(card: Uint8Array, state: 'delivered' | 'cancelled', sync: Uint8Array): Promise<void> {
    await this.sql.run(`UPDATE loads SET state = ?, sync = ? WHERE card = ? AND state = 'pending'`, [state, sync, card]);
  }

  // ------------------------------------------------------------ lost or stolen cards (SPEC §7.9)
  /** The block of a card by its bank, if any. */
  async cardBlock(card: Uint8Array): Promise<CardBlockRow | undefined> {
    const r = await this.sql.get(`SELECT ${CARD_BLOCK_COLUMNS} FROM card_blocks WHERE card = ?`, [card]);
    return r && cardBlockRow(r);
  }

  async insertCardBlock(card: Uint8Array, bank: Uint8Array, time: number): Promise<void> {
    await this.sql.run(`INSERT INTO card_blocks (card, bank, time, restored) VALUES (?, ?, ?, NULL)`, [card, bank, time]);
  }

  /** Marks a blocked card restored by the restitution record `hash` (a row of `syncs`). */
  async setCardRestored(card: Uint8Array, hash: Uint8Array): Promise<void> {
    await this.sql.run(`UPDATE card_blocks SET restored = ? WHERE card = ?`, [hash, card]);
  }

  /** The coins of a card whose value is not spent: its tokens and the change outputs of its transfers. */
  async unspentCoinsOf(card: Uint8Array): Promise<{ id: Uint8Array; value: number }[]> {
    const tokens = (
      await this.sql.all(`SELECT ${TOKEN_COLUMNS} FROM tokens t WHERE card = ? AND NOT ${valueSpent('t.serial', 't.card')}`, [card])
    ).map(tokenRow);
    const change = (
      await this.sql.all(
        `SELECT ${TRANSFER_COLUMNS} FROM transfers t WHERE card = ? AND change_id IS NOT NULL AND NOT ${valueSpent('t.change_id', 't.card')}`,
        [card],
      )
    ).map(transferRow);
    return [...tokens.map((t) => ({ id: t.serial, value: t.value })), ...change.map((t) => ({ id: t.changeId!, value: t.changeValue }))];
  }

  /** A card's transfers recorded as value whose payee is not paid yet. */
  async recordedTransfersOf(card: Uint8Array): Promise<TransferRow[]> {
    return (
      await this.sql.all(`SELECT ${TRANSFER_COLUMNS} FROM transfers WHERE card = ? AND state = 'recorded' ORDER BY counter`, [card])
    ).map(transferRow);
  }

  /** Gives the claim of a card's coin to `hash`, whoever held it (a restitution takes the coins it restores). */
  async takeClaim(card: Uint8Array, id: Uint8Array, hash: Uint8Array): Promise<void> {
    const won = await this.sql.run(`INSERT INTO spent (card, id, by_hash) VALUES (?, ?, ?) ON CONFLICT (card, id) DO NOTHING`, [
      card,
      id,
      hash,
    ]);
    if (won === 0) await this.sql.run(`UPDATE spent SET by_hash = ? WHERE card = ? AND id = ?`, [hash, card, id]);
  }

  // ------------------------------------------------------------ revocations
  async revocation(card: Uint8Array): Promise<RevocationRow | undefined> {
    const r = await this.sql.get(`SELECT ${REVOCATION_COLUMNS} FROM revocations WHERE card = ?`, [card]);
    return r && revocationRow(r);
  }

  async insertRevocation(r: RevocationRow): Promise<void> {
    await this.sql.run(`INSERT INTO revocations (card, version, time) VALUES (?, ?, ?)`, [r.card, r.version, r.time]);
  }

  /** Every revocation, by version. */
  async revocations(): Promise<RevocationRow[]> {
    return (await this.sql.all(`SELECT ${REVOCATION_COLUMNS} FROM revocations ORDER BY version`)).map(revocationRow);
  }

  /** Every revoked card's kid, in byte order (a revocation list's `revoked`). */
  async revokedCards(): Promise<Uint8Array[]> {
    return (await this.sql.all(`SELECT ${REVOCATION_COLUMNS} FROM revocations ORDER BY card`)).map((r) => revocationRow(r).card);
  }

  // ------------------------------------------------------------ evidence: claims, objects, proofs
  /**
   * Claims a card counter for an object (SPEC §7.7 step E). Returns undefined when the claim is
   * new, else the hash of the object that holds it (the same hash, or a fork's first object).
   */
  async claimCounter(card: Uint8Array, counter: number, hash: Uint8Array): Promise<Uint8Array | undefined> {
    const won = await this.sql.get(
      `INSERT INTO counters (card, counter, hash) VALUES (?, ?, ?) ON CONFLICT (card, counter) DO NOTHING RETURNING hash`,
      [card, counter, hash],
    );
    if (won) return undefined;
    return this.#holder(await this.sql.get(`SELECT hash AS h FROM counters WHERE card = ? AND counter = ?`, [card, counter]), 'counters');
  }

  /** Claims an input (token serial or output id) of a card for an object: as {@link claimCounter}. */
  async claimInput(card: Uint8Array, id: Uint8Array, hash: Uint8Array): Promise<Uint8Array | undefined> {
    const won = await this.sql.get(
      `INSERT INTO spent (card, id, by_hash) VALUES (?, ?, ?) ON CONFLICT (card, id) DO NOTHING RETURNING by_hash`,
      [card, id, hash],
    );
    if (won) return undefined;
    return this.#holder(await this.sql.get(`SELECT by_hash AS h FROM spent WHERE card = ? AND id = ?`, [card, id]), 'spent');
  }

  /** The objects holding the given (card, counter) claims, where held (set-based {@link claimCounter} reads). */
  async counterHolders(claims: readonly { card: Uint8Array; counter: number }[]): Promise<CounterClaim[]> {
    const rows = await this.#wherePairs(
      `SELECT card, counter, hash FROM counters`,
      'card',
      'counter',
      claims.map((c) => [c.card, c.counter] as const),
    );
    return rows.map((r) => ({ card: r.card as Uint8Array, counter: Number(r.counter), hash: r.hash as Uint8Array }));
  }

  /** The objects holding the given (card, input) claims, where held (set-based {@link claimInput} reads). */
  async inputHolders(claims: readonly { card: Uint8Array; id: Uint8Array }[]): Promise<InputClaim[]> {
    const rows = await this.#wherePairs(
      `SELECT card, id, by_hash FROM spent`,
      'card',
      'id',
      claims.map((c) => [c.card, c.id] as const),
    );
    return rows.map((r) => ({ card: r.card as Uint8Array, id: r.id as Uint8Array, hash: r.by_hash as Uint8Array }));
  }

  /**
   * New counter claims, set-based. The caller read them unheld ({@link counterHolders}) in this
   * transaction: a claim held after all fails the statement (and the transaction) instead of being ignored.
   */
  async insertCounterClaims(claims: readonly CounterClaim[]): Promise<void> {
    await this.#insertRows(
      'counters',
      'card, counter, hash',
      claims.map((c) => [c.card, c.counter, c.hash]),
    );
  }

  /** New input claims, set-based, as {@link insertCounterClaims}. */
  async insertInputClaims(claims: readonly InputClaim[]): Promise<void> {
    await this.#insertRows(
      'spent',
      'card, id, by_hash',
      claims.map((c) => [c.card, c.id, c.hash]),
    );
  }

  /** The chain heads of `cards` (set-based; see migrations 5 and 6), each with its stored chain state (null when none). */
  async chainHeadsIn(cards: readonly Uint8Array[]): Promise<ChainHead[]> {
    return (await this.#whereIn(`SELECT card, counter, hash, state FROM chain_heads`, 'card', cards)).map((r) => ({
      card: r.card as Uint8Array,
      counter: Number(r.counter),
      hash: r.hash as Uint8Array,
      state: (r.state as Uint8Array | null) ?? null,
    }));
  }

  /** Moves cards' chain heads up to `heads` (one per card) with their chain states: a head only ever moves to a higher counter. */
  async advanceChainHeads(heads: readonly ChainHead[]): Promise<void> {
    await this.#insertRows(
      'chain_heads',
      'card, counter, hash, state',
      heads.map((h) => [h.card, h.counter, h.hash, h.state]),
      ' ON CONFLICT (card) DO UPDATE SET counter = excluded.counter, hash = excluded.hash, state = excluded.state WHERE excluded.counter > chain_heads.counter',
    );
  }

  async dropChainHead(card: Uint8Array): Promise<void> {
    await this.sql.run(`DELETE FROM chain_heads WHERE card = ?`, [card]);
  }

  /** Stores evidence objects' bytes, set-based (nothing for one that is stored). */
  async insertObjects(objects: readonly { hash: Uint8Array; bytes: Uint8Array }[]): Promise<void> {
    await this.#insertRows(
      'objects',
      'hash, bytes',
      objects.map((o) => [o.hash, o.bytes]),
      ' ON CONFLICT (hash) DO NOTHING',
    );
  }

  #holder(r: Record<string, SqlValue> | undefined, table: string): Uint8Array {
    const h = r?.h;
    if (h instanceof Uint8Array) return h;
    throw new Error(`${table}: a claim that conflicted is not there`);
  }

  /** Stores an evidence object's bytes (nothing when it is stored). */
  async insertObject(hash: Uint8Array, bytes: Uint8Array): Promise<void> {
    await this.sql.run(`INSERT INTO objects (hash, bytes) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`, [hash, bytes]);
  }

  /** The bytes of a stored evidence object. */
  async object(hash: Uint8Array): Promise<Uint8Array | undefined> {
    const r = await this.sql.get(`SELECT ${OBJECT_COLUMNS} FROM objects WHERE hash = ?`, [hash]);
    return r && objectRow(r).bytes;
  }

  /** The stored evidence objects among `hashes` (set-based). */
  async objectsIn(hashes: readonly Uint8Array[]): Promise<{ hash: Uint8Array; bytes: Uint8Array }[]> {
    return (await this.#whereIn(`SELECT ${OBJECT_COLUMNS} FROM objects`, 'hash', hashes)).map(objectRow);
  }

  async proofCount(card: Uint8Array): Promise<number> {
    return aggregate(await this.sql.get(`SELECT COUNT(*) AS s FROM proofs WHERE card = ?`, [card]), 's');
  }

  async insertProof(p: ProofRow): Promise<void> {
    await this.sql.run(`INSERT INTO proofs (first, second, card, time) VALUES (?, ?, ?, ?) ON CONFLICT (first, second) DO NOTHING`, [
      p.first,
      p.second,
      p.card,
      p.time,
    ]);
  }

  /** Every proof, oldest first. */
  async proofs(): Promise<ProofRow[]> {
    return (await this.sql.all(`SELECT ${PROOF_COLUMNS} FROM proofs ORDER BY time, first, second`)).map(proofRow);
  }

  // ------------------------------------------------------------ value records
  /** Records a transfer as value, state `recorded` (nothing when it is recorded). */
  async insertTransfer(t: NewTransfer): Promise<void> {
    await this.sql.run(
      `INSERT INTO transfers (hash, card, counter, amount, payee, change_id, change_value, mark, time, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'recorded') ON CONFLICT (hash) DO NOTHING`,
      [t.hash, t.card, t.counter, t.amount, t.payee, t.changeId, t.changeValue, t.mark, t.time],
    );
  }

  /** Records transfers as value in the given state, set-based. The caller read them unrecorded ({@link transfersIn}) in this transaction. */
  async insertTransfers(ts: readonly (NewTransfer & { readonly state: TransferState })[]): Promise<void> {
    await this.#insertRows(
      'transfers',
      'hash, card, counter, amount, payee, change_id, change_value, mark, time, state',
      ts.map((t) => [t.hash, t.card, t.counter, t.amount, t.payee, t.changeId, t.changeValue, t.mark, t.time, t.state]),
    );
  }

  /** The recorded transfers among `hashes` (set-based). */
  async transfersIn(hashes: readonly Uint8Array[]): Promise<TransferRow[]> {
    return (await this.#whereIn(`SELECT ${TRANSFER_COLUMNS} FROM transfers`, 'hash', hashes)).map(transferRow);
  }

  /** Sets the state of the transfers `hashes` (set-based). */
  async setTransfersState(hashes: readonly Uint8Array[], state: TransferState): Promise<void> {
    for (const l of inLists(hashes)) await this.sql.run(`UPDATE transfers SET state = ? WHERE hash IN (${l.marks})`, [state, ...l.params]);
  }

  async transfer(hash: Uint8Array): Promise<TransferRow | undefined> {
    const r = await this.sql.get(`SELECT ${TRANSFER_COLUMNS} FROM transfers WHERE hash = ?`, [hash]);
    return r && transferRow(r);
  }

  async setTransferState(hash: Uint8Array, state: TransferState): Promise<void> {
    await this.sql.run(`UPDATE transfers SET state = ? WHERE hash = ?`, [state, hash]);
  }

  /** A card's recorded transfers dated at or before `notAfter` or after `future`, by counter, at most `limit`. */
  async recordedOutside(card: Uint8Array, notAfter: number, future: number, limit: number): Promise<TransferRow[]> {
    return (
      await this.sql.all(
        `SELECT ${TRANSFER_COLUMNS} FROM transfers WHERE card = ? AND state = 'recorded' AND (time <= ? OR time > ?) ORDER BY counter LIMIT ?`,
        [card, notAfter, future, limit],
      )
    ).map(transferRow);
  }

  // ------------------------------------------------------------ tokens
  async token(serial: Uint8Array): Promise<TokenRow | undefined> {
    const r = await this.sql.get(`SELECT ${TOKEN_COLUMNS} FROM tokens WHERE serial = ?`, [serial]);
    return r && tokenRow(r);
  }

  /** The tokens a sync's receipt carried. */
  async tokensOfSync(sync: Uint8Array): Promise<TokenRow[]> {
    return (await this.sql.all(`SELECT ${TOKEN_COLUMNS} FROM tokens WHERE sync = ?`, [sync])).map(tokenRow);
  }

  /** The tokens the receipts of the syncs `syncs` carried (set-based). */
  async tokensOfSyncs(syncs: readonly Uint8Array[]): Promise<TokenRow[]> {
    return (await this.#whereIn(`SELECT ${TOKEN_COLUMNS} FROM tokens`, 'sync', syncs)).map(tokenRow);
  }

  /** The issued tokens among `serials` (set-based). */
  async tokensIn(serials: readonly Uint8Array[]): Promise<TokenRow[]> {
    return (await this.#whereIn(`SELECT ${TOKEN_COLUMNS} FROM tokens`, 'serial', serials)).map(tokenRow);
  }

  async insertToken(t: TokenRow): Promise<void> {
    await this.sql.run(`INSERT INTO tokens (serial, card, value, sync, bytes) VALUES (?, ?, ?, ?, ?)`, [
      t.serial,
      t.card,
      t.value,
      t.sync,
      t.bytes,
    ]);
  }

  // ------------------------------------------------------------ syncs
  async syncOf(request: Uint8Array): Promise<SyncRow | undefined> {
    const r = await this.sql.get(`SELECT ${SYNC_COLUMNS} FROM syncs WHERE request = ?`, [request]);
    return r && syncRow(r);
  }

  /** The completed syncs among the requests `requests` (set-based). */
  async syncsIn(requests: readonly Uint8Array[]): Promise<SyncRow[]> {
    return (await this.#whereIn(`SELECT ${SYNC_COLUMNS} FROM syncs`, 'request', requests)).map(syncRow);
  }

  async insertSync(s: SyncRow): Promise<void> {
    await this.sql.run(`INSERT INTO syncs (request, card, receipt) VALUES (?, ?, ?)`, [s.request, s.card, s.receipt]);
  }

  // ------------------------------------------------------------ settlement: outcomes, verdicts, batches, merchants
  async outcomesOf(batch: Uint8Array): Promise<OutcomeRow[]> {
    return (await this.sql.all(`SELECT ${OUTCOME_COLUMNS} FROM outcomes WHERE batch = ?`, [batch])).map(outcomeRow);
  }

  async outcome(batch: Uint8Array, idx: number): Promise<OutcomeRow | undefined> {
    const r = await this.sql.get(`SELECT ${OUTCOME_COLUMNS} FROM outcomes WHERE batch = ? AND idx = ?`, [batch, idx]);
    return r && outcomeRow(r);
  }

  async insertOutcome(o: OutcomeRow): Promise<void> {
    await this.sql.run(`INSERT INTO outcomes (batch, idx, bytes) VALUES (?, ?, ?)`, [o.batch, o.idx, o.bytes]);
  }

  /** Outcomes of a batch, set-based (the caller read none stored for these indexes in this transaction). */
  async insertOutcomes(os: readonly OutcomeRow[]): Promise<void> {
    await this.#insertRows(
      'outcomes',
      'batch, idx, bytes',
      os.map((o) => [o.batch, o.idx, o.bytes]),
    );
  }

  /** The verdicts among `transfers` (set-based). */
  async verdictsIn(transfers: readonly Uint8Array[]): Promise<VerdictRow[]> {
    return (await this.#whereIn(`SELECT ${VERDICT_COLUMNS} FROM verdicts`, 'transfer', transfers)).map(verdictRow);
  }

  /** First verdicts, set-based (the caller read none for these transfers in this transaction). */
  async insertVerdicts(vs: readonly VerdictRow[]): Promise<void> {
    await this.#insertRows(
      'verdicts',
      'transfer, status, covered, code, time, card, terminal, amount, proof1, proof2',
      vs.map((v) => [v.transfer, v.status, v.covered ? 1 : 0, v.code, v.time, v.card, v.terminal, v.amount, v.proof1, v.proof2]),
    );
  }

  async verdict(transfer: Uint8Array): Promise<VerdictRow | undefined> {
    const r = await this.sql.get(`SELECT ${VERDICT_COLUMNS} FROM verdicts WHERE transfer = ?`, [transfer]);
    return r && verdictRow(r);
  }

  async insertVerdict(v: VerdictRow): Promise<void> {
    await this.sql.run(
      `INSERT INTO verdicts (transfer, status, covered, code, time, card, terminal, amount, proof1, proof2) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [v.transfer, v.status, v.covered ? 1 : 0, v.code, v.time, v.card, v.terminal, v.amount, v.proof1, v.proof2],
    );
  }

  /** Records a settled batch (nothing when it is recorded). */
  async insertBatch(hash: Uint8Array, terminal: Uint8Array, seq: number, count: number, time: number): Promise<void> {
    await this.sql.run(`INSERT INTO batches (hash, terminal, seq, count, time) VALUES (?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING`, [
      hash,
      terminal,
      seq,
      count,
      time,
    ]);
  }

  /** Adds `amount` to a merchant terminal's settled balance (creating it). */
  async creditMerchant(kid: Uint8Array, amount: number): Promise<void> {
    await this.sql.run(
      `INSERT INTO merchants (kid, balance) VALUES (?, ?) ON CONFLICT (kid) DO UPDATE SET balance = merchants.balance + excluded.balance`,
      [kid, amount],
    );
  }

  async merchants(): Promise<MerchantRow[]> {
    return (await this.sql.all(`SELECT ${MERCHANT_COLUMNS} FROM merchants`)).map(merchantRow);
  }

  async merchantsBelowZero(): Promise<MerchantRow[]> {
    return (await this.sql.all(`SELECT ${MERCHANT_COLUMNS} FROM merchants WHERE balance < 0`)).map(merchantRow);
  }

  /**
   * Takes `amount` from a merchant terminal's settled balance only if it stays at or above zero
   * (a refund, SPEC §7.7.3); false otherwise (nothing changed).
   */
  async debitMerchant(kid: Uint8Array, amount: number): Promise<boolean> {
    return (await this.sql.run(`UPDATE merchants SET balance = balance - ? WHERE kid = ? AND balance >= ?`, [amount, kid, amount])) === 1;
  }

  // ------------------------------------------------------------ voids and refunds (SPEC §7.7.3)
  /** The answered adjustment of a terminal with this id, if any. */
  async adjustment(terminal: Uint8Array, id: Uint8Array): Promise<AdjustmentRow | undefined> {
    const r = await this.sql.get(`SELECT ${ADJUSTMENT_COLUMNS} FROM adjustments WHERE terminal = ? AND id = ?`, [terminal, id]);
    return r && adjustmentRow(r);
  }

  async insertAdjustment(a: AdjustmentRow): Promise<void> {
    await this.sql.run(
      `INSERT INTO adjustments (terminal, id, hash, kind, transfer, card, amount, status, code, outcome, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [a.terminal, a.id, a.hash, a.kind, a.transfer, a.card, a.amount, a.status, a.code, a.outcome, a.time],
    );
  }

  /** Whether a void of this transfer was accepted (its payee voided it). */
  async acceptedVoid(transfer: Uint8Array): Promise<boolean> {
    return (
      (await this.sql.get(`SELECT id FROM adjustments WHERE transfer = ? AND kind = 1 AND status = 5 LIMIT 1`, [transfer])) !== undefined
    );
  }

  /** The sum of the accepted refunds of a transfer. */
  async refundedTotal(transfer: Uint8Array): Promise<number> {
    return this.#sum(`SELECT COALESCE(SUM(amount), 0) AS s FROM adjustments WHERE transfer = ? AND kind = 2 AND status = 6`, [transfer]);
  }

  /** A card's recorded transfers whose payee voided them (they return to the card at its next sync), by counter, at most `limit`. */
  async payeeVoidedOf(card: Uint8Array, limit: number): Promise<TransferRow[]> {
    return (
      await this.sql.all(
        `SELECT ${TRANSFER_COLUMNS} FROM transfers t WHERE card = ? AND state = 'recorded'
           AND EXISTS (SELECT 1 FROM adjustments a WHERE a.transfer = t.hash AND a.kind = 1 AND a.status = 5) ORDER BY counter LIMIT ?`,
        [card, limit],
      )
    ).map(transferRow);
  }

  async insertRefundCredit(c: Omit<RefundCreditRow, 'state' | 'sync'>): Promise<void> {
    await this.sql.run(
      `INSERT INTO refund_credits (adjustment, card, amount, mark, state, sync, time) VALUES (?, ?, ?, ?, 'pending', NULL, ?)`,
      [c.adjustment, c.card, c.amount, c.mark, c.time],
    );
  }

  /** A card's refund credits not yet delivered, oldest first. */
  async pendingRefundCredits(card: Uint8Array): Promise<RefundCreditRow[]> {
    return (
      await this.sql.all(
        `SELECT ${REFUND_CREDIT_COLUMNS} FROM refund_credits WHERE card = ? AND state = 'pending' ORDER BY time, adjustment`,
        [card],
      )
    ).map(refundCreditRow);
  }

  /** Closes every pending refund credit of a card at a sync: delivered in its tokens, or redeemed to its issuing bank. */
  async closeRefundCredits(card: Uint8Array, state: Exclude<RefundCreditState, 'pending'>, sync: Uint8Array): Promise<void> {
    await this.sql.run(`UPDATE refund_credits SET state = ?, sync = ? WHERE card = ? AND state = 'pending'`, [state, sync, card]);
  }

  // ------------------------------------------------------------ covers (SPEC §7.7 cover rule)
  /** Whether a cover was paid for this (terminal, card, counter). */
  async hasCover(terminal: Uint8Array, card: Uint8Array, counter: number): Promise<boolean> {
    return (
      (await this.sql.get(`SELECT transfer FROM covers WHERE terminal = ? AND card = ? AND counter = ?`, [terminal, card, counter])) !==
      undefined
    );
  }

  /** Whether a cover was paid for a transfer spending this coin. */
  async hasCoverCoin(card: Uint8Array, id: Uint8Array): Promise<boolean> {
    return (await this.sql.get(`SELECT transfer FROM cover_coins WHERE card = ? AND id = ?`, [card, id])) !== undefined;
  }

  /** Cover paid so far for a card's double spends. */
  async coveredTotal(card: Uint8Array): Promise<number> {
    return this.#sum(`SELECT COALESCE(SUM(amount), 0) AS s FROM covers WHERE card = ?`, [card]);
  }

  /** Records a cover and the coins it covered. */
  async insertCover(
    c: { transfer: Uint8Array; bank: Uint8Array; terminal: Uint8Array; card: Uint8Array; counter: number; amount: number },
    coins: readonly Uint8Array[],
  ): Promise<void> {
    await this.sql.run(`INSERT INTO covers (transfer, bank, terminal, card, counter, amount) VALUES (?, ?, ?, ?, ?, ?)`, [
      c.transfer,
      c.bank,
      c.terminal,
      c.card,
      c.counter,
      c.amount,
    ]);
    for (const id of coins) await this.sql.run(`INSERT INTO cover_coins (card, id, transfer) VALUES (?, ?, ?)`, [c.card, id, c.transfer]);
  }

  /** Cover paid per card, with the card's certificate (for the cover bound of the audit). */
  async coverTotalsByCard(): Promise<CoverTotalRow[]> {
    return (
      await this.sql.all(
        `SELECT c.card AS card, SUM(c.amount) AS covered, k.cert AS cert FROM covers c JOIN cards k ON k.kid = c.card GROUP BY c.card, k.cert`,
      )
    ).map(coverTotalRow);
  }

  // ------------------------------------------------------------ audit
  /** The sums of the supply invariant, read in this transaction. */
  async supplyTotals(): Promise<SupplyTotals> {
    return {
      issued: await this.#meta('issued'),
      bankBalances: await this.#sum(`SELECT COALESCE(SUM(balance), 0) AS s FROM banks`),
      pendingLoads: await this.#sum(`SELECT COALESCE(SUM(amount), 0) AS s FROM loads WHERE state = 'pending'`),
      unspentTokens: await this.#sum(`SELECT COALESCE(SUM(value), 0) AS s FROM tokens t WHERE NOT ${valueSpent('t.serial', 't.card')}`),
      unspentChange: await this.#sum(
        `SELECT COALESCE(SUM(change_value), 0) AS s FROM transfers t WHERE change_id IS NOT NULL AND NOT ${valueSpent('t.change_id', 't.card')}`,
      ),
      pendingPayee: await this.#sum(`SELECT COALESCE(SUM(amount), 0) AS s FROM transfers WHERE state = 'recorded'`),
      redeemed: await this.#sum(`SELECT COALESCE(SUM(balance), 0) AS s FROM merchants`),
      pendingRefunds: await this.#sum(`SELECT COALESCE(SUM(amount), 0) AS s FROM refund_credits WHERE state = 'pending'`),
      covered: await this.#sum(`SELECT COALESCE(SUM(amount), 0) AS s FROM covers`),
      crlVersion: await this.crlVersion(),
    };
  }

  /** Row counts used by tests and the crash test. */
  async counts(): Promise<{ settled: number; spent: number; transfers: number; verdicts: number }> {
    return {
      settled: await this.#sum(`SELECT COUNT(*) AS s FROM transfers WHERE state = 'settled'`),
      spent: await this.#sum(`SELECT COUNT(*) AS s FROM spent`),
      transfers: await this.#sum(`SELECT COUNT(*) AS s FROM transfers`),
      verdicts: await this.#sum(`SELECT COUNT(*) AS s FROM verdicts`),
    };
  }

  // ------------------------------------------------------------ acquirer blocks (SPEC §7.7.2)
  /** Blocks an acquirer key; false when it was blocked already. */
  async insertAcquirerBlock(b: AcquirerBlockRow): Promise<boolean> {
    return (
      (await this.sql.run(`INSERT INTO acquirer_blocks (kid, reason, time) VALUES (?, ?, ?) ON CONFLICT (kid) DO NOTHING`, [
        b.kid,
        b.reason,
        b.time,
      ])) === 1
    );
  }

  /** Lifts a block; false when the key was not blocked. */
  async deleteAcquirerBlock(kid: Uint8Array): Promise<boolean> {
    return (await this.sql.run(`DELETE FROM acquirer_blocks WHERE kid = ?`, [kid])) === 1;
  }

  async acquirerBlock(kid: Uint8Array): Promise<AcquirerBlockRow | undefined> {
    const r = await this.sql.get(`SELECT ${ACQUIRER_BLOCK_COLUMNS} FROM acquirer_blocks WHERE kid = ?`, [kid]);
    return r && acquirerBlockRow(r);
  }

  /** Every block, oldest first. */
  async acquirerBlocks(): Promise<AcquirerBlockRow[]> {
    return (await this.sql.all(`SELECT ${ACQUIRER_BLOCK_COLUMNS} FROM acquirer_blocks ORDER BY time, kid`)).map(acquirerBlockRow);
  }
}
