/**
 * What handover validation needs on both sides of the worker boundary: the job and
 * validator types, and the bounded caches that the in-thread validator (ledger.ts) and
 * the pool's workers (validate-worker.ts) both put in front of the protocol's checks.
 * Kept apart from ledger.ts and pool.ts so that neither imports the other.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import {
  bytesEqual,
  decodeDeterministic,
  decodeStruct,
  encodeDeterministic,
  encodeStruct,
  handoverTransfers,
  MarkSchema,
  outputId,
  openSigned,
  payloadHash,
  Role,
  toHex,
  validateHandover,
  verifyChain,
  verifyCoseSign1,
  type CardChainVerifier,
  type CborValue,
  type CertificateMemo,
  type ChainResume,
  type HandoverInvalid,
  type HandoverResult,
  type HandoverValid,
  type OpenedMessage,
  type SpentCoin,
  type Token,
  type Transfer,
  type TransferOpener,
  type TrustStore,
  type VerifiedCertificate,
  type Verifier,
} from '@dt/protocol';
import type { EvidenceObject } from './checks.ts';

/** One handover to validate: bytes, the batch's terminal and the latest acceptable transfer time. */
export interface ValidationJob {
  readonly handover: Uint8Array;
  readonly payee: Uint8Array;
  readonly notAfter: number;
  /** What the ledger already holds as verified for this handover's batch (default none). */
  readonly known?: KnownFacts;
  /** The registered banks' certificates by key id (hex): complete a `[card]` chain (SPEC §3.8). */
  readonly banks?: ReadonlyMap<string, Uint8Array>;
  /** The chain state the ledger recorded at the paying card's chain head (SPEC §7.7, resumed chains), if any. */
  readonly resume?: ChainState;
}

/** The `bankCertificate` lookup of `validateHandover` over a job's registered banks. */
export function jobBanks(job: ValidationJob): (kid: Uint8Array) => Uint8Array | undefined {
  return (kid) => job.banks?.get(toHex(kid));
}

/** Validates many handovers (in process, or on a worker pool: see `pool.ts`). */
export type HandoverValidator = (jobs: readonly ValidationJob[]) => Promise<HandoverResult[]>;

/**
 * Wraps a verifier with a bounded memo of successful verifications, keyed by
 * SHA-256(lengths || publicKey || signature || message). Only `true` results are kept, so
 * a cached answer is always one the inner verifier actually gave.
 */
export function memoVerifier(inner: Verifier, maxEntries = 50_000): Verifier & { hits: number; misses: number } {
  const seen = new Set<string>();
  const v = {
    hits: 0,
    misses: 0,
    verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
      // Length-prefixed, so no (signature, message) split can collide with another one.
      const lens = new Uint32Array([publicKey.length, signature.length, message.length]);
      const k = createHash('sha256')
        .update(new Uint8Array(lens.buffer))
        .update(publicKey)
        .update(signature)
        .update(message)
        .digest('base64');
      if (seen.has(k)) {
        v.hits++;
        return true;
      }
      v.misses++;
      const ok = inner.verify(signature, message, publicKey);
      if (ok) {
        if (seen.size >= maxEntries) seen.delete(seen.values().next().value as string);
        seen.add(k);
      }
      return ok;
    },
  };
  return v;
}

/**
 * A bounded cache of parsed Transfers keyed by SHA-256 of their bytes: parsing
 * is a pure function of the bytes, and each handover repeats the card's whole
 * history. Results are shared, so callers must treat them as read-only (the
 * validator does).
 */
export function cachingTransferOpener(maxEntries = 10_000): TransferOpener {
  const cache = new Map<string, OpenedMessage<'Transfer'> & { hash: Uint8Array }>();
  return (bytes) => {
    const k = createHash('sha256').update(bytes).digest('base64');
    const hit = cache.get(k);
    if (hit) return hit;
    const o = openSigned('Transfer', bytes);
    // The payload hash (`payloadHash`: SHA-256 of the payload) with OpenSSL's SHA-256: the same bytes, several times faster than the pure-JS one.
    const opened = { ...o, hash: new Uint8Array(createHash('sha256').update(o.cose.payload).digest()) };
    if (cache.size >= maxEntries) cache.delete(cache.keys().next().value as string);
    cache.set(k, opened);
    return opened;
  };
}

