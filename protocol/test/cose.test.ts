/**
 * COSE_Sign1 with ES256 as DT profiles it (SPEC.md §4): byte vectors, sign and
 * verify, every envelope rule, tampering, kid mismatch, low-S canonical
 * signatures, agreement of the reference and native verifiers, and
 * interoperability with an ordinary COSE library (cose-js).
 */
import test from 'ava';
import fc from 'fast-check';
import cose from 'cose-js';

import {
  ALG_ES256,
  coseSign1,
  coseSign1Async,
  decodeCoseSign1,
  DtError,
  encodeDeterministic,
  encodeMessage,
  ErrorCode,
  fromHex,
  isCanonicalSignature,
  isDtError,
  keyId,
  keyPairSigner,
  MESSAGES,
  nobleVerifier,
  openSigned,
  P256_N,
  payloadHash,
  protectedHeader,
  publicKeyOf,
  sha256,
  sign,
  sigStructure,
  signMessage,
  toHex,
  utf8,
  verifyCoseSign1,
  verifySigned,
  type CborValue,
  type Signer,
  type Token,
} from '../src/index.ts';
import { nativeVerifier } from '../src/native.ts';
import { SEED } from './helpers/arbitrary.ts';
import { keysFor, T0 } from './helpers/pki.ts';

const keys = keysFor('cose-signer');
const signer = keyPairSigner(keys);
const other = keysFor('cose-other');

const token: Token = {
  serial: fromHex('00112233445566778899aabbccddeeff'),
  value: 150_000,
  currency: 398,
  owner: fromHex('000102030405060708090a0b0c0d0e0f'),
  issued: T0,
};

function bigToBytes32(n: bigint): Uint8Array {
  return fromHex(n.toString(16).padStart(64, '0'));
}
function bytesToBig(b: Uint8Array): bigint {
  return BigInt('0x' + toHex(b));
}

/** Builds a tagged COSE_Sign1 from parts, signing whatever protected bytes it is given with `sk` (for crafting invalid objects). */
function craft(
  protectedBytes: Uint8Array,
  payload: Uint8Array,
  opts: { unprotected?: CborValue; signature?: Uint8Array; sk?: Uint8Array } = {},
): Uint8Array {
  const signature = opts.signature ?? sign(sigStructure(protectedBytes, payload), opts.sk ?? keys.secretKey);
  return encodeDeterministic({ tag: 18, value: [protectedBytes, opts.unprotected ?? new Map(), payload, signature] });
}

function header(entries: Array<[number, CborValue]>): Uint8Array {
  return encodeDeterministic(new Map(entries));
}

const CT_TOKEN = MESSAGES.Token.contentType;
const CF_TOKEN = MESSAGES.Token.contentFormat;

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof DtError ? e.code : `not a DtError: ${String(e)}`;
  }
  return 'no error';
}

// ---------------------------------------------------------------- byte vectors (SPEC.md §4.1, §4.3, §6.1)

test('protected header is exactly {1: -7, 3: content type, 4: kid} in deterministic order', (t) => {
  const kid = fromHex('000102030405060708090a0b0c0d0e0f');
  t.is(
    toHex(protectedHeader(CT_TOKEN, kid)),
    'a301260378196170706c69636174696f6e2f64742e746f6b656e2b63626f720450000102030405060708090a0b0c0d0e0f',
  );
  // The content format a signer writes (SPEC §4.1 example): 3 bytes instead of 27.
  t.is(toHex(protectedHeader(CF_TOKEN, kid)), 'a301260319fdea0450000102030405060708090a0b0c0d0e0f');
});

test('Sig_structure is ["Signature1", protected, h\'\', payload] (SPEC.md §4.3 example)', (t) => {
  t.is(toHex(sigStructure(fromHex('a10126'), fromHex('01'))), '846a5369676e61747572653143a10126404101');
  // Written without the generic encoder: byte for byte the deterministic encoding, at every head length.
  for (const n of [0, 1, 23, 24, 255, 256, 65535, 65536, 70000]) {
    const prot = new Uint8Array(n % 300).fill(7);
    const payload = new Uint8Array(n).fill(9);
    t.is(
      toHex(sigStructure(prot, payload)),
      toHex(encodeDeterministic(['Signature1', prot, new Uint8Array(0), payload])),
      `payload ${n} B`,
    );
  }
});

