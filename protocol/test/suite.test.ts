/**
 * The crypto suite's primitives against the libraries they stand in for:
 * `sha256` (both targets of `#sha256`: fast-sha256 for QuickJS and `node:crypto`
 * on Node) against `node:crypto` and `@noble/hashes` (FIPS 180-4
 * examples, every length across the block and padding boundaries, random
 * inputs), `keyId`'s memo, and the P-256 instance of `src/crypto/p256.ts` (noble's curve over a
 * base field specialised for reduced operands) against noble's own `p256`:
 * the field operations over edge and random elements, byte-identical
 * deterministic signatures, and verification agreeing both ways, tampered
 * messages and signatures included.
 */
import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { p256 as nobleP256 } from '@noble/curves/nist.js';
import { Field } from '@noble/curves/abstract/modular.js';
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';
import { p256, p256Field } from '../src/crypto/p256.ts';
import {
  sha256 as suiteSha256,
  sign,
  nobleVerifier,
  publicKeyOf,
  keyId,
  keyIdOf,
  generateKeyPair,
  isCanonicalSignature,
  isValidPublicKey,
  P256_N,
} from '../src/index.ts';
import { sha256Digest as pureSha256 } from '../src/crypto/sha256.ts';
import { sha256Digest as nodeTarget } from '../src/crypto/sha256-node.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const nodeSha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

for (const [target, sha256] of [
  ['suite', suiteSha256],
  ['fast-sha256 target', pureSha256],
  ['node:crypto target', nodeTarget],
] as const) {
  test(`sha256 (${target}): the FIPS 180-4 examples`, (t) => {
    const enc = (s: string) => new TextEncoder().encode(s);
    t.is(hex(sha256(enc(''))), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    t.is(hex(sha256(enc('abc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    t.is(
      hex(sha256(enc('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'))),
      '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
    );
    t.is(hex(sha256(new Uint8Array(1_000_000).fill(0x61))), 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0');
  });

  test(`sha256 (${target}) equals node:crypto and @noble/hashes at every length 0..300 and on random inputs`, (t) => {
    for (let n = 0; n <= 300; n++) {
      const b = new Uint8Array(n).map((_, i) => (i * 131 + n * 7) & 255);
      const want = nodeSha256(b);
      if (hex(sha256(b)) !== want || hex(nobleSha256(b)) !== want) t.fail(`length ${n}`);
    }
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 20_000 }), (b) => hex(sha256(b)) === nodeSha256(b)),
      { numRuns: 200 },
    );
    // A view into a larger buffer hashes only its own bytes.
    const big = new Uint8Array(1000).map((_, i) => i & 255);
    t.is(hex(sha256(big.subarray(3, 700))), nodeSha256(big.subarray(3, 700)));
    // Plain arrays of their own, whatever they hash (a Buffer too).
    const d = sha256(Buffer.from('abc'));
    t.is(Object.getPrototypeOf(d), Uint8Array.prototype);
    t.is(d.byteLength, 32);
    t.is(d.buffer.byteLength, 32);
    t.not(sha256(big), sha256(big));
    t.pass();
  });
}

test('keyId: a fresh copy each time; the memo follows the bytes of the key array, not only its identity', (t) => {
  const a = generateKeyPair((n) => crypto.getRandomValues(new Uint8Array(n))).publicKey;
  const b = generateKeyPair((n) => crypto.getRandomValues(new Uint8Array(n))).publicKey;
  const want = (k: Uint8Array) => hex(suiteSha256(k).slice(0, 16));
  const k1 = keyId(a);
  t.is(hex(k1), want(a));
  k1.fill(0); // the caller's copy: the memo is unharmed
  t.is(hex(keyId(a)), want(a));
  t.is(keyIdOf(a), keyIdOf(a));
  // The same array now holding another key: its id, not the remembered one.
  const saved = a.slice();
  a.set(b);
  t.is(hex(keyId(a)), want(b));
  a.set(saved);
  t.is(hex(keyId(a)), want(saved));
  t.throws(() => keyId(a.subarray(1)), { message: /65 bytes/ });
});

test('the P-256 base field: add, sub, neg, mul and sqr equal the generic field on edge and random elements', (t) => {
  const F = Field(nobleP256.Point.CURVE().p);
  const P = F.ORDER;
  t.is(p256Field.ORDER, P);
  const edge = [0n, 1n, 2n, 3n, P - 1n, P - 2n, P >> 1n, (P >> 1n) + 1n, 1n << 255n, (1n << 224n) - 1n];
  const check = (a: bigint, b: bigint) =>
    p256Field.add(a, b) === F.add(a, b) &&
    p256Field.sub(a, b) === F.sub(a, b) &&
    p256Field.neg(a) === F.neg(a) &&
    p256Field.mul(a, b) === F.mul(a, b) &&
    p256Field.sqr(a) === F.sqr(a);
  for (const a of edge) for (const b of edge) if (!check(a, b)) t.fail(`${a} ${b}`);
  const element = fc.bigInt({ min: 0n, max: P - 1n });
  fc.assert(fc.property(element, element, check), { numRuns: 2000 });
  // The operations noble's field keeps (inversion, square root, powers) are its own.
  const x = 0x1234567890abcdefn;
  t.is(p256Field.inv(x), F.inv(x));
  t.is(p256Field.mul(p256Field.inv(x), x), 1n);
  t.is(p256Field.sqrt(p256Field.sqr(x)) === x || p256Field.sqrt(p256Field.sqr(x)) === P - x, true);
});

test("P-256: signatures byte-identical to noble's p256 (RFC 6979), verification agreeing both ways", (t) => {
  const opts = { lowS: true, prehash: true } as const;
  // Messages up to 3 KB: the instance's digest is `#sha256`, which on Node hashes from 1 KiB up with OpenSSL.
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ maxLength: 3000 }), (seed, msg) => {
      const sk = nobleP256.utils.randomSecretKey(new Uint8Array([...seed, ...seed.subarray(0, 16)]));
      const pk = nobleP256.getPublicKey(sk, false);
      if (hex(p256.getPublicKey(sk, false)) !== hex(pk) || hex(publicKeyOf(sk)) !== hex(pk)) return false;
      const sig = sign(msg, sk);
      if (hex(sig) !== hex(nobleP256.sign(msg, sk, opts)) || hex(p256.sign(msg, sk, opts)) !== hex(sig)) return false;
      if (!nobleP256.verify(sig, msg, pk, opts) || !nobleVerifier.verify(sig, msg, pk)) return false;
      // A changed message or signature is refused by both.
      const bad = new Uint8Array([...msg, 1]);
      if (nobleVerifier.verify(sig, bad, pk) || nobleP256.verify(sig, bad, pk, opts)) return false;
      const flipped = sig.slice();
      flipped[17]! ^= 0x40;
      return !nobleVerifier.verify(flipped, msg, pk) && !nobleP256.verify(flipped, msg, pk, opts);
    }),
    { numRuns: 40 },
  );
  t.pass();
});

