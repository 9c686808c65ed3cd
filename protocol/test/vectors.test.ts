/**
 * Conformance of this implementation to its committed vectors: every valid
 * vector decodes to the published fields, re-encodes (and re-signs, RFC 6979
 * being deterministic) to the published bytes and verifies with the published
 * key; every invalid vector fails with exactly the published error code.
 */
import test from 'ava';
import fc from 'fast-check';

import {
  ErrorCode,
  MESSAGES,
  concatBytes,
  coseSign1,
  decodeDeterministic,
  decodeMessage,
  encodeDeterministic,
  encodeMessage,
  fromHex,
  keyId,
  keyPairSigner,
  outputId,
  payloadHash,
  publicKeyCoordinates,
  publicKeyOf,
  sigStructure,
  signMessage,
  toHex,
  verifyChain,
  verifyRoot,
  verifySigned,
  type CborValue,
  type MessageName,
  type Role,
} from '../src/index.ts';
import { cborJson, toJsonValue } from '../scripts/gen-vectors.ts';
import { isSigned, loadVectorFiles, outcomeOf, runVectorCall, type KeyJson } from '../scripts/vectors-lib.ts';

const files = loadVectorFiles();
const messageFiles = [...files].filter(([, f]) => f.message !== undefined);

function checkKey(t: import('ava').ExecutionContext, k: KeyJson, where: string): void {
  const pk = publicKeyOf(fromHex(k.privateKey));
  t.is(toHex(pk), k.publicKey, `${where}: public key derives from the private key`);
  const { x, y } = publicKeyCoordinates(pk);
  t.is(toHex(x), k.x, `${where}: x`);
  t.is(toHex(y), k.y, `${where}: y`);
  t.is(toHex(keyId(pk)), k.kid, `${where}: kid = SHA-256(public key)[0..16]`);
}

test('every message type has a file with valid and invalid vectors', (t) => {
  const names = new Set(messageFiles.map(([, f]) => f.message));
  t.deepEqual([...names].sort(), Object.keys(MESSAGES).sort());
  for (const [file, f] of files) {
    t.true(f.valid.length >= 1, `${file} has valid vectors`);
    t.true(f.invalid.length >= 10, `${file} has invalid vectors`);
    t.is(f.format, 'dt-vectors-1');
  }
});

for (const [file, f] of messageFiles) {
  const name = f.message as MessageName;
  test(`${file}: valid vectors decode to the published fields, re-encode to the same bytes and verify`, (t) => {
    t.is(f.contentType, MESSAGES[name].contentType);
    t.is(f.contentFormat, MESSAGES[name].contentFormat);
    t.is(f.maxSize, MESSAGES[name].maxSize);
    for (const v of f.valid) {
      const bytes = fromHex(v.hex);
      if (!isSigned(name)) {
        const m = decodeMessage(name, bytes);
        t.deepEqual(toJsonValue(m), v.decoded, `${v.name}: decoded fields`);
        t.is(toHex(encodeMessage(name, m)), v.hex, `${v.name}: re-encodes to the same bytes`);
        continue;
      }
      const signer = v.signer!;
      checkKey(t, signer, `${file}/${v.name}`);
      const { cose, message } = verifySigned(name, bytes, fromHex(signer.publicKey));
      t.deepEqual(toJsonValue(message), v.decoded, `${v.name}: decoded fields`);
      t.is(toHex(cose.kid), signer.kid, `${v.name}: kid`);
      t.is(toHex(cose.protectedBytes), v.protected!, `${v.name}: protected header`);
      t.is(toHex(cose.payload), v.payload!, `${v.name}: payload`);
      t.is(toHex(cose.signature), v.signature!, `${v.name}: signature`);
      t.is(toHex(sigStructure(cose.protectedBytes, cose.payload)), v.sigStructure!, `${v.name}: Sig_structure`);
      t.is(toHex(payloadHash(cose)), v.payloadHash!, `${v.name}: payload hash`);
      if (name === 'Transfer') {
        const outputs = (message as { outputs: unknown[] }).outputs;
        t.deepEqual(
          v.outputIds,
          outputs.map((_, i) => toHex(outputId(payloadHash(cose), i))),
          `${v.name}: output ids`,
        );
      } else t.is(v.outputIds, undefined);
      t.is(toHex(encodeMessage(name, message)), v.payload!, `${v.name}: payload re-encodes to the same bytes`);
      // Signers write the content format; only a vector named for it shows the text form verifiers still accept (SPEC §4.1).
      t.is(
        cose.contentType,
        v.name === 'text-content-type' ? MESSAGES[name].contentType : MESSAGES[name].contentFormat,
        `${v.name}: content type`,
      );
      // RFC 6979: signing the decoded message again with the published key gives the same object.
      const key = keyPairSigner({ secretKey: fromHex(signer.privateKey), publicKey: fromHex(signer.publicKey) });
      const again =
        v.name === 'text-content-type' ? coseSign1(encodeMessage(name, message), cose.contentType, key) : signMessage(name, message, key);
      t.is(toHex(again), v.hex, `${v.name}: re-signs to the same bytes`);
    }
  });

  test(`${file}: every invalid vector fails with exactly its error code`, (t) => {
    for (const v of f.invalid) {
      t.is(
        outcomeOf(() => runVectorCall(v.call, v.hex, v.params)),
        v.error,
        `${file}/${v.name} (${v.description})`,
      );
    }
  });
}