test('key id is the first 16 bytes of SHA-256 of the uncompressed point (RFC 6979 A.2.5 key)', (t) => {
  const sk = fromHex('c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721');
  const pk = publicKeyOf(sk);
  t.is(
    toHex(pk),
    '0460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb67903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299',
  );
  t.is(toHex(keyId(pk)), 'b18b86ce1389e46de87aa4a5131ce83c');
  t.is(toHex(keyId(pk)), toHex(sha256(pk).slice(0, 16)));
});

test('ES256 signatures are RFC 6979 deterministic and normalised to low-S (RFC 6979 A.2.5 vectors)', (t) => {
  const sk = fromHex('c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721');
  // "sample": RFC 6979 gives a high s; DT signs with n - s (same r).
  const sample = sign(utf8('sample'), sk);
  t.is(toHex(sample.slice(0, 32)), 'efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716');
  const rfcS = BigInt('0xf7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8');
  t.is(bytesToBig(sample.slice(32)), P256_N - rfcS);
  // "test": RFC 6979's s is already low, kept as is.
  const testSig = sign(utf8('test'), sk);
  t.is(
    toHex(testSig),
    'f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367' + '019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083',
  );
  t.true(nobleVerifier.verify(sample, utf8('sample'), publicKeyOf(sk)));
});

// ---------------------------------------------------------------- sign / verify

test('sign then verify returns the payload; the object has the DT shape', (t) => {
  const bytes = signMessage('Token', token, signer);
  const opened = verifySigned('Token', bytes, keys.publicKey);
  t.deepEqual(opened.message, token);
  t.is(opened.cose.contentType, CF_TOKEN, 'signed with the content format');
  t.deepEqual(opened.cose.kid, keyId(keys.publicKey));
  t.is(opened.cose.signature.length, 64);
  t.true(isCanonicalSignature(opened.cose.signature));
  // d2 84: tag 18, 4-element array; then the protected header bstr; unprotected a0.
  t.is(toHex(bytes.slice(0, 2)), 'd284');
  const prot = protectedHeader(CF_TOKEN, signer.kid);
  t.is(toHex(bytes.slice(2, 4 + prot.length)), '58' + prot.length.toString(16) + toHex(prot));
  t.is(bytes[4 + prot.length], 0xa0);
  // Compared as hex: cbor-x caches a `dataView` property on the arrays it decodes from.
  t.is(toHex(opened.cose.payload), toHex(encodeMessage('Token', token)));
});

test('signing is deterministic: the same message and key give the same bytes', (t) => {
  t.deepEqual(signMessage('Token', token, signer), signMessage('Token', token, signer));
});

test('an ordinary COSE library (cose-js) verifies DT signed objects', (t) => {
  const bytes = signMessage('Token', token, signer);
  const x = Buffer.from(keys.publicKey.slice(1, 33));
  const y = Buffer.from(keys.publicKey.slice(33, 65));
  const payload = cose.sign.verifySync(Buffer.from(bytes), { key: { x, y } });
  t.deepEqual(new Uint8Array(payload), encodeMessage('Token', token));
  // And it rejects them under another key: the check is real.
  const ox = Buffer.from(other.publicKey.slice(1, 33));
  const oy = Buffer.from(other.publicKey.slice(33, 65));
  t.throws(() => cose.sign.verifySync(Buffer.from(bytes), { key: { x: ox, y: oy } }));
});

// ---------------------------------------------------------------- envelope rules (SPEC.md §4.5)

test('wrong algorithm in the protected header is COSE_WRONG_ALGORITHM, even when correctly signed', (t) => {
  const payload = encodeMessage('Token', token);
  for (const alg of [-35, -8, -257, 1]) {
    const bytes = craft(
      header([
        [1, alg],
        [3, CT_TOKEN],
        [4, signer.kid],
      ]),
      payload,
    );
    t.is(
      codeOf(() => verifySigned('Token', bytes, keys.publicKey)),
      ErrorCode.COSE_WRONG_ALGORITHM,
      `alg ${alg}`,
    );
  }
  t.is(
    codeOf(() =>
      verifySigned(
        'Token',
        craft(
          header([
            [3, CT_TOKEN],
            [4, signer.kid],
          ]),
          payload,
        ),
        keys.publicKey,
      ),
    ),
    ErrorCode.COSE_WRONG_ALGORITHM,
    'alg absent',
  );
  t.is(ALG_ES256, -7);
});

