/**
 * The reference ledger and notary (SPEC.md §7.6 "Sync and load", §7.7 "Settlement").
 *
 * Every state change is one storage transaction, committed before the caller
 * gets an answer. Signature and certificate checks run before the
 * transaction (they are pure, and can run on worker threads); the
 * transaction only consults and updates claims, counters and balances, so
 * it is short.
 *
 * Evidence before judgement (SPEC §7.7 step E): every transfer a handover
 * carries whose signature verifies with the card key the ledger registered
 * is recorded (its (card, counter) and input claims) BEFORE the handover is
 * judged, so a fork cannot be hidden by breaking or stripping the handover
 * around it. Claims detect forks; value moves only through chains that pass
 * the shared acceptance rule (`validateHandover`, the terminal's own).
 *
 * @module
 */
import {
  AdjustmentCode,
  AdjustmentKind,
  bytesEqual,
  isDtError,
  Role,
  verifyChain,
  createTrustStore,
  encodeStruct,
  encodeDeterministic,
  GENESIS_PREV,
  LIMITS,
  MarkSchema,
  decodeStruct,
  decodeDeterministic,
  OutcomeStatus,
  openSigned,
  outputId,
  payloadHash,
  sha256,
  sigStructure,
  signMessage,
  signMessageAsync,
  toHex,
  utf8,
  concatBytes,
  subjectKey,
  sumAmounts,
  validateHandover,
  verifyCoseSign1,
  type Adjustment,
  type CardChainVerifier,
  type CertificateMemo,
  type HandoverResult,
  type Mark,
  type MessageOf,
  type Transfer,
  type TransferOpener,
  type Outcome,
  type Signer,
  type SpentCoin,
  type TrustStore,
  type Verifier,
} from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import type { LedgerStorage } from './storage/types.ts';
import { LedgerStore, type ChainHead, type CounterClaim, type InputClaim, type NewTransfer, type StoreTx } from './store.ts';
import type { CardRow, LoadRow, RefundCreditRow, TransferRow, VerdictRow } from './storage/rows.ts';
import { BANK_REQUEST_DETAIL, CONCURRENT_SYNC_DETAIL, LedgerError, LedgerErrorCode, LOAD_ORDER_DETAIL } from './errors.ts';
import {
  anchorCoins,
  checkAmount,
  checkSyncChain,
  openBatch,
  openLoad,
  openSyncRequest,
  syncEvidence,
  transferPayee,
  verifyBankCert,
  verifyCardChain,
  verifyLoadSigner,
  verifySyncRequest,
  type CheckedSync,
  type EvidenceObject,
  type OpenBatch,
  type OpenSyncRequest,
  type TrustContext,
} from './checks.ts';
import {
  cachingCardChainVerifier,
  cachingTransferOpener,
  cardChainCache,
  coseParts,
  decodeChainState,
  encodeChainState,
  handoverEvidence,
  jobBanks,
  knownCertificates,
  knownVerifier,
  memoVerifier,
  NO_FACTS,
  scanHandover,
  settleOne,
  type ChainState,
  type HandoverEvidence,
  type HandoverValidator,
  type KnownFacts,
  type KnownSignature,
  type SettleAnswer,
  type SettleJob,
  type SettlementValidator,
  type SettleResult,
  type SettleTools,
  type SettleTransferFields,
  type SettleValid,
  type ValidationJob,
} from './validation.ts';
import { openCardBankRequest, openRestitution, signRestitution, type CardBankRequestKind } from './cardloss.ts';

export { LedgerError, LedgerErrorCode } from './errors.ts';

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
  /**
   * Where settlement validates handovers and finds their evidence: a {@link SettlementValidator}
   * (the worker pool of `pool.ts`: `dt-ledger serve` runs one), or a plain {@link HandoverValidator}
   * (the evidence is then found in this thread); default: this thread.
   */
  readonly validator?: HandoverValidator | SettlementValidator;
  /**
   * Settle a batch whose handovers are all valid and new in a few set-based statements (default
   * true). false sends every batch handover by handover: the reference the set-based path is
   * tested against (ledger/test/set-based.test.ts); the results are the same.
   */
  readonly setBased?: boolean;
}

/** Result of {@link Ledger.audit}. */
export interface AuditReport {
  /** The supply invariant holds, no balance is below its floor and no card's cover is above its bound. */
  readonly ok: boolean;
  /** Value the issuer allocated to banks. */
  readonly issued: number;
  readonly bankBalances: number;
  readonly pendingLoads: number;
  readonly unspentTokens: number;
  readonly unspentChange: number;
  /** Payee value of recorded transfers whose terminal has not submitted them yet. */
  readonly pendingPayee: number;
  /** Value settled to merchants (including covered double spends), net of refunds. */
  readonly redeemed: number;
  /** Refunded value waiting for the cards' next sync (SPEC §7.7.3). */
  readonly pendingRefunds: number;
  readonly covered: number;
  /**
   * issued - (bankBalances + pendingLoads + unspentTokens + unspentChange + pendingPayee + redeemed + pendingRefunds).
   * Zero when the invariant holds.
   */
  readonly difference: number;
  /** Balances below their floor (a bank below minus its credit line, a merchant below zero): must be empty. */
  readonly floorBreaches: { kind: 'bank' | 'merchant'; kid: string; balance: number; floor: number }[];
  /** Cards whose covered total exceeds the certified `offlineTotal` (SPEC §7.7 cover rule 5): must be empty. */
  readonly coverBreaches: { card: string; covered: number; bound: number }[];
  readonly proofs: { first: string; second: string; card: string; time: number }[];
  readonly revocations: { card: string; version: number; time: number }[];
  readonly crlVersion: number;
}

/** Answer to a bank load. */
export interface LoadAnswer {
  id: string;
  card: string;
  amount: number;
  state: 'pending' | 'delivered' | 'cancelled';
}

/** The ledger's answer to a card block (SPEC §7.9). */
export interface CardBlockAnswer {
  readonly card: string;
  /** The revocation list version that first names the card. */
  readonly crlVersion: number;
  /** Ledger time of the block. */
  readonly blockedAt: number;
  /** From this time on the bank may have the card's value restored. */
  readonly restoreAfter: number;
}

/** The ledger's answer to a restore (SPEC §7.9): what the restitution record says, and the record (hex). */
export interface CardRestoreAnswer {
  readonly card: string;
  readonly bank: string;
  readonly amount: number;
  readonly cancelledLoads: number;
  readonly time: number;
  readonly blockedAt: number;
  /** The ledger-signed restitution record (COSE_Sign1, hex). */
  readonly record: string;
}

/** What the ledger says about one card ({@link Ledger.cardInfo}). */
export interface CardInfo {
  readonly card: string;
  readonly bank: string;
  readonly revokedIn: number | null;
  readonly blockedAt: number | null;
  readonly restoreAfter: number | null;
  readonly restored: boolean;
  readonly pendingLoads: number;
  /** Refunded value waiting for the card's next sync (SPEC §7.7.3). */
  readonly pendingRefunds: number;
  /**
   * Per mark class (SPEC §3.4; `mark`: hex of its deterministic CBOR, null unmarked): `synced`, the value of the
   * tokens the card got at its last sync (offline payments since spend from them), and `pendingLoads`.
   */
  readonly byMark: readonly { readonly mark: string | null; readonly synced: number; readonly pendingLoads: number }[];
}

const ZERO16 = new Uint8Array(16);
const ZERO32 = new Uint8Array(32);
const SERIAL_DOMAIN = utf8('DT-TOKEN-SERIAL-V1');
/** Distinct marks a card's pending loads may carry (each is a token of its own at the next sync; SPEC §7.6.1). */
export const MAX_PENDING_MARK_CLASSES = 16;
const MAX_TRANSFER = LIMITS.maxTransferSize;
/** A new revocation list is signed at least this often (seconds), even when nothing changed (SPEC §7.8). */
export const CRL_REFRESH_SECONDS = 3600;
/** Proofs kept per card: a fork revokes the card at the first one; more only repeat the evidence (bounded state). */
export const MAX_PROOFS_PER_CARD = 16;
/**
 * Evidence window above a card's anchor: an honest card signs at most `offlineCount` (<= 64)
 * transfers and then one sync request after its last sync, so a counter beyond
 * `anchor + maxHistory + 1` can never be part of a valid chain and is not recorded (bounded
 * state; every counter up to the anchor is already held, so any other object there is a fork).
 */
const EVIDENCE_WINDOW = LIMITS.maxHistory + 1;

/** Two card-signed objects of one card with the same counter or the same input (SPEC §7.7 step E). */
interface Fork {
  readonly card: Uint8Array;
  readonly firstHash: Uint8Array;
  readonly second: Uint8Array;
  readonly secondHash: Uint8Array;
  readonly reason: 'COUNTER_REUSED' | 'INPUT_SPENT';
}

/** A syncing card: its registered row, its certificate's claims and key. */
interface SyncingCard {
  readonly row: CardRow;
  readonly cert: MessageOf<'Certificate'>;
  readonly publicKey: Uint8Array;
}

/** What a sync gives the card: fresh tokens and delivered loads, or (revoked) value redeemed to its issuing bank. */
interface SyncPayout {
  readonly tokens: Uint8Array[];
  readonly loaded: number;
  readonly redeemed: number;
  /** Pending refund credits paid out in the tokens, or (revoked, defund) with `redeemed` (SPEC §7.7.3). */
  readonly refunded: number;
}

/** What the ledger keeps of a registered card for evidence checks. */
interface CardKey {
  readonly publicKey: Uint8Array;
}

const markBytes = (m: Mark | undefined): Uint8Array | null => (m ? encodeDeterministic(encodeStruct(MarkSchema, m)) : null);
const markFrom = (b: Uint8Array | null | undefined): Mark | undefined =>
  b ? decodeStruct(MarkSchema, decodeDeterministic(b, 1024)) : undefined;

/** No voids in a batch. */
const NO_VOIDS: ReadonlyMap<string, Adjustment> = new Map();

/** A void of the batch names this paying transfer with its card, amount and currency (SPEC §7.7.3). */
const voidNames = (a: Adjustment | undefined, t: SettleTransferFields): boolean =>
  a !== undefined && bytesEqual(a.card, t.card) && a.amount === t.amount && a.currency === t.currency;

/** A batch's stored outcomes and, for the handovers still without one, their evidence and validation. */
interface Prepared {
  /** Outcomes by index: the handovers, then the adjustments (index handovers + j). */
  readonly out: (Uint8Array | undefined)[];
  readonly todo: number[];
  /** The adjustments (by j) still without an outcome. */
  readonly todoAdj: number[];
  /** Validation results (what settlement reads of them, validation.ts `SettleResult`), by todo position. */
  readonly results: SettleResult[];
  readonly evidence: HandoverEvidence[];
  /** The chain state after each valid handover (validation.ts `ChainState`), by todo position. */
  readonly states: (ChainState | undefined)[];
}

/** A batch's handovers sent to validation before the write transaction (`settle`): their indexes and answers. */
interface Dispatched {
  readonly idx: readonly number[];
  readonly jobs: readonly SettleJob[];
  readonly answers: Promise<SettleAnswer[]>;
}