test('certificate.json: published keys are consistent and valid chains verify', (t) => {
  const f = files.get('certificate.json')!;
  const keys = Object.values(f.keys ?? {});
  t.true(keys.length >= 6);
  for (const k of keys) checkKey(t, k, `key ${k.name}`);
  const chains = f.validChains ?? [];
  t.true(chains.length >= 3);
  for (const c of chains) {
    const root = verifyRoot(fromHex(c.root), c.at, fromHex(c.rootKid));
    const verified = verifyChain(c.chain.map(fromHex), { root, at: c.at, leafRole: c.leafRole as Role });
    t.is(toHex(verified[0]!.kid), c.leafKid, c.name);
    t.is(verified.length, c.chain.length);
  }
});

test('cbor-invalid.json: valid items decode to the published value and re-encode identically; invalid ones fail with their code', (t) => {
  const f = files.get('cbor-invalid.json')!;
  for (const v of f.valid) {
    const value = decodeDeterministic(fromHex(v.hex));
    t.deepEqual(cborJson(value), v.decoded, v.name);
    t.is(toHex(encodeDeterministic(value)), v.hex, v.name);
  }
  for (const v of f.invalid) {
    t.is(v.call, 'decodeCbor');
    t.is(
      outcomeOf(() => runVectorCall(v.call, v.hex, v.params)),
      v.error,
      `${v.name} (${v.description})`,
    );
  }
});

test('the invalid vectors cover every required failure class', (t) => {
  const codes = new Set<string>();
  const names = new Set<string>();
  for (const [, f] of files)
    for (const v of f.invalid) {
      codes.add(v.error);
      names.add(v.name);
    }
  for (const c of [
    ErrorCode.CBOR_MALFORMED,
    ErrorCode.CBOR_NON_DETERMINISTIC,
    ErrorCode.CBOR_DUPLICATE_KEY,
    ErrorCode.CBOR_FORBIDDEN_TYPE,
    ErrorCode.TOO_LARGE,
    ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.SCHEMA_WRONG_TYPE,
    ErrorCode.SCHEMA_MISSING_FIELD,
    ErrorCode.SCHEMA_UNKNOWN_FIELD,
    ErrorCode.SCHEMA_OUT_OF_RANGE,
    ErrorCode.COSE_MALFORMED,
    ErrorCode.COSE_WRONG_ALGORITHM,
    ErrorCode.COSE_WRONG_CONTENT_TYPE,
    ErrorCode.BAD_SIGNATURE,
    ErrorCode.KEY_MISMATCH,
    ErrorCode.CERT_EXPIRED,
    ErrorCode.CERT_NOT_YET_VALID,
    ErrorCode.CERT_WRONG_ROLE,
    ErrorCode.CERT_NOT_PERMITTED,
    ErrorCode.CERT_CHAIN_BROKEN,
    ErrorCode.CERT_UNTRUSTED_ROOT,
  ])
    t.true(codes.has(c), `some vector expects ${c}`);
  for (const n of [
    'payload-unsorted-keys',
    'payload-non-shortest-int',
    'payload-indefinite-map',
    'payload-duplicate-key',
    'payload-float',
    'payload-forbidden-tag',
    'wrong-algorithm-es384',
    'high-s-signature',
    'truncated-last-byte',
    'oversize',
    'root-untrusted',
  ]) {
    t.true(names.has(n), `a vector named ${n}`);
  }
});

// ---------------------------------------------------------------- properties of the CBOR layer behind the vectors

const cborValue: fc.Arbitrary<CborValue> = fc.letrec<{ v: CborValue }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.maxSafeInteger(),
    fc.integer({ min: -30, max: 300 }),
    fc.uint8Array({ maxLength: 40 }),
    fc.string({ maxLength: 20, unit: 'binary' }),
    fc.boolean(),
    fc.array(tie('v'), { maxLength: 4 }),
    fc
      .uniqueArray(fc.tuple(fc.oneof(fc.integer({ min: -300, max: 300 }), fc.maxSafeInteger()), tie('v')), {
        maxLength: 4,
        selector: (e) => e[0],
      })
      .map((e) => new Map(e)),
  ),
})).v;

test('property: deterministic encode/decode round trip, and a repeated key is always CBOR_DUPLICATE_KEY', (t) => {
  fc.assert(
    fc.property(cborValue, (v) => {
      const bytes = encodeDeterministic(v);
      const back = decodeDeterministic(bytes);
      return toHex(encodeDeterministic(back)) === toHex(bytes);
    }),
    { seed: 20261123, numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: -1000, max: 1000 }), { minLength: 1, maxLength: 6 }), fc.nat(), (keys, pick) => {
      // A sorted map with one key appended again (and the head count raised): always the duplicate code.
      const m = new Map<number, CborValue>(keys.map((k) => [k, k]));
      const enc = encodeDeterministic(m);
      const dupKey = keys[pick % keys.length]!;
      const extra = concatBytes(encodeDeterministic(dupKey), encodeDeterministic(0));
      const bytes = concatBytes(Uint8Array.of(0xa0 | (keys.length + 1)), enc.subarray(1), extra);
      return outcomeOf(() => decodeDeterministic(bytes)) === ErrorCode.CBOR_DUPLICATE_KEY;
    }),
    { seed: 20261124, numRuns: 300 },
  );
  t.pass();
});

test('property: random bytes never make the decoder throw anything but a DtError', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (b) => outcomeOf(() => decodeDeterministic(b)) !== 'NOT_DT_ERROR'),
    { seed: 20261125, numRuns: 3000 },
  );
  t.pass();
});