test('wrong content type is COSE_WRONG_CONTENT_TYPE (a Token is not an Outcome)', (t) => {
  const bytes = signMessage('Token', token, signer);
  t.is(
    codeOf(() => verifySigned('Outcome', bytes, keys.publicKey)),
    ErrorCode.COSE_WRONG_CONTENT_TYPE,
  );
  t.is(
    codeOf(() => openSigned('Transfer', bytes)),
    ErrorCode.COSE_WRONG_CONTENT_TYPE,
  );
  // A content type nobody uses, correctly signed.
  const odd = craft(
    header([
      [1, -7],
      [3, 'application/cbor'],
      [4, signer.kid],
    ]),
    encodeMessage('Token', token),
  );
  t.is(
    codeOf(() => verifySigned('Token', odd, keys.publicKey)),
    ErrorCode.COSE_WRONG_CONTENT_TYPE,
  );
  // Content formats: another message's, and one nobody uses.
  for (const cf of [MESSAGES.Outcome.contentFormat, 60]) {
    const other = craft(
      header([
        [1, -7],
        [3, cf],
        [4, signer.kid],
      ]),
      encodeMessage('Token', token),
    );
    t.is(
      codeOf(() => verifySigned('Token', other, keys.publicKey)),
      ErrorCode.COSE_WRONG_CONTENT_TYPE,
      `content format ${cf}`,
    );
  }
});

test('objects signed with the text content type (before content formats, SPEC §4.1) open and verify as before', (t) => {
  const legacy = coseSign1(encodeMessage('Token', token), CT_TOKEN, signer);
  const opened = verifySigned('Token', legacy, keys.publicKey);
  t.is(opened.cose.contentType, CT_TOKEN);
  t.deepEqual(opened.message, token);
  // The same payload and key in both forms: one name (payload hash), two signed objects.
  const current = signMessage('Token', token, signer);
  t.true(current.length < legacy.length - 20, 'the content format is shorter');
  t.deepEqual(payloadHash(openSigned('Token', current).cose), payloadHash(opened.cose));
  // The text form of another message is refused as before.
  t.is(
    codeOf(() => verifySigned('Outcome', legacy, keys.publicKey)),
    ErrorCode.COSE_WRONG_CONTENT_TYPE,
  );
});

test('every content type is distinct, so no signed message can pass for another', (t) => {
  const cts = Object.values(MESSAGES)
    .map((m) => m.contentType)
    .filter((c) => c !== null);
  t.is(new Set(cts).size, cts.length);
  t.is(cts.length, 10);
  const cfs = Object.values(MESSAGES)
    .map((m) => m.contentFormat)
    .filter((c) => c !== null);
  t.is(new Set(cfs).size, cfs.length);
  t.is(cfs.length, 10);
  // CoAP Content-Format numbers for experimental use (RFC 7252 §12.3).
  t.true(cfs.every((c) => c >= 65000 && c <= 65535));
});

