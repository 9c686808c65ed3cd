/**
 * The ledger's request checks: pure functions over the bytes a caller sent
 * and what the ledger already holds (certificates, a card's anchor, its
 * coins), run before any transaction. Each refuses with a {@link LedgerError}
 * (a stable code and a detail, nothing changed); none touches storage, so
 * they are the same for every backend and could run on any thread.
 *
 * Kept apart from `ledger.ts` (the rules that decide what is stored) and
 * from `validation.ts` (handover validation shared with the worker pool), so
 * no module of the ledger imports another in a cycle.
 *
 * @module
 */
import {
  BankPermission,
  bytesEqual,
  checkTransferChain,
  DEFAULT_TERMINAL_CRL_MAX_AGE,
  isDtError,
  openAdjustment,
  openSigned,
  payloadHash,
  Role,
  subjectKey,
  toHex,
  verifyChain,
  verifyCoseSign1,
  type Adjustment,
  type CoseSign1,
  type MessageOf,
  type OpenedAdjustment,
  type SpentCoin,
  type TransferOpener,
  type ValidatedTransfer,
  type VerifiedCertificate,
  type Verifier,
} from '@dt/protocol';
import { LedgerError, LedgerErrorCode, LOAD_ORDER_DETAIL } from './errors.ts';
import { openLoadOrder, type LoadOrder } from './load.ts';

/** What signature and certificate checks need: the issuer root and a verifier. */
export interface TrustContext {
  readonly root: VerifiedCertificate;
  readonly verifier: Verifier;
}

/** The code of a protocol error, or `fallback` for anything else. */
const codeOf = (e: unknown, fallback: string): string => (isDtError(e) ? e.code : fallback);

// ------------------------------------------------------------ amounts and certificates
/** An amount of the issuer's API: a safe integer, at least `min` (1 for allocations, 0 for a credit line). */
export function checkAmount(amount: number, min: 0 | 1, what: string): void {
  if (!Number.isSafeInteger(amount) || amount < min)
    throw new LedgerError(LedgerErrorCode.MALFORMED, `${what} must be a ${min === 1 ? 'positive' : 'non-negative'} integer`);
}

/** A bank certificate issued by the root, valid at `at` (BANK_CHAIN otherwise). */
export function verifyBankCert(cert: Uint8Array, at: number, ctx: TrustContext): VerifiedCertificate {
  try {
    return verifyChain([cert], { root: ctx.root, at, leafRole: Role.BANK, verifier: ctx.verifier })[0]!;
  } catch (e) {
    throw new LedgerError(LedgerErrorCode.BANK_CHAIN, codeOf(e, 'bank certificate invalid'));
  }
}

/** A card chain `[card, issuing bank]` under the root, valid at `at` (CARD_CHAIN otherwise). */
export function verifyCardChain(
  chain: readonly Uint8Array[],
  at: number,
  ctx: TrustContext,
): { card: VerifiedCertificate; bank: VerifiedCertificate } {
  let certs;
  try {
    certs = verifyChain(chain, { root: ctx.root, at, leafRole: Role.CARD, verifier: ctx.verifier });
  } catch (e) {
    throw new LedgerError(LedgerErrorCode.CARD_CHAIN, codeOf(e, 'card chain invalid'));
  }
  return { card: certs[0]!, bank: certs[1]! };
}

// ------------------------------------------------------------ bank load orders
/** A bank load order that parses (MALFORMED otherwise); its signer is checked by {@link verifyLoadSigner}. */
export function openLoad(bytes: Uint8Array): { cose: CoseSign1; order: LoadOrder } {
  try {
    return openLoadOrder(bytes);
  } catch (e) {
    throw new LedgerError(LedgerErrorCode.MALFORMED, codeOf(e, 'load order malformed'));
  }
}

/** The load order is signed by the registered bank whose certificate is `bankCert`, and that bank may issue. */
export function verifyLoadSigner(cose: CoseSign1, bankCert: Uint8Array, at: number, ctx: TrustContext): void {
  let bank;
  try {
    [bank] = verifyChain([bankCert], { root: ctx.root, at, leafRole: Role.BANK, verifier: ctx.verifier });
    verifyCoseSign1(cose, bank!.publicKey, ctx.verifier);
  } catch (e) {
    throw new LedgerError(LedgerErrorCode.BAD_SIGNATURE, codeOf(e, 'load order signature invalid'), { detail: LOAD_ORDER_DETAIL });
  }
  if (((bank!.claims.perms ?? 0) & BankPermission.ISSUING) === 0)
    throw new LedgerError(LedgerErrorCode.NOT_PERMITTED, 'bank may not issue');
}