/**
 * A {@link CardChainVerifier} that remembers chains that verified, with the
 * time window in which all their certificates are valid; a cached chain is
 * reused only for a time inside that window (anything else is verified again,
 * so expiry and not-yet-valid errors are exactly those of `verifyChain`).
 */
export function cachingCardChainVerifier(root: VerifiedCertificate, verifier: Verifier, maxEntries = 10_000): CardChainVerifier {
  const chains = cardChainCache(root, maxEntries);
  return (chain, at) => chains(chain, at, verifier);
}

/**
 * The cache of {@link cachingCardChainVerifier} with the verifier (and a certificate memo, see
 * `verifyChain`) given per call: the ledger passes the facts of the batch at hand.
 */
export function cardChainCache(
  root: VerifiedCertificate,
  maxEntries = 10_000,
): (chain: readonly Uint8Array[], at: number, verifier: Verifier, memo?: CertificateMemo) => VerifiedCertificate[] {
  const cache = new Map<string, { certs: VerifiedCertificate[]; from: number; to: number }>();
  return (chain, at, verifier, memo) => {
    const h = createHash('sha256');
    for (const c of chain) h.update(new Uint8Array(new Uint32Array([c.length]).buffer)).update(c);
    const k = h.digest('base64');
    const hit = cache.get(k);
    if (hit && at >= hit.from && at <= hit.to) return hit.certs;
    const certs = verifyChain(chain, { root, at, leafRole: Role.CARD, verifier, ...(memo ? { memo } : {}) });
    const from = Math.max(...certs.map((c) => c.claims.nbf));
    const to = Math.min(...certs.map((c) => c.claims.exp));
    if (cache.size >= maxEntries) cache.delete(cache.keys().next().value as string);
    cache.set(k, { certs, from, to });
    return certs;
  };
}

/**
 * What the ledger already holds as verified, read from its database for one batch (SPEC §7.7:
 * the ledger recognises what it recorded): signatures it made itself or verified before with a
 * registered key, and certificates it registered under their issuer. Plain data, so that it
 * crosses to a worker thread with the batch's jobs.
 */
export interface KnownFacts {
  /** Exact (signature, signed bytes, public key) triples that verify: the verifier answers true for these without computing. */
  readonly signatures: readonly KnownSignature[];
  /** Certificates (whole bytes) whose signature verified under the issuer key id `issuer` when they were registered. */
  readonly certs: readonly { readonly issuer: Uint8Array; readonly bytes: Uint8Array }[];
}

/** One signature known to verify: the COSE_Sign1 signature, its Sig_structure and the key. */
export interface KnownSignature {
  readonly signature: Uint8Array;
  readonly message: Uint8Array;
  readonly publicKey: Uint8Array;
}

/** The empty set of facts. */
export const NO_FACTS: KnownFacts = { signatures: [], certs: [] };

/** Reads a CBOR head at `at` of major type `major` with a definite length; returns [length, next offset] or undefined. */
function head(b: Uint8Array, at: number, major: number): [number, number] | undefined {
  const ib = b[at];
  if (ib === undefined || ib >> 5 !== major) return undefined;
  const ai = ib & 0x1f;
  if (ai < 24) return [ai, at + 1];
  if (ai === 24 && at + 1 < b.length) return [b[at + 1]!, at + 2];
  if (ai === 25 && at + 2 < b.length) return [(b[at + 1]! << 8) | b[at + 2]!, at + 3];
  if (ai === 26 && at + 4 < b.length) return [((b[at + 1]! << 24) >>> 0) + ((b[at + 2]! << 16) | (b[at + 3]! << 8) | b[at + 4]!), at + 5];
  return undefined;
}

/**
 * The signature, protected header and payload of a tagged COSE_Sign1 (`d2 84 bstr a0 bstr bstr(64)`,
 * exactly the bytes given), without decoding anything else; undefined for anything of another
 * shape. Used only on objects the ledger stored itself, to name their signatures as facts.
 */
