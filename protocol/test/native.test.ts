/**
 * The Node fast path (`@dt/protocol/native`, OpenSSL) and the reference
 * verifier (`@noble/curves`) accept exactly the same signatures: on every
 * vector, and on thousands of seeded random cases (valid signatures,
 * corrupted ones, high-S twins, wrong messages, invalid keys, out-of-range
 * r and s). A disagreement would let a server settle what a card or terminal
 * would refuse, or the other way round. Both native backends are checked: the
 * setup-built addon (`nativeVerifier` when it is loaded) and `node:crypto`.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';

import { P256_N, concatBytes, fromHex, generateKeyPair, nobleVerifier, sha256, sign, u32be, utf8, type Verifier } from '../src/index.ts';
import { nativeVerifier, nativeVerifierBackend, nodeCryptoVerifier } from '../src/native.ts';
import { isSigned, loadVectorFiles, outcomeOf, runVectorCall } from '../scripts/vectors-lib.ts';

/** Deterministic byte stream: SHA-256(seed || counter) blocks. Fixed seed, so every run checks the same cases. */
function seededRandom(seed: string): (n: number) => Uint8Array {
  const s = utf8(seed);
  let counter = 0;
  let pool: Uint8Array = new Uint8Array(0);
  return (n) => {
    while (pool.length < n) pool = concatBytes(pool, sha256(concatBytes(s, u32be(counter++))));
    const out = pool.slice(0, n);
    pool = pool.slice(n);
    return out;
  };
}

const files = loadVectorFiles();

function bigFrom(b: Uint8Array): bigint {
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return v;
}
function bytes32(v: bigint): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 31; i >= 0; i--) {
    out[i] = Number(v & 255n);
    v >>= 8n;
  }
  return out;
}

/** The native backends under test: `nativeVerifier` (the addon in CI, where setup builds it) and `node:crypto`'s. */
const NATIVE: [string, Verifier][] = [
  [`native (${nativeVerifierBackend})`, nativeVerifier],
  ['node:crypto', nodeCryptoVerifier],
];

test('the native verifier runs the setup-built addon (CI builds it: npm run setup), and turns it off with DT_NATIVE_VERIFY=node-crypto', (t) => {
  if (process.env.CI) t.is(nativeVerifierBackend, 'addon', 'npm run setup builds protocol/native/build/dt-p256.node');
  if (nativeVerifierBackend === 'addon') t.not(nativeVerifier, nodeCryptoVerifier);
  else t.is(nativeVerifier, nodeCryptoVerifier);
  const r = spawnSync(
    process.execPath,
    ['--conditions=dt-source', '--import', 'tsx', '-e', "import('@dt/protocol/native').then((m) => console.log(m.nativeVerifierBackend))"],
    { env: { ...process.env, DT_NATIVE_VERIFY: 'node-crypto' }, encoding: 'utf8' },
  );
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), 'node:crypto');
});

for (const [name, nativeVerifier] of NATIVE)
  test(`${name} and noble give the same outcome on every vector call`, (t) => {
    let calls = 0;
    for (const [file, f] of files) {
      for (const v of f.invalid) {
        const noble = outcomeOf(() => runVectorCall(v.call, v.hex, v.params, nobleVerifier));
        const native = outcomeOf(() => runVectorCall(v.call, v.hex, v.params, nativeVerifier));
        t.is(native, noble, `${file}/${v.name}`);
        t.is(native, v.error, `${file}/${v.name}: native gives the published code`);
        calls++;
      }
      for (const c of f.validChains ?? []) {
        const params = { chain: c.chain, root: c.root, at: c.at, leafRole: c.leafRole };
        t.is(
          outcomeOf(() => runVectorCall('verifyChain', undefined, params, nativeVerifier)),
          'OK',
          `${file}/${c.name}`,
        );
        calls++;
      }
      if (f.message === undefined || !isSigned(f.message)) continue;
      for (const v of f.valid) {
        const params = { message: f.message, publicKey: v.signer!.publicKey };
        t.is(
          outcomeOf(() => runVectorCall('verifySigned', v.hex, params, nativeVerifier)),
          'OK',
          `${file}/${v.name}`,
        );
        // And at the Verifier level, on the published Sig_structure.
        const args = [fromHex(v.signature!), fromHex(v.sigStructure!), fromHex(v.signer!.publicKey)] as const;
        t.true(nativeVerifier.verify(...args));
        t.true(nobleVerifier.verify(...args));
        calls++;
      }
    }
    t.true(calls > 400);
  });

type Case = { kind: string; sig: Uint8Array; msg: Uint8Array; pk: Uint8Array; expected: boolean };

