/**
 * Node-only parts: ES256 verification through OpenSSL, about 40x faster
 * than pure JS on servers, and Node's timers for the host-side transports
 * ({@link nodeTimers}). `firmware/` and the pure entry point never import
 * this file. Both backends apply exactly the reference rules of
 * {@link nobleVerifier}: canonical (low-S) 64-byte signatures, valid
 * uncompressed points; a test proves each agrees with it on every vector
 * and on thousands of random cases.
 *
 * {@link nativeVerifier} verifies with the addon `protocol/native` builds at
 * setup (`dt-p256.node`: Node's own OpenSSL, straight from the 65-byte point)
 * when it is there, else with {@link nodeCryptoVerifier}. `node:crypto`
 * verifies only with a KeyObject, and importing a key costs about as much as
 * a verification (OpenSSL's key check multiplies the point by the group
 * order); on P-256, whose cofactor is 1, the on-curve check the addon does
 * is the whole validity check. A server among 100k cards meets a cold card
 * key at nearly every payment. {@link nativeVerifierBackend} says which runs.
 *
 * @module
 */
import { createPublicKey, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
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

/** ES256 verification through `node:crypto` (OpenSSL, a KeyObject per key, cached), same acceptance rules as the reference. */
export const nodeCryptoVerifier: Verifier = {
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

/** The addon's interface (protocol/native/p256-verify.c): false for an invalid point, r or s out of range, or a failed check. */
interface P256Addon {
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
}

/**
 * The addon built at setup (`protocol/native/build.sh`), when it is there and loads in this Node;
 * `DT_NATIVE_VERIFY=node-crypto` turns it off. The same path from src/ (sources) and dist/ (built).
 */
function loadAddon(): P256Addon | undefined {
  if (process.env.DT_NATIVE_VERIFY === 'node-crypto') return undefined;
  try {
    const addon = createRequire(import.meta.url)('../native/build/dt-p256.node') as P256Addon;
    return typeof addon.verify === 'function' ? addon : undefined;
  } catch {
    return undefined;
  }
}

const addon = loadAddon();

/** Which backend {@link nativeVerifier} uses in this process: the setup-built addon, or `node:crypto` without it. */
export const nativeVerifierBackend: 'addon' | 'node:crypto' = addon ? 'addon' : 'node:crypto';

/** ES256 verification through OpenSSL with the reference's acceptance rules: the addon when built, else {@link nodeCryptoVerifier}. */
export const nativeVerifier: Verifier = addon
  ? {
      verify(signature, message, publicKey) {
        if (!isCanonicalSignature(signature) || publicKey.length !== PUBLIC_KEY_LENGTH || publicKey[0] !== 4) return false;
        try {
          return addon.verify(publicKey, message, signature);
        } catch {
          return false; // not a Uint8Array: refused, as node:crypto's path refuses what it cannot read
        }
      },
    }
  : nodeCryptoVerifier;

/** Node's timers for the host-side transports (`SerialHostTransport`, `HidHostTransport`), which take them injected. */
export const nodeTimers: TransportTimers = {
  schedule: (fn, ms) => setTimeout(fn, ms),
  cancel: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
