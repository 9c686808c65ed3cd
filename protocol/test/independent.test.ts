/**
 * Independent verification of the vectors: nothing from `src/` touches the
 * bytes here except the schema tables (data: which CBOR key holds which field).
 *
 * - `cose-js` (an ordinary COSE library: `cbor` + `elliptic`) verifies every
 *   signed valid vector, and every signed object nested inside one, with only
 *   the public key from the JSON (looked up by kid for nested objects);
 * - a second path builds the Sig_structure with the `cbor` package and
 *   verifies through `node:crypto` from a JWK built from x and y;
 * - the `cbor` package decodes every payload and the fields are compared with
 *   the published `decoded` JSON through the schema's key table;
 * - the same libraries reject the vectors whose signature is bad.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { createHash, createPublicKey, verify as nodeVerify } from 'node:crypto';
import { createRequire } from 'node:module';

import { MESSAGES, type FieldKind, type MessageName, type StructSchema } from '../src/index.ts';
import { isSigned, loadVectorFiles, type KeyJson } from '../scripts/vectors-lib.ts';

const require = createRequire(import.meta.url);
// Neither package ships TypeScript declarations that fit strict ESM; both are plain CommonJS.
const cose = require('cose-js') as { sign: { verifySync(bytes: Buffer, verifier: { key: { x: Buffer; y: Buffer } }): Buffer } };
const cbor = require('cbor') as {
  decodeFirstSync(b: Buffer): unknown;
  encode(v: unknown): Buffer;
  Tagged: new (...a: unknown[]) => { tag: number; value: unknown };
};

const files = loadVectorFiles();
const keysByKid = new Map<string, KeyJson>();
for (const k of Object.values(files.get('certificate.json')!.keys!)) keysByKid.set(k.kid, k);

/** Fields whose byte strings are signed objects, and which message each holds. */
const SIGNED_FIELDS: Record<string, MessageName> = {
  transfer: 'Transfer',
  chain: 'Certificate',
  tokens: 'Token',
  history: 'Transfer',
  receipt: 'SyncReceipt',
  proof: 'Transfer',
};

function hex(b: unknown): string {
  if (!Buffer.isBuffer(b)) throw new Error('expected bytes from the cbor package');
  return b.toString('hex');
}

function asMap(v: unknown): Map<unknown, unknown> {
  if (v instanceof Map) return v;
  // The cbor package decodes an empty map as a plain object.
  if (v !== null && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v) && Object.keys(v).length === 0) return new Map();
  throw new Error('expected a map');
}

/** Verifies a COSE_Sign1 both independent ways; returns its protected header and payload as decoded by `cbor`. */
function verifyIndependently(
  t: ExecutionContext,
  bytes: Buffer,
  key: KeyJson,
  where: string,
): { header: Map<unknown, unknown>; payload: Buffer } {
  const x = Buffer.from(key.x, 'hex');
  const y = Buffer.from(key.y, 'hex');
  // Path 1: cose-js.
  const payload = cose.sign.verifySync(bytes, { key: { x, y } });
  // Path 2: cbor + node:crypto, Sig_structure built here (RFC 9052 §4.4).
  const outer = cbor.decodeFirstSync(bytes) as { tag: number; value: unknown[] };
  t.is(outer.tag, 18, `${where}: tag 18`);
  const [prot, unprot, pl, sig] = outer.value as [Buffer, unknown, Buffer, Buffer];
  t.is(asMap(unprot).size, 0, `${where}: empty unprotected header`);
  t.true(pl.equals(payload), `${where}: cose-js returns the payload`);
  const header = asMap(cbor.decodeFirstSync(prot));
  t.is(header.get(1), -7, `${where}: alg ES256`);
  const spki = Buffer.concat([Buffer.from([4]), x, y]);
  t.is(
    hex(header.get(4)),
    createHash('sha256').update(spki).digest().subarray(0, 16).toString('hex'),
    `${where}: kid = SHA-256(key)[0..16]`,
  );
  const toBeSigned = cbor.encode(['Signature1', prot, Buffer.alloc(0), pl]);
  const jwk = { kty: 'EC', crv: 'P-256', x: x.toString('base64url'), y: y.toString('base64url') };
  const ok = nodeVerify('sha256', toBeSigned, { key: createPublicKey({ key: jwk, format: 'jwk' }), dsaEncoding: 'ieee-p1363' }, sig);
  t.true(ok, `${where}: node:crypto verifies the Sig_structure built with cbor`);
  return { header, payload: pl };
}

/** Compares a map decoded by `cbor` with the published JSON fields, through the schema's key table. */
function checkStruct(t: ExecutionContext, schema: StructSchema, raw: unknown, json: Record<string, unknown>, where: string): void {
  const m = asMap(raw);
  let present = 0;
  for (const f of schema.fields) {
    const v = m.get(f.key);
    if (f.type.kind === 'const') {
      t.is(v, f.type.value, `${where}.${f.name} (constant)`);
      present++;
      continue;
    }
    if (json[f.name] === undefined) {
      t.false(m.has(f.key), `${where}.${f.name} absent`);
      continue;
    }
    present++;
    checkField(t, f.type, v, json[f.name], `${where}.${f.name}`, f.name);
  }
  t.is(m.size, present, `${where}: no keys beyond the schema`);
}