export function coseParts(b: Uint8Array): { protectedBytes: Uint8Array; payload: Uint8Array; signature: Uint8Array } | undefined {
  if (b[0] !== 0xd2 || b[1] !== 0x84) return undefined;
  const p = head(b, 2, 2);
  if (!p || p[1] + p[0] >= b.length) return undefined;
  const protectedBytes = b.subarray(p[1], p[1] + p[0]);
  let at = p[1] + p[0];
  if (b[at] !== 0xa0) return undefined;
  const q = head(b, at + 1, 2);
  if (!q || q[1] + q[0] > b.length) return undefined;
  const payload = b.subarray(q[1], q[1] + q[0]);
  at = q[1] + q[0];
  const s = head(b, at, 2);
  if (!s || s[0] !== 64 || s[1] + 64 !== b.length) return undefined;
  return { protectedBytes, payload, signature: b.subarray(s[1]) };
}

/** The key a Buffer-backed map uses for a byte string (its bytes as a latin1 string: exact and cheap). */
const bkey = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');

const same = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/**
 * A verifier that answers the known triples of `facts` itself (only an exact match of signature,
 * signed bytes and key: a known signature over other bytes or under another key is verified by
 * `inner` like anything else), and everything else with `inner`.
 */
export function knownVerifier(facts: KnownFacts, inner: Verifier): Verifier & { known: number } {
  const by = new Map<string, KnownSignature[]>();
  for (const f of facts.signatures) {
    const k = bkey(f.signature);
    const list = by.get(k);
    if (list) list.push(f);
    else by.set(k, [f]);
  }
  const v = {
    known: 0,
    verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
      const list = by.size > 0 ? by.get(bkey(signature)) : undefined;
      if (list?.some((f) => same(f.message, message) && same(f.publicKey, publicKey))) {
        v.known++;
        return true;
      }
      return inner.verify(signature, message, publicKey);
    },
  };
  return v;
}

/** The certificate memo of `facts` for `verifyChain` (registered certificates under their issuer). */
export function knownCertificates(facts: KnownFacts): CertificateMemo {
  const by = new Map<string, Uint8Array>();
  for (const c of facts.certs) by.set(bkey(c.bytes), c.issuer);
  return {
    known: (issuer, bytes) => {
      const k = by.get(bkey(bytes));
      return k !== undefined && same(k, issuer);
    },
    verified: () => undefined,
  };
}

// ------------------------------------------------------------ settlement jobs (validation + evidence in one place)
/** The evidence of one handover (SPEC §7.7 step E), and the hash of its paying transfer when that transfer is itself evidence (card-signed). */
export interface HandoverEvidence {
  readonly objects: EvidenceObject[];
  readonly paying?: Uint8Array;
}

/**
 * A settlement job: a validation job plus the public keys the ledger registered for the cards
 * the handover's transfers name (hex kid -> SEC1 key), so that whoever runs it also finds the
 * handover's evidence (which carried transfers verify under the registered key).
 */
export interface SettleJob extends ValidationJob {
  readonly keys: ReadonlyMap<string, Uint8Array>;
}

/** The fields of a Transfer the settlement path reads (ledger.ts `#apply`, `#settleAllValid`, `#recordValue`, `#coverable`). */
export type SettleTransferFields = Pick<Transfer, 'card' | 'counter' | 'prev' | 'amount' | 'currency' | 'payee' | 'time' | 'outputs'>;

/**
 * What settlement reads of a valid handover's result (a {@link HandoverValid} is one): the names,
 * amounts and claims it records and judges by, and nothing it does not (no decoded handover, no
 * certificate bytes, no transfer bytes: the evidence carries those). A worker answers this much.
 */
export interface SettleValid {
  readonly ok: true;
  readonly transfer: SettleTransferFields;
  readonly transferHash: Uint8Array;
  readonly cardKid: Uint8Array;
  readonly issuingBankKid: Uint8Array;
  /** Leaf first: the card's claims (`limits.offlineTotal`, cover rule 5) and the issuing bank's kid. */
  readonly cardChain: readonly Pick<VerifiedCertificate, 'kid' | 'claims'>[];
  readonly chain: readonly { readonly hash: Uint8Array; readonly transfer: SettleTransferFields }[];
  readonly chainInputs: readonly (readonly SpentCoin[])[];
  readonly inputs: readonly SpentCoin[];
  readonly tokens: readonly { readonly token: Pick<Token, 'serial' | 'value'> }[];
  /** History transfers before {@link chain}: the chain was resumed from the card's recorded head (SPEC §7.7). */
  readonly resumed?: number;
}

