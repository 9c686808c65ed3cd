/**
 * A prepared key (`prepareKey`, `preparedVerifier`: the key's multiples precomputed, as the card
 * keeps its terminal's key while it stays powered) accepts exactly the signatures the reference
 * verifier accepts: on every vector, and on seeded cases where the same prepared key judges many
 * signatures (its table reused), valid, corrupted, high-S twins, out of range, over another
 * message or by another key. Keys it was not prepared from go to the fallback verifier.
 */
import test from 'ava';
import {
  P256_N,
  concatBytes,
  fromHex,
  generateKeyPair,
  nobleVerifier,
  prepareKey,
  preparedVerifier,
  sign,
  toHex,
  utf8,
  DtError,
  ErrorCode,
  type PreparedKey,
  type Verifier,
} from '../src/index.ts';
import { isSigned, loadVectorFiles, outcomeOf, runVectorCall } from '../scripts/vectors-lib.ts';
import { seededRandom } from './helpers/pki.ts';

function bytes32(v: bigint): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 31; i >= 0; i--, v >>= 8n) out[i] = Number(v & 255n);
  return out;
}

/** Prepares every valid key it is asked about (once) and verifies with it; an invalid key is refused, as the reference does. */
function preparingVerifier(): Verifier & { readonly prepared: number } {
  const keys = new Map<string, PreparedKey | null>();
  return {
    get prepared() {
      return [...keys.values()].filter((k) => k !== null).length;
    },
    verify(signature, message, publicKey) {
      const id = toHex(publicKey);
      if (!keys.has(id)) {
        try {
          keys.set(id, prepareKey(publicKey));
        } catch (e) {
          if (!(e instanceof DtError) || e.code !== ErrorCode.BAD_KEY) throw e;
          keys.set(id, null);
        }
      }
      const k = keys.get(id);
      return k ? preparedVerifier(k, { verify: () => assertNever() }).verify(signature, message, publicKey) : false;
    },
  };
}
function assertNever(): never {
  throw new Error('the fallback verifier was asked about the prepared key');
}

test('a prepared key gives the reference outcome on every vector call and verifies every published signature', (t) => {
  const v = preparingVerifier();
  let calls = 0;
  for (const [file, f] of loadVectorFiles()) {
    for (const inv of f.invalid) {
      t.is(
        outcomeOf(() => runVectorCall(inv.call, inv.hex, inv.params, v)),
        inv.error,
        `${file}/${inv.name}`,
      );
      calls++;
    }
    for (const c of f.validChains ?? []) {
      t.is(
        outcomeOf(() => runVectorCall('verifyChain', undefined, { chain: c.chain, root: c.root, at: c.at, leafRole: c.leafRole }, v)),
        'OK',
      );
      calls++;
    }
    if (f.message === undefined || !isSigned(f.message)) continue;
    for (const ok of f.valid) {
      t.is(
        outcomeOf(() => runVectorCall('verifySigned', ok.hex, { message: f.message, publicKey: ok.signer!.publicKey }, v)),
        'OK',
        `${file}/${ok.name}`,
      );
      t.true(v.verify(fromHex(ok.signature!), fromHex(ok.sigStructure!), fromHex(ok.signer!.publicKey)));
      calls++;
    }
  }
  t.true(calls > 400, `${calls} calls`);
  t.true(v.prepared >= 5, `${v.prepared} keys prepared`);
});

