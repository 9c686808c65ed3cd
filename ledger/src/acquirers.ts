/**
 * Acquirer authentication (SPEC.md §7.7.2): the ledger settles only for the
 * acquirers it knows. The body of `POST /v1/settle` is a SignedSettleRequest
 * (`@dt/protocol`: `signSettleRequest`, `parseSettleRequest`) signed by an
 * acquirer service key that an acquiring bank certified (role ACQUIRER, chain
 * `[acquirer, bank]`); the bank must be registered at the ledger, the acquirer
 * not blocked (`dt-ledger acquirer-block`), the request fresh and its nonce
 * new, and every batch must be a terminal of the acquirer's own bank. So a
 * terminal that reaches the ledger's network directly gets nothing settled,
 * and a terminal its acquirer revoked cannot settle around it.
 *
 * {@link authenticateSettle} runs the checks in the order of the SPEC and
 * throws a {@link LedgerApiError} with the stable code of §8.2 at the first
 * failure; nothing is settled or stored by a refused request (only its nonce
 * is remembered, once its signature verified and its time is fresh). The
 * blocked-acquirer table lives in the ledger storage (`acquirer_blocks`,
 * `storage/types.ts`), so blocking takes effect at once, also for a running
 * server on the same database.
 *
 * @module
 */
import {
  ACQUIRER_LIMITS,
  bytesEqual,
  isDtError,
  openSigned,
  parseSettleRequest,
  ReplayWindows,
  Role,
  subjectKey,
  toHex,
  verifyChain,
  verifyCoseSign1,
  type ParsedSettleRequest,
  type Verifier,
  type VerifiedCertificate,
} from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import type { Ledger } from './ledger.ts';
import type { LedgerStorage } from './storage/types.ts';
import { LedgerStore } from './store.ts';
import { LedgerApiCode, LedgerApiError } from './errors.ts';

/** Default bounds of the ledger's per-acquirer nonce windows. */
export const SETTLE_REPLAY_DEFAULTS = {
  /** Most settle requests one acquirer may make within the retention (2 × skew, 600 s): about 16 per second. */
  perAcquirer: 10_000,
  /** Most acquirers with a live window at once. */
  maxAcquirers: 1_000,
} as const;

/** Options of {@link settleReplayWindows}. */
export interface SettleReplayOptions {
  /** Accepted |request time − ledger time| in seconds (default `ACQUIRER_LIMITS.settleSkewSeconds`, 300). */
  readonly skewSeconds?: number;
  readonly perAcquirer?: number;
  readonly maxAcquirers?: number;
}

/** The nonce windows of settle requests, one per acquirer, in seconds of the ledger clock. */
export function settleReplayWindows(o: SettleReplayOptions = {}): ReplayWindows {
  const skew = o.skewSeconds ?? ACQUIRER_LIMITS.settleSkewSeconds;
  return new ReplayWindows({
    retain: 2 * skew,
    perParty: o.perAcquirer ?? SETTLE_REPLAY_DEFAULTS.perAcquirer,
    maxParties: o.maxAcquirers ?? SETTLE_REPLAY_DEFAULTS.maxAcquirers,
  });
}

/** What {@link authenticateSettle} needs besides the ledger. */
export interface SettleAuthOptions {
  /** The per-acquirer nonce windows (kept by the server for its lifetime). */
  readonly nonces: ReplayWindows;
  /** Accepted |request time − ledger time| in seconds (default 300). */
  readonly skewSeconds?: number;
  /** Signature verifier (default `nativeVerifier`). */
  readonly verifier?: Verifier;
}

/** An authenticated settle request: who sent it and the batches to settle. */
export interface AuthenticatedSettle {
  /** Key id of the acquirer (the leaf of its chain). */
  readonly acquirer: Uint8Array;
  /** Key id of its acquiring bank. */
  readonly bank: Uint8Array;
  /** The acquirer's verified certificate. */
  readonly certificate: VerifiedCertificate;
  /** The signed batches, as sent. */
  readonly batches: Uint8Array[];
}

const codeOf = (e: unknown): string | undefined => (isDtError(e) ? e.code : undefined);

/**
 * Checks a SignedSettleRequest in the order of SPEC.md §7.7.2 and returns the batches
 * the acquirer may settle; throws {@link LedgerApiError} (`MALFORMED`, `ACQUIRER_AUTH`,
 * `ACQUIRER_UNKNOWN`, `ACQUIRER_STALE`, `ACQUIRER_REPLAYED`, `BUSY`, `BATCH_INVALID`,
 * `ACQUIRER_NOT_PERMITTED`) at the first failure. Settles nothing: the caller passes the
 * batches to `ledger.settle`.
 */