/** The facts of a job's cards (one card: its own object, shared by that card's jobs; several: their union). */
function factsOf(facts: ReadonlyMap<string, KnownFacts>, cards: readonly string[]): KnownFacts {
  const own = cards.flatMap((c) => facts.get(c) ?? []);
  if (own.length === 0) return NO_FACTS;
  if (own.length === 1) return own[0]!;
  return { signatures: own.flatMap((f) => f.signatures), certs: own.flatMap((f) => f.certs) };
}

/** The metric a replayed verdict counts under (a stored verdict is SETTLED, answered ALREADY_SETTLED; DOUBLE_SPEND; or VOIDED). */
const replayStat = (status: number): 'alreadySettled' | 'doubleSpends' | 'voided' =>
  status === OutcomeStatus.ALREADY_SETTLED ? 'alreadySettled' : status === OutcomeStatus.DOUBLE_SPEND ? 'doubleSpends' : 'voided';

/** What applying one handover produced: its signed outcome and the metric to count after the commit. */
interface Applied {
  bytes: Uint8Array;
  stat?: keyof Ledger['stats'];
}

/** A map key of bytes (one string code unit per byte; for keys of the set-based path, never shown). */
const bkey = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');

/** The verdict row of an outcome (the first verdict on its transfer; replays answer from it). */
const verdictOf = (o: Outcome): VerdictRow => ({
  transfer: o.transfer,
  status: o.status,
  covered: o.covered,
  code: o.code ?? null,
  time: o.time,
  card: o.card,
  terminal: o.terminal,
  amount: o.amount,
  proof1: o.proof?.[0] ?? null,
  proof2: o.proof?.[1] ?? null,
});

/** The ledger. Create with {@link Ledger.open}. */
export class Ledger {
  readonly trust: TrustStore;
  readonly storage: LedgerStorage;
  /** Every SQL statement of the ledger (store.ts). */
  readonly store: LedgerStore;
  readonly #signer: Signer;
  readonly #now: () => number;
  readonly #verifier: Verifier;
  readonly #voidWindow: number;
  readonly #skew: number;
  readonly #settler: SettlementValidator;
  readonly #tools: SettleTools;
  readonly #setBased: boolean;
  readonly #memo: Verifier;
  readonly #openTransfer: TransferOpener;
  readonly #verifyCardChain: CardChainVerifier;
  readonly #chains: ReturnType<typeof cardChainCache>;
  /** The verifier and certificate memo of a batch's facts (built once per batch, for every handover of it). */
  readonly #factTools = new WeakMap<KnownFacts, { verifier: Verifier; certs: CertificateMemo }>();
  readonly #trustContext: TrustContext;
  readonly #batchContext: TrustContext;
  /** Registered card keys (bounded): a card's certificate never changes once registered. */
  readonly #cardKeys = new Map<string, CardKey>();
  /** The latest signed revocation list, so that GET /v1/crl does not decode it every time. */
  #crlCache: { version: number; issued: number; bytes: Uint8Array } | undefined;
  /** Counters for `/v1/metrics`. */
  readonly stats = {
    settled: 0,
    alreadySettled: 0,
    doubleSpends: 0,
    invalid: 0,
    voided: 0,
    syncs: 0,
    loads: 0,
    batches: 0,
    /** Batches settled by the set-based path (`#settleAllValid`); the others went handover by handover. */
    batchesSetBased: 0,
    /** Handovers whose chain was validated from the card's recorded head on (SPEC §7.7, resumed chains). */
    resumedChains: 0,
    merchantVoids: 0,
    refunds: 0,
    adjustmentsRefused: 0,
  };

