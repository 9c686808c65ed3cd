/**
 * The P-256 (secp256r1) ECDSA instance of the crypto suite: `@noble/curves`'
 * own `weierstrass` and `ecdsa` over the curve constants of its `nist.js`, the
 * same hash (`@noble/hashes` SHA-256), with one change: the base field's five
 * hot operations (add, sub, neg, mul, sqr) are written for field elements,
 * which is all the point arithmetic ever passes them (`weierstrass` keeps every
 * coordinate in `0..p-1`: `Point` validates each one it is built with). An
 * addition or subtraction then needs one comparison and at most one
 * subtraction instead of a BigInt remainder and a sign fix, and a product one
 * remainder without the sign fix. Everything else (inversion, square root,
 * powers, encoding, validation, the scalar field, RFC 6979, low-S) is noble's,
 * untouched.
 *
 * Why: an interpreter such as QuickJS (the card's engine) pays for every
 * BigInt operation and call; there a verification takes about a quarter less
 * time, a signature a seventh less. The results are the same numbers:
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
import { sha256 } from '@noble/hashes/sha2.js';

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

/** ECDSA over P-256 with SHA-256, as noble's `p256` but over {@link p256Field}. */
export const p256 = ecdsa(
  weierstrass({ p: CURVE.p, n: CURVE.n, h: CURVE.h, a: CURVE.a, b: CURVE.b, Gx: CURVE.Gx, Gy: CURVE.Gy }, { Fp: p256Field }),
  sha256,
);
