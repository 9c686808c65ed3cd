/**
 * Acquirer API objects (SPEC.md §7.7.1, src/schema/acquirer.ts): exact wire
 * bytes, round trips, bounds, and the DT-COSE authorization header (signed
 * over what, parsed strictly). The acquirer and terminal packages test the
 * HTTP exchange itself; these tests pin the bytes both sides share.
 */
import test from 'ava';
import fc from 'fast-check';

import {
  ACQUIRER_AUTH_CONTENT_TYPE,
  ACQUIRER_LIMITS,
  BatchAckSchema,
  coseSign1,
  decodeBatchAck,
  decodeCoseSign1,
  decodeDeterministic,
  decodeOutcomePage,
  encodeBatchAck,
  encodeDeterministic,
  encodeOutcomePage,
  encodeStruct,
  ErrorCode,
  fromBase64Url,
  fromHex,
  isDtError,
  keyPairSigner,
  OutcomePageSchema,
  parseAcquirerAuth,
  RequestAuthSchema,
  signAcquirerRequest,
  toBase64Url,
  toHex,
  verifyCoseSign1,
  type CborValue,
  type OutcomePage,
} from '../src/index.ts';
import { arbitraryStruct, SEED } from './helpers/arbitrary.ts';
import { keysFor, T0 } from './helpers/pki.ts';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return isDtError(e) ? e.code : `not a DtError: ${String(e)}`;
  }
  return 'nothing thrown';
}

// ---------------------------------------------------------------- base64url

test('property: toBase64Url/fromBase64Url agree with Node base64url (RFC 4648 §5, unpadded) both ways', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        const s = toBase64Url(b);
        if (s !== Buffer.from(b).toString('base64url')) throw new Error(`encode ${toHex(b)}`);
        if (toHex(fromBase64Url(s)) !== toHex(b)) throw new Error(`decode ${s}`);
      }),
      { seed: SEED, numRuns: 500 },
    ),
  );
});

test('fromBase64Url is strict: padding, foreign characters, impossible lengths and set unused bits are refused', (t) => {
  for (const bad of ['AA==', 'A+8', 'A/8', 'AA A', 'A', 'AAAAA', 'AB', 'AAB', 'AAAAAB']) {
    t.is(
      codeOf(() => fromBase64Url(bad)),
      ErrorCode.SCHEMA_WRONG_TYPE,
      bad,
    );
  }
  // The canonical forms of the same bytes are accepted.
  t.is(toHex(fromBase64Url('AA')), '00');
  t.is(toHex(fromBase64Url('AAA')), '0000');
  t.is(toHex(fromBase64Url('')), '');
});

// ---------------------------------------------------------------- BatchAck

test('BatchAck has pinned wire bytes (integer keys 1..5, deterministic order) and decodes back', (t) => {
  const ack = { terminal: new Uint8Array(16).fill(0x11), seq: 7, hash: new Uint8Array(32).fill(0x22), handovers: 3, received: T0 };
  const bytes = encodeBatchAck(ack);
  t.is(toHex(bytes), 'a5' + '0150' + '11'.repeat(16) + '0207' + '035820' + '22'.repeat(32) + '0403' + '051a6955b900');
  t.deepEqual(decodeBatchAck(bytes), ack);
});

