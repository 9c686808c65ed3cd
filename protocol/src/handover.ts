/**
 * Offline validation of a handover: SPEC.md §7.4 (steps 1-7) and §7.4.1
 * (the check table), shared by the terminal (before it approves) and the
 * ledger (at settlement). Pure: no I/O, no clock; the caller passes the time
 * rules, the revocation lookup and the verifier.
 *
 * Validation never throws for bad input: it returns `{ ok: false, code,
 * index?, detail? }` with a stable {@link HandoverCode} (the first failing
 * step wins), or `{ ok: true, ... }` with everything the caller needs to
 * settle or store the payment.
 *
 * @example
 * const trust = createTrustStore({ root: rootCert, ledgerCert, at: now });
 * const r = validateHandover(handoverBytes, { trust, request: myRequest, isRevoked: (kid) => crl.has(toHex(kid)) });
 * if (!r.ok) decline(r.code);
 *
 * @module
 */
import { DtError, ErrorCode, isDtError } from './errors.ts';
import { bytesEqual, toHex } from './bytes.ts';
import { addAmounts, sumAmounts } from './amounts.ts';
import { GENESIS_PREV, outputId } from './ids.ts';
import { keyId, nobleVerifier, type Verifier } from './crypto/suite.ts';
import { decodeRelaxed, encodeDeterministic } from './cbor/deterministic.ts';
import { encodeStruct } from './schema/dsl.ts';
import {
  Cvm,
  LIMITS,
  MarkSchema,
  Role,
  type Handover,
  type Mark,
  type PaymentRequest,
  type SyncReceipt,
  type Token,
  type Transfer,
} from './schema/messages.ts';
import { decodeMessage, openSigned, payloadHash, verifySigned, encodeMessage, type OpenedMessage } from './codec.ts';
import { verifyCoseSign1 } from './cose/sign1.ts';
import { verifyChain, verifyRoot, type VerifiedCertificate } from './cose/cwt.ts';

/** The stable failure codes of {@link validateHandover} (a subset of {@link ErrorCode}). */
export const HandoverCode = {
  HANDOVER_MALFORMED: ErrorCode.HANDOVER_MALFORMED,
  HANDOVER_CHAIN: ErrorCode.HANDOVER_CHAIN,
  CARD_REVOKED: ErrorCode.CARD_REVOKED,
  TOKEN_INVALID: ErrorCode.TOKEN_INVALID,
  TRANSFER_SIGNATURE: ErrorCode.TRANSFER_SIGNATURE,
  HISTORY_BROKEN: ErrorCode.HISTORY_BROKEN,
  VALUE_NOT_CONSERVED: ErrorCode.VALUE_NOT_CONSERVED,
  MARK_VIOLATION: ErrorCode.MARK_VIOLATION,
  WRONG_PAYEE: ErrorCode.WRONG_PAYEE,
  REQUEST_MISMATCH: ErrorCode.REQUEST_MISMATCH,
  LIMIT_EXCEEDED: ErrorCode.LIMIT_EXCEEDED,
  CVM_REQUIRED: ErrorCode.CVM_REQUIRED,
  TRANSFER_TIME: ErrorCode.TRANSFER_TIME,
} as const;
/** A handover validation failure code. */
export type HandoverCode = (typeof HandoverCode)[keyof typeof HandoverCode];

// ---------------------------------------------------------------- trust store
/** What every party pins (SPEC.md §7.1 "Trust"): the issuer root and the ledger key. */
export interface TrustStore {
  /** The verified, self-signed issuer root. */
  readonly root: VerifiedCertificate;
  /** The ledger's public key (65 bytes) that signs tokens, receipts, outcomes and revocation lists. */
  readonly ledgerKey: Uint8Array;
  /** Key id of {@link ledgerKey}. */
  readonly ledgerKid: Uint8Array;
  /** The ledger certificate, when the store was built from one. */
  readonly ledgerCert?: VerifiedCertificate;
}

/** Inputs of {@link createTrustStore}. Give `ledgerCert` (preferred) or a bare `ledgerKey`. */
export interface TrustStoreOptions {
  /** The issuer root certificate bytes. */
  readonly root: Uint8Array;
  /** Optional pin of the root's key id. */
  readonly rootKid?: Uint8Array;
  /** The ledger certificate (role LEDGER, issued by the root). */
  readonly ledgerCert?: Uint8Array;
  /** The ledger public key, when no certificate is at hand (e.g. configured out of band). */
  readonly ledgerKey?: Uint8Array;
  /** Time (seconds) at which the root and ledger certificate must be valid. */
  readonly at: number;
  readonly verifier?: Verifier;
}

/**
 * Verifies the root (and the ledger certificate) and returns a trust store.
 * Throws a {@link DtError} (certificate codes) when they do not verify: a
 * party with a broken trust store must not start.
 */