function checkField(t: ExecutionContext, kind: FieldKind, v: unknown, json: unknown, where: string, fieldName: string): void {
  switch (kind.kind) {
    case 'uint':
    case 'int':
      t.is(typeof v === 'bigint' ? Number(v) : v, json, where);
      return;
    case 'bytes':
      t.is(hex(v), json as string, where);
      // Signed-object fields are the variable-size ones (an Outcome's `transfer` is a 32-byte hash, not an object).
      if (SIGNED_FIELDS[fieldName] && kind.maxSize > 32) checkNestedSigned(t, SIGNED_FIELDS[fieldName]!, v as Buffer, where);
      if (fieldName === 'handovers')
        checkStruct(t, MESSAGES.Handover.schema, cbor.decodeFirstSync(v as Buffer), handoverJson(v as Buffer), where);
      return;
    case 'text':
    case 'bool':
      t.is(v, json, where);
      return;
    case 'array':
      t.true(Array.isArray(v) && Array.isArray(json) && v.length === json.length, `${where}: array length`);
      (v as unknown[]).forEach((x, i) => checkField(t, kind.of, x, (json as unknown[])[i], `${where}[${i}]`, fieldName));
      return;
    case 'struct':
      checkStruct(t, kind.schema, v, json as Record<string, unknown>, where);
      return;
    case 'const':
      t.is(v, kind.value, where);
  }
}

/** The published decoded form of a handover embedded in a batch (from handover.json, by bytes). */
function handoverJson(bytes: Buffer): Record<string, unknown> {
  const h = files.get('handover.json')!.valid.find((v) => v.hex === bytes.toString('hex'));
  if (!h) throw new Error('batch carries a handover that handover.json does not publish');
  return h.decoded as Record<string, unknown>;
}

/** A signed object nested in a payload: verified with the key its kid names. */
function checkNestedSigned(t: ExecutionContext, name: MessageName, bytes: Buffer, where: string): void {
  const outer = cbor.decodeFirstSync(bytes) as { value: [Buffer] };
  const kid = hex(asMap(cbor.decodeFirstSync(outer.value[0])).get(4));
  const key = keysByKid.get(kid);
  if (!key) {
    t.fail(`${where}: nested ${name} signed by unknown kid ${kid}`);
    return;
  }
  verifyIndependently(t, bytes, key, `${where} (${name} by ${key.name})`);
}

let verifiedTopLevel = 0;

for (const [file, f] of files) {
  if (f.message === undefined) continue;
  const name = f.message;
  test(`${file}: cose-js and node:crypto verify every valid vector; cbor decodes the published fields`, (t) => {
    for (const v of f.valid) {
      const bytes = Buffer.from(v.hex, 'hex');
      if (!isSigned(name)) {
        checkStruct(t, MESSAGES[name].schema, cbor.decodeFirstSync(bytes), v.decoded as Record<string, unknown>, `${file}/${v.name}`);
        continue;
      }
      const { header, payload } = verifyIndependently(t, bytes, v.signer!, `${file}/${v.name}`);
      // Signers write the content format; a vector may show the text form verifiers still accept (SPEC §4.1).
      t.true([MESSAGES[name].contentFormat, MESSAGES[name].contentType].includes(header.get(3) as never), `${v.name}: content type`);
      t.is(payload.toString('hex'), v.payload!);
      t.is(createHash('sha256').update(payload).digest('hex'), v.payloadHash!, `${v.name}: payload hash`);
      checkStruct(t, MESSAGES[name].schema, cbor.decodeFirstSync(payload), v.decoded as Record<string, unknown>, `${file}/${v.name}`);
      if (v.outputIds) {
        // SHA-256("DT-OUTPUT-V1" || transfer hash || index), recomputed with node:crypto.
        const h = createHash('sha256').update(payload).digest();
        v.outputIds.forEach((id, i) =>
          t.is(
            createHash('sha256')
              .update(Buffer.concat([Buffer.from('DT-OUTPUT-V1'), h, Buffer.from([i])]))
              .digest('hex'),
            id,
            `${v.name}: output id ${i}`,
          ),
        );
      }
      verifiedTopLevel++;
    }
  });

  if (isSigned(name)) {
    test(`${file}: cose-js rejects the vectors with a bad signature`, (t) => {
      const bad = f.invalid.filter((v) => v.error === 'BAD_SIGNATURE' && v.call === 'verifySigned' && v.name !== 'high-s-signature');
      t.true(bad.length >= 4);
      for (const v of bad) {
        const pk = Buffer.from(v.params.publicKey!, 'hex');
        const key = { x: pk.subarray(1, 33), y: pk.subarray(33, 65) };
        // high-S is excluded above: generic ECDSA verifiers accept it; DT's low-S rule is stricter (SPEC, crypto suite).
        t.throws(() => cose.sign.verifySync(Buffer.from(v.hex!, 'hex'), { key }), undefined, `${file}/${v.name}`);
      }
    });
  }
}

test.after('report', () => {
  // Printed so CI logs show how much was checked independently.
  console.log(`independent: ${verifiedTopLevel} top-level signed vectors verified with cose-js and node:crypto`);
});
