/**
 * The P-256 (secp256r1) ECDSA instance of the crypto suite: `@noble/curves`'
 * own `weierstrass` and `ecdsa` over the curve constants of its `nist.js`, the
 * suite's SHA-256, with two changes. First, the base field's five
 * hot operations (add, sub, neg, mul, sqr) are written for field elements,
 * which is all the point arithmetic ever passes them (`weierstrass` keeps every
 * coordinate in `0..p-1`: `Point` validates each one it is built with). An
 * addition or subtraction then needs one comparison and at most one
 * subtraction instead of a BigInt remainder and a sign fix, and a product one
 * remainder without the sign fix. Everything else (inversion, square root,
 * powers, encoding, validation, the scalar field, RFC 6979, low-S) is noble's,
 * untouched. Second, the message digest and RFC 6979's HMAC are the suite's
 * SHA-256 (`#sha256`) and `fast-sha256`'s HMAC instead of `@noble/hashes`': an interpreter
 * runs them about 1.7 times as fast, and a signature hashes its message and some twenty
 * HMAC blocks (a third of a signature's time in QuickJS).
 *
 * Why: an interpreter such as QuickJS (the card's engine) pays for every
 * BigInt operation and call; there a verification takes about a quarter less
 * time, a signature about a third less. The results are the same numbers:
 * signatures are deterministic (RFC 6979), and `protocol/test/suite.test.ts`
 * checks the operations against noble's generic field and the signatures
 * against noble's `p256` (the vectors and the independent COSE check pin them
 * too).
 *
 * `suite.ts` is the only importer (and `firmware/scripts/crypto-count.ts`
 * counts the card's operations by wrapping this module's `p256`).
 *
 * @module
 */
import { p256 as nobleP256 } from '@noble/curves/nist.js';
import { ecdsa, weierstrass } from '@noble/curves/abstract/weierstrass.js';
import { Field, type IField } from '@noble/curves/abstract/modular.js';
import { hmac as fastHmac } from 'fast-sha256';
import { sha256Digest } from '#sha256';

const CURVE = nobleP256.Point.CURVE();
const P = CURVE.p;

/**
 * The P-256 base field: noble's `Field(p)` with add, sub, neg, mul and sqr
 * specialised for operands already in `0..p-1` (what they return is in range too).
 */
export const p256Field: IField<bigint> = (() => {
  const base = Field(P);
  // Noble's field keeps its operations on a frozen prototype and its constants on the instance.
  const f: Record<string, unknown> = { ...base };
  for (const name of Object.getOwnPropertyNames(Object.getPrototypeOf(base) as object)) {
    const v = (base as unknown as Record<string, unknown>)[name];
    if (name !== 'constructor' && typeof v === 'function') f[name] = (v as (...a: unknown[]) => unknown).bind(base);
  }
  f.add = (a: bigint, b: bigint): bigint => {
    const r = a + b;
    return r >= P ? r - P : r;
  };
  f.sub = (a: bigint, b: bigint): bigint => {
    const r = a - b;
    return r < 0n ? r + P : r;
  };
  f.neg = (a: bigint): bigint => (a === 0n ? a : P - a);
  // Both factors are non-negative, so the remainder is already in 0..p-1.
  f.mul = (a: bigint, b: bigint): bigint => (a * b) % P;
  f.sqr = (a: bigint): bigint => (a * a) % P;
  return Object.freeze(f) as unknown as IField<bigint>;
})();

/**
 * SHA-256 as noble's ECDSA takes a hash: the suite's one-shot digest (`#sha256`: `fast-sha256`,
 * and OpenSSL for large inputs on Node) with noble's length fields. Noble's ECDSA uses it for the
 * message digest only, because RFC 6979's HMAC is given separately ({@link hmacSha256}); a
 * streaming hash (`create`) is not provided, and asking for one throws instead of hashing with
 * something else.
 */
const ecdsaHash = Object.assign((message: Uint8Array): Uint8Array => sha256Digest(message), {
  outputLen: 32,
  blockLen: 64,
  create: (): never => {
    throw new Error('p256.ts: no streaming SHA-256 is provided to noble (only the one-shot digest)');
  },
});

/** HMAC-SHA-256 (RFC 2104) for RFC 6979's deterministic nonces: `fast-sha256`'s, about 1.4 times as fast as noble's in QuickJS. */
const hmacSha256 = (key: Uint8Array, message: Uint8Array): Uint8Array => fastHmac(key, message);

/**
 * ECDSA over P-256 with SHA-256, as noble's `p256` but over {@link p256Field}, with the suite's
 * SHA-256 and `fast-sha256`'s HMAC (the same bytes: RFC 6979 makes signatures deterministic, and
 * `protocol/test/suite.test.ts` compares them with noble's `p256`).
 */
export const p256 = ecdsa(
  weierstrass({ p: CURVE.p, n: CURVE.n, h: CURVE.h, a: CURVE.a, b: CURVE.b, Gx: CURVE.Gx, Gy: CURVE.Gy }, { Fp: p256Field }),
  ecdsaHash as unknown as Parameters<typeof ecdsa>[1],
  { hmac: hmacSha256 },
);