/** Invalid public keys of several kinds; all must be refused by both verifiers. */
function invalidKey(rnd: (n: number) => Uint8Array, pk: Uint8Array, i: number): Uint8Array {
  const P = 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n;
  switch (i % 7) {
    case 0: // random coordinates: off the curve with overwhelming probability
      return concatBytes(Uint8Array.of(4), rnd(64));
    case 1: {
      // y + 1: right x, wrong y
      const y = (bigFrom(pk.subarray(33)) + 1n) % P;
      return concatBytes(pk.subarray(0, 33), bytes32(y));
    }
    case 2: // compressed prefix on an uncompressed-length key
      return concatBytes(Uint8Array.of(2 + (pk[64]! & 1)), pk.subarray(1));
    case 3: // the point at infinity / all zero
      return new Uint8Array(65);
    case 4: // x = p: a coordinate outside the field
      return concatBytes(Uint8Array.of(4), bytes32(P), pk.subarray(33));
    case 5: // truncated
      return pk.subarray(0, 64);
    default: // compressed form (33 bytes): DT accepts only uncompressed keys
      return concatBytes(Uint8Array.of(2 + (pk[64]! & 1)), pk.subarray(1, 33));
  }
}

for (const [name, nativeVerifier] of NATIVE)
  test(`${name} and noble agree on >= 3000 seeded random cases`, (t) => {
    const rnd = seededRandom('DT native-vs-noble v1');
    const ITER = 520;
    const counts: Record<string, number> = {};
    let agreed = 0;
    const check = (c: Case) => {
      const a = nobleVerifier.verify(c.sig, c.msg, c.pk);
      const b = nativeVerifier.verify(c.sig, c.msg, c.pk);
      counts[c.kind] = (counts[c.kind] ?? 0) + 1;
      if (a === b && a === c.expected) agreed++;
      else t.fail(`${c.kind}: noble ${a}, native ${b}, expected ${c.expected}`);
    };
    for (let i = 0; i < ITER; i++) {
      const kp = generateKeyPair(rnd);
      const msg = rnd(rnd(1)[0]! % 200);
      const sig = sign(msg, kp.secretKey);
      check({ kind: 'valid', sig, msg, pk: kp.publicKey, expected: true });
      const flipped = sig.slice();
      const pos = rnd(1)[0]! % 64;
      flipped[pos]! ^= 1 << (rnd(1)[0]! % 8);
      check({ kind: 'corrupted-signature', sig: flipped, msg, pk: kp.publicKey, expected: false });
      const s = bigFrom(sig.subarray(32));
      check({ kind: 'high-s', sig: concatBytes(sig.subarray(0, 32), bytes32(P256_N - s)), msg, pk: kp.publicKey, expected: false });
      const msg2 = msg.length > 0 ? msg.slice() : Uint8Array.of(0);
      msg2[rnd(1)[0]! % msg2.length]! ^= 0x80;
      check({ kind: 'wrong-message', sig, msg: msg2, pk: kp.publicKey, expected: false });
      check({ kind: 'invalid-key', sig, msg, pk: invalidKey(rnd, kp.publicKey, i), expected: false });
      const r = sig.subarray(0, 32);
      const bad = [
        concatBytes(new Uint8Array(32), sig.subarray(32)), // r = 0
        concatBytes(r, new Uint8Array(32)), // s = 0
        concatBytes(bytes32(P256_N), sig.subarray(32)), // r = n
        concatBytes(bytes32(2n ** 256n - 1n), sig.subarray(32)), // r = 2^256-1
      ][i % 4]!;
      check({ kind: 'out-of-range-rs', sig: bad, msg, pk: kp.publicKey, expected: false });
      // Another key's valid signature over the same message.
      const other = generateKeyPair(rnd);
      check({ kind: 'other-key', sig: sign(msg, other.secretKey), msg, pk: kp.publicKey, expected: false });
    }
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    t.log(`${name} vs noble: ${total} random cases`, counts);
    t.true(total >= 3000, `${total} cases`);
    t.is(agreed, total);
  });

test('every verifier refuses wrong-length signatures and keys without throwing', (t) => {
  const rnd = seededRandom('DT native lengths');
  const kp = generateKeyPair(rnd);
  const msg = rnd(32);
  const sig = sign(msg, kp.secretKey);
  const verifiers: Verifier[] = [nobleVerifier, nativeVerifier, nodeCryptoVerifier];
  for (const v of verifiers) {
    t.true(v.verify(sig, msg, kp.publicKey));
    t.false(v.verify(sig.subarray(0, 63), msg, kp.publicKey));
    t.false(v.verify(concatBytes(sig, Uint8Array.of(0)), msg, kp.publicKey));
    t.false(v.verify(new Uint8Array(0), msg, kp.publicKey));
    t.false(v.verify(sig, msg, new Uint8Array(0)));
    t.false(v.verify(sig, msg, concatBytes(kp.publicKey, Uint8Array.of(0))));
  }
});