export async function authenticateSettle(ledger: Ledger, body: Uint8Array, opts: SettleAuthOptions): Promise<AuthenticatedSettle> {
  const verifier = opts.verifier ?? nativeVerifier;
  const skew = opts.skewSeconds ?? ACQUIRER_LIMITS.settleSkewSeconds;
  // 1. The body parses (COSE_Sign1 of the settle content type over a SettleRequest).
  let parsed: ParsedSettleRequest;
  try {
    parsed = parseSettleRequest(body);
  } catch (e) {
    throw new LedgerApiError(LedgerApiCode.MALFORMED, 'the body is not a signed settle request', codeOf(e) ?? 'MALFORMED');
  }
  const { cose, request } = parsed;
  const now = ledger.now();
  // 2. The acquirer's chain at the ledger's time, its kid, its signature.
  let certs: VerifiedCertificate[];
  try {
    certs = verifyChain(request.chain, { root: ledger.trust.root, at: now, leafRole: Role.ACQUIRER, verifier });
  } catch (e) {
    throw new LedgerApiError(LedgerApiCode.ACQUIRER_AUTH, 'the acquirer chain does not verify', codeOf(e));
  }
  const leaf = certs[0]!;
  const bank = certs[1];
  if (bank === undefined) throw new LedgerApiError(LedgerApiCode.ACQUIRER_AUTH, 'the acquirer chain names no bank');
  if (!bytesEqual(cose.kid, leaf.kid))
    throw new LedgerApiError(LedgerApiCode.ACQUIRER_AUTH, 'the request is not signed with the key its chain certifies', 'KEY_MISMATCH');
  try {
    verifyCoseSign1(cose, leaf.publicKey, verifier);
  } catch (e) {
    throw new LedgerApiError(LedgerApiCode.ACQUIRER_AUTH, 'the settle request signature does not verify', codeOf(e));
  }
  // ... its bank is registered here and the acquirer is not blocked (read at every request: a block applies at once).
  const known = await ledger.store.transaction(async (tx) => ({
    bank: (await tx.bank(bank.kid)) !== undefined,
    blocked: (await tx.acquirerBlock(leaf.kid)) !== undefined,
  }));
  if (!known.bank) throw new LedgerApiError(LedgerApiCode.ACQUIRER_UNKNOWN, "the acquirer's bank is not registered at this ledger");
  if (known.blocked) throw new LedgerApiError(LedgerApiCode.ACQUIRER_UNKNOWN, 'the acquirer is blocked');
  // 3. Fresh, and a nonce not seen from this acquirer within the window (bounded per acquirer).
  if (Math.abs(request.time - now) > skew)
    throw new LedgerApiError(LedgerApiCode.ACQUIRER_STALE, `the request time is more than ${skew} s from the ledger clock`);
  const seen = opts.nonces.add(leaf.kid, request.nonce, now);
  if (seen === 'replayed') throw new LedgerApiError(LedgerApiCode.ACQUIRER_REPLAYED, 'this settle request nonce was already used');
  if (seen === 'full')
    throw new LedgerApiError(LedgerApiCode.BUSY, 'too many settle requests from this acquirer within the window; retry later');
  // 4. Every batch opens and is a terminal of the acquirer's bank (the bank certificate of the terminal chain
  //    names the acquirer's bank key; the ledger verifies that chain at the batch time when it settles).
  request.batches.forEach((bytes, index) => {
    let chain: readonly Uint8Array[];
    try {
      chain = openSigned('Batch', bytes).message.chain;
    } catch (e) {
      throw new LedgerApiError(LedgerApiCode.BATCH_INVALID, `batch ${index} does not open`, codeOf(e), index);
    }
    let terminalBank: Uint8Array | undefined;
    try {
      terminalBank = chain[1] === undefined ? undefined : subjectKey(openSigned('Certificate', chain[1]).message).kid;
    } catch (e) {
      throw new LedgerApiError(
        LedgerApiCode.ACQUIRER_NOT_PERMITTED,
        `batch ${index}: the terminal's bank certificate does not open`,
        codeOf(e),
        index,
      );
    }
    if (terminalBank === undefined || !bytesEqual(terminalBank, bank.kid)) {
      throw new LedgerApiError(
        LedgerApiCode.ACQUIRER_NOT_PERMITTED,
        `batch ${index}: the terminal belongs to another bank than the acquirer's`,
        undefined,
        index,
      );
    }
  });
  return { acquirer: leaf.kid, bank: bank.kid, certificate: leaf, batches: request.batches };
}

// ---------------------------------------------------------------- blocked acquirers
/** A blocked acquirer. */
export interface BlockedAcquirer {
  readonly kid: string;
  readonly reason: string;
  readonly time: number;
}

/** Blocks an acquirer key (16-byte key id): its settle requests are refused `ACQUIRER_UNKNOWN` from now on. True when it was not blocked yet. */
export async function blockAcquirer(storage: LedgerStorage, kid: Uint8Array, reason: string, time: number): Promise<boolean> {
  checkKid(kid);
  return new LedgerStore(storage).transaction((tx) => tx.insertAcquirerBlock({ kid, reason: reason.slice(0, 500), time }));
}

/** Lifts the block of an acquirer key. True when it was blocked. */
export async function unblockAcquirer(storage: LedgerStorage, kid: Uint8Array): Promise<boolean> {
  checkKid(kid);
  return new LedgerStore(storage).transaction((tx) => tx.deleteAcquirerBlock(kid));
}

/** The blocked acquirers, oldest block first. */
export async function blockedAcquirers(storage: LedgerStorage): Promise<BlockedAcquirer[]> {
  return new LedgerStore(storage).transaction(async (tx) =>
    (await tx.acquirerBlocks()).map((r) => ({ kid: toHex(r.kid), reason: r.reason, time: r.time })),
  );
}

function checkKid(kid: Uint8Array): void {
  if (!(kid instanceof Uint8Array) || kid.length !== 16) throw new RangeError('an acquirer key id is 16 bytes');
}
