/**
 * Server-side ES256 signing through `node:crypto` (OpenSSL), producing the
 * same format as the reference signer: 64-byte r||s with low S. The ledger
 * signs every outcome, token and receipt, so this matters for throughput.
 * Unlike the reference, k is random rather than RFC 6979: objects are named by
 * their payload hash, which the signature does not affect. `signAsync` makes
 * the same signature in `node:crypto`'s thread pool.
 *
 * @module
 */
import { createPrivateKey, sign as nodeSign, type KeyObject } from 'node:crypto';
import { keyId, P256_N, type KeyPair, type Signer } from '@dt/protocol';

const b64u = (b: Uint8Array) => Buffer.from(b).toString('base64url');

function lowS(sig: Uint8Array): Uint8Array {
  let s = 0n;
  for (let i = 32; i < 64; i++) s = (s << 8n) | BigInt(sig[i]!);
  if (s <= P256_N >> 1n) return sig;
  let t = P256_N - s;
  const out = sig.slice();
  for (let i = 63; i >= 32; i--) {
    out[i] = Number(t & 0xffn);
    t >>= 8n;
  }
  return out;
}

/** A {@link Signer} over `node:crypto`. The secret stays inside a KeyObject. */
export function nativeSigner(keys: KeyPair): Signer {
  const pk = keys.publicKey;
  const key: KeyObject = createPrivateKey({
    key: { kty: 'EC', crv: 'P-256', d: b64u(keys.secretKey), x: b64u(pk.slice(1, 33)), y: b64u(pk.slice(33, 65)) },
    format: 'jwk',
  });
  const opts = { key, dsaEncoding: 'ieee-p1363' } as const;
  return {
    kid: keyId(pk),
    sign: (message) => lowS(new Uint8Array(nodeSign('sha256', message, opts))),
    // The callback form runs in libuv's thread pool: the ledger signs a batch's outcomes while it writes the batch.
    signAsync: (message) =>
      new Promise((resolve, reject) =>
        nodeSign('sha256', message, opts, (err, sig) => (err ? reject(err) : resolve(lowS(new Uint8Array(sig))))),
      ),
  };
}