export function createTrustStore(opts: TrustStoreOptions): TrustStore {
  const verifier = opts.verifier ?? nobleVerifier;
  const root = verifyRoot(opts.root, opts.at, opts.rootKid, verifier);
  if (opts.ledgerCert) {
    const [ledger] = verifyChain([opts.ledgerCert], { root, at: opts.at, leafRole: Role.LEDGER, verifier });
    if (opts.ledgerKey && !bytesEqual(opts.ledgerKey, ledger!.publicKey)) {
      throw new DtError(ErrorCode.KEY_MISMATCH, 'ledger key does not match the ledger certificate');
    }
    return { root, ledgerKey: ledger!.publicKey, ledgerKid: ledger!.kid, ledgerCert: ledger! };
  }
  if (!opts.ledgerKey) throw new DtError(ErrorCode.BAD_KEY, 'a ledger certificate or key is required');
  return { root, ledgerKey: opts.ledgerKey, ledgerKid: keyId(opts.ledgerKey) };
}

// ---------------------------------------------------------------- results
/** A transfer of the chain whose card signature has been verified. */
export interface ValidatedTransfer {
  /** The signed COSE_Sign1 bytes. */
  readonly bytes: Uint8Array;
  readonly transfer: Transfer;
  /** `payloadHash` of the transfer: its name everywhere (spent set, `prev`, outcomes). */
  readonly hash: Uint8Array;
}

/** A ledger-signed token whose signature, owner, currency and expiry have been checked. */
export interface ValidatedToken {
  readonly bytes: Uint8Array;
  readonly token: Token;
}

/** A coin spent by a transfer: a token serial (16 bytes) or a change output id (32 bytes). */
export interface SpentCoin {
  readonly id: Uint8Array;
  readonly value: number;
  readonly mark?: Mark;
}

/** Success of {@link validateHandover}. */
export interface HandoverValid {
  readonly ok: true;
  readonly handover: Handover;
  /** The paying transfer (the last of {@link chain}). */
  readonly transfer: Transfer;
  readonly transferBytes: Uint8Array;
  readonly transferHash: Uint8Array;
  /** The card key id, public key and verified certificate chain (leaf first). */
  readonly cardKid: Uint8Array;
  readonly cardPublicKey: Uint8Array;
  readonly cardChain: readonly VerifiedCertificate[];
  /** Key id of the issuing bank (the card certificate's issuer): it bears a covered double spend. */
  readonly issuingBankKid: Uint8Array;
  /**
   * The history transfers then the paying transfer, all verified, in counter order. When the
   * validator resumed a chain it validated before ({@link HandoverContext.resumeChain}), only
   * those after the resume point: {@link resumed} transfers of the history come before it.
   */
  readonly chain: readonly ValidatedTransfer[];
  /** How many history transfers came before {@link chain} (a resumed chain, SPEC §7.7); absent when the chain is whole. */
  readonly resumed?: number;
  readonly tokens: readonly ValidatedToken[];
  /** The coins spent by the paying transfer, with their values and mark. */
  readonly inputs: readonly SpentCoin[];
  /** The coins spent by each transfer of {@link chain} (same order). */
  readonly chainInputs: readonly (readonly SpentCoin[])[];
  /** `sum(history amounts) + amount` (step 7). */
  readonly offlineTotal: number;
  /** `transfer.counter - anchor counter` = `len(history) + 1` (step 7): counted from the anchor, never from what the card chose to show. */
  readonly offlineCount: number;
  /** Counter of the chain's anchor: the receipt's counter, or 0 at the card's genesis. Names the card's offline period (cover, SPEC §7.7). */
  readonly anchorCounter: number;
  /** The handover's sync receipt, verified, when it carried one. */
  readonly receipt?: SyncReceipt;
}

/** Failure of {@link validateHandover}: the first failing step's code. */
export interface HandoverInvalid {
  readonly ok: false;
  readonly code: HandoverCode;
  /** Position of the offending object (token index, chain index with the paying transfer last, certificate index). */
  readonly index?: number;
  /** Non-secret, human-readable detail (e.g. the underlying DtError code). */
  readonly detail?: string;
  /** Set when the paying transfer at least decoded: lets a ledger name it in an INVALID outcome. */
  readonly transferHash?: Uint8Array;
  readonly cardKid?: Uint8Array;
  readonly amount?: number;
}

/** Result of {@link validateHandover}. */
export type HandoverResult = HandoverValid | HandoverInvalid;

/** The part of a terminal's PaymentRequest a transfer must copy (step 6). */
export type ExpectedRequest = Pick<PaymentRequest, 'amount' | 'currency' | 'terminal' | 'merchant' | 'mcc' | 'nonce' | 'time'>;