test('malformed envelopes are COSE_MALFORMED (or the CBOR error of the layer below)', (t) => {
  const payload = encodeMessage('Token', token);
  const prot = protectedHeader(CT_TOKEN, signer.kid);
  const good = craft(prot, payload);
  t.notThrows(() => verifySigned('Token', good, keys.publicKey));
  const sig = decodeCoseSign1(good, 512).signature;
  const cases: Array<[string, Uint8Array, string]> = [
    ['untagged array', encodeDeterministic([prot, new Map(), payload, sig]), ErrorCode.COSE_MALFORMED],
    ['tag 18 around a 3-element array', encodeDeterministic({ tag: 18, value: [prot, new Map(), payload] }), ErrorCode.COSE_MALFORMED],
    ['tag 18 around a map', encodeDeterministic({ tag: 18, value: new Map([[1, 1]]) }), ErrorCode.COSE_MALFORMED],
    // d2 (tag 18) replaced by d8 62 (tag 98), which our encoder refuses to write.
    ['COSE_Sign (tag 98) is not allowed', Uint8Array.from([0xd8, 0x62, ...good.slice(1)]), ErrorCode.CBOR_FORBIDDEN_TYPE],
    ['non-empty unprotected header (kid)', craft(prot, payload, { unprotected: new Map([[4, signer.kid]]) }), ErrorCode.COSE_MALFORMED],
    ['unprotected header not a map', craft(prot, payload, { unprotected: new Uint8Array(0) }), ErrorCode.COSE_MALFORMED],
    ['63-byte signature', craft(prot, payload, { signature: sig.slice(0, 63) }), ErrorCode.COSE_MALFORMED],
    ['65-byte signature', craft(prot, payload, { signature: Uint8Array.from([...sig, 0]) }), ErrorCode.COSE_MALFORMED],
    [
      'DER signature',
      craft(prot, payload, { signature: fromHex('3044' + '0220' + toHex(sig.slice(0, 32)) + '0220' + toHex(sig.slice(32))) }),
      ErrorCode.COSE_MALFORMED,
    ],
    ['detached payload (nil)', encodeDeterministic({ tag: 18, value: [prot, new Map(), 0, sig] }), ErrorCode.COSE_MALFORMED],
    [
      'extra protected parameter (crit)',
      craft(
        header([
          [1, -7],
          [2, [3]],
          [3, CT_TOKEN],
          [4, signer.kid],
        ]),
        payload,
      ),
      ErrorCode.COSE_MALFORMED,
    ],
    [
      'extra protected parameter (IV)',
      craft(
        header([
          [1, -7],
          [3, CT_TOKEN],
          [4, signer.kid],
          [5, new Uint8Array(12)],
        ]),
        payload,
      ),
      ErrorCode.COSE_MALFORMED,
    ],
    [
      'content type an integer above 65535 (no CoAP content format)',
      craft(
        header([
          [1, -7],
          [3, 70000],
          [4, signer.kid],
        ]),
        payload,
      ),
      ErrorCode.COSE_MALFORMED,
    ],
    [
      'content type missing',
      craft(
        header([
          [1, -7],
          [4, signer.kid],
        ]),
        payload,
      ),
      ErrorCode.COSE_MALFORMED,
    ],
    [
      'kid missing',
      craft(
        header([
          [1, -7],
          [3, CT_TOKEN],
        ]),
        payload,
      ),
      ErrorCode.COSE_MALFORMED,
    ],
    [
      'kid of 8 bytes',
      craft(
        header([
          [1, -7],
          [3, CT_TOKEN],
          [4, signer.kid.slice(0, 8)],
        ]),
        payload,
      ),
      ErrorCode.COSE_MALFORMED,
    ],
    [
      'kid as text',
      craft(
        header([
          [1, -7],
          [3, CT_TOKEN],
          [4, 'kid'],
        ]),
        payload,
      ),
      ErrorCode.COSE_MALFORMED,
    ],
    ['protected header not a map', craft(encodeDeterministic([1, -7]), payload), ErrorCode.COSE_MALFORMED],
    [
      'protected header not deterministic (unsorted)',
      craft(fromHex('a3' + '0450' + toHex(signer.kid) + '0126' + '0378' + '19' + toHex(utf8(CT_TOKEN))), payload),
      ErrorCode.CBOR_NON_DETERMINISTIC,
    ],
    [
      'protected header over 256 bytes',
      craft(
        header([
          [1, -7],
          [3, 'x'.repeat(300)],
          [4, signer.kid],
        ]),
        payload,
      ),
      ErrorCode.TOO_LARGE,
    ],
    ['empty protected header bytes', craft(new Uint8Array(0), payload), ErrorCode.CBOR_MALFORMED],
    ['payload not a Token', craft(prot, encodeDeterministic([1, 2, 3])), ErrorCode.SCHEMA_WRONG_TYPE],
    ['trailing byte after the object', Uint8Array.from([...good, 0]), ErrorCode.CBOR_MALFORMED],
  ];
  for (const [name, bytes, code] of cases)
    t.is(
      codeOf(() => verifySigned('Token', bytes, keys.publicKey)),
      code,
      name,
    );
});