test('BatchAck decoding is bounded and schema-checked', (t) => {
  const ack = { terminal: new Uint8Array(16), seq: 1, hash: new Uint8Array(32), handovers: 0, received: 0 };
  // seq 0 is not a batch; more handovers than a batch may hold is out of range.
  t.is(
    codeOf(() => encodeBatchAck({ ...ack, seq: 0 })),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  const map = encodeStruct(BatchAckSchema, ack);
  map.set(4, 1001);
  t.is(
    codeOf(() => decodeBatchAck(encodeDeterministic(map))),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  map.set(4, 0);
  // adjustments (key 6) is bounded like handovers; a key the schema does not define is refused.
  map.set(6, 1001);
  t.is(
    codeOf(() => decodeBatchAck(encodeDeterministic(map))),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  map.set(6, 2);
  t.is(decodeBatchAck(encodeDeterministic(map)).adjustments, 2);
  map.set(7, 0);
  t.is(
    codeOf(() => decodeBatchAck(encodeDeterministic(map))),
    ErrorCode.SCHEMA_UNKNOWN_FIELD,
  );
  t.is(
    codeOf(() => decodeBatchAck(new Uint8Array(ACQUIRER_LIMITS.maxBatchAckSize + 1))),
    ErrorCode.TOO_LARGE,
  );
});

// ---------------------------------------------------------------- OutcomePage

test('property: OutcomePage round-trips and refs stay [seq, index] pairs', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(arbitraryStruct(OutcomePageSchema), fc.integer({ min: 0, max: 2 ** 40 }), (v, base) => {
        const outcomes = v.outcomes as Uint8Array[];
        const page: OutcomePage = {
          outcomes,
          cursor: v.cursor as number,
          refs: outcomes.map((_, i) => [base + i, i] as [number, number]),
          more: v.more as boolean,
        };
        const bytes = encodeOutcomePage(page);
        const back = decodeOutcomePage(bytes);
        if (toHex(encodeOutcomePage(back)) !== toHex(bytes)) throw new Error('re-encoding differs');
        if (JSON.stringify(back.refs) !== JSON.stringify(page.refs) || back.cursor !== page.cursor || back.more !== page.more)
          throw new Error('fields differ');
        if (back.outcomes.map(toHex).join() !== page.outcomes.map(toHex).join()) throw new Error('outcomes differ');
      }),
      { seed: SEED, numRuns: 200 },
    ),
  );
});

test('OutcomePage has pinned wire bytes', (t) => {
  const bytes = encodeOutcomePage({ outcomes: [fromHex('d2')], cursor: 9, refs: [[4, 0]], more: true });
  t.is(toHex(bytes), 'a4' + '01' + '81' + '41d2' + '0209' + '03' + '81' + '820400' + '04f5');
});