/** A handover's result as settlement reads it (any {@link HandoverResult} is one). */
export type SettleResult = SettleValid | HandoverInvalid;

/**
 * A settlement job's answer: the validation result, the evidence, and the cards a carried
 * transfer names (and is signed under) for which the job had no registered key: if one of them
 * is registered by the time the ledger records the evidence, the ledger finds that handover's
 * evidence again itself (a key is never guessed; an evidence object is never dropped).
 */
export interface SettleAnswer {
  readonly result: SettleResult;
  readonly evidence: HandoverEvidence;
  readonly unkeyed: readonly Uint8Array[];
  /** A valid handover's chain state after its paying transfer: what the ledger records with the card's chain head when it settles it set-based. */
  readonly state?: ChainState;
}

/** Runs settlement jobs (in this thread: `Ledger`'s default; on worker threads: `pool.ts`). */
export interface SettlementValidator {
  settle(jobs: readonly SettleJob[]): Promise<SettleAnswer[]>;
}

const fields = (t: Transfer): SettleTransferFields => ({
  card: t.card,
  counter: t.counter,
  prev: t.prev,
  amount: t.amount,
  currency: t.currency,
  payee: t.payee,
  time: t.time,
  outputs: t.outputs,
});

/** The part of a result settlement reads, as plain data without what it does not (what a worker sends back). */
export function compactResult(r: HandoverResult): SettleResult {
  if (!r.ok) return r;
  return {
    ok: true,
    transfer: fields(r.transfer),
    transferHash: r.transferHash,
    cardKid: r.cardKid,
    issuingBankKid: r.issuingBankKid,
    cardChain: r.cardChain.map((c) => ({ kid: c.kid, claims: c.claims })),
    chain: r.chain.map((c) => ({ hash: c.hash, transfer: fields(c.transfer) })),
    chainInputs: r.chainInputs,
    inputs: r.inputs,
    tokens: r.tokens.map((t) => ({ token: { serial: t.token.serial, value: t.token.value } })),
    ...(r.resumed !== undefined ? { resumed: r.resumed } : {}),
  };
}

/**
 * The evidence of a handover (SPEC §7.7 step E): every transfer it carries (however broken the
 * handover is) that opens as a signed Transfer, names its card in its header, and whose signature
 * verifies with the key the ledger registered for that card (`keys`). A transfer of a card
 * without a key in `keys` is named in `unkeyed`. `skip`: the first candidates are left out (a
 * resumed chain's prefix, byte for byte objects the ledger recorded with their claims, see
 * {@link ChainState}). `carried`: the transfers of `handover` as `handoverTransfers` reads them, when
 * the caller has them already (a valid handover's strict decoding: its history, then its transfer).
 */
export function handoverEvidence(
  handover: Uint8Array,
  keys: ReadonlyMap<string, Uint8Array>,
  openTransfer: TransferOpener,
  verifier: Verifier,
  skip = 0,
  carried?: readonly Uint8Array[],
): { evidence: HandoverEvidence; unkeyed: Uint8Array[] } {
  const candidates = carried ?? handoverTransfers(handover);
  const objects: EvidenceObject[] = [];
  const unkeyed: Uint8Array[] = [];
  let paying: Uint8Array | undefined;
  for (const [i, bytes] of candidates.entries()) {
    if (i < skip) continue;
    let opened;
    try {
      opened = openTransfer(bytes);
    } catch {
      continue;
    }
    const t = opened.message;
    if (!bytesEqual(opened.cose.kid, t.card)) continue;
    const key = keys.get(toHex(t.card));
    if (!key) {
      if (!unkeyed.some((u) => bytesEqual(u, t.card))) unkeyed.push(t.card);
      continue;
    }
    try {
      verifyCoseSign1(opened.cose, key, verifier);
    } catch {
      continue;
    }
    const hash = opened.hash ?? payloadHash(opened.cose);
    objects.push({ bytes, hash, card: t.card, counter: t.counter, claims: t.inputs });
    if (i === candidates.length - 1) paying = hash;
  }
  return { evidence: { objects, ...(paying ? { paying } : {}) }, unkeyed };
}