test('an object over the message size limit is TOO_LARGE before it is parsed', (t) => {
  const bytes = signMessage('Token', token, signer);
  const padded = new Uint8Array(MESSAGES.Token.maxSize + 1);
  padded.set(bytes);
  t.is(
    codeOf(() => openSigned('Token', padded)),
    ErrorCode.TOO_LARGE,
  );
});

// ---------------------------------------------------------------- tampering and keys

test('a tampered payload is BAD_SIGNATURE (every byte of a serial, one at a time)', (t) => {
  const bytes = signMessage('Token', token, signer);
  const payload = encodeMessage('Token', token);
  const at = indexOf(bytes, payload) + 5; // a6 00 01 01 50, then the serial: the payload still decodes as a Token
  for (let i = 0; i < 16; i++) {
    const bad = bytes.slice();
    bad[at + i] ^= 0x01;
    t.is(
      codeOf(() => verifySigned('Token', bad, keys.publicKey)),
      ErrorCode.BAD_SIGNATURE,
      `byte ${i}`,
    );
  }
});

test('a tampered protected header is BAD_SIGNATURE when the envelope is still well-formed', (t) => {
  // Re-wrap the original payload and signature under another content type.
  const bytes = signMessage('Token', token, signer);
  const orig = decodeCoseSign1(bytes, 512);
  const prot = protectedHeader(MESSAGES.Outcome.contentType, signer.kid);
  const swapped = craft(prot, orig.payload, { signature: orig.signature });
  const decoded = decodeCoseSign1(swapped, 512);
  t.is(
    codeOf(() => verifyCoseSign1(decoded, keys.publicKey)),
    ErrorCode.BAD_SIGNATURE,
  );
});

test('a flipped signature bit is BAD_SIGNATURE', (t) => {
  const bytes = signMessage('Token', token, signer);
  for (const i of [1, 20, 40, 63]) {
    const bad = bytes.slice();
    bad[bad.length - 64 + i] ^= 0x80;
    t.is(
      codeOf(() => verifySigned('Token', bad, keys.publicKey)),
      ErrorCode.BAD_SIGNATURE,
      `sig byte ${i}`,
    );
  }
});

test('kid that does not name the given key is KEY_MISMATCH; signed by another key under our kid is BAD_SIGNATURE', (t) => {
  const bytes = signMessage('Token', token, signer);
  t.is(
    codeOf(() => verifySigned('Token', bytes, other.publicKey)),
    ErrorCode.KEY_MISMATCH,
  );
  // An impostor puts our kid in its header and signs with its own key.
  const impostor: Signer = { kid: signer.kid, sign: (m) => sign(m, other.secretKey) };
  const forged = signMessage('Token', token, impostor);
  t.is(
    codeOf(() => verifySigned('Token', forged, keys.publicKey)),
    ErrorCode.BAD_SIGNATURE,
  );
});

test('an invalid public key never verifies', (t) => {
  const bytes = signMessage('Token', token, signer);
  const cs = decodeCoseSign1(bytes, 512);
  const offCurve = keys.publicKey.slice();
  offCurve[64] ^= 1;
  t.false(nobleVerifier.verify(cs.signature, sigStructure(cs.protectedBytes, cs.payload), offCurve));
  t.false(nativeVerifier.verify(cs.signature, sigStructure(cs.protectedBytes, cs.payload), offCurve));
  t.is(
    codeOf(() => keyId(keys.publicKey.slice(0, 33))),
    ErrorCode.BAD_KEY,
  );
});

// ---------------------------------------------------------------- low-S (SPEC.md §4.4)