/** Context of {@link validateHandover}. */
export interface HandoverContext {
  readonly trust: TrustStore;
  /** Signature verifier; the noble reference by default, `nativeVerifier` on servers. */
  readonly verifier?: Verifier;
  /** Step 2: true when the card key id is revoked. Omitted: no revocation check (the ledger, as notary, settles honest transfers of revoked cards). */
  readonly isRevoked?: (cardKid: Uint8Array) => boolean;
  /**
   * Step 6 (terminal): the request(s) the transfer must answer. Pass the new
   * request and, on a torn-tap retry, the interrupted request too: the transfer
   * must equal one of them in every copied field.
   */
  readonly request?: ExpectedRequest | readonly ExpectedRequest[];
  /** Step 6 (ledger): the payee the transfer must pay (the batch's terminal). Checked when no `request` is given. */
  readonly payee?: Uint8Array;
  /** Latest acceptable transfer time (seconds): rejects future-dated transfers (e.g. the batch time plus a skew). */
  readonly notAfter?: number;
  /** Skip step 7 (only for diagnostics; terminals and the ledger always check limits). */
  readonly skipLimits?: boolean;
  /** Parses signed Transfers (default `openSigned`); see {@link ChainCheckOptions.openTransfer}. */
  readonly openTransfer?: TransferOpener;
  /** Verifies the card chain (default `verifyChain` against `trust.root`); see {@link CardChainVerifier}. */
  readonly verifyCardChain?: CardChainVerifier;
  /**
   * Step 3, what only the ledger knows: true when `token` is one the ledger issued to the
   * card (same serial, owner and value in its records). Terminals omit it (they check the
   * ledger's signature, which only the ledger can make).
   */
  readonly isIssuedToken?: (token: Token) => boolean;
  /**
   * Step 1: the issuing-bank certificates the validator holds, by key id (SPEC §3.8, §7.4).
   * A Handover whose chain is `[card]` alone names its bank by reference (the kid of the card
   * certificate's header); the certificate found here completes the chain, which is then
   * verified up to the root exactly as a carried one (so a wrong or forged certificate in the
   * store fails). Terminals pass the banks they listed in their request; the ledger its
   * registered banks. Omitted or unknown: a `[card]` chain fails `HANDOVER_CHAIN`.
   */
  readonly bankCertificate?: (bankKid: Uint8Array) => Uint8Array | undefined;
  /**
   * Step 4: the card's transfers the validator already holds (SPEC §3.8 `after`): given the
   * payload hash of a transfer, its signed chain from the anchor up to and including it (the
   * history and transfer of a handover the validator accepted), or `undefined`. A Handover with
   * `after` is validated as if it carried this chain before its own `history`: every check of
   * steps 4, 5 and 7 runs over the whole chain, exactly as when the card sends it all. Omitted or
   * not holding it: `HISTORY_BROKEN`.
   */
  readonly heldHistory?: (transferHash: Uint8Array) => readonly Uint8Array[] | undefined;
  /**
   * Steps 4 and 5, ledger only (SPEC §7.7, resumed chains): what the validator recorded when it
   * validated a prefix of this chain before. Called with the card, the chain's anchor and the
   * history as carried; it answers only when `history[0 .. count-1]` are byte for byte the
   * transfers of a chain it validated from this same anchor for this card. The validation then
   * checks the rest of the chain from that point, with the coins the prefix left (the tokens it
   * spent must be among the carried ones, same value and mark), and counts the prefix's amounts
   * in step 7. Any check failing from that point, or a state that does not fit the carried
   * tokens or currency, and the whole chain is checked as without it: the result (code and index
   * included) is then exactly the unresumed one. Not used with `after`.
   */
  readonly resumeChain?: (
    card: Uint8Array,
    anchor: { readonly prev: Uint8Array; readonly counter: number },
    history: readonly Uint8Array[],
  ) => ChainResume | undefined;
}

/**
 * A validated prefix of a card's chain (see {@link HandoverContext.resumeChain}): where it ends
 * and what it left. Produced by a validator from a chain it validated itself; never from input.
 */
export interface ChainResume {
  /** How many transfers of the history the prefix is (1 or more). */
  readonly count: number;
  /** Payload hash and counter of the prefix's last transfer: the next transfer's `prev` and counter - 1. */
  readonly hash: Uint8Array;
  readonly counter: number;
  /** The currency of every transfer of the prefix. */
  readonly currency: number;
  /** Sum of the prefix's amounts (step 7). */
  readonly amounts: number;
  /** The provenance tokens the prefix spent (serial, value, mark). */
  readonly spentTokens: readonly SpentCoin[];
  /** The prefix's change outputs that the prefix itself did not spend. */
  readonly change: readonly SpentCoin[];
}

/**
 * The card chain a Handover stands for: `chain` itself when it carries the bank certificate,
 * or `[card, bank]` when it gives `[card]` alone and `bankCertificate` holds the bank named by
 * the card certificate's `kid` header (SPEC §3.8). `undefined` when that bank is not held or the
 * card certificate does not parse. Nothing is verified here.
 */