test('a prepared key and the reference verifier agree on >= 2000 seeded cases, the same table judging many signatures', (t) => {
  const rnd = seededRandom('DT prepared-vs-noble v1');
  const counts: Record<string, number> = {};
  let agreed = 0;
  let total = 0;
  for (let k = 0; k < 40; k++) {
    const kp = generateKeyPair(rnd);
    const key = prepareKey(kp.publicKey);
    const other = generateKeyPair(rnd);
    // The fallback answers for every other key: recorded, so that the test sees it was asked.
    let fallback = 0;
    const v = preparedVerifier(key, {
      verify: (s, m, p) => {
        fallback++;
        return nobleVerifier.verify(s, m, p);
      },
    });
    const check = (kind: string, sig: Uint8Array, msg: Uint8Array, expected: boolean) => {
      const a = nobleVerifier.verify(sig, msg, kp.publicKey);
      const b = v.verify(sig, msg, kp.publicKey);
      const c = key.verify(sig, msg);
      counts[kind] = (counts[kind] ?? 0) + 1;
      total++;
      if (a === expected && b === expected && c === expected) agreed++;
      else t.fail(`${kind}: reference ${a}, prepared ${b}/${c}, expected ${expected}`);
    };
    for (let i = 0; i < 9; i++) {
      const msg = rnd(rnd(1)[0]! % 200);
      const sig = sign(msg, kp.secretKey);
      check('valid', sig, msg, true);
      const flipped = sig.slice();
      flipped[rnd(1)[0]! % 64]! ^= 1 << (rnd(1)[0]! % 8);
      check('corrupted-signature', flipped, msg, false);
      const s = BigInt('0x' + toHex(sig.subarray(32)));
      check('high-s', concatBytes(sig.subarray(0, 32), bytes32(P256_N - s)), msg, false);
      const msg2 = msg.length > 0 ? msg.slice() : Uint8Array.of(0);
      msg2[rnd(1)[0]! % msg2.length]! ^= 0x80;
      check('wrong-message', sig, msg2, false);
      const r = sig.subarray(0, 32);
      check('r=0', concatBytes(new Uint8Array(32), sig.subarray(32)), msg, false);
      check('s=0', concatBytes(r, new Uint8Array(32)), msg, false);
      check('r=n', concatBytes(bytes32(P256_N), sig.subarray(32)), msg, false);
      check(
        'r+n',
        concatBytes(
          bytes32(BigInt('0x' + toHex(r)) + P256_N < 2n ** 256n ? BigInt('0x' + toHex(r)) + P256_N : 2n ** 256n - 1n),
          sig.subarray(32),
        ),
        msg,
        false,
      );
      check('other-key', sign(msg, other.secretKey), msg, false);
      check('short', sig.subarray(0, 63), msg, false);
      // Another key goes to the fallback, whose answer is the verifier's.
      const before = fallback;
      t.true(v.verify(sign(msg, other.secretKey), msg, other.publicKey));
      t.is(fallback, before + 1);
    }
  }
  t.log(`prepared vs reference: ${total} cases`, counts);
  t.true(total >= 2000, `${total} cases`);
  t.is(agreed, total);
});

test('prepareKey refuses what is not an uncompressed P-256 point, and keeps its own copy of the key', (t) => {
  const rnd = seededRandom('DT prepared keys');
  const kp = generateKeyPair(rnd);
  const P = 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n;
  const y1 = bytes32((BigInt('0x' + toHex(kp.publicKey.subarray(33))) + 1n) % P);
  for (const bad of [
    new Uint8Array(65),
    concatBytes(kp.publicKey.subarray(0, 33), y1),
    concatBytes(Uint8Array.of(4), bytes32(P), kp.publicKey.subarray(33)),
    concatBytes(Uint8Array.of(2 + (kp.publicKey[64]! & 1)), kp.publicKey.subarray(1, 33)),
    kp.publicKey.subarray(0, 64),
    concatBytes(Uint8Array.of(3), kp.publicKey.subarray(1)),
  ]) {
    const e = t.throws(() => prepareKey(bad), { instanceOf: DtError });
    t.is(e.code, ErrorCode.BAD_KEY);
  }
  const pk = kp.publicKey.slice();
  const key = prepareKey(pk);
  const msg = utf8('kept');
  const sig = sign(msg, kp.secretKey);
  pk[10]! ^= 1;
  t.true(key.isFor(kp.publicKey));
  t.false(key.isFor(pk));
  t.true(key.verify(sig, msg), 'the table is the key it was prepared from, whatever the caller does with its array');
});
