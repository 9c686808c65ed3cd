/**
 * Durable state of the acquirer: accepted batches, their forwarding state,
 * the ledger's outcomes, terminals seen, terminals revoked by this acquirer,
 * and the latest verified revocation list.
 *
 * SQLite through better-sqlite3 in WAL mode with `synchronous=FULL`: a batch is
 * acknowledged to a terminal only after its insert transaction has committed
 * and been fsynced, and outcomes are recorded together with the batch's state
 * change in one transaction, so a crash at any instant leaves either the old
 * state or the new one.
 *
 * better-sqlite3 is synchronous, so every check-then-write below runs without
 * an interleaving request: the sequence-number check and the insert of one
 * batch are atomic with respect to other requests.
 *
 * @module
 */
import Database from 'better-sqlite3';
import { concatBytes, plainBytes } from '@dt/protocol';
import { ACQUIRER_MIGRATIONS, migrateAcquirerStore, type AcquirerMigration } from './schema.ts';

/** Forwarding state of a stored batch. */
export const BatchState = {
  /** Stored, acknowledged to the terminal, not yet settled by the ledger. */
  PENDING: 0,
  /** The ledger answered with one outcome per handover; outcomes are stored. */
  SETTLED: 1,
  /** The ledger refused the whole batch with a 4xx (kept for audit, not retried). */
  REJECTED: 2,
} as const;
export type BatchState = (typeof BatchState)[keyof typeof BatchState];

/** A stored batch as the forwarder needs it. */
export interface StoredBatch {
  readonly id: number;
  readonly terminal: Uint8Array;
  readonly seq: number;
  readonly hash: Uint8Array;
  readonly bytes: Uint8Array;
  readonly handovers: number;
  /** Payload hash of each handover's transfer, in handover order. */
  readonly transferHashes: readonly Uint8Array[];
  /** Adjustments (voids, refunds) the batch carries (SPEC §7.7.3). */
  readonly adjustments: number;
  /** The transfer hash each adjustment names, in adjustment order. */
  readonly adjustmentTransfers: readonly Uint8Array[];
  readonly receivedAt: number;
  readonly state: BatchState;
  readonly attempts: number;
}

/** What a new batch insert needs. */
export interface NewBatch {
  readonly terminal: Uint8Array;
  readonly seq: number;
  readonly hash: Uint8Array;
  readonly bytes: Uint8Array;
  readonly transferHashes: readonly Uint8Array[];
  /** The transfer hash each adjustment of the batch names (none when it has no adjustments). */
  readonly adjustmentTransfers?: readonly Uint8Array[];
  readonly receivedAt: number;
  /** The terminal's certificate chain (CBOR-encoded array) to remember for authentication. */
  readonly chain: Uint8Array;
  readonly merchant: string;
}

/** One recorded outcome of the ledger. */
export interface StoredOutcome {
  /** Monotonic cursor (global, increasing in insertion order). */
  readonly cursor: number;
  readonly batchSeq: number;
  readonly index: number;
  readonly status: number;
  readonly bytes: Uint8Array;
}

/** A terminal this acquirer has accepted a batch from. */
export interface StoredTerminal {
  readonly kid: Uint8Array;
  readonly chain: Uint8Array;
  readonly merchant: string;
  readonly lastSeq: number;
}

function u8(b: Buffer | Uint8Array): Uint8Array {
  return plainBytes(b);
}

function splitHashes(b: Uint8Array, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) out.push(b.slice(i * 32, i * 32 + 32));
  return out;
}

interface BatchRow {
  id: number;
  terminal: Buffer;
  seq: number;
  hash: Buffer;
  bytes: Buffer;
  handovers: number;
  transfer_hashes: Buffer;
  received_at: number;
  state: number;
  attempts: number;
}

function toBatch(r: BatchRow): StoredBatch {
  return {
    id: r.id,
    terminal: u8(r.terminal),
    seq: r.seq,
    hash: u8(r.hash),
    bytes: u8(r.bytes),
    handovers: r.handovers,
    transferHashes: splitHashes(u8(r.transfer_hashes), r.handovers),
    // transfer_hashes: the handovers' transfer hashes, then those the adjustments name (none in batches of before them).
    adjustments: r.transfer_hashes.length / 32 - r.handovers,
    adjustmentTransfers: splitHashes(u8(r.transfer_hashes).subarray(r.handovers * 32), r.transfer_hashes.length / 32 - r.handovers),
    receivedAt: r.received_at,
    state: r.state as BatchState,
    attempts: r.attempts,
  };
}

/** The acquirer's SQLite store. One process owns a database file at a time. */
export class AcquirerStore {
  readonly #db: Database.Database;

