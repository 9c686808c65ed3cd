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

// SPKI DER prefix for an id-ecPublicKey / prime256v1 uncompressed point (65 bytes follow).
const SPKI_P256_PREFIX = Uint8Array.from([
  0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
  0x03, 0x42, 0x00,
]);

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
    const der = new Uint8Array(SPKI_P256_PREFIX.length + PUBLIC_KEY_LENGTH);
    der.set(SPKI_P256_PREFIX);
    der.set(publicKey, SPKI_P256_PREFIX.length);
    ko = createPublicKey({ key: Buffer.from(der), format: 'der', type: 'spki' });
  } catch {
    ko = null; // not on the curve, or otherwise invalid
  }
  if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value as string);
  keyCache.set(id, ko);
  return ko;
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
