/**
 * Node-only parts: ES256 verification through OpenSSL (`node:crypto`),
 * about 40x faster than pure JS on servers, and Node's timers for the
 * host-side transports ({@link nodeTimers}). `firmware/` and the pure entry
 * point never import this file. It applies exactly the reference rules of
 * {@link nobleVerifier}: canonical (low-S) 64-byte signatures, valid
 * uncompressed points; a test proves both agree on every vector and on
 * thousands of random cases.
 *
 * @module
 */
import { createPublicKey, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { isCanonicalSignature, PUBLIC_KEY_LENGTH, type Verifier } from './crypto/suite.ts';
import type { TransportTimers } from './transport/timers.ts';

/** Bounded cache of parsed public keys (servers see the same card and terminal keys repeatedly). */
const KEY_CACHE_MAX = 4096;
const keyCache = new Map<string, KeyObject | null>();

function keyObject(publicKey: Uint8Array): KeyObject | null {
  if (publicKey.length !== PUBLIC_KEY_LENGTH || publicKey[0] !== 4) return null;
  const id = Buffer.from(publicKey).toString('hex');
  const hit = keyCache.get(id);
  if (hit !== undefined) return hit;
  let ko: KeyObject | null;
  try {
    // A JWK imports in about 70% of the time of the same key as SPKI DER (OpenSSL 3's DER decoder path); both check the point.
    const b = Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength);
    ko = createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: b.subarray(1, 33).toString('base64url'), y: b.subarray(33, 65).toString('base64url') },
      format: 'jwk',
    });
  } catch {
    ko = null; // not on the curve, or otherwise invalid
  }
  if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value as string);
  keyCache.set(id, ko);
  return ko;
}

/**
 * Forgets every parsed public key of this thread's cache. For benchmarks that build their state in
 * the measuring process and must measure as a server that has not seen those keys (the cache would
 * otherwise hold the keys the setup just used).
 */
export function clearNativeKeyCache(): void {
  keyCache.clear();
}

/** ES256 verification through `node:crypto` (OpenSSL), same acceptance rules as the reference. */
export const nativeVerifier: Verifier = {
  verify(signature, message, publicKey) {
    if (!isCanonicalSignature(signature)) return false;
    const ko = keyObject(publicKey);
    if (ko === null) return false;
    try {
      return nodeVerify('sha256', message, { key: ko, dsaEncoding: 'ieee-p1363' }, signature);
    } catch {
      return false;
    }
  },
};

/** Node's timers for the host-side transports (`SerialHostTransport`, `HidHostTransport`), which take them injected. */
export const nodeTimers: TransportTimers = {
  schedule: (fn, ms) => setTimeout(fn, ms),
  cancel: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