  /**
   * Opens (creating if needed) the database at `file` (`:memory:` is refused: nothing would be
   * durable), bringing its schema to the latest version (./schema.ts).
   *
   * @param options.migrations the migration list (default {@link ACQUIRER_MIGRATIONS}); tests of
   *   the upgrade path pass a longer one. Version 1 must stay the acquirer's own.
   * @param options.mustExist refuse a missing file instead of creating it (a SqliteError with code
   *   SQLITE_CANTOPEN): commands that act on an existing acquirer's database, such as
   *   `dt-acquirer revoke-terminal`, must not create an empty one and report success.
   * @throws {AcquirerSchemaError} the file is of a newer schema version than this code knows, or holds
   *   tables that are not the acquirer's (the file is left as it was); a SqliteError when it is no database.
   */
  constructor(file: string, options: { readonly migrations?: readonly AcquirerMigration[]; readonly mustExist?: boolean } = {}) {
    if (file === ':memory:' || file === '') throw new Error('the acquirer store must be a file: acknowledgements promise durability');
    const db = new Database(file, { fileMustExist: options.mustExist ?? false });
    try {
      // FULL: the WAL is fsynced at every commit, so an acknowledged batch survives power loss.
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 5000');
      // Before the switch to WAL, so that a refused file is left as it was.
      migrateAcquirerStore(db, options.migrations ?? ACQUIRER_MIGRATIONS);
      db.pragma('journal_mode = WAL');
    } catch (e) {
      db.close();
      throw e;
    }
    this.#db = db;
  }