// ------------------------------------------------------------ batches
/** A signed Batch that opened and verified: what settlement needs of it. */
export interface OpenBatch {
  readonly hash: Uint8Array;
  readonly terminal: Uint8Array;
  readonly seq: number;
  readonly time: number;
  readonly crlVersion: number;
  /** The terminal's certified revocation-list age policy (seconds): the claim, or the SPEC default. */
  readonly crlMaxAge: number;
  readonly handovers: readonly Uint8Array[];
  /** The batch's adjustments (SPEC §7.7.3), in order; empty when it has none. */
  readonly adjustments: readonly BatchAdjustment[];
}

/** One adjustment of a batch as it opened (SPEC §7.7.3 step 1). */
export interface BatchAdjustment {
  /** Opened and verified: a SignedAdjustment signed by the batch's terminal, naming it. Absent: `ADJUSTMENT_INVALID`. */
  readonly opened?: OpenedAdjustment;
  /** What it says when it at least decodes (not verified: only to name it in a refusal). */
  readonly claimed?: Adjustment;
}

/** Opens the adjustments of a batch with the batch's certified terminal key (pure). */
function openAdjustments(list: readonly Uint8Array[], terminalKey: Uint8Array, verifier: Verifier): BatchAdjustment[] {
  return list.map((bytes) => {
    let claimed: Adjustment | undefined;
    try {
      claimed = openSigned('Adjustment', bytes).message;
      return { opened: openAdjustment(bytes, terminalKey, verifier), claimed };
    } catch {
      return claimed ? { claimed } : {};
    }
  });
}

/**
 * Batch `index` of a settle request: it opens, is not dated after `now + skew`, its terminal chain
 * verifies at the batch time and certifies the terminal it names, and that terminal signed it.
 */
export function openBatch(bytes: Uint8Array, index: number, now: number, skew: number, ctx: TrustContext): OpenBatch {
  const refuse = (code: LedgerErrorCode, message: string) => new LedgerError(code, `batch ${index}: ${message}`, { index });
  let opened;
  try {
    opened = openSigned('Batch', bytes);
  } catch (e) {
    throw refuse(LedgerErrorCode.BATCH_INVALID, codeOf(e, 'malformed'));
  }
  const m = opened.message;
  if (m.time > now + skew) throw new LedgerError(LedgerErrorCode.BATCH_TIME, `batch ${index} is dated in the future`, { index });
  let term;
  try {
    term = verifyChain(m.chain, { root: ctx.root, at: m.time, leafRole: Role.TERMINAL, verifier: ctx.verifier });
  } catch (e) {
    throw refuse(LedgerErrorCode.TERMINAL_CHAIN, codeOf(e, 'terminal chain invalid'));
  }
  if (!bytesEqual(term[0]!.kid, m.terminal)) throw refuse(LedgerErrorCode.TERMINAL_CHAIN, 'chain certifies another terminal');
  try {
    verifyCoseSign1(opened.cose, term[0]!.publicKey, ctx.verifier);
  } catch {
    throw refuse(LedgerErrorCode.BAD_SIGNATURE, 'signature invalid');
  }
  return {
    hash: payloadHash(opened.cose),
    terminal: m.terminal,
    seq: m.seq,
    time: m.time,
    crlVersion: m.crlVersion,
    crlMaxAge: term[0]!.claims.crlMaxAge ?? DEFAULT_TERMINAL_CRL_MAX_AGE,
    handovers: m.handovers,
    adjustments: openAdjustments(m.adjustments ?? [], term[0]!.publicKey, ctx.verifier),
  };
}