test('the high-S twin of a valid signature is rejected by both verifiers, though mathematically valid', (t) => {
  const bytes = signMessage('Token', token, signer);
  const cs = decodeCoseSign1(bytes, 512);
  const msg = sigStructure(cs.protectedBytes, cs.payload);
  const s = bytesToBig(cs.signature.slice(32));
  t.true(s <= P256_N >> 1n);
  const high = Uint8Array.from([...cs.signature.slice(0, 32), ...bigToBytes32(P256_N - s)]);
  t.false(isCanonicalSignature(high));
  t.false(nobleVerifier.verify(high, msg, keys.publicKey));
  t.false(nativeVerifier.verify(high, msg, keys.publicKey));
  const highObject = craft(cs.protectedBytes, cs.payload, { signature: high });
  t.is(
    codeOf(() => verifySigned('Token', highObject, keys.publicKey)),
    ErrorCode.BAD_SIGNATURE,
  );
  t.is(
    codeOf(() => verifySigned('Token', highObject, keys.publicKey, nativeVerifier)),
    ErrorCode.BAD_SIGNATURE,
  );
  // An ordinary COSE library accepts the twin: the rejection is DT's own rule.
  const x = Buffer.from(keys.publicKey.slice(1, 33));
  const y = Buffer.from(keys.publicKey.slice(33, 65));
  t.notThrows(() => cose.sign.verifySync(Buffer.from(highObject), { key: { x, y } }));
});

test('r or s of zero, or not below n, never verify', (t) => {
  const msg = utf8('m');
  const good = sign(msg, keys.secretKey);
  const r = good.slice(0, 32);
  const s = good.slice(32);
  const zero = new Uint8Array(32);
  const n = bigToBytes32(P256_N);
  for (const [name, sig] of [
    ['r = 0', [...zero, ...s]],
    ['s = 0', [...r, ...zero]],
    ['r = n', [...n, ...s]],
    ['s = n', [...r, ...n]],
    ['all ff', new Array(64).fill(0xff)],
  ] as Array<[string, number[]]>) {
    t.false(nobleVerifier.verify(Uint8Array.from(sig), msg, keys.publicKey), name);
    t.false(nativeVerifier.verify(Uint8Array.from(sig), msg, keys.publicKey), name);
  }
  t.true(nobleVerifier.verify(good, msg, keys.publicKey));
});

test('property: every signature the suite makes is low-S and verifies; its high-S twin never does', (t) => {
  // (Agreement of the native fast path with this rule on many more cases is native.test.ts's job.)
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 64 }), (msg) => {
        const sig = sign(msg, keys.secretKey);
        if (!isCanonicalSignature(sig)) throw new Error('high-S signature produced');
        if (!nobleVerifier.verify(sig, msg, keys.publicKey)) throw new Error('own signature does not verify');
        const high = Uint8Array.from([...sig.slice(0, 32), ...bigToBytes32(P256_N - bytesToBig(sig.slice(32)))]);
        if (nobleVerifier.verify(high, msg, keys.publicKey)) throw new Error('high-S twin accepted');
      }),
      { seed: SEED, numRuns: 60 },
    ),
  );
});

test('coseSign1 signs arbitrary payload bytes under any content type and verifies', (t) => {
  const bytes = coseSign1(encodeDeterministic(new Map([[1, 'x']])), 'application/example', signer);
  const cs = decodeCoseSign1(bytes, 1024);
  t.is(cs.contentType, 'application/example');
  t.notThrows(() => verifyCoseSign1(cs, keys.publicKey));
  t.true(
    isDtError(
      t.throws(() => verifyCoseSign1(cs, other.publicKey)),
      ErrorCode.KEY_MISMATCH,
    ),
  );
});

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error('not found');
}

test('coseSign1Async: the same bytes as coseSign1 for a signer without signAsync; a signAsync signature is used, checked for size', async (t) => {
  const keys = { secretKey: fromHex('11'.repeat(32)), publicKey: publicKeyOf(fromHex('11'.repeat(32))) };
  const signer = keyPairSigner(keys);
  const payload = encodeDeterministic(new Map([[1, 2]]));
  t.deepEqual(await coseSign1Async(payload, 65000, signer), coseSign1(payload, 65000, signer));
  let calls = 0;
  const asyncSigner = { ...signer, signAsync: async (m: Uint8Array) => (calls++, signer.sign(m)) };
  const bytes = await coseSign1Async(payload, 65000, asyncSigner);
  t.is(calls, 1);
  t.deepEqual(bytes, coseSign1(payload, 65000, signer));
  const short = { ...signer, signAsync: async () => new Uint8Array(63) };
  await t.throwsAsync(coseSign1Async(payload, 65000, short), { message: /not 64 bytes/ });
});
