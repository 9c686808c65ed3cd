/**
 * The reference ledger and notary (SPEC.md §7.6 "Sync and load", §7.7 "Settlement").
 *
 * Every state change is one storage transaction, committed before the caller
 * gets an answer. Signature and certificate checks run before the
 * transaction (they are pure, and can run on worker threads); the
 * transaction only consults and updates the spent set, counters and
 * balances, so it is short.
 *
 * @module
 */
import {
  addAmounts, BankPermission, bytesEqual, checkTransferChain, createTrustStore, encodeStruct, encodeDeterministic,
  GENESIS_PREV, LIMITS, MarkSchema, decodeStruct, decodeDeterministic,
  OutcomeStatus, openSigned, outputId, payloadHash, Role, sha256, signMessage, toHex, utf8, concatBytes,
  subjectKey, sumAmounts, validateHandover, verifyChain, verifyCoseSign1, isDtError,
  type CardChainVerifier, type HandoverResult, type Mark, type TransferOpener, type Outcome, type Signer, type SpentCoin, type TrustStore, type ValidatedTransfer, type Verifier,
} from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import type { LedgerStorage, SqlTx } from './storage/types.ts';
import { openLoadOrder } from './load.ts';
import { cachingCardChainVerifier, cachingTransferOpener, memoVerifier } from './pool.ts';

/** Stable error codes of the ledger's API (HTTP 4xx bodies carry them). */
export const LedgerErrorCode = {
  MALFORMED: 'MALFORMED',
  BATCH_INVALID: 'BATCH_INVALID',
  TERMINAL_CHAIN: 'TERMINAL_CHAIN',
  BATCH_TIME: 'BATCH_TIME',
  CARD_UNKNOWN: 'CARD_UNKNOWN',
  CARD_REVOKED: 'CARD_REVOKED',
  BANK_UNKNOWN: 'BANK_UNKNOWN',
  BANK_CHAIN: 'BANK_CHAIN',
  NOT_PERMITTED: 'NOT_PERMITTED',
  BAD_SIGNATURE: 'BAD_SIGNATURE',
  SYNC_INVALID: 'SYNC_INVALID',
  DOUBLE_SPEND: 'DOUBLE_SPEND',
  INSUFFICIENT_ALLOCATION: 'INSUFFICIENT_ALLOCATION',
  ID_CONFLICT: 'ID_CONFLICT',
  CARD_CHAIN: 'CARD_CHAIN',
} as const;
export type LedgerErrorCode = (typeof LedgerErrorCode)[keyof typeof LedgerErrorCode];

/** A refused request: nothing was changed (except, for DOUBLE_SPEND, the recorded proof and revocation). */
export class LedgerError extends Error {
  constructor(readonly status: number, readonly code: LedgerErrorCode, message: string, readonly details: Record<string, string | number> = {}) {
    super(`${code}: ${message}`);
    this.name = 'LedgerError';
  }
}

/** One handover to validate: bytes, the batch's terminal and the latest acceptable transfer time. */
export interface ValidationJob {
  readonly handover: Uint8Array;
  readonly payee: Uint8Array;
  readonly notAfter: number;
}

/** Validates many handovers (in process, or on a worker pool: see `pool.ts`). */
export type HandoverValidator = (jobs: readonly ValidationJob[]) => Promise<HandoverResult[]>;

/** Options of {@link Ledger.open}. */
export interface LedgerOptions {
  readonly storage: LedgerStorage;
  /** The ledger's signing key (signs tokens, receipts, outcomes, revocation lists). */
  readonly signer: Signer;
  readonly rootCert: Uint8Array;
  readonly ledgerCert: Uint8Array;
  /** Clock in seconds (default: system time). */
  readonly now?: () => number;
  /** Signature verifier (default: `nativeVerifier`). */
  readonly verifier?: Verifier;
  /** Seconds after its time when a transfer no terminal submitted is voided at the card's next sync (default 7 days). */
  readonly voidWindow?: number;
  /** Seconds of clock skew accepted on transfer and batch times (default 300). */
  readonly clockSkew?: number;
  /** Parallel handover validation; default validates in this thread. */
  readonly validator?: HandoverValidator;
}

/** Result of {@link Ledger.audit}. */
export interface AuditReport {
  readonly ok: boolean;
  /** Value the issuer allocated to banks. */
  readonly issued: number;
  readonly bankBalances: number;
  readonly pendingLoads: number;
  readonly unspentTokens: number;
  readonly unspentChange: number;
  /** Payee value of recorded transfers whose terminal has not submitted them yet. */
  readonly pendingPayee: number;
  /** Value settled to merchants (including covered double spends). */
  readonly redeemed: number;
  readonly covered: number;
  /** issued - (bankBalances + pendingLoads + unspentTokens + unspentChange + pendingPayee + redeemed). Zero when the invariant holds. */
  readonly difference: number;
  readonly proofs: { first: string; second: string; card: string; time: number }[];
  readonly revocations: { card: string; version: number; time: number }[];
  readonly crlVersion: number;
}

/** Answer to a bank load. */
export interface LoadAnswer { id: string; card: string; amount: number; state: 'pending' | 'delivered' | 'cancelled' }

const ZERO16 = new Uint8Array(16);
const ZERO32 = new Uint8Array(32);
const SERIAL_DOMAIN = utf8('DT-TOKEN-SERIAL-V1');
const MAX_TRANSFER = LIMITS.maxTransferSize;

/** Thrown inside a settlement transaction when a transfer conflicts with a recorded one (rolls it back). */
class Conflict extends Error {
  constructor(readonly firstHash: Uint8Array, readonly second: Uint8Array, readonly secondHash: Uint8Array, readonly reason: 'COUNTER_REUSED' | 'INPUT_SPENT') {
    super(reason);
  }
}