/** The payee of a signed Transfer, or undefined for another object (a SyncRequest). */
export function transferPayee(bytes: Uint8Array): Uint8Array | undefined {
  try {
    return openSigned('Transfer', bytes).message.payee;
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------ evidence (SPEC §7.7 step E)
/** A card-signed object found in a handover or a sync request whose signature verified with the registered card key. */
export interface EvidenceObject {
  readonly bytes: Uint8Array;
  readonly hash: Uint8Array;
  readonly card: Uint8Array;
  readonly counter: number;
  /** Claimed input ids (a transfer's inputs, a sync request's holdings). */
  readonly claims: readonly Uint8Array[];
}

// ------------------------------------------------------------ sync (SPEC §7.6)
/** A SyncRequest that parsed, with its payload hash (its name in `syncs`, `spent` and receipts). */
export interface OpenSyncRequest {
  readonly bytes: Uint8Array;
  readonly cose: CoseSign1;
  readonly message: MessageOf<'SyncRequest'>;
  readonly hash: Uint8Array;
}

/** Parses a SyncRequest (MALFORMED otherwise); its signature is checked by {@link verifySyncRequest}. */
export function openSyncRequest(bytes: Uint8Array): OpenSyncRequest {
  let opened;
  try {
    opened = openSigned('SyncRequest', bytes);
  } catch (e) {
    throw new LedgerError(LedgerErrorCode.MALFORMED, codeOf(e, 'sync request malformed'));
  }
  return { bytes, cose: opened.cose, message: opened.message, hash: payloadHash(opened.cose) };
}

/** The request is signed by the card whose registered certificate is `cardCert`; returns that certificate's claims and key. */
export function verifySyncRequest(
  req: OpenSyncRequest,
  cardCert: Uint8Array,
  verifier: Verifier,
): { cert: MessageOf<'Certificate'>; publicKey: Uint8Array } {
  const cert = openSigned('Certificate', cardCert).message;
  const publicKey = subjectKey(cert).publicKey;
  try {
    verifyCoseSign1(req.cose, publicKey, verifier);
  } catch {
    throw new LedgerError(LedgerErrorCode.BAD_SIGNATURE, 'sync request not signed by the card');
  }
  return { cert, publicKey };
}

/**
 * The evidence a sync request carries (step E): every history transfer the card key signed, then
 * the request itself (claiming its counter and its holdings). A history transfer that is not the
 * card's is no evidence of it; the chain check then refuses the sync.
 */
export function syncEvidence(
  req: OpenSyncRequest,
  cardKey: Uint8Array,
  openTransfer: TransferOpener,
  verifier: Verifier,
): EvidenceObject[] {
  const card = req.message.card;
  const evidence: EvidenceObject[] = [];
  for (const h of req.message.history) {
    try {
      const o = openTransfer(h);
      if (!bytesEqual(o.message.card, card) || !bytesEqual(o.cose.kid, card)) continue;
      verifyCoseSign1(o.cose, cardKey, verifier);
      evidence.push({ bytes: h, hash: o.hash ?? payloadHash(o.cose), card, counter: o.message.counter, claims: o.message.inputs });
    } catch {
      // not attributable to this card
    }
  }
  evidence.push({ bytes: req.bytes, hash: req.hash, card, counter: req.message.counter, claims: req.message.holdings });
  return evidence;
}

/** The coins a card holds after its last sync: the tokens of that sync's receipt, by serial. */
export function anchorCoins(tokens: readonly Uint8Array[]): Map<string, SpentCoin> {
  const coins = new Map<string, SpentCoin>();
  for (const bytes of tokens) {
    const t = openSigned('Token', bytes).message;
    coins.set(toHex(t.serial), { id: t.serial, value: t.value, ...(t.mark ? { mark: t.mark } : {}) });
  }
  return coins;
}

/** A sync request's history that continues the card's chain and conserves value. */
export interface CheckedSync {
  /** The offline transfers since the anchor, validated, and the coins each spent. */
  readonly chain: readonly ValidatedTransfer[];
  readonly chainInputs: readonly (readonly SpentCoin[])[];
  /** The coins the card declares it holds, each an unspent coin of the chain. */
  readonly holdings: readonly SpentCoin[];
}

/**
 * Step J: the request's history continues the chain from the card's anchor (signatures, counters,
 * links, conservation: `checkTransferChain`), the request continues that history, and its holdings
 * are distinct unspent coins summing to its balance. SYNC_INVALID (detail: which check) otherwise.
 */
export function checkSyncChain(
  req: OpenSyncRequest,
  anchor: { readonly prev: Uint8Array; readonly counter: number },
  coins: ReadonlyMap<string, SpentCoin>,
  cardKey: Uint8Array,
  opts: { readonly verifier: Verifier; readonly openTransfer: TransferOpener },
): CheckedSync {
  const m = req.message;
  const invalid = (message: string, detail: string, index?: number) =>
    new LedgerError(LedgerErrorCode.SYNC_INVALID, message, { detail, ...(index !== undefined ? { index } : {}) });
  const checked = checkTransferChain({
    cardKid: m.card,
    cardPublicKey: cardKey,
    transfers: m.history,
    coins: new Map(coins),
    verifier: opts.verifier,
    openTransfer: opts.openTransfer,
    anchor,
  });
  if (!checked.ok) throw invalid(`history: ${checked.code}`, checked.code, checked.index);
  const last = checked.chain[checked.chain.length - 1];
  const expectCounter = (last ? last.transfer.counter : anchor.counter) + 1;
  const expectPrev = last ? last.hash : anchor.prev;
  if (m.counter !== expectCounter || !bytesEqual(m.prev, expectPrev))
    throw invalid('counter or prev does not continue the chain', 'HISTORY_BROKEN');
  const holdings: SpentCoin[] = [];
  const seen = new Set<string>();
  for (const id of m.holdings) {
    const k = toHex(id);
    const coin = checked.remaining.get(k);
    if (!coin || seen.has(k)) throw invalid('a holding is not an unspent coin of the card', 'VALUE_NOT_CONSERVED');
    seen.add(k);
    holdings.push(coin);
  }
  if (holdings.reduce((s, c) => s + c.value, 0) !== m.balance)
    throw invalid('balance is not the sum of the holdings', 'VALUE_NOT_CONSERVED');
  return { chain: checked.chain, chainInputs: checked.chainInputs, holdings };
}