  /** Closes the database. */
  close(): void {
    if (this.#db.open) this.#db.close();
  }

  /** The stored batch of `terminal` with sequence number `seq`, if any. */
  findBatch(terminal: Uint8Array, seq: number): StoredBatch | undefined {
    const r = this.#db.prepare('SELECT * FROM batches WHERE terminal = ? AND seq = ?').get(terminal, seq) as BatchRow | undefined;
    return r && toBatch(r);
  }

  /** Highest accepted sequence number of `terminal` (0 when none). */
  lastSeq(terminal: Uint8Array): number {
    const r = this.#db.prepare('SELECT last_seq FROM terminals WHERE kid = ?').get(terminal) as { last_seq: number } | undefined;
    return r?.last_seq ?? 0;
  }

  /**
   * Stores a new batch and the terminal's latest chain in one durable
   * transaction; returns the stored batch. The caller has checked the
   * sequence number (the UNIQUE constraint is the last line of defence).
   */
  insertBatch(b: NewBatch): StoredBatch {
    const tx = this.#db.transaction((): number => {
      const info = this.#db
        .prepare(
          `INSERT INTO batches (terminal, seq, hash, bytes, handovers, transfer_hashes, received_at, state)
           VALUES (?, ?, ?, ?, ?, ?, ?, ${BatchState.PENDING})`,
        )
        .run(
          b.terminal,
          b.seq,
          b.hash,
          b.bytes,
          b.transferHashes.length,
          concatBytes(...b.transferHashes, ...(b.adjustmentTransfers ?? [])),
          b.receivedAt,
        );
      this.#db
        .prepare(
          `INSERT INTO terminals (kid, chain, merchant, last_seq, first_seen) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (kid) DO UPDATE SET chain = excluded.chain, merchant = excluded.merchant,
             last_seq = MAX(terminals.last_seq, excluded.last_seq)`,
        )
        .run(b.terminal, b.chain, b.merchant, b.seq, b.receivedAt);
      return Number(info.lastInsertRowid);
    });
    const id = tx.immediate();
    const r = this.#db.prepare('SELECT * FROM batches WHERE id = ?').get(id) as BatchRow;
    return toBatch(r);
  }

  /**
   * Pending batches in arrival order: at most `maxBatches`, and beyond the
   * first batch at most `maxBytes` and `maxHandovers` in total.
   */
  pendingBatches(maxBatches: number, maxBytes: number, maxHandovers = Number.MAX_SAFE_INTEGER): StoredBatch[] {
    const rows = this.#db
      .prepare(`SELECT id, length(bytes) AS size, handovers FROM batches WHERE state = ${BatchState.PENDING} ORDER BY id LIMIT ?`)
      .all(maxBatches) as Array<{ id: number; size: number; handovers: number }>;
    const ids: number[] = [];
    let total = 0;
    let count = 0;
    for (const r of rows) {
      if (ids.length > 0 && (total + r.size > maxBytes || count + r.handovers > maxHandovers)) break;
      ids.push(r.id);
      total += r.size;
      count += r.handovers;
    }
    const get = this.#db.prepare('SELECT * FROM batches WHERE id = ?');
    return ids.map((id) => toBatch(get.get(id) as BatchRow));
  }

  /** Counts one more forwarding attempt for each batch. */
  countAttempt(ids: readonly number[]): void {
    const st = this.#db.prepare('UPDATE batches SET attempts = attempts + 1 WHERE id = ?');
    this.#db.transaction(() => {
      for (const id of ids) st.run(id);
    })();
  }

  /**
   * Records the ledger's outcomes of settled batches and marks them SETTLED,
   * all in one durable transaction. Batches no longer PENDING (a concurrent
   * pass settled them) are skipped, so outcomes are never recorded twice.
   */
  recordOutcomes(
    settled: ReadonlyArray<{ batch: StoredBatch; outcomes: ReadonlyArray<{ status: number; bytes: Uint8Array }> }>,
    at: number,
  ): number {
    const mark = this.#db.prepare(
      `UPDATE batches SET state = ${BatchState.SETTLED}, settled_at = ? WHERE id = ? AND state = ${BatchState.PENDING}`,
    );
    const ins = this.#db.prepare('INSERT INTO outcomes (terminal, batch_id, idx, status, bytes) VALUES (?, ?, ?, ?, ?)');
    return this.#db
      .transaction((): number => {
        let n = 0;
        for (const { batch, outcomes } of settled) {
          if (mark.run(at, batch.id).changes !== 1) continue;
          outcomes.forEach((o, i) => ins.run(batch.terminal, batch.id, i, o.status, o.bytes));
          n += outcomes.length;
        }
        return n;
      })
      .immediate();
  }

  /** Marks a batch the ledger refused as a whole (4xx) as REJECTED with the ledger's code. */
  rejectBatch(id: number, code: string, at: number): void {
    this.#db
      .prepare(
        `UPDATE batches SET state = ${BatchState.REJECTED}, reject_code = ?, settled_at = ? WHERE id = ? AND state = ${BatchState.PENDING}`,
      )
      .run(code, at, id);
  }

  /** Outcomes of `terminal` after `cursor`, oldest first, at most `limit`. */
  outcomesAfter(terminal: Uint8Array, cursor: number, limit: number): StoredOutcome[] {
    const rows = this.#db
      .prepare(
        `SELECT o.id, o.idx, o.status, o.bytes, b.seq FROM outcomes o JOIN batches b ON b.id = o.batch_id
         WHERE o.terminal = ? AND o.id > ? ORDER BY o.id LIMIT ?`,
      )
      .all(terminal, cursor, limit) as Array<{ id: number; idx: number; status: number; bytes: Buffer; seq: number }>;
    return rows.map((r) => ({ cursor: r.id, batchSeq: r.seq, index: r.idx, status: r.status, bytes: u8(r.bytes) }));
  }

  /** A terminal this acquirer has accepted batches from. */
  terminal(kid: Uint8Array): StoredTerminal | undefined {
    const r = this.#db.prepare('SELECT kid, chain, merchant, last_seq FROM terminals WHERE kid = ?').get(kid) as
      { kid: Buffer; chain: Buffer; merchant: string; last_seq: number } | undefined;
    return r && { kid: u8(r.kid), chain: u8(r.chain), merchant: r.merchant, lastSeq: r.last_seq };
  }

  /** Revokes a terminal at this acquirer (durable; later batches get TERMINAL_REVOKED). */
  revokeTerminal(kid: Uint8Array, reason: string, at: number): void {
    this.#db.prepare('INSERT OR IGNORE INTO revoked_terminals (kid, revoked_at, reason) VALUES (?, ?, ?)').run(kid, at, reason);
  }

  /** True when this acquirer revoked `kid`. */
  isTerminalRevoked(kid: Uint8Array): boolean {
    return this.#db.prepare('SELECT 1 FROM revoked_terminals WHERE kid = ?').get(kid) !== undefined;
  }

  /** Stores a verified revocation list if it is newer than the stored one; returns true when stored. */
  saveCrl(version: number, bytes: Uint8Array, at: number): boolean {
    const info = this.#db
      .prepare(
        `INSERT INTO crl (id, version, bytes, fetched_at) VALUES (1, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, bytes = excluded.bytes, fetched_at = excluded.fetched_at
         WHERE excluded.version > crl.version`,
      )
      .run(version, bytes, at);
    return info.changes === 1;
  }

  /** The latest stored revocation list. */
  crl(): { version: number; bytes: Uint8Array; fetchedAt: number } | undefined {
    const r = this.#db.prepare('SELECT version, bytes, fetched_at FROM crl WHERE id = 1').get() as
      { version: number; bytes: Buffer; fetched_at: number } | undefined;
    return r && { version: r.version, bytes: u8(r.bytes), fetchedAt: r.fetched_at };
  }

  /** Queue figures for health and metrics. */
  queueStats(): {
    pendingBatches: number;
    pendingHandovers: number;
    oldestPendingAt: number | null;
    settledBatches: number;
    rejectedBatches: number;
    outcomes: number;
  } {
    const p = this.#db
      .prepare(
        `SELECT count(*) AS n, coalesce(sum(handovers), 0) AS h, min(received_at) AS oldest FROM batches WHERE state = ${BatchState.PENDING}`,
      )
      .get() as { n: number; h: number; oldest: number | null };
    const s = this.#db
      .prepare(`SELECT state, count(*) AS n FROM batches WHERE state != ${BatchState.PENDING} GROUP BY state`)
      .all() as Array<{ state: number; n: number }>;
    const o = this.#db.prepare('SELECT count(*) AS n FROM outcomes').get() as { n: number };
    return {
      pendingBatches: p.n,
      pendingHandovers: p.h,
      oldestPendingAt: p.oldest,
      settledBatches: s.find((r) => r.state === BatchState.SETTLED)?.n ?? 0,
      rejectedBatches: s.find((r) => r.state === BatchState.REJECTED)?.n ?? 0,
      outcomes: o.n,
    };
  }
}