const markBytes = (m: Mark | undefined): Uint8Array | null => (m ? encodeDeterministic(encodeStruct(MarkSchema, m)) : null);
const markFrom = (b: Uint8Array | null | undefined): Mark | undefined => (b ? decodeStruct(MarkSchema, decodeDeterministic(b, 1024)) : undefined);

interface OpenBatch {
  readonly hash: Uint8Array;
  readonly terminal: Uint8Array;
  readonly seq: number;
  readonly time: number;
  readonly crlVersion: number;
  readonly handovers: readonly Uint8Array[];
}

/** What applying one handover produced: its signed outcome and the metric to count after the commit. */
interface Applied { bytes: Uint8Array; stat?: keyof Ledger['stats'] }

const n = (v: unknown): number => Number(v);
const b = (v: unknown): Uint8Array => v as Uint8Array;

/** The ledger. Create with {@link Ledger.open}. */
export class Ledger {
  readonly trust: TrustStore;
  readonly storage: LedgerStorage;
  readonly #signer: Signer;
  readonly #now: () => number;
  readonly #verifier: Verifier;
  readonly #voidWindow: number;
  readonly #skew: number;
  readonly #validate: HandoverValidator;
  readonly #memo: Verifier;
  readonly #openTransfer: TransferOpener;
  readonly #verifyCardChain: CardChainVerifier;
  /** Counters for `/v1/metrics`. */
  readonly stats = { settled: 0, alreadySettled: 0, doubleSpends: 0, invalid: 0, voided: 0, syncs: 0, loads: 0, batches: 0 };

  private constructor(opts: LedgerOptions, trust: TrustStore) {
    this.storage = opts.storage;
    this.trust = trust;
    this.#signer = opts.signer;
    this.#now = opts.now ?? (() => Math.floor(Date.now() / 1000));
    this.#verifier = opts.verifier ?? nativeVerifier;
    this.#voidWindow = opts.voidWindow ?? 7 * 86400;
    this.#skew = opts.clockSkew ?? 300;
    // Handovers of one card repeat its certificates, tokens and history: verify each signature once.
    this.#memo = memoVerifier(this.#verifier, 50_000);
    this.#openTransfer = cachingTransferOpener(10_000);
    this.#verifyCardChain = cachingCardChainVerifier(trust.root, this.#memo);
    this.#validate = opts.validator ?? (async (jobs) => jobs.map((j) => this.validateOne(j)));
  }