export function completeCardChain(
  chain: readonly Uint8Array[],
  bankCertificate: ((bankKid: Uint8Array) => Uint8Array | undefined) | undefined,
): readonly Uint8Array[] | undefined {
  if (chain.length !== 1) return chain;
  let issuer: Uint8Array;
  try {
    issuer = openSigned('Certificate', chain[0]!).cose.kid;
  } catch {
    return undefined;
  }
  const bank = bankCertificate?.(issuer);
  return bank ? [chain[0]!, bank] : undefined;
}

type Fail = HandoverInvalid;
const fail = (code: HandoverCode, detail?: string, index?: number): Fail => ({
  ok: false,
  code,
  ...(detail !== undefined ? { detail } : {}),
  ...(index !== undefined ? { index } : {}),
});

function errDetail(e: unknown): string {
  return isDtError(e) ? e.code : 'UNEXPECTED';
}

/** Canonical encoding of a mark (or '' for none), so marks compare by value. */
export function markKey(mark: Mark | undefined): string {
  return mark === undefined ? '' : toHex(encodeDeterministic(encodeStruct(MarkSchema, mark)));
}

/** True when a coin with `mark` may be paid to `merchant` / `mcc` (SPEC.md §7.3, marks). Unmarked coins go anywhere. */
export function markAllows(mark: Mark | undefined, merchant: string, mcc: number): boolean {
  if (mark === undefined) return true;
  return (mark.merchants?.includes(merchant) ?? false) || (mark.mccs?.includes(mcc) ?? false);
}

/** The mark the payee output carries when paid from coins with `mark`: `hops - 1`, none at 0. */
export function payeeMark(mark: Mark | undefined): Mark | undefined {
  if (mark === undefined || mark.hops <= 1) return undefined;
  return { ...mark, hops: mark.hops - 1 };
}

// ---------------------------------------------------------------- chain check
/** Inputs of {@link checkTransferChain}. */
export interface ChainCheckOptions {
  readonly cardKid: Uint8Array;
  readonly cardPublicKey: Uint8Array;
  /** Signed transfers in counter order (history, then the paying transfer if any). */
  readonly transfers: readonly Uint8Array[];
  /** Spendable coins at the start of the chain (confirmed tokens): id hex -> coin. */
  readonly coins: ReadonlyMap<string, SpentCoin>;
  /** Expected `prev` and counter of the first transfer, when the anchor is known. */
  readonly anchor?: { readonly prev: Uint8Array; readonly counter: number };
  /** Currency every transfer must use. */
  readonly currency?: number;
  readonly verifier?: Verifier;
  /** Parses a signed Transfer (default `openSigned`); servers pass a cache, since a card's history repeats in each of its handovers. */
  readonly openTransfer?: TransferOpener;
}

/**
 * Parses (without verifying) a signed Transfer; must behave exactly like
 * `openSigned('Transfer', bytes)`. It may also return the transfer's
 * `payloadHash` (computed once by a cache).
 */
export type TransferOpener = (bytes: Uint8Array) => OpenedMessage<'Transfer'> & { readonly hash?: Uint8Array };
const defaultOpener: TransferOpener = (b) => openSigned('Transfer', b);

/**
 * Verifies a card chain like `verifyChain(chain, { root, at, leafRole: CARD, verifier })`
 * (same result, same errors). Servers inject a cache: a chain that verified
 * stays valid for every time inside all its certificates' validity periods.
 */
export type CardChainVerifier = (chain: readonly Uint8Array[], at: number) => VerifiedCertificate[];

/** Success of {@link checkTransferChain}. */
export interface ChainCheckOk {
  readonly ok: true;
  readonly chain: readonly ValidatedTransfer[];
  readonly chainInputs: readonly (readonly SpentCoin[])[];
  /** Coins still unspent after the chain (the starting coins minus spent ones, plus change outputs). */
  readonly remaining: ReadonlyMap<string, SpentCoin>;
}

/**
 * Steps 4 and 5 over a card's chain of transfers: signatures, `card` field,
 * consecutive counters, `prev` links, conservation, output shape and marks.
 * Used by {@link validateHandover} and by the ledger when it checks a
 * SyncRequest's history against the tokens it issued.
 */
export function checkTransferChain(o: ChainCheckOptions): ChainCheckOk | HandoverInvalid {
  return checkChain(o, undefined);
}

/** A transfer opened (by the same opener) before the chain check, with its payload hash. */
type OpenedTransfer = OpenedMessage<'Transfer'> & { readonly hash?: Uint8Array };