/** Skips one definite-length CBOR item at `at` (nesting bounded); returns the offset after it, or undefined. */
function skipItem(b: Uint8Array, at: number, depth = 0): number | undefined {
  if (depth > 16) return undefined;
  const ib = b[at];
  if (ib === undefined) return undefined;
  const major = ib >> 5;
  if (major === 7) {
    const ai = ib & 0x1f;
    return ai < 24 ? at + 1 : ai === 24 ? at + 2 : ai === 25 ? at + 3 : ai === 26 ? at + 5 : ai === 27 ? at + 9 : undefined;
  }
  const h = head(b, at, major);
  if (!h) return undefined;
  const [n, next] = h;
  if (major === 0 || major === 1) return next;
  if (major === 2 || major === 3) return next + n <= b.length ? next + n : undefined;
  if (major === 6) return skipItem(b, next, depth + 1);
  let p: number | undefined = next;
  for (let i = 0; i < (major === 5 ? 2 * n : n) && p !== undefined; i++) p = skipItem(b, p, depth + 1);
  return p;
}

/**
 * A transfer {@link scanHandover} found: its header key id, and its payload hash, computed when first
 * asked for (a resumed chain's prefix is never looked up, so its transfers are never hashed here).
 */
export class ScannedTransfer {
  readonly kid: Uint8Array;
  readonly #payload: Uint8Array;
  #hash: Uint8Array | undefined;

  constructor(kid: Uint8Array, payload: Uint8Array) {
    this.kid = kid;
    this.#payload = payload;
  }