  private constructor(opts: LedgerOptions, trust: TrustStore) {
    this.storage = opts.storage;
    this.store = new LedgerStore(opts.storage);
    this.trust = trust;
    this.#signer = opts.signer;
    this.#now = opts.now ?? (() => Math.floor(Date.now() / 1000));
    this.#verifier = opts.verifier ?? nativeVerifier;
    this.#trustContext = { root: trust.root, verifier: this.#verifier };
    this.#voidWindow = opts.voidWindow ?? 7 * 86400;
    this.#skew = opts.clockSkew ?? 300;
    this.#setBased = opts.setBased ?? true;
    // Handovers of one card repeat its certificates, tokens and history: verify each signature once.
    this.#memo = memoVerifier(this.#verifier, 50_000);
    // Terminal chains recur batch after batch: their certificate signatures go through the memo.
    this.#batchContext = { root: trust.root, verifier: this.#memo };
    this.#openTransfer = cachingTransferOpener(10_000);
    this.#verifyCardChain = cachingCardChainVerifier(trust.root, this.#memo);
    this.#chains = cardChainCache(trust.root);
    this.#tools = {
      trust,
      openTransfer: this.#openTransfer,
      verifierOf: (known) => (known ? this.#toolsOf(known).verifier : this.#memo),
      verifyCardChainOf: (known) => {
        if (!known) return this.#verifyCardChain;
        const t = this.#toolsOf(known);
        return (chain, at) => this.#chains(chain, at, t.verifier, t.certs);
      },
    };
    const v = opts.validator;
    this.#settler =
      v === undefined
        ? { settle: async (jobs) => jobs.map((j) => settleOne(j, this.#tools, false)) }
        : typeof v === 'function'
          ? {
              // A plain validator: its results, and the evidence found here.
              settle: async (jobs) => {
                const results = await v(jobs);
                return results.map((result, k) => {
                  const j = jobs[k]!;
                  return { result, ...handoverEvidence(j.handover, j.keys, this.#openTransfer, this.#tools.verifierOf(j.known)) };
                });
              },
            }
          : v;
  }

  /** Opens a ledger over `storage`: checks the trust store and that `signer` is the certified ledger key, and signs the empty revocation list version 0 on first use. */
  static async open(opts: LedgerOptions): Promise<Ledger> {
    const now = (opts.now ?? (() => Math.floor(Date.now() / 1000)))();
    const trust = createTrustStore({
      root: opts.rootCert,
      ledgerCert: opts.ledgerCert,
      at: now,
      verifier: opts.verifier ?? nativeVerifier,
    });
    if (!bytesEqual(trust.ledgerKid, opts.signer.kid)) throw new Error('the signer is not the key of the ledger certificate');
    const l = new Ledger(opts, trust);
    await l.store.transaction(async (tx) => {
      await tx.initMeta();
      if (!(await tx.crl(0))) {
        const bytes = signMessage(
          'RevocationList',
          { version: 0, issued: now, revoked: [], nextUpdate: now + CRL_REFRESH_SECONDS },
          l.#signer,
        );
        await tx.insertCrl({ version: 0, issued: now, bytes });
      }
    });
    return l;
  }

  /** Current time (seconds) of the ledger's clock. */
  now(): number {
    return this.#now();
  }

  /** Validates one handover in this thread (as the default validator does). */
  validateOne(job: ValidationJob): HandoverResult {
    return validateHandover(job.handover, {
      trust: this.trust,
      verifier: this.#tools.verifierOf(job.known),
      openTransfer: this.#openTransfer,
      verifyCardChain: this.#tools.verifyCardChainOf(job.known),
      payee: job.payee,
      notAfter: job.notAfter,
      // A `[card]` chain names its issuing bank by reference: the registered banks complete it (SPEC §3.8).
      bankCertificate: jobBanks(job),
    });
  }

  /** The verifier (facts first, then the memo and the native verifier) and the certificate memo of `facts`. */
  #toolsOf(facts: KnownFacts): { verifier: Verifier; certs: CertificateMemo } {
    let t = this.#factTools.get(facts);
    if (!t) {
      t = { verifier: knownVerifier(facts, this.#memo), certs: knownCertificates(facts) };
      this.#factTools.set(facts, t);
    }
    return t;
  }

  // ------------------------------------------------------------ issuance
  /** Registers a bank certificate (issued by the root). Idempotent. */
  async registerBank(cert: Uint8Array): Promise<Uint8Array> {
    const bank = verifyBankCert(cert, this.#now(), this.#trustContext);
    await this.store.transaction((tx) => tx.insertBank(bank.kid, cert, bank.claims.perms ?? 0));
    return bank.kid;
  }

  /** The issuer allocates `amount` of new value to a bank (`id`: 16-byte idempotency key). */
  async allocate(bankKid: Uint8Array, amount: number, id: Uint8Array): Promise<void> {
    checkAmount(amount, 1, 'amount');
    await this.store.transaction(async (tx) => {
      const prior = await tx.allocation(id);
      if (prior) {
        if (!bytesEqual(prior.bank, bankKid) || prior.amount !== amount)
          throw new LedgerError(LedgerErrorCode.ID_CONFLICT, 'allocation id reused');
        return;
      }
      // The issued total is what the books balance against: past a safe integer the database could no longer be read (audit included).
      if ((await tx.issued()) > Number.MAX_SAFE_INTEGER - amount)
        throw new LedgerError(LedgerErrorCode.MALFORMED, `amount: the issued total would exceed ${Number.MAX_SAFE_INTEGER} tiyn`);
      if (!(await tx.creditBank(bankKid, amount))) throw new LedgerError(LedgerErrorCode.BANK_UNKNOWN, 'bank not registered');
      await tx.insertAllocation({ id, bank: bankKid, amount, time: this.#now() });
      await tx.addIssued(amount);
    });
  }

  /**
   * The issuer grants a bank a credit line: its balance may then go down to `-amount` (its floor,
   * SPEC §7.6.2), e.g. to pay covers beyond what it holds. 0 removes it. Refused (409
   * `INSUFFICIENT_ALLOCATION`) when the bank's balance is already below the new floor.
   */
  async setCreditLine(bankKid: Uint8Array, amount: number): Promise<void> {
    checkAmount(amount, 0, 'credit line');
    await this.store.transaction(async (tx) => {
      const bank = await tx.bank(bankKid);
      if (!bank) throw new LedgerError(LedgerErrorCode.BANK_UNKNOWN, 'bank not registered');
      if (bank.balance < -amount) throw new LedgerError(LedgerErrorCode.INSUFFICIENT_ALLOCATION, 'the bank is already below that floor');
      await tx.setCreditLine(bankKid, amount);
    });
  }

  /** Registers a card from its chain `[card cert, issuing bank cert]`; the bank must be registered. Idempotent. */
  async registerCard(chain: readonly Uint8Array[]): Promise<Uint8Array> {
    const certs = verifyCardChain(chain, this.#now(), this.#trustContext);
    const kid = certs.card.kid;
    const bank = certs.bank.kid;
    await this.store.transaction(async (tx) => {
      if (!(await tx.bank(bank))) throw new LedgerError(LedgerErrorCode.BANK_UNKNOWN, 'issuing bank not registered');
      await tx.insertCard(kid, bank, chain[0]!, GENESIS_PREV);
    });
    return kid;
  }

  /** A bank's signed load order (see load.ts): moves value from the bank's allocation to the card, delivered at its next sync. */
  async load(orderBytes: Uint8Array): Promise<LoadAnswer> {
    const { cose, order } = openLoad(orderBytes);
    const now = this.#now();
    const answer = (state: LoadAnswer['state']): LoadAnswer => ({
      id: toHex(order.id),
      card: toHex(order.card),
      amount: order.amount,
      state,
    });
    const markOf = markBytes(order.mark);
    const out = await this.store.transaction(async (tx) => {
      const bank = await tx.bank(cose.kid);
      if (!bank) throw new LedgerError(LedgerErrorCode.BANK_UNKNOWN, 'signer is not a registered bank', { detail: LOAD_ORDER_DETAIL });
      verifyLoadSigner(cose, bank.cert, now, this.#trustContext);
      const prior = await tx.load(order.id);
      if (prior) {
        const sameMark = prior.mark === null ? markOf === null : markOf !== null && bytesEqual(prior.mark, markOf);
        if (!bytesEqual(prior.card, order.card) || prior.amount !== order.amount || !bytesEqual(prior.bank, cose.kid) || !sameMark) {
          throw new LedgerError(LedgerErrorCode.ID_CONFLICT, 'load id reused for another order');
        }
        return answer(prior.state);
      }
      const card = await tx.card(order.card);
      if (!card) throw new LedgerError(LedgerErrorCode.CARD_UNKNOWN, 'card not registered');
      if (!bytesEqual(card.bank, cose.kid)) throw new LedgerError(LedgerErrorCode.NOT_PERMITTED, 'card issued by another bank');
      if (await tx.revocation(order.card)) throw new LedgerError(LedgerErrorCode.CARD_REVOKED, 'card revoked');
      if (markOf !== null) {
        // Each mark class becomes a token of its own at the next sync: bounded, so the SyncResponse stays within LIMITS.maxTokens.
        const classes = new Set((await tx.pendingLoads(order.card)).flatMap((l) => (l.mark ? [toHex(l.mark)] : [])));
        if (!classes.has(toHex(markOf)) && classes.size >= MAX_PENDING_MARK_CLASSES)
          throw new LedgerError(LedgerErrorCode.NOT_PERMITTED, `the card already has ${MAX_PENDING_MARK_CLASSES} marks of pending loads`);
      }
      // A load is paid from the bank's own balance: never below zero (a credit line is for covers, not loads).
      if (!(await tx.debitBankFromOwnBalance(cose.kid, order.amount)))
        throw new LedgerError(LedgerErrorCode.INSUFFICIENT_ALLOCATION, 'bank allocation too small');
      await tx.insertPendingLoad(order.id, order.card, cose.kid, order.amount, now, markOf);
      return answer('pending');
    });
    this.stats.loads++;
    return out;
  }

  // ------------------------------------------------------------ revocation
  /**
   * The latest signed revocation list. A new version is signed when the latest is older than
   * {@link CRL_REFRESH_SECONDS}, so a terminal that syncs can always hold a fresh list (SPEC §7.8).
   */
  async crl(): Promise<Uint8Array> {
    const now = this.#now();
    const version = await this.store.transaction((tx) => tx.crlVersion());
    const c = this.#crlCache;
    if (c && c.version === version && now - c.issued < CRL_REFRESH_SECONDS) return c.bytes;
    const out = await this.store.transaction(async (tx) => {
      const latest = await tx.latestCrl();
      if (latest && now - latest.issued < CRL_REFRESH_SECONDS) return latest;
      return this.#signCrl(tx, now);
    });
    this.#crlCache = out;
    return out.bytes;
  }

  /** Signs the next revocation list version over the current revocations (inside `tx`). */
  async #signCrl(tx: StoreTx, now: number): Promise<{ version: number; issued: number; bytes: Uint8Array }> {
    const version = await tx.nextCrlVersion();
    const revoked = await tx.revokedCards();
    const bytes = signMessage('RevocationList', { version, issued: now, revoked, nextUpdate: now + CRL_REFRESH_SECONDS }, this.#signer);
    const crl = { version, issued: now, bytes };
    await tx.insertCrl(crl);
    return crl;
  }

  /** Revokes a card (inside `tx`); returns the list version that first names it. */
  async #revoke(tx: StoreTx, card: Uint8Array, now: number): Promise<number> {
    const r = await tx.revocation(card);
    if (r) return r.version;
    await tx.insertRevocation({ card, version: (await tx.crlVersion()) + 1, time: now });
    const signed = await this.#signCrl(tx, now);
    return signed.version;
  }

  // ------------------------------------------------------------ evidence (SPEC §7.7 step E)
  /**
   * Records evidence objects (inside `tx`): each object's bytes, its (card, counter) claim and its
   * input claims, in the given order. A claim already held by another object is a fork: its proof
   * is stored and the card revoked. Returns the first fork found, if any.
   */
  async #recordEvidence(tx: StoreTx, objects: readonly EvidenceObject[], now: number): Promise<Fork | undefined> {
    let first: Fork | undefined;
    const anchors = new Map<string, number>();
    for (const o of objects) {
      const ck = toHex(o.card);
      let anchor = anchors.get(ck);
      if (anchor === undefined) {
        const row = await tx.card(o.card);
        if (!row) continue;
        anchor = row.anchorCounter;
        anchors.set(ck, anchor);
      }
      // Beyond the window no honest chain can reach: not evidence of anything (bounded state).
      if (o.counter > anchor + EVIDENCE_WINDOW) continue;
      const forks: Fork[] = [];
      const counterHolder = await tx.claimCounter(o.card, o.counter, o.hash);
      if (counterHolder && !bytesEqual(counterHolder, o.hash))
        forks.push({ card: o.card, firstHash: counterHolder, second: o.bytes, secondHash: o.hash, reason: 'COUNTER_REUSED' });
      for (const id of o.claims) {
        const inputHolder = await tx.claimInput(o.card, id, o.hash);
        if (inputHolder && !bytesEqual(inputHolder, o.hash))
          forks.push({ card: o.card, firstHash: inputHolder, second: o.bytes, secondHash: o.hash, reason: 'INPUT_SPENT' });
      }
      await tx.insertObject(o.hash, o.bytes);
      for (const f of forks) await this.#proof(tx, f, now);
      first ??= forks[0];
    }
    return first;
  }

  /** Stores the evidence of a fork (bounded per card) and revokes the card; returns the revocation version and the first object's bytes. */
  async #proof(tx: StoreTx, f: Fork, now: number): Promise<{ version: number; first: Uint8Array }> {
    if ((await tx.proofCount(f.card)) < MAX_PROOFS_PER_CARD) {
      await tx.insertObject(f.secondHash, f.second);
      await tx.insertProof({ first: f.firstHash, second: f.secondHash, card: f.card, time: now });
    }
    const first = await tx.object(f.firstHash);
    // Every claim holder's bytes are stored with its claim (#recordEvidence): a missing one is a broken store.
    if (!first) throw new Error('the first object of a fork is not stored');
    return { version: await this.#revoke(tx, f.card, now), first };
  }

  // ------------------------------------------------------------ value
  /** Records a validated chain transfer as value (inside `tx`): its payee output pending, its change the card's. Its claims are already held (step E). */
  async #recordValue(tx: StoreTx, vt: SettleValid['chain'][number], ins: readonly SpentCoin[]): Promise<void> {
    await tx.insertTransfer(this.#valueRecord(vt, ins));
  }

  /** The value record of a validated chain transfer (its change output the card's, its mark the coins'). */
  #valueRecord(vt: SettleValid['chain'][number], ins: readonly SpentCoin[]): NewTransfer {
    const t = vt.transfer;
    const change = t.outputs[1];
    return {
      hash: vt.hash,
      card: t.card,
      counter: t.counter,
      amount: t.amount,
      payee: t.payee,
      changeId: change ? outputId(vt.hash, 1) : null,
      changeValue: change?.value ?? 0,
      mark: markBytes(ins[0]?.mark),
      time: t.time,
    };
  }

  // ------------------------------------------------------------ settlement
  /**
   * Settles signed batches. Every batch is verified first; a bad batch
   * refuses the whole request and changes nothing. Returns, per batch, the
   * signed Outcomes in handover order. Replaying a batch returns the stored
   * outcomes byte for byte.
   *
   * This is the ledger's own entry point (tests, tools, the HTTP server after it has
   * authenticated the acquirer, SPEC §7.7.2); it trusts its caller to have done that.
   */
  async settle(batches: readonly Uint8Array[]): Promise<Uint8Array[][]> {
    const now = this.#now();
    const opened = batches.map((x, i) => openBatch(x, i, now, this.#skew, this.#batchContext));
    const counted: (keyof Ledger['stats'])[] = [];
    // Every handover of the request goes to validation first (on the pool: the workers run while
    // this thread applies the batches before them).
    const dispatched = await this.#dispatch(opened);
    // One durable transaction for the whole request (one commit, one fsync): each batch is applied
    // in it in turn, so a later batch's reads see what an earlier one recorded; nobody sees an
    // outcome before the commit, and a failure (a worker that dies included) rolls back every batch of the request.
    const out = await this.store.transaction(async (tx) => {
      const all: Uint8Array[][] = [];
      for (const [k, ob] of opened.entries())
        all.push(await this.#commitBatch(tx, ob, await this.#prepare(tx, ob, dispatched[k]!), counted));
      return all;
    });
    for (const c of counted) this.stats[c]++;
    return out;
  }

  /**
   * Sends the handovers of `opened` that have no stored outcome to validation, each with what the
   * ledger holds about it (read set-based in one transaction BEFORE the write transaction): the
   * registered keys of the cards its transfers name (for the evidence), the facts of those cards
   * (validation.ts `KnownFacts`: a signature the ledger made or verified before is recognised
   * instead of verified again) and the registered banks (SPEC §3.8).
   *
   * Reading these outside the write transaction is sound because every one of them is a
   * monotonic truth: a fact names an exact (signature, signed bytes, key) that verified or that
   * the ledger made, which stays true whatever is committed later; a registered card's
   * certificate (its key) never changes; a bank certificate is the bank's. What is committed in
   * between can only add facts (more signatures verified again: slower, never wrong) or register
   * a card this read did not see: its transfers come back `unkeyed` and `#prepare` finds that
   * handover's evidence inside the write transaction. Which handovers still need an outcome is
   * decided again inside it (`#prepare`); outcomes are never removed, so it is a subset.
   */
  async #dispatch(opened: readonly OpenBatch[]): Promise<Dispatched[]> {
    const now = this.#now();
    const reads = await this.store.transaction(async (tx) => {
      let banks: Map<string, Uint8Array> | undefined;
      const per: { idx: number[]; jobs: SettleJob[] }[] = [];
      for (const ob of opened) {
        const done = new Set((await tx.outcomesOf(ob.hash)).map((r) => r.idx));
        const idx = ob.handovers.map((_, i) => i).filter((i) => !done.has(i));
        if (idx.length === 0) {
          per.push({ idx, jobs: [] });
          continue;
        }
        // Few rows (one per bank): the certificates a handover may name by reference (SPEC §3.8).
        banks ??= new Map((await tx.banks()).map((b) => [toHex(b.kid), b.cert] as const));
        const scans = idx.map((i) => scanHandover(ob.handovers[i]!));
        // The paying card's chain state at its head (SPEC §7.7, resumed chains): validation checks only what follows
        // the head, so the facts of the transfers up to it are not read.
        const states = await this.#chainStates(tx, scans);
        const { facts, keys } = await this.#facts(
          tx,
          scans.flatMap((sc, k) => {
            const st = states[k];
            return st && sc.length > st.count && bytesEqual(sc[st.count]!.hash, st.hash) ? [sc[0]!, ...sc.slice(st.count + 1)] : sc;
          }),
        );
        const notAfter = Math.min(ob.time, now) + this.#skew;
        const jobs = idx.map((i, k): SettleJob => {
          const cards = [...new Set(scans[k]!.map((x) => toHex(x.kid)))];
          const myKeys = new Map<string, Uint8Array>();
          for (const c of cards) {
            const key = keys.get(c);
            if (key) myKeys.set(c, key.publicKey);
          }
          const resume = states[k];
          return {
            handover: ob.handovers[i]!,
            payee: ob.terminal,
            notAfter,
            known: factsOf(facts, cards),
            banks,
            keys: myKeys,
            ...(resume ? { resume } : {}),
          };
        });
        per.push({ idx, jobs });
      }
      return per;
    });
    return reads.map(({ idx, jobs }) => {
      const answers = jobs.length > 0 ? this.#settler.settle(jobs) : Promise.resolve([]);
      // Awaited batch by batch by the write transaction; a failure there is its failure, not an unhandled one here.
      answers.catch(() => undefined);
      return { idx, jobs, answers };
    });
  }

  /**
   * Per scanned handover (validation.ts `scanHandover`: the paying transfer first, then the history),
   * the chain state recorded at its paying card's chain head, when there is one (read in `tx`, set-based).
   * Reading it before the write transaction is sound: a state names exact bytes the ledger validated,
   * which stays true; a head that moved on since only means a longer tail is checked.
   */
  async #chainStates(tx: StoreTx, scans: readonly { kid: Uint8Array; hash: Uint8Array }[][]): Promise<(ChainState | undefined)[]> {
    const cards = new Map<string, Uint8Array>();
    for (const sc of scans) if (sc.length > 1) cards.set(bkey(sc[0]!.kid), sc[0]!.kid);
    if (cards.size === 0) return scans.map(() => undefined);
    const states = new Map<string, ChainState>();
    for (const h of await tx.chainHeadsIn([...cards.values()])) {
      const st = h.state ? decodeChainState(h.state) : undefined;
      if (st && bytesEqual(st.card, h.card) && bytesEqual(st.hash, h.hash)) states.set(bkey(h.card), st);
    }
    return scans.map((sc) => (sc.length > 1 ? states.get(bkey(sc[0]!.kid)) : undefined));
  }

  /**
   * Stored outcomes of a batch (inside the write transaction `tx`) and, for the handovers still
   * without one, their validation and evidence as `#dispatch` sent them.
   */
  async #prepare(tx: StoreTx, ob: OpenBatch, d: Dispatched): Promise<Prepared> {
    const stored = await tx.outcomesOf(ob.hash);
    const nh = ob.handovers.length;
    const out: (Uint8Array | undefined)[] = new Array(nh + ob.adjustments.length);
    for (const r of stored) out[r.idx] = r.bytes;
    const todo = [...out.keys()].filter((i) => i < nh && out[i] === undefined);
    const todoAdj = ob.adjustments.map((_, j) => j).filter((j) => out[nh + j] === undefined);
    const answers = await d.answers;
    const at = new Map(d.idx.map((i, k) => [i, k] as const));
    const results: SettleResult[] = [];
    const evidence: HandoverEvidence[] = [];
    const states: (ChainState | undefined)[] = [];
    for (const i of todo) {
      const k = at.get(i);
      // Outcomes are only ever added: a handover without one now had none at dispatch.
      if (k === undefined) throw new Error(`ledger invariant: handover ${i} of a batch has no outcome and was not validated`);
      const a = answers[k]!;
      results.push(a.result);
      evidence.push(a.unkeyed.length > 0 ? await this.#evidenceAgain(tx, d.jobs[k]!, a) : a.evidence);
      states.push(a.state);
    }
    return { out, todo, todoAdj, results, evidence, states };
  }

  /**
   * A handover whose transfers name a card the dispatch had no registered key for (inside `tx`):
   * when one of them is registered now, its evidence is found again here with the keys of now.
   */
  async #evidenceAgain(tx: StoreTx, job: SettleJob, a: SettleAnswer): Promise<HandoverEvidence> {
    const rows = await tx.cardsIn(a.unkeyed);
    if (rows.length === 0) return a.evidence;
    const keys = new Map(job.keys);
    for (const row of rows) keys.set(toHex(row.kid), this.#cardKey(row).publicKey);
    return handoverEvidence(job.handover, keys, this.#openTransfer, this.#tools.verifierOf(job.known)).evidence;
  }

  /** The registered key of a card row (bounded memo: a card's certificate never changes once registered). */
  #cardKey(row: CardRow): CardKey {
    const k = toHex(row.kid);
    let key = this.#cardKeys.get(k);
    if (!key) {
      key = { publicKey: subjectKey(openSigned('Certificate', row.cert).message).publicKey };
      if (this.#cardKeys.size >= 100_000) this.#cardKeys.delete(this.#cardKeys.keys().next().value as string);
      this.#cardKeys.set(k, key);
    }
    return key;
  }

  /**
   * What the ledger holds about the transfers `scanned` (header key id and payload hash, see
   * validation.ts `scanHandover`), inside `tx`: the registered keys of the cards they name, and
   * per card, as facts (validation.ts `KnownFacts`), the signatures it already checked or made:
   * the transfers it recorded as evidence (verified then with the card's registered key), the
   * card's certificate (registered under its bank), and the receipt and tokens of the card's
   * last sync (its own signatures, under its current key).
   */
  async #facts(
    tx: StoreTx,
    scanned: readonly { kid: Uint8Array; hash: Uint8Array }[],
  ): Promise<{ facts: Map<string, KnownFacts>; keys: Map<string, CardKey> }> {
    const kids = new Map<string, Uint8Array>();
    const hashes = new Map<string, { hash: Uint8Array; card: Uint8Array }>();
    for (const c of scanned) {
      kids.set(toHex(c.kid), c.kid);
      hashes.set(toHex(c.hash), { hash: c.hash, card: c.kid });
    }
    const keys = new Map<string, CardKey>();
    const facts = new Map<string, { signatures: KnownSignature[]; certs: { issuer: Uint8Array; bytes: Uint8Array }[] }>();
    if (kids.size === 0) return { facts, keys };
    const cards = await tx.cardsIn([...kids.values()]);
    const syncs: Uint8Array[] = [];
    for (const row of cards) {
      const k = toHex(row.kid);
      keys.set(k, this.#cardKey(row));
      facts.set(k, { signatures: [], certs: [{ issuer: row.bank, bytes: row.cert }] });
      if (row.anchorSync) syncs.push(row.anchorSync);
    }
    // A stored object is named a fact only under the key its own header names: the card's for a
    // recorded transfer, the ledger's current one for what the ledger signed.
    const fact = (card: Uint8Array, bytes: Uint8Array, kid: Uint8Array, publicKey: Uint8Array) => {
      const p = coseParts(bytes);
      if (!p || p.protectedBytes.length < 18 || !bytesEqual(p.protectedBytes.subarray(p.protectedBytes.length - 16), kid)) return;
      if (p.protectedBytes[p.protectedBytes.length - 18] !== 0x04 || p.protectedBytes[p.protectedBytes.length - 17] !== 0x50) return;
      facts.get(toHex(card))?.signatures.push({ signature: p.signature, message: sigStructure(p.protectedBytes, p.payload), publicKey });
    };
    // Same payload hash, same payload: the stored object names the candidate's card.
    for (const o of hashes.size > 0 ? await tx.objectsIn([...hashes.values()].map((x) => x.hash)) : []) {
      const card = hashes.get(toHex(o.hash))?.card;
      const key = card && keys.get(toHex(card));
      if (card && key) fact(card, o.bytes, card, key.publicKey);
    }
    if (syncs.length > 0) {
      const ledgerKid = this.trust.ledgerKid;
      const ledgerKey = this.trust.ledgerKey;
      for (const s of await tx.syncsIn(syncs)) fact(s.card, s.receipt, ledgerKid, ledgerKey);
      for (const t of await tx.tokensOfSyncs(syncs)) fact(t.card, t.bytes, ledgerKid, ledgerKey);
    }
    return { facts, keys };
  }

  /**
   * Applies a batch inside the request's durable transaction `tx`: for each handover, evidence
   * first, then judgement (SPEC §7.7); nobody sees an outcome before the commit.
   */
  async #commitBatch(tx: StoreTx, ob: OpenBatch, p: Prepared, counted: (keyof Ledger['stats'])[]): Promise<Uint8Array[]> {
    if (p.todo.length === 0 && p.todoAdj.length === 0) return p.out as Uint8Array[];
    for (const r of p.results) if (r.ok && r.resumed !== undefined) counted.push('resumedChains');
    const now = this.#now();
    const fast = this.#setBased ? await this.#settleAllValid(tx, ob, p, now) : undefined;
    if (fast) {
      for (let k = 0; k < p.todo.length; k++) counted.push('settled');
      counted.push('batches', 'batchesSetBased');
      return fast;
    }
    const out = [...p.out];
    // Voids of this batch are known before its handovers are judged (SPEC §7.7.3).
    const voids = p.todoAdj.length > 0 ? await this.#batchVoids(tx, ob, p.todoAdj) : NO_VOIDS;
    for (let k = 0; k < p.todo.length; k++) {
      const idx = p.todo[k]!;
      const r = await this.#apply(tx, ob, idx, p.results[k]!, p.evidence[k]!, now, voids);
      out[idx] = r.bytes;
      if (r.stat) counted.push(r.stat);
    }
    // Then its adjustments, in order, after its handovers.
    for (const j of p.todoAdj) {
      const idx = ob.handovers.length + j;
      const r = await this.#applyAdjustment(tx, ob, j, now);
      await tx.insertOutcome({ batch: ob.hash, idx, bytes: r.bytes });
      out[idx] = r.bytes;
      if (r.stat) counted.push(r.stat);
    }
    await tx.insertBatch(ob.hash, ob.terminal, ob.seq, ob.handovers.length, ob.time);
    counted.push('batches');
    return out as Uint8Array[];
  }

  /**
   * The common case of a batch, set-based: every handover valid, card-signed and new, nothing in
   * the batch or the store that any other case of SPEC §7.7's table would answer. It reads, in a
   * few statements for the whole batch, everything the per-handover path (`#apply`) would read one
   * handover at a time: stored outcomes, verdicts, the transfers held, the tokens spent, the
   * evidence objects' claims and the cards' anchors. When every handover is then SETTLED by that
   * path's rules, it writes the same rows `#apply` would (evidence claims and objects, value
   * records, verdicts, outcomes, the merchant credit) in multi-row statements, and returns the
   * outcomes. Otherwise (a fork, a replay, an invalid handover, an adjustment, a void, a token it
   * did not issue, an object outside the evidence window, anything not SETTLED) it has written
   * nothing and returns undefined, and the batch goes through `#apply` handover by handover.
   *
   * Equivalence with `#apply` in order: claims are checked against the store and against each
   * other within the batch before anything is written (two different objects claiming one counter
   * or input fall back, so no fork is missed); a paying transfer that another handover of the batch
   * carries as history falls back (`#apply` would see it held); every write is then order-free
   * (claims and records of distinct keys, one credit per batch).
   */
  async #settleAllValid(tx: StoreTx, ob: OpenBatch, p: Prepared, now: number): Promise<Uint8Array[] | undefined> {
    const n = p.todo.length;
    if (p.todoAdj.length > 0 || ob.adjustments.length > 0 || n !== ob.handovers.length || n === 0) return undefined;
    const valid: SettleValid[] = [];
    const paying = new Map<string, Uint8Array>();
    for (let k = 0; k < n; k++) {
      const v = p.results[k]!;
      const e = p.evidence[k]!;
      if (!v.ok || !e.paying || !bytesEqual(e.paying, v.transferHash)) return undefined;
      const key = bkey(v.transferHash);
      if (paying.has(key)) return undefined;
      paying.set(key, v.transferHash);
      valid.push(v);
    }
    // Value records (history and paying transfers, once each); a paying transfer carried as another's history falls back.
    const chain = new Map<string, { vt: SettleValid['chain'][number]; ins: readonly SpentCoin[] }>();
    for (const v of valid)
      for (let i = 0; i < v.chain.length; i++) {
        const vt = v.chain[i]!;
        const key = bkey(vt.hash);
        if (i < v.chain.length - 1 && paying.has(key)) return undefined;
        if (!chain.has(key)) chain.set(key, { vt, ins: v.chainInputs[i]! });
      }
    // Evidence objects (once each) and their claims; two objects claiming one counter or input fall back.
    const objects = new Map<string, EvidenceObject>();
    const counters = new Map<string, CounterClaim>();
    const inputs = new Map<string, InputClaim>();
    const cards = new Map<string, Uint8Array>();
    for (const e of p.evidence)
      for (const o of e.objects) {
        const hk = bkey(o.hash);
        if (objects.has(hk)) continue;
        objects.set(hk, o);
        const ck = bkey(o.card);
        cards.set(ck, o.card);
        const cc = `${ck}:${o.counter}`;
        if (counters.has(cc)) return undefined;
        counters.set(cc, { card: o.card, counter: o.counter, hash: o.hash });
        for (const id of o.claims) {
          const ic = `${ck}:${bkey(id)}`;
          if (inputs.has(ic)) return undefined;
          inputs.set(ic, { card: o.card, id, hash: o.hash });
        }
      }
    // Every chain transfer is evidence (its claims are checked here), or the batch goes handover by handover.
    for (const key of chain.keys()) if (!objects.has(key)) return undefined;
    // The history the ledger settled before: a paying transfer whose prev is its card's chain head (migration 5)
    // carries exactly that head's chain (prev links, checked by validation), every object of which is recorded as
    // value and holds its own claims. Its objects need no reads.
    const heads = new Map((await tx.chainHeadsIn(valid.map((v) => v.cardKid))).map((h) => [bkey(h.card), h.hash] as const));
    const known = new Set<string>();
    for (const v of valid) {
      const head = heads.get(bkey(v.cardKid));
      if (head && bytesEqual(head, v.transfer.prev)) for (let i = 0; i < v.chain.length - 1; i++) known.add(bkey(v.chain[i]!.hash));
    }
    // The store: nothing answered for these transfers (for this batch: `#prepare` read its stored outcomes in this
    // transaction, and every handover is still to do), no held paying transfer but a recorded one without a void.
    const payingHashes = [...paying.values()];
    if ((await tx.verdictsIn(payingHashes)).length > 0) return undefined;
    const held = new Set<string>(known);
    for (const t of await tx.transfersIn([...chain.values()].map((c) => c.vt.hash).filter((h) => !known.has(bkey(h))))) {
      const key = bkey(t.hash);
      held.add(key);
      if (paying.has(key) && (t.state !== 'recorded' || (await tx.acceptedVoid(t.hash)))) return undefined;
    }
    // Step 3: every token spent is one the ledger issued to this card, with this value.
    const serials = valid.flatMap((v) => v.tokens.map((t) => t.token.serial));
    const tokens = new Map((serials.length > 0 ? await tx.tokensIn(serials) : []).map((t) => [bkey(t.serial), t] as const));
    for (const v of valid)
      for (const { token } of v.tokens) {
        const row = tokens.get(bkey(token.serial));
        if (!row || !bytesEqual(row.card, v.cardKid) || row.value !== token.value) return undefined;
      }
    // Step E's claims: every new object within its card's evidence window, every claim unheld or held by the object itself.
    for (const [key, c] of counters) if (known.has(bkey(c.hash))) counters.delete(key);
    for (const [key, c] of inputs) if (known.has(bkey(c.hash))) inputs.delete(key);
    const anchors = new Map((await tx.cardsIn([...cards.values()])).map((r) => [bkey(r.kid), r.anchorCounter] as const));
    for (const o of objects.values()) {
      if (known.has(bkey(o.hash))) continue;
      const anchor = anchors.get(bkey(o.card));
      if (anchor === undefined || o.counter > anchor + EVIDENCE_WINDOW) return undefined;
    }
    for (const h of await tx.counterHolders([...counters.values()])) {
      const key = `${bkey(h.card)}:${h.counter}`;
      if (!bytesEqual(counters.get(key)!.hash, h.hash)) return undefined;
      counters.delete(key);
    }
    for (const h of await tx.inputHolders([...inputs.values()])) {
      const key = `${bkey(h.card)}:${bkey(h.id)}`;
      if (!bytesEqual(inputs.get(key)!.hash, h.hash)) return undefined;
      inputs.delete(key);
    }
    // Every handover is SETTLED. Its outcome is signed off this thread (the signer's signAsync) while the rows are written.
    const outcomes: Outcome[] = valid.map((v) => ({
      transfer: v.transferHash,
      status: OutcomeStatus.SETTLED,
      covered: false,
      time: now,
      card: v.cardKid,
      terminal: ob.terminal,
      amount: v.transfer.amount,
    }));
    const signing = Promise.all(outcomes.map((o) => signMessageAsync('Outcome', o, this.#signer)));
    // Awaited below; a failed signature fails the call there (and rolls it back), never as an unhandled rejection.
    signing.catch(() => undefined);
    // Write what #apply would have written.
    // An object whose counter claim is held by itself was stored with that claim: only new ones are stored.
    const fresh = new Set([...counters.values()].map((c) => bkey(c.hash)));
    await tx.insertCounterClaims([...counters.values()]);
    await tx.insertInputClaims([...inputs.values()]);
    await tx.insertObjects([...objects.values()].filter((o) => fresh.has(bkey(o.hash))));
    // A new paying transfer is recorded settled at once; a held (recorded) one is set settled.
    await tx.insertTransfers(
      [...chain]
        .filter(([key]) => !held.has(key))
        .map(([key, c]) => ({ ...this.#valueRecord(c.vt, c.ins), state: paying.has(key) ? ('settled' as const) : ('recorded' as const) })),
    );
    const heldPaying = payingHashes.filter((h) => held.has(bkey(h)));
    if (heldPaying.length > 0) await tx.setTransfersState(heldPaying, 'settled');
    await tx.insertVerdicts(outcomes.map(verdictOf));
    const bytes = await signing;
    await tx.insertOutcomes(bytes.map((b, k) => ({ batch: ob.hash, idx: p.todo[k]!, bytes: b })));
    await tx.creditMerchant(
      ob.terminal,
      valid.reduce((s, v) => s + v.transfer.amount, 0),
    );
    // Each card's chain now holds its claims up to its paying transfer: its head moves there (up only), with the
    // chain state after it, which a later handover carrying this chain resumes from (SPEC §7.7).
    const advanced = new Map<string, ChainHead>();
    for (const [k, v] of valid.entries()) {
      const key = bkey(v.cardKid);
      const at = advanced.get(key);
      const st = p.states[k];
      if (st && !bytesEqual(st.hash, v.transferHash)) throw new Error('ledger invariant: a chain state names another transfer');
      if (!at || at.counter < v.transfer.counter)
        advanced.set(key, { card: v.cardKid, counter: v.transfer.counter, hash: v.transferHash, state: st ? encodeChainState(st) : null });
    }
    await tx.advanceChainHeads([...advanced.values()]);
    await tx.insertBatch(ob.hash, ob.terminal, ob.seq, ob.handovers.length, ob.time);
    const out = [...p.out];
    for (let k = 0; k < n; k++) out[p.todo[k]!] = bytes[k];
    return out as Uint8Array[];
  }

  #outcome(o: Outcome): Uint8Array {
    return signMessage('Outcome', o, this.#signer);
  }

  /** The first verdict on a transfer, as the outcome a replay of it gets (a settled one is ALREADY_SETTLED). */
  async #verdictOutcome(tx: StoreTx, hash: Uint8Array): Promise<Outcome | undefined> {
    const v = await tx.verdict(hash);
    if (!v) return undefined;
    return {
      transfer: hash,
      status: v.status === OutcomeStatus.SETTLED ? OutcomeStatus.ALREADY_SETTLED : outcomeStatus(v.status),
      covered: v.covered,
      time: v.time,
      card: v.card,
      terminal: v.terminal,
      amount: v.amount,
      ...(v.code ? { code: v.code } : {}),
      ...(v.proof1 && v.proof2 ? { proof: [v.proof1, v.proof2] } : {}),
    };
  }

  async #saveVerdict(tx: StoreTx, o: Outcome): Promise<void> {
    await tx.insertVerdict(verdictOf(o));
  }

  /** Applies one handover of a batch: evidence, then the first matching case of SPEC §7.7's table. */
  async #apply(
    tx: StoreTx,
    ob: OpenBatch,
    idx: number,
    v: SettleResult,
    evidence: HandoverEvidence,
    now: number,
    voids: ReadonlyMap<string, Adjustment> = NO_VOIDS,
  ): Promise<Applied> {
    const dup = await tx.outcome(ob.hash, idx);
    if (dup) return { bytes: dup.bytes };
    const store = async (o: Outcome, stat: keyof Ledger['stats'], save: boolean): Promise<Applied> => {
      if (save) await this.#saveVerdict(tx, o);
      const bytes = this.#outcome(o);
      await tx.insertOutcome({ batch: ob.hash, idx, bytes });
      return { bytes, stat };
    };
    // An outcome no cover decided.
    const judged = (status: OutcomeStatus, code: string | undefined, transfer: Uint8Array, card: Uint8Array, amount: number): Outcome => ({
      transfer,
      status,
      covered: false,
      ...(code !== undefined ? { code } : {}),
      time: now,
      card,
      terminal: ob.terminal,
      amount,
    });
    // Step E: evidence before judgement, whatever else is wrong with the handover.
    const fork = await this.#recordEvidence(tx, evidence.objects, now);
    // The paying transfer's name, when it is card-signed (a copy with a broken signature names nothing).
    const paying = v.ok ? v.transferHash : evidence.paying;
    const replay = paying && (await this.#verdictOutcome(tx, paying));
    if (replay) return store(replay, replayStat(replay.status), false);
    if (fork) return store(await this.#doubleSpend(tx, ob, v, fork, paying, now), 'doubleSpends', paying !== undefined);
    if (!v.ok) return store(judged(OutcomeStatus.INVALID, v.code, v.transferHash ?? ZERO32, v.cardKid ?? ZERO16, 0), 'invalid', false);
    if (!(await this.#tokensIssuedTo(tx, v)))
      return store(judged(OutcomeStatus.INVALID, 'TOKEN_INVALID', v.transferHash, v.cardKid, 0), 'invalid', false);
    // The paying transfer as the ledger held it before this handover (learnt from history), if it did.
    const held = await tx.transfer(v.transferHash);
    for (let i = 0; i < v.chain.length; i++) await this.#recordValue(tx, v.chain[i]!, v.chainInputs[i]!);
    const amount = v.transfer.amount;
    // Voided by its payee (a void of this batch, or one accepted before, SPEC §7.7.3; only a transfer held before can
    // have one): recorded as value, never credited; its value returns to the card at its next sync. Voided at the
    // card's sync before any terminal submitted it: the payee is not paid either.
    const byPayee =
      voidNames(voids.get(toHex(v.transferHash)), v.transfer) || (held !== undefined && (await tx.acceptedVoid(v.transferHash)));
    if (byPayee || held?.state === 'voided')
      return store(
        judged(OutcomeStatus.VOIDED, byPayee ? AdjustmentCode.MERCHANT_VOID : 'VOIDED', v.transferHash, v.cardKid, amount),
        'voided',
        true,
      );
    await tx.setTransferState(v.transferHash, 'settled');
    await tx.creditMerchant(ob.terminal, amount);
    return store(judged(OutcomeStatus.SETTLED, undefined, v.transferHash, v.cardKid, amount), 'settled', true);
  }

  // ------------------------------------------------------------ voids and refunds (SPEC §7.7.3)
  /** The voids of a batch not answered before, by the transfer they name (the first one per transfer). */
  async #batchVoids(tx: StoreTx, ob: OpenBatch, todoAdj: readonly number[]): Promise<Map<string, Adjustment>> {
    const out = new Map<string, Adjustment>();
    for (const j of todoAdj) {
      const a = ob.adjustments[j]!.opened?.adjustment;
      if (!a || a.kind !== AdjustmentKind.VOID || (await tx.adjustment(ob.terminal, a.id))) continue;
      const k = toHex(a.transfer);
      if (!out.has(k)) out.set(k, a);
    }
    return out;
  }

  /**
   * Answers adjustment `j` of a batch (SPEC §7.7.3): its stored outcome again, or a new verdict stored with it.
   * Refusals change nothing but the stored answer.
   */
  async #applyAdjustment(tx: StoreTx, ob: OpenBatch, j: number, now: number): Promise<Applied> {
    const slot = ob.adjustments[j]!;
    const refusal = (code: AdjustmentCode, a: Adjustment | undefined, named: boolean): Outcome => ({
      transfer: a?.transfer ?? ZERO32,
      status: OutcomeStatus.INVALID,
      covered: false,
      code,
      time: now,
      card: a?.card ?? ZERO16,
      terminal: ob.terminal,
      amount: a?.amount ?? 0,
      ...(named && a ? { adjustment: a.id } : {}),
    });
    const opened = slot.opened;
    if (!opened)
      return { bytes: this.#outcome(refusal(AdjustmentCode.ADJUSTMENT_INVALID, slot.claimed, false)), stat: 'adjustmentsRefused' };
    const a = opened.adjustment;
    const prior = await tx.adjustment(ob.terminal, a.id);
    if (prior) {
      if (bytesEqual(prior.hash, opened.hash)) return { bytes: prior.outcome };
      return { bytes: this.#outcome(refusal(AdjustmentCode.ID_CONFLICT, a, true)), stat: 'adjustmentsRefused' };
    }
    const o = await this.#judgeAdjustment(tx, ob, a, opened.hash, now, (code) => refusal(code, a, true));
    const bytes = this.#outcome(o);
    await tx.insertAdjustment({
      terminal: ob.terminal,
      id: a.id,
      hash: opened.hash,
      kind: a.kind,
      transfer: a.transfer,
      card: a.card,
      amount: a.amount,
      status: o.status,
      code: o.code ?? null,
      outcome: bytes,
      time: now,
    });
    const stat =
      o.status === OutcomeStatus.REFUNDED ? 'refunds' : o.status === OutcomeStatus.VOIDED ? 'merchantVoids' : 'adjustmentsRefused';
    return { bytes, stat };
  }

  /** The verdict on a new adjustment (inside `tx`; an accepted refund moves value). */
  async #judgeAdjustment(
    tx: StoreTx,
    ob: OpenBatch,
    a: Adjustment,
    hash: Uint8Array,
    now: number,
    refuse: (code: AdjustmentCode) => Outcome,
  ): Promise<Outcome> {
    // The transfer as the card signed it: every transfer the ledger holds (as value or as evidence) is a stored object.
    const bytes = await tx.object(a.transfer);
    let t: Transfer | undefined;
    if (bytes) {
      try {
        t = this.#openTransfer(bytes).message;
      } catch {
        t = undefined; // another object (a sync request): no transfer of that name
      }
    }
    if (!t) return refuse(AdjustmentCode.TRANSFER_UNKNOWN);
    if (!bytesEqual(t.payee, ob.terminal)) return refuse(AdjustmentCode.NOT_PAYEE);
    if (!bytesEqual(t.card, a.card) || t.currency !== a.currency || (a.kind === AdjustmentKind.VOID && a.amount !== t.amount))
      return refuse(AdjustmentCode.ADJUSTMENT_MISMATCH);
    const verdict = await tx.verdict(a.transfer);
    const accepted = (status: OutcomeStatus, amount: number, code?: string): Outcome => ({
      transfer: a.transfer,
      status,
      covered: false,
      ...(code ? { code } : {}),
      time: now,
      card: t.card,
      terminal: ob.terminal,
      amount,
      adjustment: a.id,
    });
    if (a.kind === AdjustmentKind.VOID) {
      if (verdict) {
        if (verdict.status === OutcomeStatus.SETTLED) return refuse(AdjustmentCode.VOID_TOO_LATE);
        if (verdict.status !== OutcomeStatus.VOIDED) return refuse(AdjustmentCode.NOT_VOIDABLE);
      } else if (!(await tx.transfer(a.transfer))) {
        // Evidence only (a handover judged INVALID, the second object of a fork): not value, nothing to void.
        return refuse(AdjustmentCode.NOT_VOIDABLE);
      }
      // Judged VOIDED, or held as value without a verdict: voided by its payee (stored with this answer).
      return accepted(OutcomeStatus.VOIDED, t.amount, AdjustmentCode.MERCHANT_VOID);
    }
    if (!verdict || verdict.status !== OutcomeStatus.SETTLED) return refuse(AdjustmentCode.NOT_SETTLED);
    if ((await tx.refundedTotal(a.transfer)) + a.amount > t.amount) return refuse(AdjustmentCode.REFUND_EXCEEDS);
    // The credit keeps the mark of the value the card paid with (its inputs' mark, kept with the value record), so a
    // refund never frees purpose-bound value, even when the payee output was the mark's last hop.
    const mark = (await tx.transfer(a.transfer))?.mark ?? null;
    if (mark !== null) {
      // Each mark class is a token of its own at the next sync: bounded, as for pending loads.
      const classes = new Set((await tx.pendingRefundCredits(t.card)).flatMap((c) => (c.mark ? [toHex(c.mark)] : [])));
      if (!classes.has(toHex(mark)) && classes.size >= MAX_PENDING_MARK_CLASSES) return refuse(AdjustmentCode.REFUND_MARKS);
    }
    if (!(await tx.debitMerchant(ob.terminal, a.amount))) return refuse(AdjustmentCode.MERCHANT_FUNDS);
    await tx.insertRefundCredit({ adjustment: hash, card: t.card, amount: a.amount, mark, time: now });
    return accepted(OutcomeStatus.REFUNDED, a.amount);
  }

  /** What only the ledger knows (SPEC §7.7 step 3): every token the handover spends is one it issued to this card, with this value. */
  async #tokensIssuedTo(tx: StoreTx, v: SettleValid): Promise<boolean> {
    for (const { token } of v.tokens) {
      const row = await tx.token(token.serial);
      if (!row || !bytesEqual(row.card, v.cardKid) || row.value !== token.value) return false;
    }
    return true;
  }

  /** The DOUBLE_SPEND outcome of a handover whose objects fork the card's chain, with cover decided by SPEC §7.7's rule. */
  async #doubleSpend(tx: StoreTx, ob: OpenBatch, v: SettleResult, f: Fork, paying: Uint8Array | undefined, now: number): Promise<Outcome> {
    const { version, first } = await this.#proof(tx, f, now);
    let covered = false;
    const amount = v.ok ? v.transfer.amount : (v.amount ?? 0);
    if (v.ok && (await this.#coverable(tx, ob, v, first, version))) {
      const bank = v.cardChain[1]!;
      await tx.debitBank(bank.kid, amount);
      await tx.creditMerchant(ob.terminal, amount);
      await tx.insertCover(
        { transfer: v.transferHash, bank: bank.kid, terminal: ob.terminal, card: v.cardKid, counter: v.transfer.counter, amount },
        v.inputs.map((c) => c.id),
      );
      covered = true;
    }
    // The proof: both card-signed objects (a SyncRequest too large for the Outcome stays in the ledger's proof table).
    const fits = first.length <= MAX_TRANSFER && f.second.length <= MAX_TRANSFER;
    return {
      transfer: paying ?? v.transferHash ?? ZERO32,
      status: OutcomeStatus.DOUBLE_SPEND,
      covered,
      code: f.reason,
      time: now,
      card: f.card,
      terminal: ob.terminal,
      amount,
      ...(fits ? { proof: [first, f.second] } : {}),
    };
  }

  /** SPEC §7.7 cover rules 2-6 for a valid handover whose chain forks (rule 1 is `v.ok`). */
  async #coverable(tx: StoreTx, ob: OpenBatch, v: SettleValid, firstBytes: Uint8Array, revokedAt: number): Promise<boolean> {
    const t = v.transfer;
    // 2: the declared list is one the ledger published, before the batch, fresh under the terminal's
    // certified policy at the transfer time, and older than the card's revocation.
    const crl = await tx.crl(ob.crlVersion);
    if (!crl) return false;
    const issued = crl.issued;
    if (issued > ob.time + this.#skew || issued < t.time - ob.crlMaxAge || ob.crlVersion >= revokedAt) return false;
    // 3: a terminal following the rules holds its own first approval and declines the second.
    const first = transferPayee(firstBytes);
    if (first && bytesEqual(first, ob.terminal)) return false;
    // 4: once per (terminal, card, counter) and per coin.
    if (await tx.hasCover(ob.terminal, v.cardKid, t.counter)) return false;
    for (const c of v.inputs) if (await tx.hasCoverCoin(v.cardKid, c.id)) return false;
    // 5: the bound: what the bank allowed the card offline between two syncs.
    const sofar = await tx.coveredTotal(v.cardKid);
    if (sofar + t.amount > v.cardChain[0]!.claims.limits!.offlineTotal) return false;
    // 6: the issuing bank's floor.
    const bank = await tx.bank(v.issuingBankKid);
    if (!bank || bank.balance - t.amount < -bank.creditLine) return false;
    return true;
  }

  // ------------------------------------------------------------ sync
  /**
   * A card's signed SyncRequest: records it and its history as evidence, then checks it,
   * records its history as value, spends its holdings, voids orphans (older than the window,
   * or dated in the future), delivers pending loads, and returns the signed SyncReceipt with
   * fresh tokens. The same request again returns the same receipt.
   *
   * A revoked card is verified and recorded the same way, but its key is not
   * trusted with fresh tokens: its pending loads go back to their banks, and
   * its balance plus voided value is credited to its issuing bank (which pays
   * the owner) and reported as `redeemed` in a receipt without tokens (SPEC §7.6).
   *
   * The steps, each a method below: read the card's state and verify the request
   * (`#syncingCard`); record its evidence and commit it (`#recordSyncEvidence`); check the chain
   * (`#checkSyncChain`); then in one transaction: the anchor is unchanged
   * (`#checkAnchorUnchanged`), settle the offline chain (`#settleOfflineChain`), void orphans
   * (`#voidOrphans`), pay out (`#issueFreshTokens`, or `#redeemToIssuer` for a revoked card) and
   * sign the receipt (`#signReceipt`).
   */
  async sync(requestBytes: Uint8Array): Promise<Uint8Array> {
    return this.#syncCard(requestBytes, false);
  }

  /**
   * A defund (SPEC §7.6.3): the card's signed SyncRequest, verified and recorded exactly as a
   * {@link sync}, answered like a revoked card's sync: no tokens, pending loads back to their
   * banks, and `redeemed` = its holdings plus voided orphans, credited to the card's issuing
   * bank (which pays the value into the owner's account). The receipt leaves the card empty; the
   * card stays valid and can be loaded again. A request the ledger already answered gets that
   * answer again (a sync's receipt stays a sync's).
   */
  async defund(requestBytes: Uint8Array): Promise<Uint8Array> {
    return this.#syncCard(requestBytes, true);
  }

  async #syncCard(requestBytes: Uint8Array, defund: boolean): Promise<Uint8Array> {
    const req = openSyncRequest(requestBytes);
    const card = await this.#syncingCard(req);
    const prior = await this.store.transaction((tx) => tx.syncOf(req.hash));
    if (prior) return prior.receipt;
    const now = this.#now();
    await this.#recordSyncEvidence(req, card, now);
    const checked = await this.#checkSyncChain(req, card);
    const done = await this.store.transaction(async (tx) => {
      const again = await tx.syncOf(req.hash);
      if (again) return { receipt: again.receipt, voided: 0 };
      await this.#checkAnchorUnchanged(tx, card.row);
      await this.#settleOfflineChain(tx, checked);
      const orphans = await this.#voidOrphans(tx, req.message.card, now);
      const refunds = await tx.pendingRefundCredits(req.message.card);
      // A revoked card, or a defund: no fresh tokens, the value goes to the issuing bank.
      const payout =
        defund || (await tx.revocation(req.message.card))
          ? await this.#redeemToIssuer(tx, req, card.row, checked.holdings, orphans, refunds)
          : await this.#issueFreshTokens(tx, req, card.cert, checked.holdings, orphans, refunds, now);
      return { receipt: await this.#signReceipt(tx, req, payout, orphans, now), voided: orphans.length };
    });
    this.stats.voided += done.voided;
    this.stats.syncs++;
    return done.receipt;
  }

  /** Sync step 1, the card's state: its registered row, and the request verified with its key. */
  async #syncingCard(req: OpenSyncRequest): Promise<SyncingCard> {
    const row = await this.store.transaction((tx) => tx.card(req.message.card));
    if (!row) throw new LedgerError(LedgerErrorCode.CARD_UNKNOWN, 'card not registered');
    return { row, ...verifySyncRequest(req, row.cert, this.#verifier) };
  }

  /**
   * Sync step 2 (SPEC §7.7 step E): the request and every history transfer the card key signed are
   * evidence, recorded and committed before anything is judged, so a fork shows even in a sync that
   * is then refused (DOUBLE_SPEND: the proof is stored and the card revoked).
   */
  async #recordSyncEvidence(req: OpenSyncRequest, card: SyncingCard, now: number): Promise<void> {
    const evidence = syncEvidence(req, card.publicKey, this.#openTransfer, this.#memo);
    const fork = await this.store.transaction((tx) => this.#recordEvidence(tx, evidence, now));
    if (fork)
      throw new LedgerError(LedgerErrorCode.DOUBLE_SPEND, `the card forked its chain (${fork.reason}); it is revoked`, {
        detail: fork.reason,
      });
  }

  /**
   * Sync step 3 (SPEC §7.6 step J): the history continues the chain from the card's anchor, spending
   * the coins the card held there (the tokens its last sync issued, none before the first), and the
   * request conserves value (checks.ts `checkSyncChain`).
   */
  async #checkSyncChain(req: OpenSyncRequest, card: SyncingCard): Promise<CheckedSync> {
    const sync = card.row.anchorSync;
    const tokens = sync ? await this.store.transaction((tx) => tx.tokensOfSync(sync)) : [];
    return checkSyncChain(
      req,
      { prev: card.row.anchor, counter: card.row.anchorCounter },
      anchorCoins(tokens.map((t) => t.bytes)),
      card.publicKey,
      {
        verifier: this.#memo,
        openTransfer: this.#openTransfer,
      },
    );
  }

  /** The chain was checked against the anchor read before this transaction: it must still be the card's anchor. */
  async #checkAnchorUnchanged(tx: StoreTx, card: CardRow): Promise<void> {
    const cur = await tx.card(card.kid);
    if (!cur || !bytesEqual(cur.anchor, card.anchor))
      throw new LedgerError(LedgerErrorCode.SYNC_INVALID, 'the card synced concurrently; retry', { detail: CONCURRENT_SYNC_DETAIL });
  }

  /** The offline transfers since the anchor become value records (their payees are paid when a terminal submits them). */
  async #settleOfflineChain(tx: StoreTx, checked: CheckedSync): Promise<void> {
    for (let i = 0; i < checked.chain.length; i++) await this.#recordValue(tx, checked.chain[i]!, checked.chainInputs[i]!);
  }

  /**
   * Orphans: the card's transfers no terminal submitted within the void window, and transfers dated
   * in the future (they cannot settle now; a future date must not freeze the cardholder's value).
   * They are voided; their value returns to the card (or, revoked, to its issuing bank).
   */
  async #voidOrphans(tx: StoreTx, card: Uint8Array, now: number): Promise<TransferRow[]> {
    // Transfers their payee voided (SPEC §7.7.3) come back whatever their age; then the orphans, at most maxHistory in all.
    const byPayee = await tx.payeeVoidedOf(card, LIMITS.maxHistory);
    const seen = new Set(byPayee.map((o) => toHex(o.hash)));
    const window = await tx.recordedOutside(card, now - this.#voidWindow, now + this.#skew, LIMITS.maxHistory);
    const orphans = [...byPayee, ...window.filter((o) => !seen.has(toHex(o.hash)))].slice(0, LIMITS.maxHistory);
    for (const o of orphans) await tx.setTransferState(o.hash, 'voided');
    return orphans;
  }

  /** Closes the card's pending loads at this sync: delivered (returns them), or cancelled back to the banks that ordered them (returns none). */
  async #closeLoads(tx: StoreTx, req: OpenSyncRequest, deliver: boolean): Promise<LoadRow[]> {
    const loads = await tx.pendingLoads(req.message.card);
    if (!deliver) for (const l of loads) await tx.creditBank(l.bank, l.amount);
    await tx.closePendingLoads(req.message.card, deliver ? 'delivered' : 'cancelled', req.hash);
    return deliver ? loads : [];
  }

  /**
   * A revoked card: no fresh tokens for a compromised key. Pending loads return to the banks that
   * ordered them, and everything the card held (holdings and voided orphans) is credited to its
   * issuing bank, which pays the owner out of band (`redeemed`, SPEC §7.6).
   */
  async #redeemToIssuer(
    tx: StoreTx,
    req: OpenSyncRequest,
    card: CardRow,
    holdings: readonly SpentCoin[],
    orphans: readonly TransferRow[],
    refunds: readonly RefundCreditRow[],
  ): Promise<SyncPayout> {
    await this.#closeLoads(tx, req, false);
    const refunded = sumAmounts(refunds.map((r) => r.amount));
    if (refunds.length > 0) await tx.closeRefundCredits(req.message.card, 'redeemed', req.hash);
    const redeemed = sumAmounts([...holdings.map((c) => c.value), ...orphans.map((o) => o.amount), refunded]);
    // A registered card's issuing bank is registered (registerCard): if not, the books are broken (500 INTERNAL, rolled back).
    if (redeemed > 0 && !(await tx.creditBank(card.bank, redeemed)))
      throw new Error('the issuing bank of a registered card is not registered');
    return { tokens: [], loaded: 0, redeemed, refunded };
  }

  /** Fresh tokens for what the card holds, its voided orphans and its delivered loads: one per mark class (marks survive a sync; a load carries its order's mark). */
  async #issueFreshTokens(
    tx: StoreTx,
    req: OpenSyncRequest,
    cert: MessageOf<'Certificate'>,
    holdings: readonly SpentCoin[],
    orphans: readonly TransferRow[],
    refunds: readonly RefundCreditRow[],
    now: number,
  ): Promise<SyncPayout> {
    const loads = await this.#closeLoads(tx, req, true);
    const refunded = sumAmounts(refunds.map((r) => r.amount));
    if (refunds.length > 0) await tx.closeRefundCredits(req.message.card, 'delivered', req.hash);
    const loaded = sumAmounts(loads.map((l) => l.amount));
    const classes = new Map<string, { mark?: Mark; value: number }>();
    const add = (mark: Mark | undefined, value: number) => {
      const k = mark ? toHex(markBytes(mark)!) : '';
      const e = classes.get(k) ?? { ...(mark ? { mark } : {}), value: 0 };
      e.value += value;
      classes.set(k, e);
    };
    for (const c of holdings) add(c.mark, c.value);
    for (const o of orphans) add(markFrom(o.mark), o.amount);
    for (const l of loads) add(markFrom(l.mark), l.amount);
    for (const r of refunds) add(markFrom(r.mark), r.amount);
    const tokens: Uint8Array[] = [];
    let i = 0;
    for (const [, cls] of [...classes.entries()].sort(([a], [z]) => (a < z ? -1 : a > z ? 1 : 0))) {
      if (cls.value <= 0) continue;
      const serial = sha256(concatBytes(SERIAL_DOMAIN, req.hash, new Uint8Array([i++]))).slice(0, 16);
      const bytes = signMessage(
        'Token',
        {
          serial,
          value: cls.value,
          currency: cert.currency ?? 398,
          owner: req.message.card,
          issued: now,
          ...(cls.mark ? { mark: cls.mark } : {}),
        },
        this.#signer,
      );
      await tx.insertToken({ serial, card: req.message.card, value: cls.value, sync: req.hash, bytes });
      tokens.push(bytes);
    }
    return { tokens, loaded, redeemed: 0, refunded };
  }

  /** The last step: the signed SyncReceipt, stored with the request, and the card's anchor moved to it. */
  async #signReceipt(
    tx: StoreTx,
    req: OpenSyncRequest,
    payout: SyncPayout,
    orphans: readonly TransferRow[],
    now: number,
  ): Promise<Uint8Array> {
    const m = req.message;
    const receipt = signMessage(
      'SyncReceipt',
      {
        card: m.card,
        counter: m.counter,
        request: req.hash,
        tokens: payout.tokens,
        time: now,
        loaded: payout.loaded,
        voided: orphans.map((o) => o.hash),
        ...(payout.redeemed > 0 ? { redeemed: payout.redeemed } : {}),
        ...(payout.refunded > 0 ? { refunded: payout.refunded } : {}),
      },
      this.#signer,
    );
    await tx.setAnchor(m.card, payloadHash(openSigned('SyncReceipt', receipt).cose), m.counter, req.hash);
    await tx.insertSync({ request: req.hash, card: m.card, receipt });
    return receipt;
  }

  // ------------------------------------------------------------ lost or stolen cards (SPEC §7.9)
  /** Opens and verifies a card block or restore request of the card's issuing bank; answers the card and its bank. */
  async #bankRequest(kind: CardBankRequestKind, bytes: Uint8Array): Promise<{ card: Uint8Array; bank: Uint8Array }> {
    let opened;
    try {
      opened = openCardBankRequest(kind, bytes);
    } catch (e) {
      throw new LedgerError(LedgerErrorCode.MALFORMED, isDtError(e) ? e.code : `card ${kind} request malformed`);
    }
    const { cose, request } = opened;
    const [bank, card] = await this.store.transaction(async (tx) => [await tx.bank(cose.kid), await tx.card(request.card)] as const);
    if (!bank) throw new LedgerError(LedgerErrorCode.BANK_UNKNOWN, 'signer is not a registered bank', { detail: BANK_REQUEST_DETAIL });
    try {
      const [verified] = verifyChain([bank.cert], {
        root: this.trust.root,
        at: this.#now(),
        leafRole: Role.BANK,
        verifier: this.#verifier,
      });
      verifyCoseSign1(cose, verified!.publicKey, this.#verifier);
    } catch (e) {
      throw new LedgerError(LedgerErrorCode.BAD_SIGNATURE, isDtError(e) ? e.code : `card ${kind} request signature invalid`, {
        detail: BANK_REQUEST_DETAIL,
      });
    }
    if (!card) throw new LedgerError(LedgerErrorCode.CARD_UNKNOWN, 'card not registered');
    if (!bytesEqual(card.bank, cose.kid)) throw new LedgerError(LedgerErrorCode.NOT_PERMITTED, 'card issued by another bank');
    return { card: request.card, bank: cose.kid };
  }

  /**
   * The card's issuing bank blocks a lost or stolen card (SPEC §7.9): the card is revoked (a new
   * revocation list names it, which terminals fetch at their next sync, as for a fork) and the
   * block is recorded with the ledger time. Blocking a blocked card answers the first block again.
   */
  async blockCard(bytes: Uint8Array): Promise<CardBlockAnswer> {
    const { card, bank } = await this.#bankRequest('block', bytes);
    const now = this.#now();
    const row = await this.store.transaction(async (tx) => {
      const prior = await tx.cardBlock(card);
      if (!prior) await tx.insertCardBlock(card, bank, now);
      const version = await this.#revoke(tx, card, now);
      return { time: prior ? prior.time : now, version };
    });
    return { card: toHex(card), crlVersion: row.version, blockedAt: row.time, restoreAfter: row.time + this.#voidWindow };
  }

  /**
   * After the void window since its block, the value of a blocked card goes back to its issuing bank
   * (SPEC §7.9): every coin of the card the ledger knows as unspent (the tokens of its last sync and the
   * change of its recorded transfers) and every recorded transfer no terminal settled by now (voided)
   * are credited to the bank; its pending loads go back to the banks that ordered them. The coins are
   * claimed by the ledger-signed restitution record, which the ledger keeps as the card's last sync: a
   * later handover or sync that spends them forks the chain (a double spend, covered by the §7.7 rules).
   * A second restore answers the first record again.
   */
  async restoreCard(bytes: Uint8Array): Promise<CardRestoreAnswer> {
    const { card, bank } = await this.#bankRequest('restore', bytes);
    const now = this.#now();
    const out = await this.store.transaction(async (tx) => {
      const block = await tx.cardBlock(card);
      if (!block) throw new LedgerError(LedgerErrorCode.NOT_BLOCKED, 'the card is not blocked by its bank');
      if (block.restored) {
        const prior = await tx.syncOf(block.restored);
        if (!prior) throw new Error('card_blocks: the restitution record is not there');
        return { record: prior.receipt, blockedAt: block.time };
      }
      if (now < block.time + this.#voidWindow)
        throw new LedgerError(LedgerErrorCode.TOO_EARLY, `the void window ends at ${block.time + this.#voidWindow}`, {
          detail: String(block.time + this.#voidWindow),
        });
      const coins = await tx.unspentCoinsOf(card);
      const recorded = await tx.recordedTransfersOf(card);
      // Refunds merchants gave the card and it never synced back (SPEC §7.7.3) go to the bank too.
      const refunds = await tx.pendingRefundCredits(card);
      const amount = sumAmounts([...coins.map((c) => c.value), ...recorded.map((r) => r.amount), ...refunds.map((r) => r.amount)]);
      const loads = await tx.pendingLoads(card);
      const cancelled = sumAmounts(loads.map((l) => l.amount));
      const record = signRestitution({ card, bank, amount, time: now, blocked: block.time, cancelled }, this.#signer);
      const hash = payloadHash(openRestitution(record).cose);
      for (const l of loads) await tx.creditBank(l.bank, l.amount);
      await tx.closePendingLoads(card, 'cancelled', hash);
      for (const r of recorded) await tx.setTransferState(r.hash, 'voided');
      if (refunds.length > 0) await tx.closeRefundCredits(card, 'redeemed', hash);
      // The coins are the restitution's: it holds their claims (a claim an unsettled evidence object held moves to it).
      for (const c of coins) await tx.takeClaim(card, c.id, hash);
      // Value records keep their claims, so the card's chain head stays true; it goes anyway: no shortcut for a restored card.
      await tx.dropChainHead(card);
      await tx.insertObject(hash, record);
      await tx.insertSync({ request: hash, card, receipt: record });
      if (amount > 0 && !(await tx.creditBank(bank, amount)))
        throw new Error('ledger invariant: the issuing bank of the card is not registered');
      await tx.setCardRestored(card, hash);
      this.stats.voided += recorded.length;
      return { record, blockedAt: block.time };
    });
    const r = openRestitution(out.record).record;
    return {
      card: toHex(r.card),
      bank: toHex(r.bank),
      amount: r.amount,
      cancelledLoads: r.cancelled,
      time: r.time,
      blockedAt: out.blockedAt,
      record: toHex(out.record),
    };
  }

  /** A bank's balance and credit line (SPEC §7.6.2). */
  async bankInfo(bank: Uint8Array): Promise<{ bank: string; balance: number; creditLine: number } | undefined> {
    const r = await this.store.transaction((tx) => tx.bank(bank));
    return r ? { bank: toHex(bank), balance: r.balance, creditLine: r.creditLine } : undefined;
  }

  /** A card as the ledger knows it: its issuing bank, revocation, block and restitution (SPEC §7.9). */
  async cardInfo(card: Uint8Array): Promise<CardInfo | undefined> {
    return this.store.transaction(async (tx) => {
      const c = await tx.card(card);
      if (!c) return undefined;
      const rev = await tx.revocation(card);
      const blk = await tx.cardBlock(card);
      const loads = await tx.pendingLoads(card);
      const pending = sumAmounts(loads.map((l) => l.amount));
      const refunds = sumAmounts((await tx.pendingRefundCredits(card)).map((r) => r.amount));
      const byMark = new Map<string, { mark: string | null; synced: number; pendingLoads: number }>();
      const entry = (mark: Uint8Array | null) => {
        const k = mark ? toHex(mark) : '';
        const e = byMark.get(k) ?? { mark: mark ? k : null, synced: 0, pendingLoads: 0 };
        byMark.set(k, e);
        return e;
      };
      for (const t of c.anchorSync ? await tx.tokensOfSync(c.anchorSync) : [])
        entry(markBytes(openSigned('Token', t.bytes).message.mark)).synced += t.value;
      for (const l of loads) entry(l.mark).pendingLoads += l.amount;
      return {
        card: toHex(card),
        bank: toHex(c.bank),
        revokedIn: rev ? rev.version : null,
        blockedAt: blk ? blk.time : null,
        restoreAfter: blk ? blk.time + this.#voidWindow : null,
        restored: !!blk?.restored,
        pendingLoads: pending,
        pendingRefunds: refunds,
        byMark: [...byMark.entries()].sort(([a], [z]) => (a < z ? -1 : a > z ? 1 : 0)).map(([, e]) => e),
      };
    });
  }

  // ------------------------------------------------------------ audit
  /**
   * The books: the supply invariant (value is neither created nor lost), every balance at or
   * above its floor, every card's cover within its bound, and the lists of proofs and revocations.
   */
  async audit(): Promise<AuditReport> {
    return this.store.transaction(async (tx) => {
      const totals = await tx.supplyTotals();
      const { issued, bankBalances, pendingLoads, unspentTokens, unspentChange, pendingPayee, redeemed, pendingRefunds } = totals;
      const difference = issued - (bankBalances + pendingLoads + unspentTokens + unspentChange + pendingPayee + redeemed + pendingRefunds);
      const floorBreaches: AuditReport['floorBreaches'] = [
        ...(await tx.banksBelowFloor()).map((r) => ({
          kind: 'bank' as const,
          kid: toHex(r.kid),
          balance: r.balance,
          floor: -r.creditLine,
        })),
        ...(await tx.merchantsBelowZero()).map((r) => ({ kind: 'merchant' as const, kid: toHex(r.kid), balance: r.balance, floor: 0 })),
      ];
      const coverBreaches: AuditReport['coverBreaches'] = [];
      for (const r of await tx.coverTotalsByCard()) {
        const bound = openSigned('Certificate', r.cert).message.limits?.offlineTotal ?? 0;
        if (r.covered > bound) coverBreaches.push({ card: toHex(r.card), covered: r.covered, bound });
      }
      const proofs = (await tx.proofs()).map((r) => ({
        first: toHex(r.first),
        second: toHex(r.second),
        card: toHex(r.card),
        time: r.time,
      }));
      const revocations = (await tx.revocations()).map((r) => ({ card: toHex(r.card), version: r.version, time: r.time }));
      return {
        ok: difference === 0 && floorBreaches.length === 0 && coverBreaches.length === 0,
        issued,
        bankBalances,
        pendingLoads,
        unspentTokens,
        unspentChange,
        pendingPayee,
        redeemed,
        pendingRefunds,
        covered: totals.covered,
        difference,
        floorBreaches,
        coverBreaches,
        proofs,
        revocations,
        crlVersion: totals.crlVersion,
      };
    });
  }

  /** Settled value per merchant terminal (hex kid -> amount). */
  async merchantBalances(): Promise<Record<string, number>> {
    return this.store.transaction(async (tx) => Object.fromEntries((await tx.merchants()).map((r) => [toHex(r.kid), r.balance])));
  }

  /** Balance per bank (hex kid -> amount). */
  async bankBalances(): Promise<Record<string, number>> {
    return this.store.transaction(async (tx) => Object.fromEntries((await tx.banks()).map((r) => [toHex(r.kid), r.balance])));
  }

  /** Counts of settled transfers and claim entries (used by tests and the crash test). */
  async counts(): Promise<{ settled: number; spent: number; transfers: number; verdicts: number }> {
    return this.store.transaction((tx) => tx.counts());
  }
}

/** A stored verdict's status as an Outcome status (a value outside the table is a broken store). */
function outcomeStatus(status: number): OutcomeStatus {
  const known = Object.values(OutcomeStatus).find((x) => x === status);
  if (known === undefined) throw new Error(`verdicts: unknown outcome status ${status}`);
  return known;
}