/** {@link checkTransferChain}, with the last transfer already opened by `o.openTransfer` (the paying transfer, which validateHandover opened first). */
function checkChain(o: ChainCheckOptions, last: OpenedTransfer | undefined): ChainCheckOk | HandoverInvalid {
  const verifier = o.verifier ?? nobleVerifier;
  const open = o.openTransfer ?? defaultOpener;
  const chain: ValidatedTransfer[] = [];
  const n = o.transfers.length;
  // Step 4: signatures, card field, counters, links.
  for (let i = 0; i < n; i++) {
    const bytes = o.transfers[i]!;
    let opened: OpenedTransfer;
    try {
      opened = last !== undefined && i === n - 1 ? last : open(bytes);
    } catch (e) {
      return fail(HandoverCode.HANDOVER_MALFORMED, `transfer: ${errDetail(e)}`, i);
    }
    try {
      verifyCoseSign1(opened.cose, o.cardPublicKey, verifier);
    } catch (e) {
      return fail(HandoverCode.TRANSFER_SIGNATURE, errDetail(e), i);
    }
    const t = opened.message;
    if (!bytesEqual(t.card, o.cardKid)) return fail(HandoverCode.TRANSFER_SIGNATURE, 'card field names another key', i);
    const hash = opened.hash ?? payloadHash(opened.cose);
    if (i === 0) {
      if (o.anchor) {
        if (t.counter !== o.anchor.counter + 1) return fail(HandoverCode.HISTORY_BROKEN, 'counter does not follow the anchor', i);
        if (!bytesEqual(t.prev, o.anchor.prev)) return fail(HandoverCode.HISTORY_BROKEN, 'prev is not the anchor', i);
      }
    } else {
      const before = chain[i - 1]!;
      if (t.counter !== before.transfer.counter + 1) return fail(HandoverCode.HISTORY_BROKEN, 'counters not consecutive', i);
      if (!bytesEqual(t.prev, before.hash)) return fail(HandoverCode.HISTORY_BROKEN, 'prev does not name the previous transfer', i);
    }
    chain.push({ bytes, transfer: t, hash });
  }
  // Step 5: conservation along the chain.
  const available = new Map(o.coins);
  const used = new Set<string>();
  const chainInputs: SpentCoin[][] = [];
  for (let i = 0; i < chain.length; i++) {
    const { transfer: t, hash } = chain[i]!;
    if (o.currency !== undefined && t.currency !== o.currency) return fail(HandoverCode.VALUE_NOT_CONSERVED, 'currency differs', i);
    const ins: SpentCoin[] = [];
    for (const id of t.inputs) {
      const k = toHex(id);
      if (used.has(k)) return fail(HandoverCode.VALUE_NOT_CONSERVED, 'input used twice in the chain', i);
      const coin = available.get(k);
      if (!coin) return fail(HandoverCode.VALUE_NOT_CONSERVED, 'input is neither a given token nor an earlier change output', i);
      used.add(k);
      available.delete(k);
      ins.push(coin);
    }
    const mk = markKey(ins[0]!.mark);
    if (ins.some((c) => markKey(c.mark) !== mk)) return fail(HandoverCode.MARK_VIOLATION, 'inputs carry different marks', i);
    let inSum: number;
    let outSum: number;
    try {
      inSum = sumAmounts(ins.map((c) => c.value));
      outSum = sumAmounts(t.outputs.map((x) => x.value));
    } catch {
      return fail(HandoverCode.VALUE_NOT_CONSERVED, 'amount overflow', i);
    }
    if (inSum !== outSum) return fail(HandoverCode.VALUE_NOT_CONSERVED, 'sum(inputs) != sum(outputs)', i);
    const pay = t.outputs[0]!;
    if (pay.value !== t.amount) return fail(HandoverCode.VALUE_NOT_CONSERVED, 'payee output value != amount', i);
    if (!bytesEqual(pay.owner, t.payee)) return fail(HandoverCode.VALUE_NOT_CONSERVED, 'payee output owner != payee', i);
    const change = t.outputs[1];
    if (change && !bytesEqual(change.owner, t.card))
      return fail(HandoverCode.VALUE_NOT_CONSERVED, 'change output not owned by the card', i);
    const inMark = ins[0]!.mark;
    if (!markAllows(inMark, t.merchant, t.mcc)) return fail(HandoverCode.MARK_VIOLATION, 'mark does not allow this merchant', i);
    if (markKey(pay.mark) !== markKey(payeeMark(inMark))) return fail(HandoverCode.MARK_VIOLATION, 'payee output mark is wrong', i);
    if (change && markKey(change.mark) !== mk) return fail(HandoverCode.MARK_VIOLATION, 'change output mark differs from the inputs', i);
    if (change) {
      const cid = outputId(hash, 1);
      available.set(toHex(cid), { id: cid, value: change.value, ...(change.mark ? { mark: change.mark } : {}) });
    }
    chainInputs.push(ins);
  }
  return { ok: true, chain, chainInputs, remaining: available };
}

// ---------------------------------------------------------------- validateHandover
function requestMatches(t: Transfer, r: ExpectedRequest): boolean {
  return (
    t.amount === r.amount &&
    t.currency === r.currency &&
    t.merchant === r.merchant &&
    t.mcc === r.mcc &&
    t.time === r.time &&
    bytesEqual(t.nonce, r.nonce)
  );
}