  /** SHA-256 of the payload (`payloadHash`). */
  get hash(): Uint8Array {
    return (this.#hash ??= new Uint8Array(createHash('sha256').update(this.#payload).digest()));
  }
}

/**
 * The transfers a handover carries (its key 1, the paying transfer, then the byte strings of its
 * key 4, the history), as their header key id and payload hash, read without decoding anything: what the ledger looks up
 * before validation (the registered keys, the objects it holds). Only a lookup depends on it:
 * an encoding it cannot read gives fewer names (validation and evidence decode everything
 * themselves, and a card it missed comes back as `unkeyed`).
 */
export function scanHandover(handover: Uint8Array): ScannedTransfer[] {
  const out: ScannedTransfer[] = [];
  const add = (t: Uint8Array) => {
    const p = coseParts(t);
    const n = p?.protectedBytes.length ?? 0;
    if (!p || n < 18 || p.protectedBytes[n - 18] !== 0x04 || p.protectedBytes[n - 17] !== 0x50) return;
    out.push(new ScannedTransfer(p.protectedBytes.subarray(n - 16), p.payload));
  };
  const m = head(handover, 0, 5);
  if (!m) return out;
  let at = m[1];
  for (let i = 0; i < m[0]; i++) {
    const k = head(handover, at, 0);
    if (!k) return out;
    const v = k[1];
    const end = skipItem(handover, v);
    if (end === undefined) return out;
    if (k[0] === 1) {
      const s = head(handover, v, 2);
      if (s) add(handover.subarray(s[1], s[1] + s[0]));
    } else if (k[0] === 4) {
      const a = head(handover, v, 4);
      let p: number | undefined = a?.[1];
      for (let j = 0; a && j < a[0] && p !== undefined; j++) {
        const s = head(handover, p, 2);
        if (!s) break;
        add(handover.subarray(s[1], s[1] + s[0]));
        p = s[1] + s[0];
      }
    }
    at = end;
  }
  return out;
}

/** The tools one settlement job runs with: the verifier and chain check over its facts. */
export interface SettleTools {
  readonly trust: TrustStore;
  readonly openTransfer: TransferOpener;
  /** The verifier of `known` (facts first), or the plain one without facts. */
  verifierOf(known: KnownFacts | undefined): Verifier;
  verifyCardChainOf(known: KnownFacts | undefined): CardChainVerifier;
}

/**
 * One settlement job: validation first, then the evidence, with the same verifier (the paying
 * transfer's signature, verified by validation under the chain's card key, is then a memo hit
 * when the registered key is that key).
 */
export function settleOne(job: SettleJob, tools: SettleTools, compact: boolean): SettleAnswer {
  const verifier = tools.verifierOf(job.known);
  const base = job.resume;
  const r = validateHandover(job.handover, {
    trust: tools.trust,
    verifier,
    openTransfer: tools.openTransfer,
    verifyCardChain: tools.verifyCardChainOf(job.known),
    payee: job.payee,
    notAfter: job.notAfter,
    // A `[card]` chain names its issuing bank by reference: the registered banks complete it (SPEC §3.8).
    bankCertificate: jobBanks(job),
    // The chain the ledger validated up to the card's head: only what follows it is checked again (SPEC §7.7).
    ...(base ? { resumeChain: (card, anchor, history) => resumePoint(base, card, anchor, history) } : {}),
  });
  // A resumed prefix is byte for byte objects recorded with their own claims: their evidence is recorded.
  const skip = r.ok ? (r.resumed ?? 0) : 0;
  // A valid result decoded the handover strictly, as `handoverTransfers` does first: its transfers are those (history as carried, then the paying one).
  const carried = r.ok ? [...r.handover.history, r.handover.transfer] : undefined;
  const { evidence, unkeyed } = handoverEvidence(job.handover, job.keys, tools.openTransfer, verifier, skip, carried);
  const state = r.ok && !r.handover.after ? chainStateAfter(r, r.resumed !== undefined ? base : undefined) : undefined;
  return { result: compact ? compactResult(r) : r, evidence, unkeyed, ...(state ? { state } : {}) };
}

// ------------------------------------------------------------ resumed chains (SPEC §7.7)
/**
 * What the ledger records with a card's chain head (migration 6) when it settles a handover
 * set-based: the chain from its anchor up to and including the paying transfer, as a digest of
 * its exact bytes, and what validation would carry over from it to a later handover of the card
 * (coins, amounts, currency). A later handover whose history starts with exactly these bytes
 * from the same anchor is validated from the head on (`validateHandover`'s `resumeChain`): the
 * prefix was validated when it was settled, by the same card key (the kid is in every payload,
 * and a kid names one key), and its transfers are recorded as value and as evidence holding
 * their own claims, so checking it again can only give the same answer.
 */
export interface ChainState extends ChainResume {
  readonly card: Uint8Array;
  /** The chain's anchor: `prev` of its first transfer (the receipt's payload hash, or genesis) and its counter. */
  readonly anchor: Uint8Array;
  readonly anchorCounter: number;
  /** {@link chainDigest} of the chain's transfers, anchor first; `count` of them (the head's counter - the anchor counter). */
  readonly digest: Uint8Array;
}

/** SHA-256 over a domain label, the anchor (hash, counter) and each transfer's length and exact bytes. */
export function chainDigest(anchor: Uint8Array, anchorCounter: number, transfers: readonly Uint8Array[]): Uint8Array {
  const h = createHash('sha256').update('dt-ledger-chain-v1').update(anchor);
  const n = new DataView(new ArrayBuffer(8));
  n.setBigUint64(0, BigInt(anchorCounter));
  h.update(new Uint8Array(n.buffer));
  for (const t of transfers) {
    n.setUint32(0, t.length);
    h.update(new Uint8Array(n.buffer, 0, 4)).update(t);
  }
  return new Uint8Array(h.digest());
}

/**
 * The resume point of `state` for a handover of `card` anchored at `anchor` carrying `history`:
 * only when the first `state.count` transfers of the history are byte for byte the recorded
 * chain (same digest from the same anchor).
 */
export function resumePoint(
  state: ChainState,
  card: Uint8Array,
  anchor: { readonly prev: Uint8Array; readonly counter: number },
  history: readonly Uint8Array[],
): ChainResume | undefined {
  if (!bytesEqual(state.card, card) || !bytesEqual(state.anchor, anchor.prev) || state.anchorCounter !== anchor.counter) return undefined;
  if (state.count < 1 || state.count > history.length || state.counter !== state.anchorCounter + state.count) return undefined;
  if (!bytesEqual(chainDigest(anchor.prev, anchor.counter, history.slice(0, state.count)), state.digest)) return undefined;
  return state;
}

/** The chain state after a valid handover's paying transfer; `base`: the state its chain was resumed from. */
export function chainStateAfter(r: HandoverValid, base: ChainState | undefined): ChainState {
  const first = r.chain[0]!.transfer;
  const anchor = base ? base.anchor : first.prev;
  const anchorCounter = r.anchorCounter;
  const change = new Map<string, SpentCoin>((base?.change ?? []).map((c) => [toHex(c.id), c] as const));
  const spentTokens: SpentCoin[] = [...(base?.spentTokens ?? [])];
  let amounts = base?.amounts ?? 0;
  for (let i = 0; i < r.chain.length; i++) {
    const { transfer: t, hash } = r.chain[i]!;
    for (const coin of r.chainInputs[i]!) {
      const k = toHex(coin.id);
      if (change.has(k)) change.delete(k);
      else spentTokens.push(coin);
    }
    const out = t.outputs[1];
    if (out) {
      const id = outputId(hash, 1);
      change.set(toHex(id), { id, value: out.value, ...(out.mark ? { mark: out.mark } : {}) });
    }
    amounts += t.amount;
  }
  const transfers = [...r.handover.history, r.transferBytes];
  return {
    card: r.cardKid,
    anchor,
    anchorCounter,
    digest: chainDigest(anchor, anchorCounter, transfers),
    count: transfers.length,
    hash: r.transferHash,
    counter: r.transfer.counter,
    currency: r.transfer.currency,
    amounts,
    spentTokens,
    change: [...change.values()],
  };
}

const coinCbor = (c: SpentCoin): CborValue => [
  c.id,
  c.value,
  c.mark ? encodeDeterministic(encodeStruct(MarkSchema, c.mark)) : new Uint8Array(0),
];
const coinFrom = (v: unknown): SpentCoin => {
  const [id, value, mark] = v as [Uint8Array, number, Uint8Array];
  return { id, value, ...(mark.length > 0 ? { mark: decodeStruct(MarkSchema, decodeDeterministic(mark, 1024)) } : {}) };
};

/** The stored form of a {@link ChainState} (deterministic CBOR; written and read only by the ledger). */
export function encodeChainState(s: ChainState): Uint8Array {
  return encodeDeterministic([
    1,
    s.card,
    s.anchor,
    s.anchorCounter,
    s.digest,
    s.count,
    s.hash,
    s.counter,
    s.currency,
    s.amounts,
    s.spentTokens.map(coinCbor),
    s.change.map(coinCbor),
  ]);
}

/** A stored chain state, or undefined for one of another version (the chain is then validated whole). */
export function decodeChainState(b: Uint8Array): ChainState | undefined {
  let v: unknown[];
  try {
    v = decodeDeterministic(b, 64 * 1024) as unknown[];
  } catch {
    return undefined;
  }
  if (!Array.isArray(v) || v[0] !== 1 || v.length !== 12) return undefined;
  const [, card, anchor, anchorCounter, digest, count, hash, counter, currency, amounts, spent, change] = v as [
    number,
    Uint8Array,
    Uint8Array,
    number,
    Uint8Array,
    number,
    Uint8Array,
    number,
    number,
    number,
    unknown[],
    unknown[],
  ];
  return {
    card,
    anchor,
    anchorCounter,
    digest,
    count,
    hash,
    counter,
    currency,
    amounts,
    spentTokens: spent.map(coinFrom),
    change: change.map(coinFrom),
  };
}

/**
 * `v` (plain data: objects, arrays, Maps, numbers, strings, byte strings) with every byte string
 * that is a view into a larger buffer copied into one of its own, objects shared within `v`
 * kept shared. For what crosses to or from a worker thread: a structured clone copies the
 * WHOLE buffer under a view (a handover decoded out of a settle request would carry the
 * request with it, a transfer the handover it came from).
 */
export function detached<T>(v: T, seen: Map<object, unknown> = new Map()): T {
  if (v instanceof Uint8Array) return (v.byteOffset === 0 && v.byteLength === v.buffer.byteLength ? v : new Uint8Array(v)) as T;
  if (v === null || typeof v !== 'object') return v;
  const hit = seen.get(v);
  if (hit !== undefined) return hit as T;
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    seen.set(v, out);
    for (const x of v) out.push(detached(x as unknown, seen));
    return out as T;
  }
  if (v instanceof Map) {
    const out = new Map<unknown, unknown>();
    seen.set(v, out);
    for (const [k, x] of v as Map<unknown, unknown>) out.set(k, detached(x, seen));
    return out as T;
  }
  const out: Record<string, unknown> = {};
  seen.set(v, out);
  for (const [k, x] of Object.entries(v)) out[k] = detached(x as unknown, seen);
  return out as T;
}