test('isCanonicalSignature: 0 < r < n and 0 < s <= n/2, at the edges and on random values, as the bigint rule says', (t) => {
  const bytes32 = (v: bigint) => {
    const out = new Uint8Array(32);
    for (let i = 31; i >= 0; i--, v >>= 8n) out[i] = Number(v & 0xffn);
    return out;
  };
  const half = P256_N >> 1n;
  const rule = (r: bigint, s: bigint) => r > 0n && r < P256_N && s > 0n && s <= half;
  const edges = [0n, 1n, 255n, 256n, half - 1n, half, half + 1n, P256_N - 1n, P256_N, P256_N + 1n, 2n ** 256n - 1n];
  const check = (r: bigint, s: bigint) => {
    const sig = new Uint8Array(64);
    sig.set(bytes32(r), 0);
    sig.set(bytes32(s), 32);
    return isCanonicalSignature(sig) === rule(r, s);
  };
  for (const r of edges) for (const s of edges) t.true(check(r, s), `r=${r} s=${s}`);
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: 2n ** 256n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 256n - 1n }), (r, s) => check(r, s)),
    { numRuns: 2000 },
  );
  t.false(isCanonicalSignature(new Uint8Array(63)));
  t.false(isCanonicalSignature(new Uint8Array(65)));
});

test('isValidPublicKey answers by the key bytes, the same the first and every later time', (t) => {
  const pk = generateKeyPair((n) => crypto.getRandomValues(new Uint8Array(n))).publicKey;
  const bad = pk.slice();
  bad[64]! ^= 1; // off the curve
  for (let i = 0; i < 3; i++) {
    t.true(isValidPublicKey(pk));
    t.false(isValidPublicKey(bad));
    t.true(isValidPublicKey(Buffer.from(pk)));
  }
  // The same array holding an invalid key now: judged by what it holds.
  const a = pk.slice();
  t.true(isValidPublicKey(a));
  a.set(bad);
  t.false(isValidPublicKey(a));
  t.false(isValidPublicKey(new Uint8Array(65).fill(4, 0, 1)));
});