/**
 * Validates a handover as SPEC.md §7.4 steps 1-7 say, in order; the first
 * failure gives the code. Accepts the encoded Handover (decoded with its size
 * limits) or an already decoded one.
 */
export function validateHandover(input: Uint8Array | Handover, ctx: HandoverContext): HandoverResult {
  const verifier = ctx.verifier ?? nobleVerifier;
  // ---- step 1: decode everything with the size limits.
  let handover: Handover;
  try {
    handover = input instanceof Uint8Array ? decodeMessage('Handover', input) : decodeMessage('Handover', encodeMessage('Handover', input));
  } catch (e) {
    return fail(HandoverCode.HANDOVER_MALFORMED, errDetail(e));
  }
  let opened: OpenedTransfer;
  try {
    opened = (ctx.openTransfer ?? defaultOpener)(handover.transfer);
  } catch (e) {
    return fail(HandoverCode.HANDOVER_MALFORMED, `transfer: ${errDetail(e)}`);
  }
  const transfer = opened.message;
  const transferHash = opened.hash ?? payloadHash(opened.cose);
  // Opened once: the chain check below takes it as its last transfer, hash included.
  if (opened.hash === undefined) opened = { ...opened, hash: transferHash };
  const named = { transferHash, cardKid: transfer.card, amount: transfer.amount };
  const failT = (code: HandoverCode, detail?: string, index?: number): Fail => ({ ...fail(code, detail, index), ...named });

  if (ctx.notAfter !== undefined && transfer.time > ctx.notAfter)
    return failT(HandoverCode.TRANSFER_TIME, 'transfer dated after the accepted time');
  // The card chain, at the transfer's time.
  let cardChain: VerifiedCertificate[];
  try {
    // The root must be valid at that time too.
    const rc = ctx.trust.root.claims;
    if (transfer.time < rc.nbf || transfer.time > rc.exp) return failT(HandoverCode.HANDOVER_CHAIN, 'root not valid at the transfer time');
    // `[card]` alone names the issuing bank by reference: complete it from what the validator holds, or fail closed.
    const chainBytes = completeCardChain(handover.chain, ctx.bankCertificate);
    if (!chainBytes) return failT(HandoverCode.HANDOVER_CHAIN, ErrorCode.CERT_CHAIN_BROKEN, 1);
    cardChain = ctx.verifyCardChain
      ? ctx.verifyCardChain(chainBytes, transfer.time)
      : verifyChain(chainBytes, { root: ctx.trust.root, at: transfer.time, leafRole: Role.CARD, verifier });
  } catch (e) {
    return failT(
      HandoverCode.HANDOVER_CHAIN,
      errDetail(e),
      isDtError(e) && typeof e.details.index === 'number' ? e.details.index : undefined,
    );
  }
  const card = cardChain[0]!;
  if (!bytesEqual(card.kid, transfer.card)) return failT(HandoverCode.HANDOVER_CHAIN, 'the chain certifies another card');
  const limits = card.claims.limits!;

  // ---- step 2: revocation.
  if (ctx.isRevoked?.(card.kid)) return failT(HandoverCode.CARD_REVOKED);

  // ---- step 3: tokens: those carried inline, then those referenced in the receipt (SPEC §3.8).
  // The receipt is opened here when tokens are referenced in it (and verified at step 4 all the
  // same); each token is verified on its own either way.
  let openedReceipt: OpenedMessage<'SyncReceipt'> | undefined;
  const tokenBytes: Uint8Array[] = [...(handover.tokens ?? [])];
  if (handover.receiptTokens) {
    // The receipt is the chain's anchor as well: without it the chain is not anchored.
    if (!handover.receipt) return failT(HandoverCode.HISTORY_BROKEN, 'chain not anchored: tokens named in a receipt the handover lacks', 0);
    try {
      openedReceipt = openSigned('SyncReceipt', handover.receipt);
    } catch (e) {
      return failT(HandoverCode.HISTORY_BROKEN, `receipt: ${errDetail(e)}`);
    }
    const inReceipt = openedReceipt.message.tokens;
    for (const ix of handover.receiptTokens) {
      const t = inReceipt[ix];
      if (!t) return failT(HandoverCode.TOKEN_INVALID, 'reference to no token of the receipt', tokenBytes.length);
      tokenBytes.push(t);
    }
  }
  const tokens: ValidatedToken[] = [];
  const coins = new Map<string, SpentCoin>();
  for (let i = 0; i < tokenBytes.length; i++) {
    let token: Token;
    try {
      token = verifySigned('Token', tokenBytes[i]!, ctx.trust.ledgerKey, verifier).message;
    } catch (e) {
      return failT(HandoverCode.TOKEN_INVALID, errDetail(e), i);
    }
    if (!bytesEqual(token.owner, card.kid)) return failT(HandoverCode.TOKEN_INVALID, 'token not owned by the card', i);
    if (token.currency !== transfer.currency) return failT(HandoverCode.TOKEN_INVALID, 'token currency differs', i);
    if (token.expires !== undefined && transfer.time > token.expires) return failT(HandoverCode.TOKEN_INVALID, 'token expired', i);
    const k = toHex(token.serial);
    if (coins.has(k)) return failT(HandoverCode.TOKEN_INVALID, 'token given twice', i);
    if (ctx.isIssuedToken && !ctx.isIssuedToken(token))
      return failT(HandoverCode.TOKEN_INVALID, 'not a token the ledger issued to this card', i);
    coins.set(k, { id: token.serial, value: token.value, ...(token.mark ? { mark: token.mark } : {}) });
    tokens.push({ bytes: tokenBytes[i]!, token });
  }

  // ---- step 4 (anchor): every chain is anchored, at the receipt it carries or at the card's
  // genesis. A chain that starts anywhere else cannot be checked for completeness (limits) or
  // forks, so it is refused here exactly as the ledger refuses it (SPEC §7.4 step 4).
  let receipt: SyncReceipt | undefined;
  let anchor: { prev: Uint8Array; counter: number } = GENESIS_ANCHOR;
  if (handover.receipt) {
    try {
      const r = openedReceipt ?? openSigned('SyncReceipt', handover.receipt);
      verifyCoseSign1(r.cose, ctx.trust.ledgerKey, verifier);
      receipt = r.message;
      anchor = { prev: payloadHash(r.cose), counter: receipt.counter };
    } catch (e) {
      return failT(HandoverCode.HISTORY_BROKEN, `receipt: ${errDetail(e)}`);
    }
    if (!bytesEqual(receipt.card, card.kid)) return failT(HandoverCode.HISTORY_BROKEN, 'receipt names another card');
  }

  // ---- steps 4 and 5 over history + transfer. History the card left out (`after`) is what the
  // validator holds of this card: re-inserted here, so the chain checked is the whole one.
  let history: readonly Uint8Array[] = handover.history;
  if (handover.after) {
    const held = ctx.heldHistory?.(handover.after);
    if (!held || held.length === 0) return failT(HandoverCode.HISTORY_BROKEN, 'history left out that the validator does not hold', 0);
    if (held.length + handover.history.length > LIMITS.maxHistory)
      return failT(HandoverCode.HISTORY_BROKEN, 'held and carried history together exceed the history limit', 0);
    history = [...held, ...handover.history];
  }
  const all = [...history, handover.transfer];
  const chainCheck = (transfers: readonly Uint8Array[], from: ReadonlyMap<string, SpentCoin>, at: { prev: Uint8Array; counter: number }) =>
    checkChain(
      {
        cardKid: card.kid,
        cardPublicKey: card.publicKey,
        transfers,
        coins: from,
        currency: transfer.currency,
        verifier,
        anchor: at,
        ...(ctx.openTransfer ? { openTransfer: ctx.openTransfer } : {}),
      },
      opened,
    );
  // A prefix the validator validated before (ledger): the rest of the chain from there, or the whole chain if anything fails.
  const resume =
    !handover.after && ctx.resumeChain ? resumeFrom(ctx.resumeChain(card.kid, anchor, history), history, coins, transfer) : undefined;
  const tail =
    resume && chainCheck(all.slice(resume.point.count), resume.coins, { prev: resume.point.hash, counter: resume.point.counter });
  const checked = tail?.ok ? tail : chainCheck(all, coins, anchor);
  const resumed = tail?.ok ? resume!.point : undefined;
  if (!checked.ok) {
    // Without a receipt the only anchor is genesis: say so rather than "counter does not follow".
    if (!handover.receipt && checked.code === HandoverCode.HISTORY_BROKEN && checked.index === 0) {
      return failT(HandoverCode.HISTORY_BROKEN, "chain not anchored: no receipt and not the card's genesis", 0);
    }
    return { ...checked, ...named };
  }

  // ---- step 6: the transfer pays this terminal.
  if (ctx.request !== undefined) {
    const reqs: readonly ExpectedRequest[] = Array.isArray(ctx.request) ? ctx.request : [ctx.request as ExpectedRequest];
    if (!reqs.some((r) => bytesEqual(r.terminal, transfer.payee))) return failT(HandoverCode.WRONG_PAYEE);
    if (!reqs.some((r) => bytesEqual(r.terminal, transfer.payee) && requestMatches(transfer, r)))
      return failT(HandoverCode.REQUEST_MISMATCH);
  } else if (ctx.payee !== undefined && !bytesEqual(ctx.payee, transfer.payee)) {
    return failT(HandoverCode.WRONG_PAYEE);
  }

  // ---- step 7: limits.
  let offlineTotal: number;
  try {
    offlineTotal = addAmounts(
      sumAmounts([resumed?.amounts ?? 0, ...checked.chain.slice(0, -1).map((x) => x.transfer.amount)]),
      transfer.amount,
    );
  } catch {
    return failT(HandoverCode.LIMIT_EXCEEDED, 'offline total overflows');
  }
  // Anchored and consecutive, so the chain is everything since the anchor: count from the counters.
  const offlineCount = transfer.counter - anchor.counter;
  if (!ctx.skipLimits) {
    if (transfer.amount > limits.perPayment) return failT(HandoverCode.LIMIT_EXCEEDED, 'perPayment');
    if (offlineTotal > limits.offlineTotal) return failT(HandoverCode.LIMIT_EXCEEDED, 'offlineTotal');
    if (offlineCount > limits.offlineCount) return failT(HandoverCode.LIMIT_EXCEEDED, 'offlineCount');
    if (transfer.amount > limits.cvmLimit && transfer.cvm === Cvm.NONE) return failT(HandoverCode.CVM_REQUIRED);
  }

  return {
    ok: true,
    handover,
    transfer,
    transferBytes: handover.transfer,
    transferHash,
    cardKid: card.kid,
    cardPublicKey: card.publicKey,
    cardChain,
    // verifyChain only accepts a card certified by a bank, so the chain has the bank at index 1.
    issuingBankKid: cardChain[1]!.kid,
    chain: checked.chain,
    ...(resumed ? { resumed: resumed.count } : {}),
    tokens,
    inputs: checked.chainInputs[checked.chainInputs.length - 1]!,
    chainInputs: checked.chainInputs,
    offlineTotal,
    offlineCount,
    anchorCounter: anchor.counter,
    ...(receipt ? { receipt } : {}),
  };
}