test('OutcomePage: refs that do not pair with the outcomes are refused by encoder and decoder', (t) => {
  const page: OutcomePage = { outcomes: [fromHex('d2'), fromHex('d3')], cursor: 2, refs: [[1, 0]], more: false };
  t.is(
    codeOf(() => encodeOutcomePage(page)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  const raw = encodeDeterministic(encodeStruct(OutcomePageSchema, page) as CborValue);
  t.is(
    codeOf(() => decodeOutcomePage(raw)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  // A ref must be exactly a pair (an array over its item bound is TOO_LARGE in the schema DSL).
  const triple = encodeDeterministic(
    new Map<number, CborValue>([
      [1, [fromHex('d2')]],
      [2, 0],
      [3, [[1, 0, 0]]],
      [4, false],
    ]),
  );
  t.is(
    codeOf(() => decodeOutcomePage(triple)),
    ErrorCode.TOO_LARGE,
  );
});

// ---------------------------------------------------------------- DT-COSE authorization

const terminal = keyPairSigner(keysFor('acquirer-auth-terminal'));
const terminalKeys = keysFor('acquirer-auth-terminal');
const target = `/v1/terminals/${toHex(terminal.kid)}/outcomes?after=42`;

test('signAcquirerRequest signs exactly {method, target, time, nonce} as a COSE_Sign1 that parseAcquirerAuth reads back', (t) => {
  const nonce = new Uint8Array(16).fill(7);
  const header = signAcquirerRequest(terminal, 'GET', target, T0, nonce);
  t.regex(header, /^DT-COSE [A-Za-z0-9_-]+$/);
  const raw = new Uint8Array(Buffer.from(header.slice('DT-COSE '.length), 'base64url'));
  const cose = decodeCoseSign1(raw, ACQUIRER_LIMITS.maxAuthSize);
  t.is(cose.contentType, ACQUIRER_AUTH_CONTENT_TYPE);
  t.is(toHex(cose.kid), toHex(terminal.kid));
  // The payload is the deterministic map of RequestAuth, byte for byte.
  t.is(toHex(cose.payload), toHex(encodeDeterministic(encodeStruct(RequestAuthSchema, { method: 'GET', target, time: T0, nonce }))));
  t.deepEqual(
    decodeDeterministic(cose.payload),
    new Map<number, CborValue>([
      [1, 'GET'],
      [2, target],
      [3, T0],
      [4, nonce],
    ]),
  );
  t.notThrows(() => verifyCoseSign1(cose, terminalKeys.publicKey));

  const parsed = parseAcquirerAuth(header);
  t.deepEqual(parsed.auth, { method: 'GET', target, time: T0, nonce });
  t.is(toHex(parsed.cose.signature), toHex(cose.signature));
  t.notThrows(() => verifyCoseSign1(parsed.cose, terminalKeys.publicKey));
});

test('parseAcquirerAuth refuses other schemes, other content types, oversize and malformed tokens', (t) => {
  const good = signAcquirerRequest(terminal, 'GET', target, T0, new Uint8Array(16));
  const token = good.slice('DT-COSE '.length);
  t.is(
    codeOf(() => parseAcquirerAuth(`Bearer ${token}`)),
    ErrorCode.COSE_MALFORMED,
  );
  t.is(
    codeOf(() => parseAcquirerAuth(`DT-COSE  ${token}`)),
    ErrorCode.COSE_MALFORMED,
  );
  t.is(
    codeOf(() => parseAcquirerAuth(`DT-COSE ${token}=`)),
    ErrorCode.COSE_MALFORMED,
  );
  t.is(
    codeOf(() => parseAcquirerAuth(`DT-COSE ${'A'.repeat(ACQUIRER_LIMITS.maxAuthHeaderChars + 4)}`)),
    ErrorCode.COSE_MALFORMED,
  );
  // The same payload signed as another kind of object is not an authorization.
  const payload = encodeDeterministic(encodeStruct(RequestAuthSchema, { method: 'GET', target, time: T0, nonce: new Uint8Array(16) }));
  const other = coseSign1(payload, 'application/dt.batch+cbor', terminal);
  t.is(
    codeOf(() => parseAcquirerAuth(`DT-COSE ${toBase64Url(other)}`)),
    ErrorCode.COSE_WRONG_CONTENT_TYPE,
  );
  // A payload that is not a RequestAuth (nonce of 8 bytes) is refused even when well signed.
  const short = coseSign1(
    encodeDeterministic(
      new Map<number, CborValue>([
        [1, 'GET'],
        [2, target],
        [3, T0],
        [4, new Uint8Array(8)],
      ]),
    ),
    ACQUIRER_AUTH_CONTENT_TYPE,
    terminal,
  );
  t.is(
    codeOf(() => parseAcquirerAuth(`DT-COSE ${toBase64Url(short)}`)),
    ErrorCode.SCHEMA_OUT_OF_RANGE,
  );
  // Over the size limit (the COSE_Sign1 is checked before it is decoded).
  const big = coseSign1(new Uint8Array(ACQUIRER_LIMITS.maxAuthSize), ACQUIRER_AUTH_CONTENT_TYPE, terminal);
  t.is(
    codeOf(() => parseAcquirerAuth(`DT-COSE ${toBase64Url(big)}`)),
    ErrorCode.TOO_LARGE,
  );
  // Fields beyond their bounds cannot even be signed.
  t.is(
    codeOf(() => signAcquirerRequest(terminal, 'GET', `/${'x'.repeat(ACQUIRER_LIMITS.maxAuthTarget)}`, T0, new Uint8Array(16))),
    ErrorCode.TOO_LARGE,
  );
});

test('a tampered authorization still parses but no longer verifies (the signature covers method, target, time and nonce)', (t) => {
  const header = signAcquirerRequest(terminal, 'GET', target, T0, new Uint8Array(16).fill(1));
  const raw = fromBase64Url(header.slice('DT-COSE '.length));
  // Change one character of the target inside the payload ("after=42" -> "after=43").
  const i = toHex(raw).indexOf(toHex(new TextEncoder().encode('after=42'))) / 2;
  t.true(i > 0);
  const forged = raw.slice();
  forged[i + 7] = 0x33;
  const parsed = parseAcquirerAuth(`DT-COSE ${toBase64Url(forged)}`);
  t.is(parsed.auth.target, target.replace('after=42', 'after=43'));
  t.is(
    codeOf(() => verifyCoseSign1(parsed.cose, terminalKeys.publicKey)),
    ErrorCode.BAD_SIGNATURE,
  );
});
