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
 * It also exports {@link p256Prepared}: verification with a key whose window table was
 * precomputed (`suite.ts`' `PreparedKey`, the card's terminal key while it stays powered).
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

/** A public key's point with its window table attached (noble keys the table by the point object). */
export type PreparedPoint = InstanceType<typeof p256.Point>;

/** Width of a {@link PreparedPoint}'s window table (noble's `precompute`): 4 bits, 65 windows of 8 points. */
export const PREPARED_WINDOW = 4;

/**
 * ECDSA verification with a prepared key: the same equation as noble's `verify`, with each
 * product through its point's window table (noble's `multiplyUnsafe` uses a point's table when it
 * has one; the base point's is built by noble, the key's by {@link p256Prepared.prepare}) instead of
 * the joint Strauss–Shamir double-and-add. `protocol/test/prepared.test.ts` checks it against noble's
 * `verify` on every vector signature and on seeded cases; `firmware/scripts/crypto-count.ts`
 * counts its `verify` as a verification.
 */
export const p256Prepared = {
  /** Decodes and validates `publicKey` (throws if it is not a point) and builds its table now. */
  prepare(publicKey: Uint8Array): PreparedPoint {
    const point = p256.Point.fromBytes(publicKey);
    point.assertValidity();
    // Not lazy: the first verification with the key costs what the others do.
    return point.precompute(PREPARED_WINDOW, false);
  },
  /**
   * True when `signature` (64 bytes r||s, already checked canonical by the caller: 0 < r, s < n)
   * verifies over SHA-256(`message`) under `point`.
   */
  verify(point: PreparedPoint, signature: Uint8Array, message: Uint8Array): boolean {
    const Fn = p256.Point.Fn;
    const r = bytesToNumber(signature, 0);
    const s = bytesToNumber(signature, 32);
    if (!Fn.isValidNot0(r) || !Fn.isValidNot0(s)) return false;
    // bits2int(H(m)) mod n: the digest is as long as n (256 bits), so nothing is shifted.
    const h = Fn.create(bytesToNumber(sha256Digest(message), 0));
    const is = Fn.inv(s);
    const R = p256.Point.BASE.multiplyUnsafe(Fn.create(h * is)).add(point.multiplyUnsafe(Fn.create(r * is)));
    if (R.is0()) return false;
    return Fn.create(R.toAffine().x) === r;
  },
};

/** The 32 bytes of `b` at `at` as a big-endian number. */
function bytesToNumber(b: Uint8Array, at: number): bigint {
  let v = 0n;
  for (let i = 0; i < 32; i += 4)
    v = (v << 32n) | BigInt(((b[at + i]! << 24) | (b[at + i + 1]! << 16) | (b[at + i + 2]! << 8) | b[at + i + 3]!) >>> 0);
  return v;
}