/**
 * The coins a resumed chain continues from (see {@link HandoverContext.resumeChain}): the carried
 * tokens minus those the prefix spent (each must be carried, same value and mark) plus the
 * prefix's unspent change; undefined when the point does not fit this handover (the whole chain
 * is then checked).
 */
function resumeFrom(
  point: ChainResume | undefined,
  history: readonly Uint8Array[],
  tokens: ReadonlyMap<string, SpentCoin>,
  transfer: Transfer,
): { point: ChainResume; coins: Map<string, SpentCoin> } | undefined {
  if (!point || point.count < 1 || point.count > history.length || point.currency !== transfer.currency) return undefined;
  const coins = new Map(tokens);
  for (const s of point.spentTokens) {
    const k = toHex(s.id);
    const c = coins.get(k);
    if (!c || c.value !== s.value || markKey(c.mark) !== markKey(s.mark)) return undefined;
    coins.delete(k);
  }
  for (const c of point.change) coins.set(toHex(c.id), c);
  return { point, coins };
}

/**
 * The Handover a valid result stands for with its whole history (SPEC §3.8): the history the
 * card left out (`after`) re-inserted from the validated chain, `after` removed; everything else
 * (the chain as given, tokens, receipt) as received. This is what a terminal journals and sends
 * on: a handover whose validation needs nothing the recipient may lack but bank certificates.
 */