  /** Opens a ledger over `storage`: checks the trust store and that `signer` is the certified ledger key, and signs the empty revocation list version 0 on first use. */
  static async open(opts: LedgerOptions): Promise<Ledger> {
    const now = (opts.now ?? (() => Math.floor(Date.now() / 1000)))();
    const trust = createTrustStore({ root: opts.rootCert, ledgerCert: opts.ledgerCert, at: now, verifier: opts.verifier ?? nativeVerifier });
    if (!bytesEqual(trust.ledgerKid, opts.signer.kid)) throw new Error('the signer is not the key of the ledger certificate');
    const l = new Ledger(opts, trust);
    await l.storage.transaction(async (tx) => {
      for (const k of ['crl_version', 'issued']) await tx.run(`INSERT INTO meta (k, v) VALUES (?, 0) ON CONFLICT (k) DO NOTHING`, [k]);
      if (!(await tx.get(`SELECT version FROM crls WHERE version = 0`))) {
        await tx.run(`INSERT INTO crls (version, bytes) VALUES (0, ?)`, [signMessage('RevocationList', { version: 0, issued: now, revoked: [] }, l.#signer)]);
      }
    });
    return l;
  }

  /** Current time (seconds) of the ledger's clock. */
  now(): number {
    return this.#now();
  }

  /** Validates one handover in this thread (the default validator). */
  validateOne(job: ValidationJob): HandoverResult {
    return validateHandover(job.handover, { trust: this.trust, verifier: this.#memo, openTransfer: this.#openTransfer, verifyCardChain: this.#verifyCardChain, payee: job.payee, notAfter: job.notAfter });
  }

  // ------------------------------------------------------------ issuance
  /** Registers a bank certificate (issued by the root). Idempotent. */
  async registerBank(cert: Uint8Array): Promise<Uint8Array> {
    let bank;
    try {
      [bank] = verifyChain([cert], { root: this.trust.root, at: this.#now(), leafRole: Role.BANK, verifier: this.#verifier });
    } catch (e) {
      throw new LedgerError(400, LedgerErrorCode.BANK_CHAIN, isDtError(e) ? e.code : 'bank certificate invalid');
    }
    await this.storage.transaction((tx) =>
      tx.run(`INSERT INTO banks (kid, cert, perms, balance) VALUES (?, ?, ?, 0) ON CONFLICT (kid) DO NOTHING`, [bank!.kid, cert, bank!.claims.perms ?? 0]),
    );
    return bank!.kid;
  }

  /** The issuer allocates `amount` of new value to a bank (`id`: 16-byte idempotency key). */
  async allocate(bankKid: Uint8Array, amount: number, id: Uint8Array): Promise<void> {
    if (!Number.isSafeInteger(amount) || amount <= 0) throw new LedgerError(400, LedgerErrorCode.MALFORMED, 'amount must be a positive integer');
    await this.storage.transaction(async (tx) => {
      const prior = await tx.get(`SELECT bank, amount FROM allocations WHERE id = ?`, [id]);
      if (prior) {
        if (!bytesEqual(b(prior.bank), bankKid) || n(prior.amount) !== amount) throw new LedgerError(409, LedgerErrorCode.ID_CONFLICT, 'allocation id reused');
        return;
      }
      if ((await tx.run(`UPDATE banks SET balance = balance + ? WHERE kid = ?`, [amount, bankKid])) !== 1) throw new LedgerError(404, LedgerErrorCode.BANK_UNKNOWN, 'bank not registered');
      await tx.run(`INSERT INTO allocations (id, bank, amount, time) VALUES (?, ?, ?, ?)`, [id, bankKid, amount, this.#now()]);
      await tx.run(`UPDATE meta SET v = v + ? WHERE k = 'issued'`, [amount]);
    });
  }

  /** Registers a card from its chain `[card cert, issuing bank cert]`; the bank must be registered. Idempotent. */
  async registerCard(chain: readonly Uint8Array[]): Promise<Uint8Array> {
    let card;
    try {
      card = verifyChain(chain, { root: this.trust.root, at: this.#now(), leafRole: Role.CARD, verifier: this.#verifier });
    } catch (e) {
      throw new LedgerError(400, LedgerErrorCode.CARD_CHAIN, isDtError(e) ? e.code : 'card chain invalid');
    }
    const kid = card[0]!.kid;
    const bank = card[1]!.kid;
    await this.storage.transaction(async (tx) => {
      if (!(await tx.get(`SELECT kid FROM banks WHERE kid = ?`, [bank]))) throw new LedgerError(404, LedgerErrorCode.BANK_UNKNOWN, 'issuing bank not registered');
      await tx.run(`INSERT INTO cards (kid, bank, cert, anchor, anchor_counter, anchor_sync) VALUES (?, ?, ?, ?, 0, NULL) ON CONFLICT (kid) DO NOTHING`, [kid, bank, chain[0]!, GENESIS_PREV]);
    });
    return kid;
  }

  /** A bank's signed load order (see load.ts): moves value from the bank's allocation to the card, delivered at its next sync. */
  async load(orderBytes: Uint8Array): Promise<LoadAnswer> {
    let opened;
    try {
      opened = openLoadOrder(orderBytes);
    } catch (e) {
      throw new LedgerError(400, LedgerErrorCode.MALFORMED, isDtError(e) ? e.code : 'load order malformed');
    }
    const { cose, order } = opened;
    const now = this.#now();
    const answer = (state: LoadAnswer['state']): LoadAnswer => ({ id: toHex(order.id), card: toHex(order.card), amount: order.amount, state });
    const out = await this.storage.transaction(async (tx) => {
      const bank = await tx.get(`SELECT cert, perms FROM banks WHERE kid = ?`, [cose.kid]);
      if (!bank) throw new LedgerError(403, LedgerErrorCode.BANK_UNKNOWN, 'signer is not a registered bank');
      let verified;
      try {
        [verified] = verifyChain([b(bank.cert)], { root: this.trust.root, at: now, leafRole: Role.BANK, verifier: this.#verifier });
        verifyCoseSign1(cose, verified!.publicKey, this.#verifier);
      } catch (e) {
        throw new LedgerError(403, LedgerErrorCode.BAD_SIGNATURE, isDtError(e) ? e.code : 'load order signature invalid');
      }
      if (((verified!.claims.perms ?? 0) & BankPermission.ISSUING) === 0) throw new LedgerError(403, LedgerErrorCode.NOT_PERMITTED, 'bank may not issue');
      const prior = await tx.get(`SELECT card, amount, bank, state FROM loads WHERE id = ?`, [order.id]);
      if (prior) {
        if (!bytesEqual(b(prior.card), order.card) || n(prior.amount) !== order.amount || !bytesEqual(b(prior.bank), cose.kid)) {
          throw new LedgerError(409, LedgerErrorCode.ID_CONFLICT, 'load id reused for another order');
        }
        return answer(prior.state as LoadAnswer['state']);
      }
      const card = await tx.get(`SELECT bank FROM cards WHERE kid = ?`, [order.card]);
      if (!card) throw new LedgerError(404, LedgerErrorCode.CARD_UNKNOWN, 'card not registered');
      if (!bytesEqual(b(card.bank), cose.kid)) throw new LedgerError(403, LedgerErrorCode.NOT_PERMITTED, 'card issued by another bank');
      if (await tx.get(`SELECT version FROM revocations WHERE card = ?`, [order.card])) throw new LedgerError(403, LedgerErrorCode.CARD_REVOKED, 'card revoked');
      if ((await tx.run(`UPDATE banks SET balance = balance - ? WHERE kid = ? AND balance >= ?`, [order.amount, cose.kid, order.amount])) !== 1) {
        throw new LedgerError(409, LedgerErrorCode.INSUFFICIENT_ALLOCATION, 'bank allocation too small');
      }
      await tx.run(`INSERT INTO loads (id, card, bank, amount, state, sync, time) VALUES (?, ?, ?, ?, 'pending', NULL, ?)`, [order.id, order.card, cose.kid, order.amount, now]);
      return answer('pending');
    });
    this.stats.loads++;
    return out;
  }

  // ------------------------------------------------------------ revocation
  /** The latest signed revocation list. */
  async crl(): Promise<Uint8Array> {
    return this.storage.transaction(async (tx) => b((await tx.get(`SELECT bytes FROM crls ORDER BY version DESC LIMIT 1`))!.bytes));
  }

  /** Revokes a card (inside `tx`); returns the list version that first names it. */
  async #revoke(tx: SqlTx, card: Uint8Array, now: number): Promise<number> {
    const r = await tx.get(`SELECT version FROM revocations WHERE card = ?`, [card]);
    if (r) return n(r.version);
    const v = n((await tx.get(`UPDATE meta SET v = v + 1 WHERE k = 'crl_version' RETURNING v`))!.v);
    await tx.run(`INSERT INTO revocations (card, version, time) VALUES (?, ?, ?)`, [card, v, now]);
    const all = (await tx.all(`SELECT card FROM revocations ORDER BY card`)).map((x) => b(x.card));
    await tx.run(`INSERT INTO crls (version, bytes) VALUES (?, ?)`, [v, signMessage('RevocationList', { version: v, issued: now, revoked: all }, this.#signer)]);
    return v;
  }

  // ------------------------------------------------------------ the notary
  /**
   * Records a card-signed transfer: its counter and every input into the
   * spent set, each with one atomic `INSERT ... ON CONFLICT DO NOTHING
   * RETURNING`. A transfer already recorded is a no-op; a conflict throws
   * {@link Conflict} (the transaction rolls back).
   */
  async #record(tx: SqlTx, vt: ValidatedTransfer, ins: readonly SpentCoin[]): Promise<void> {
    if (await tx.get(`SELECT state FROM transfers WHERE hash = ?`, [vt.hash])) return;
    const t = vt.transfer;
    const c = await tx.get(`INSERT INTO counters (card, counter, hash) VALUES (?, ?, ?) ON CONFLICT (card, counter) DO NOTHING RETURNING hash`, [t.card, t.counter, vt.hash]);
    if (!c) {
      const ex = await tx.get(`SELECT hash FROM counters WHERE card = ? AND counter = ?`, [t.card, t.counter]);
      throw new Conflict(b(ex!.hash), vt.bytes, vt.hash, 'COUNTER_REUSED');
    }
    for (const coin of ins) {
      const s = await tx.get(`INSERT INTO spent (id, by_hash) VALUES (?, ?) ON CONFLICT (id) DO NOTHING RETURNING id`, [coin.id, vt.hash]);
      if (!s) {
        const ex = await tx.get(`SELECT by_hash FROM spent WHERE id = ?`, [coin.id]);
        throw new Conflict(b(ex!.by_hash), vt.bytes, vt.hash, 'INPUT_SPENT');
      }
    }
    await tx.run(`INSERT INTO objects (hash, bytes) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`, [vt.hash, vt.bytes]);
    const change = t.outputs[1];
    await tx.run(
      `INSERT INTO transfers (hash, card, counter, amount, payee, change_id, change_value, mark, time, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'recorded')`,
      [vt.hash, t.card, t.counter, t.amount, t.payee, change ? outputId(vt.hash, 1) : null, change?.value ?? 0, markBytes(ins[0]?.mark), t.time],
    );
  }

  /** Stores the evidence of a fork, revokes the card; returns the revocation version. */
  async #proof(tx: SqlTx, card: Uint8Array, c: Conflict, now: number): Promise<{ version: number; first: Uint8Array }> {
    await tx.run(`INSERT INTO objects (hash, bytes) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`, [c.secondHash, c.second]);
    await tx.run(`INSERT INTO proofs (first, second, card, time) VALUES (?, ?, ?, ?) ON CONFLICT (first, second) DO NOTHING`, [c.firstHash, c.secondHash, card, now]);
    const first = b((await tx.get(`SELECT bytes FROM objects WHERE hash = ?`, [c.firstHash]))!.bytes);
    return { version: await this.#revoke(tx, card, now), first };
  }

  // ------------------------------------------------------------ settlement
  #openBatch(bytes: Uint8Array, index: number): OpenBatch {
    let opened;
    try {
      opened = openSigned('Batch', bytes);
    } catch (e) {
      throw new LedgerError(400, LedgerErrorCode.BATCH_INVALID, `batch ${index}: ${isDtError(e) ? e.code : 'malformed'}`, { index });
    }
    const m = opened.message;
    const now = this.#now();
    if (m.time > now + this.#skew) throw new LedgerError(400, LedgerErrorCode.BATCH_TIME, `batch ${index} is dated in the future`, { index });
    let term;
    try {
      term = verifyChain(m.chain, { root: this.trust.root, at: m.time, leafRole: Role.TERMINAL, verifier: this.#verifier });
    } catch (e) {
      throw new LedgerError(400, LedgerErrorCode.TERMINAL_CHAIN, `batch ${index}: ${isDtError(e) ? e.code : 'terminal chain invalid'}`, { index });
    }
    if (!bytesEqual(term[0]!.kid, m.terminal)) throw new LedgerError(400, LedgerErrorCode.TERMINAL_CHAIN, `batch ${index}: chain certifies another terminal`, { index });
    try {
      verifyCoseSign1(opened.cose, term[0]!.publicKey, this.#verifier);
    } catch {
      throw new LedgerError(400, LedgerErrorCode.BAD_SIGNATURE, `batch ${index}: signature invalid`, { index });
    }
    return { hash: payloadHash(opened.cose), terminal: m.terminal, seq: m.seq, time: m.time, crlVersion: m.crlVersion, handovers: m.handovers };
  }

  /**
   * Settles signed batches. Every batch is verified first; a bad batch
   * refuses the whole request and changes nothing. Returns, per batch, the
   * signed Outcomes in handover order. Replaying a batch returns the stored
   * outcomes byte for byte.
   */
  async settle(batches: readonly Uint8Array[]): Promise<Uint8Array[][]> {
    const opened = batches.map((x, i) => this.#openBatch(x, i));
    const out: Uint8Array[][] = [];
    // Validation (pure, possibly on worker threads) of batch i+1 overlaps the storage work of batch i;
    // at most two batches' results are held at once, so memory stays flat however many batches come.
    let next = opened.length > 0 ? this.#prepare(opened[0]!) : undefined;
    for (let i = 0; i < opened.length; i++) {
      const prepared = await next!;
      next = i + 1 < opened.length ? this.#prepare(opened[i + 1]!) : undefined;
      out.push(await this.#commitBatch(opened[i]!, prepared));
    }
    return out;
  }

  /** Stored outcomes of a batch and the validation of the handovers still without one. */
  async #prepare(ob: OpenBatch): Promise<{ out: (Uint8Array | undefined)[]; todo: number[]; results: HandoverResult[] }> {
    const stored = await this.storage.transaction((tx) => tx.all(`SELECT idx, bytes FROM outcomes WHERE batch = ?`, [ob.hash]));
    const out: (Uint8Array | undefined)[] = new Array(ob.handovers.length);
    for (const r of stored) out[n(r.idx)] = b(r.bytes);
    const todo = [...out.keys()].filter((i) => out[i] === undefined);
    const notAfter = Math.min(ob.time, this.#now()) + this.#skew;
    const results = todo.length > 0 ? await this.#validate(todo.map((i) => ({ handover: ob.handovers[i]!, payee: ob.terminal, notAfter }))) : [];
    return { out, todo, results };
  }

  /**
   * Applies a batch in ONE durable transaction, each handover inside its own
   * savepoint: a transfer's spent-set, counter and balance changes happen
   * all together or not at all, and nobody sees an outcome before the commit.
   */
  async #commitBatch(ob: OpenBatch, p: { out: (Uint8Array | undefined)[]; todo: number[]; results: HandoverResult[] }): Promise<Uint8Array[]> {
    if (p.todo.length === 0) return p.out as Uint8Array[];
    const now = this.#now();
    const counted: (keyof Ledger['stats'])[] = [];
    const out = [...p.out];
    await this.storage.transaction(async (tx) => {
      for (let k = 0; k < p.todo.length; k++) {
        const idx = p.todo[k]!;
        const v = p.results[k]!;
        await tx.run(`SAVEPOINT handover`);
        try {
          const r = await this.#apply(tx, ob, idx, v, now);
          out[idx] = r.bytes;
          if (r.stat) counted.push(r.stat);
          await tx.run(`RELEASE SAVEPOINT handover`);
        } catch (e) {
          await tx.run(`ROLLBACK TO SAVEPOINT handover`);
          await tx.run(`RELEASE SAVEPOINT handover`);
          if (!(e instanceof Conflict) || !v.ok) throw e;
          const r = await this.#doubleSpend(tx, ob, idx, v, e, now);
          out[idx] = r.bytes;
          if (r.stat) counted.push(r.stat);
        }
      }
      await tx.run(`INSERT INTO batches (hash, terminal, seq, count, time) VALUES (?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING`, [ob.hash, ob.terminal, ob.seq, ob.handovers.length, ob.time]);
    });
    for (const c of counted) this.stats[c]++;
    this.stats.batches++;
    return out as Uint8Array[];
  }

  #outcome(o: Outcome): Uint8Array {
    return signMessage('Outcome', o, this.#signer);
  }

  async #storeOutcome(tx: SqlTx, ob: OpenBatch, idx: number, bytes: Uint8Array): Promise<void> {
    await tx.run(`INSERT INTO outcomes (batch, idx, bytes) VALUES (?, ?, ?)`, [ob.hash, idx, bytes]);
  }

  async #verdictOutcome(tx: SqlTx, hash: Uint8Array): Promise<Outcome | undefined> {
    const v = await tx.get(`SELECT * FROM verdicts WHERE transfer = ?`, [hash]);
    if (!v) return undefined;
    const status = n(v.status) === OutcomeStatus.SETTLED ? OutcomeStatus.ALREADY_SETTLED : (n(v.status) as Outcome['status']);
    return {
      transfer: hash, status, covered: n(v.covered) === 1, time: n(v.time), card: b(v.card), terminal: b(v.terminal), amount: n(v.amount),
      ...(v.code ? { code: String(v.code) } : {}),
      ...(v.proof1 && v.proof2 ? { proof: [b(v.proof1), b(v.proof2)] } : {}),
    };
  }

  async #saveVerdict(tx: SqlTx, o: Outcome): Promise<void> {
    await tx.run(
      `INSERT INTO verdicts (transfer, status, covered, code, time, card, terminal, amount, proof1, proof2) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [o.transfer, o.status, o.covered ? 1 : 0, o.code ?? null, o.time, o.card, o.terminal, o.amount, o.proof?.[0] ?? null, o.proof?.[1] ?? null],
    );
  }

  /** Applies one validated handover of a batch; returns its signed outcome. */
  async #apply(tx: SqlTx, ob: OpenBatch, idx: number, v: HandoverResult, now: number): Promise<Applied> {
    const dup = await tx.get(`SELECT bytes FROM outcomes WHERE batch = ? AND idx = ?`, [ob.hash, idx]);
    if (dup) return { bytes: b(dup.bytes) };
    const invalid = async (code: string, hash?: Uint8Array, card?: Uint8Array): Promise<Applied> => {
      const bytes = this.#outcome({ transfer: hash ?? ZERO32, status: OutcomeStatus.INVALID, covered: false, code, time: now, card: card ?? ZERO16, terminal: ob.terminal, amount: 0 });
      await this.#storeOutcome(tx, ob, idx, bytes);
      return { bytes, stat: 'invalid' };
    };
    if (!v.ok) return invalid(v.code, v.transferHash, v.cardKid);
    // The ledger knows every anchor: a chain must start at a receipt or at the card's genesis.
    const first = v.chain[0]!.transfer;
    if (!v.receipt && !(first.counter === 1 && bytesEqual(first.prev, GENESIS_PREV))) return invalid('HISTORY_BROKEN', v.transferHash, v.cardKid);
    // Every token must be one this ledger issued to this card (not only signed by its key).
    for (const tk of v.tokens) {
      const row = await tx.get(`SELECT card, value FROM tokens WHERE serial = ?`, [tk.token.serial]);
      if (!row || !bytesEqual(b(row.card), v.cardKid) || n(row.value) !== tk.token.value) return invalid('TOKEN_INVALID', v.transferHash, v.cardKid);
    }
    const replay = await this.#verdictOutcome(tx, v.transferHash);
    if (replay) {
      const bytes = this.#outcome(replay);
      await this.#storeOutcome(tx, ob, idx, bytes);
      return { bytes, stat: 'alreadySettled' };
    }
    for (let i = 0; i < v.chain.length; i++) await this.#record(tx, v.chain[i]!, v.chainInputs[i]!);
    const row = await tx.get(`SELECT state FROM transfers WHERE hash = ?`, [v.transferHash]);
    const t = v.transfer;
    let o: Outcome;
    let stat: keyof Ledger['stats'];
    if (row!.state === 'voided') {
      o = { transfer: v.transferHash, status: OutcomeStatus.VOIDED, covered: false, code: 'VOIDED', time: now, card: v.cardKid, terminal: ob.terminal, amount: t.amount };
      stat = 'voided';
    } else {
      await tx.run(`UPDATE transfers SET state = 'settled' WHERE hash = ?`, [v.transferHash]);
      await tx.run(`INSERT INTO merchants (kid, balance) VALUES (?, ?) ON CONFLICT (kid) DO UPDATE SET balance = merchants.balance + excluded.balance`, [ob.terminal, t.amount]);
      o = { transfer: v.transferHash, status: OutcomeStatus.SETTLED, covered: false, time: now, card: v.cardKid, terminal: ob.terminal, amount: t.amount };
      stat = 'settled';
    }
    await this.#saveVerdict(tx, o);
    const bytes = this.#outcome(o);
    await this.#storeOutcome(tx, ob, idx, bytes);
    return { bytes, stat };
  }

  async #doubleSpend(tx: SqlTx, ob: OpenBatch, idx: number, v: HandoverResult & { ok: true }, c: Conflict, now: number): Promise<Applied> {
    let stat: keyof Ledger['stats'] | undefined;
    const replay = await this.#verdictOutcome(tx, v.transferHash);
    let o: Outcome;
    if (replay) {
      o = replay;
    } else {
      const { version, first } = await this.#proof(tx, v.cardKid, c, now);
      // Cover: the terminal's list predates the revocation and the payment was within the certified limits (validation checked them).
      const covered = ob.crlVersion < version;
      const amount = v.transfer.amount;
      if (covered) {
        const bank = v.cardChain[1]!;
        await tx.run(`INSERT INTO banks (kid, cert, perms, balance) VALUES (?, ?, ?, 0) ON CONFLICT (kid) DO NOTHING`, [bank.kid, bank.bytes, bank.claims.perms ?? 0]);
        await tx.run(`UPDATE banks SET balance = balance - ? WHERE kid = ?`, [amount, bank.kid]);
        await tx.run(`INSERT INTO merchants (kid, balance) VALUES (?, ?) ON CONFLICT (kid) DO UPDATE SET balance = merchants.balance + excluded.balance`, [ob.terminal, amount]);
        await tx.run(`INSERT INTO covers (transfer, bank, terminal, amount) VALUES (?, ?, ?, ?)`, [v.transferHash, bank.kid, ob.terminal, amount]);
      }
      // The proof: both card-signed objects (a SyncRequest too large for the Outcome stays in the ledger's proof table).
      const fits = first.length <= MAX_TRANSFER && c.second.length <= MAX_TRANSFER;
      o = {
        transfer: v.transferHash, status: OutcomeStatus.DOUBLE_SPEND, covered, code: c.reason, time: now, card: v.cardKid, terminal: ob.terminal, amount,
        ...(fits ? { proof: [first, c.second] } : {}),
      };
      await this.#saveVerdict(tx, o);
      stat = 'doubleSpends';
    }
    const bytes = this.#outcome(o);
    await this.#storeOutcome(tx, ob, idx, bytes);
    return { bytes, ...(stat ? { stat } : {}) };
  }

  // ------------------------------------------------------------ sync
  /**
   * A card's signed SyncRequest: records its history, spends its holdings,
   * voids orphans older than the window, delivers pending loads, and returns
   * the signed SyncReceipt with fresh tokens. The same request again returns
   * the same receipt.
   *
   * A revoked card is verified and recorded the same way, but its key is not
   * trusted with fresh tokens: its pending loads go back to their banks, and
   * its balance plus voided value is credited to its issuing bank (which pays
   * the owner) and reported as `redeemed` in a receipt without tokens (SPEC §7.6).
   */
  async sync(requestBytes: Uint8Array): Promise<Uint8Array> {
    let opened;
    try {
      opened = openSigned('SyncRequest', requestBytes);
    } catch (e) {
      throw new LedgerError(400, LedgerErrorCode.MALFORMED, isDtError(e) ? e.code : 'sync request malformed');
    }
    const req = opened.message;
    const hash = payloadHash(opened.cose);
    const card = await this.storage.transaction((tx) => tx.get(`SELECT cert, anchor, anchor_counter, anchor_sync FROM cards WHERE kid = ?`, [req.card]));
    if (!card) throw new LedgerError(404, LedgerErrorCode.CARD_UNKNOWN, 'card not registered');
    const cert = openSigned('Certificate', b(card.cert)).message;
    const cardKey = subjectKey(cert).publicKey;
    try {
      verifyCoseSign1(opened.cose, cardKey, this.#verifier);
    } catch {
      throw new LedgerError(400, LedgerErrorCode.BAD_SIGNATURE, 'sync request not signed by the card');
    }
    const prior = await this.storage.transaction((tx) => tx.get(`SELECT receipt FROM syncs WHERE request = ?`, [hash]));
    if (prior) return b(prior.receipt);
    const tokenRows = card.anchor_sync
      ? await this.storage.transaction((tx) => tx.all(`SELECT serial, value, bytes FROM tokens WHERE sync = ?`, [b(card.anchor_sync)]))
      : [];
    const coins = new Map<string, SpentCoin>();
    for (const r of tokenRows) {
      const t = openSigned('Token', b(r.bytes)).message;
      coins.set(toHex(t.serial), { id: t.serial, value: t.value, ...(t.mark ? { mark: t.mark } : {}) });
    }
    const checked = checkTransferChain({
      cardKid: req.card, cardPublicKey: cardKey, transfers: req.history, coins, verifier: this.#verifier,
      anchor: { prev: b(card.anchor), counter: n(card.anchor_counter) },
    });
    if (!checked.ok) throw new LedgerError(400, LedgerErrorCode.SYNC_INVALID, `history: ${checked.code}`, { code: checked.code, ...(checked.index !== undefined ? { index: checked.index } : {}) });
    const last = checked.chain[checked.chain.length - 1];
    const expectCounter = (last ? last.transfer.counter : n(card.anchor_counter)) + 1;
    const expectPrev = last ? last.hash : b(card.anchor);
    if (req.counter !== expectCounter || !bytesEqual(req.prev, expectPrev)) throw new LedgerError(400, LedgerErrorCode.SYNC_INVALID, 'counter or prev does not continue the chain');
    const holdings: SpentCoin[] = [];
    const seen = new Set<string>();
    for (const id of req.holdings) {
      const k = toHex(id);
      const coin = checked.remaining.get(k);
      if (!coin || seen.has(k)) throw new LedgerError(400, LedgerErrorCode.SYNC_INVALID, 'a holding is not an unspent coin of the card');
      seen.add(k);
      holdings.push(coin);
    }
    if (holdings.reduce((s, c) => s + c.value, 0) !== req.balance) throw new LedgerError(400, LedgerErrorCode.SYNC_INVALID, 'balance is not the sum of the holdings');
    const now = this.#now();
    let conflict: Conflict | undefined;
    let receipt: Uint8Array | undefined;
    try {
      receipt = await this.storage.transaction(async (tx) => {
        const again = await tx.get(`SELECT receipt FROM syncs WHERE request = ?`, [hash]);
        if (again) return b(again.receipt);
        const revoked = !!(await tx.get(`SELECT version FROM revocations WHERE card = ?`, [req.card]));
        // The chain was checked against the anchor read before this transaction: it must still be the card's anchor.
        const cur = await tx.get(`SELECT anchor FROM cards WHERE kid = ?`, [req.card]);
        if (!cur || !bytesEqual(b(cur.anchor), b(card.anchor))) throw new LedgerError(409, LedgerErrorCode.SYNC_INVALID, 'the card synced concurrently; retry');
        for (let i = 0; i < checked.chain.length; i++) await this.#record(tx, checked.chain[i]!, checked.chainInputs[i]!);
        // The request itself consumes a counter and spends every holding: a later transfer spending one is a fork.
        await tx.run(`INSERT INTO objects (hash, bytes) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`, [hash, requestBytes]);
        const cr = await tx.get(`INSERT INTO counters (card, counter, hash) VALUES (?, ?, ?) ON CONFLICT (card, counter) DO NOTHING RETURNING hash`, [req.card, req.counter, hash]);
        if (!cr) throw new Conflict(b((await tx.get(`SELECT hash FROM counters WHERE card = ? AND counter = ?`, [req.card, req.counter]))!.hash), requestBytes, hash, 'COUNTER_REUSED');
        for (const c of holdings) {
          const s = await tx.get(`INSERT INTO spent (id, by_hash) VALUES (?, ?) ON CONFLICT (id) DO NOTHING RETURNING id`, [c.id, hash]);
          if (!s) throw new Conflict(b((await tx.get(`SELECT by_hash FROM spent WHERE id = ?`, [c.id]))!.by_hash), requestBytes, hash, 'INPUT_SPENT');
        }
        // Orphans: transfers of this card no terminal submitted within the window.
        const orphans = await tx.all(
          `SELECT hash, amount, mark FROM transfers WHERE card = ? AND state = 'recorded' AND time <= ? ORDER BY counter LIMIT ?`,
          [req.card, now - this.#voidWindow, LIMITS.maxHistory],
        );
        for (const o of orphans) await tx.run(`UPDATE transfers SET state = 'voided' WHERE hash = ?`, [b(o.hash)]);
        if (revoked) {
          // No fresh tokens for a compromised key: pending loads return to the banks that
          // ordered them, and everything the card held (holdings and voided orphans) is
          // credited to its issuing bank, which pays the owner out of band.
          const loads = await tx.all(`SELECT bank, amount FROM loads WHERE card = ? AND state = 'pending' ORDER BY id`, [req.card]);
          for (const l of loads) await tx.run(`UPDATE banks SET balance = balance + ? WHERE kid = ?`, [n(l.amount), b(l.bank)]);
          await tx.run(`UPDATE loads SET state = 'cancelled', sync = ? WHERE card = ? AND state = 'pending'`, [hash, req.card]);
          const redeemed = addAmounts(sumAmounts(holdings.map((c) => c.value)), sumAmounts(orphans.map((o) => n(o.amount))));
          const issuer = b((await tx.get(`SELECT bank FROM cards WHERE kid = ?`, [req.card]))!.bank);
          if (redeemed > 0 && (await tx.run(`UPDATE banks SET balance = balance + ? WHERE kid = ?`, [redeemed, issuer])) !== 1) {
            throw new LedgerError(500, LedgerErrorCode.BANK_UNKNOWN, 'issuing bank of the card not registered');
          }
          const rb = signMessage('SyncReceipt', {
            card: req.card, counter: req.counter, request: hash, tokens: [], time: now, loaded: 0,
            voided: orphans.map((o) => b(o.hash)), ...(redeemed > 0 ? { redeemed } : {}),
          }, this.#signer);
          await tx.run(`UPDATE cards SET anchor = ?, anchor_counter = ?, anchor_sync = ? WHERE kid = ?`, [payloadHash(openSigned('SyncReceipt', rb).cose), req.counter, hash, req.card]);
          await tx.run(`INSERT INTO syncs (request, card, receipt) VALUES (?, ?, ?)`, [hash, req.card, rb]);
          this.stats.voided += orphans.length;
          return rb;
        }
        const loads = await tx.all(`SELECT id, amount FROM loads WHERE card = ? AND state = 'pending' ORDER BY id`, [req.card]);
        await tx.run(`UPDATE loads SET state = 'delivered', sync = ? WHERE card = ? AND state = 'pending'`, [hash, req.card]);
        const loaded = loads.reduce((s, l) => s + n(l.amount), 0);
        // Fresh tokens: one per mark class (marks survive a sync), loads unmarked.
        const classes = new Map<string, { mark?: Mark; value: number }>();
        const add = (mark: Mark | undefined, value: number) => {
          const k = mark ? toHex(markBytes(mark)!) : '';
          const e = classes.get(k) ?? { ...(mark ? { mark } : {}), value: 0 };
          e.value += value;
          classes.set(k, e);
        };
        for (const c of holdings) add(c.mark, c.value);
        for (const o of orphans) add(markFrom(o.mark as Uint8Array | null), n(o.amount));
        if (loaded > 0) add(undefined, loaded);
        const tokens: Uint8Array[] = [];
        let i = 0;
        for (const [, cls] of [...classes.entries()].sort(([a], [z]) => (a < z ? -1 : a > z ? 1 : 0))) {
          if (cls.value <= 0) continue;
          const serial = sha256(concatBytes(SERIAL_DOMAIN, hash, new Uint8Array([i++]))).slice(0, 16);
          const tb = signMessage('Token', { serial, value: cls.value, currency: cert.currency ?? 398, owner: req.card, issued: now, ...(cls.mark ? { mark: cls.mark } : {}) }, this.#signer);
          await tx.run(`INSERT INTO tokens (serial, card, value, sync, bytes) VALUES (?, ?, ?, ?, ?)`, [serial, req.card, cls.value, hash, tb]);
          tokens.push(tb);
        }
        const rb = signMessage('SyncReceipt', { card: req.card, counter: req.counter, request: hash, tokens, time: now, loaded, voided: orphans.map((o) => b(o.hash)) }, this.#signer);
        await tx.run(`UPDATE cards SET anchor = ?, anchor_counter = ?, anchor_sync = ? WHERE kid = ?`, [payloadHash(openSigned('SyncReceipt', rb).cose), req.counter, hash, req.card]);
        await tx.run(`INSERT INTO syncs (request, card, receipt) VALUES (?, ?, ?)`, [hash, req.card, rb]);
        this.stats.voided += orphans.length;
        return rb;
      });
    } catch (e) {
      if (!(e instanceof Conflict)) throw e;
      conflict = e;
    }
    if (conflict) {
      const c = conflict;
      await this.storage.transaction((tx) => this.#proof(tx, req.card, c, now));
      throw new LedgerError(409, LedgerErrorCode.DOUBLE_SPEND, `the card forked its chain (${c.reason}); it is revoked`);
    }
    this.stats.syncs++;
    return receipt!;
  }

  // ------------------------------------------------------------ audit
  /** The supply invariant and the lists of proofs and revocations. */
  async audit(): Promise<AuditReport> {
    return this.storage.transaction(async (tx) => {
      const sum = async (sql: string, p: unknown[] = []) => n((await tx.get(sql, p as never))?.s ?? 0);
      const issued = await sum(`SELECT v AS s FROM meta WHERE k = 'issued'`);
      const bankBalances = await sum(`SELECT COALESCE(SUM(balance), 0) AS s FROM banks`);
      const pendingLoads = await sum(`SELECT COALESCE(SUM(amount), 0) AS s FROM loads WHERE state = 'pending'`);
      const unspentTokens = await sum(`SELECT COALESCE(SUM(value), 0) AS s FROM tokens t WHERE NOT EXISTS (SELECT 1 FROM spent s WHERE s.id = t.serial)`);
      const unspentChange = await sum(`SELECT COALESCE(SUM(change_value), 0) AS s FROM transfers t WHERE change_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM spent s WHERE s.id = t.change_id)`);
      const pendingPayee = await sum(`SELECT COALESCE(SUM(amount), 0) AS s FROM transfers WHERE state = 'recorded'`);
      const redeemed = await sum(`SELECT COALESCE(SUM(balance), 0) AS s FROM merchants`);
      const covered = await sum(`SELECT COALESCE(SUM(amount), 0) AS s FROM covers`);
      const difference = issued - (bankBalances + pendingLoads + unspentTokens + unspentChange + pendingPayee + redeemed);
      const proofs = (await tx.all(`SELECT first, second, card, time FROM proofs ORDER BY time, first, second`)).map((r) => ({
        first: toHex(b(r.first)), second: toHex(b(r.second)), card: toHex(b(r.card)), time: n(r.time),
      }));
      const revocations = (await tx.all(`SELECT card, version, time FROM revocations ORDER BY version`)).map((r) => ({ card: toHex(b(r.card)), version: n(r.version), time: n(r.time) }));
      const crlVersion = await sum(`SELECT v AS s FROM meta WHERE k = 'crl_version'`);
      return { ok: difference === 0, issued, bankBalances, pendingLoads, unspentTokens, unspentChange, pendingPayee, redeemed, covered, difference, proofs, revocations, crlVersion };
    });
  }

  /** Settled value per merchant terminal (hex kid -> amount). */
  async merchantBalances(): Promise<Record<string, number>> {
    return this.storage.transaction(async (tx) => Object.fromEntries((await tx.all(`SELECT kid, balance FROM merchants`)).map((r) => [toHex(b(r.kid)), n(r.balance)])));
  }

  /** Counts of settled transfers and spent-set entries (used by tests and the crash test). */
  async counts(): Promise<{ settled: number; spent: number; transfers: number; verdicts: number }> {
    return this.storage.transaction(async (tx) => ({
      settled: n((await tx.get(`SELECT COUNT(*) AS c FROM transfers WHERE state = 'settled'`))!.c),
      spent: n((await tx.get(`SELECT COUNT(*) AS c FROM spent`))!.c),
      transfers: n((await tx.get(`SELECT COUNT(*) AS c FROM transfers`))!.c),
      verdicts: n((await tx.get(`SELECT COUNT(*) AS c FROM verdicts`))!.c),
    }));
  }
}


