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
  openSigned,
  payloadHash,
  Role,
  toHex,
  verifyChain,
  type CardChainVerifier,
  type HandoverResult,
  type OpenedMessage,
  type TransferOpener,
  type VerifiedCertificate,
  type Verifier,
} from '@dt/protocol';

/** One handover to validate: bytes, the batch's terminal and the latest acceptable transfer time. */
export interface ValidationJob {
  readonly handover: Uint8Array;
  readonly payee: Uint8Array;
  readonly notAfter: number;
  /** The registered banks' certificates by key id (hex): complete a `[card]` chain (SPEC §3.8). */
  readonly banks?: ReadonlyMap<string, Uint8Array>;
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
    const opened = { ...o, hash: payloadHash(o.cose) };
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
  const cache = new Map<string, { certs: VerifiedCertificate[]; from: number; to: number }>();
  return (chain, at) => {
    const h = createHash('sha256');
    for (const c of chain) h.update(new Uint8Array(new Uint32Array([c.length]).buffer)).update(c);
    const k = h.digest('base64');
    const hit = cache.get(k);
    if (hit && at >= hit.from && at <= hit.to) return hit.certs;
    const certs = verifyChain(chain, { root, at, leafRole: Role.CARD, verifier });
    const from = Math.max(...certs.map((c) => c.claims.nbf));
    const to = Math.min(...certs.map((c) => c.claims.exp));
    if (cache.size >= maxEntries) cache.delete(cache.keys().next().value as string);
    cache.set(k, { certs, from, to });
    return certs;
  };
}