export function completeHistory(result: HandoverValid): Handover {
  if (!result.handover.after) return result.handover;
  const { after: _after, ...rest } = result.handover;
  return { ...rest, history: result.chain.slice(0, -1).map((x) => x.bytes) };
}

/** The anchor of a card's first chain: counter 0, `prev = GENESIS_PREV` (SPEC §6.4). */
const GENESIS_ANCHOR = { prev: GENESIS_PREV, counter: 0 } as const;

// ---------------------------------------------------------------- evidence
/**
 * Every Transfer a handover carries (its history, then the paying transfer), as signed bytes,
 * however broken the handover around them is: decoded strictly when it is a well-formed
 * Handover, else read leniently (a CBOR map whose key 1 is a byte string and key 4 an array
 * of byte strings). Nothing is verified: the ledger checks each candidate's card signature
 * with the card key it registered and records the ones that verify as evidence BEFORE it
 * judges the handover (SPEC §7.7 step E), so a fork cannot be hidden by breaking the
 * handover around it. Bounded by the handover's size.
 */
export function handoverTransfers(input: Uint8Array): Uint8Array[] {
  try {
    const h = decodeMessage('Handover', input);
    return [...h.history, h.transfer];
  } catch {
    // fall through to the lenient reading
  }
  const raw = decodeRelaxed(input, LIMITS.maxHandoverSize);
  if (!(raw instanceof Map)) return [];
  const out: Uint8Array[] = [];
  const history = raw.get(4);
  if (Array.isArray(history))
    for (const x of history) if (x instanceof Uint8Array && x.length <= LIMITS.maxTransferSize) out.push(new Uint8Array(x));
  const t = raw.get(1);
  if (t instanceof Uint8Array && t.length <= LIMITS.maxTransferSize) out.push(new Uint8Array(t));
  return out;
}
