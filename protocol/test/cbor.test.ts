/**
 * Deterministic CBOR (SPEC.md §2): encoding vectors, an "invalid inputs"
 * vector table for the decoder, and property-based round trips over the whole
 * DT data model, cross-checked against an independent CBOR library (`cbor`).
 */
import test from 'ava';
import fc from 'fast-check';
import cbor from 'cbor';

import {
  decodeDeterministic,
  DEFAULT_MAX_SIZE,
  DtError,
  encodeDeterministic,
  ErrorCode,
  fromHex,
  isDtError,
  MAX_DEPTH,
  toHex,
  type CborMap,
  type CborValue,
} from '../src/index.ts';
import { SEED } from './helpers/arbitrary.ts';

const MAX = Number.MAX_SAFE_INTEGER;

// ---------------------------------------------------------------- encoding vectors

/** RFC 8949 appendix A examples that fall inside the DT data model, plus DT edge cases. */
const ENCODINGS: Array<[string, CborValue, string]> = [
  ['0', 0, '00'],
  ['1', 1, '01'],
  ['10', 10, '0a'],
  ['23', 23, '17'],
  ['24', 24, '1818'],
  ['25', 25, '1819'],
  ['100', 100, '1864'],
  ['255', 255, '18ff'],
  ['256', 256, '190100'],
  ['1000', 1000, '1903e8'],
  ['65535', 65535, '19ffff'],
  ['65536', 65536, '1a00010000'],
  ['1000000', 1000000, '1a000f4240'],
  ['2^32-1', 4294967295, '1affffffff'],
  ['2^32', 4294967296, '1b0000000100000000'],
  ['1000000000000', 1000000000000, '1b000000e8d4a51000'],
  ['2^53-1', MAX, '1b001fffffffffffff'],
  ['-1', -1, '20'],
  ['-10', -10, '29'],
  ['-24', -24, '37'],
  ['-25', -25, '3818'],
  ['-100', -100, '3863'],
  ['-1000', -1000, '3903e7'],
  ['-2^32', -4294967296, '3affffffff'],
  ['-2^32-1', -4294967297, '3b0000000100000000'],
  ['-(2^53-1)', -MAX, '3b001ffffffffffffe'],
  ['false', false, 'f4'],
  ['true', true, 'f5'],
  ["h''", new Uint8Array(0), '40'],
  ["h'01020304'", Uint8Array.of(1, 2, 3, 4), '4401020304'],
  ['24-byte string', new Uint8Array(24), '5818' + '00'.repeat(24)],
  ['""', '', '60'],
  ['"a"', 'a', '6161'],
  ['"IETF"', 'IETF', '6449455446'],
  ['"\\"\\\\"', '"\\', '62225c'],
  ['"ü"', '\u00fc', '62c3bc'],
  ['"水"', '\u6c34', '63e6b0b4'],
  ['"𐅑"', '\ud800\udd51', '64f0908591'],
  ['[]', [], '80'],
  ['[1, 2, 3]', [1, 2, 3], '83010203'],
  ['[1, [2, 3], [4, 5]]', [1, [2, 3], [4, 5]], '8301820203820405'],
  ['[1..25]', Array.from({ length: 25 }, (_, i) => i + 1), '98190102030405060708090a0b0c0d0e0f101112131415161718181819'],
  ['{}', new Map(), 'a0'],
  [
    '{1: 2, 3: 4}',
    new Map([
      [1, 2],
      [3, 4],
    ]),
    'a201020304',
  ],
  // SPEC.md §2.2: bytewise order of the encoded keys, not numeric and not length-first.
  [
    'sorted keys',
    new Map<number, CborValue>([
      [-65537, 1],
      [8, 2],
      [1, 'a'],
      [-1, 0],
      [24, 0],
    ]),
    'a5016161080218180020003a0001000001',
  ],
  [
    'negative keys descend',
    new Map<number, CborValue>([
      [-3, 0],
      [-1, 0],
      [-2, 0],
    ]),
    'a3200021002200',
  ],
  ['COSE_Sign1 tag 18', { tag: 18, value: [new Uint8Array(0), new Map(), new Uint8Array(0), new Uint8Array(0)] }, 'd28440a04040'],
];

for (const [name, value, hex] of ENCODINGS) {
  test(`encodes ${name} as ${hex} and decodes it back`, (t) => {
    const bytes = encodeDeterministic(value);
    t.is(toHex(bytes), hex);
    // Map equality by content: the decoder returns keys in encoded order.
    t.true(deepEqualCbor(decodeDeterministic(bytes), value));
  });
}

test('encoder output is a plain Uint8Array (no Buffer), so pure code can use it', (t) => {
  const bytes = encodeDeterministic(new Map([[1, Uint8Array.of(1)]]));
  t.is(Object.getPrototypeOf(bytes), Uint8Array.prototype);
  const decoded = decodeDeterministic(bytes) as CborMap;
  t.is(Object.getPrototypeOf(decoded.get(1)), Uint8Array.prototype);
});

// ---------------------------------------------------------------- encoder refusals

const UNENCODABLE: Array<[string, unknown, ErrorCode]> = [
  ['float 1.5', 1.5, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['NaN', Number.NaN, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['Infinity', Number.POSITIVE_INFINITY, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['2^53 (not a safe integer)', 2 ** 53, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['null', null, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['undefined', undefined, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['bigint', 5n, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['plain object', { a: 1 }, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['text map key', new Map([['a', 1]]), ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['float map key', new Map([[1.5, 1]]), ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['tag 24', { tag: 24, value: new Uint8Array(1) }, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['tag 61 (CWT tag, SPEC.md §2.3)', { tag: 61, value: 1 }, ErrorCode.CBOR_FORBIDDEN_TYPE],
  ['nesting deeper than MAX_DEPTH', nest(MAX_DEPTH + 1), ErrorCode.TOO_LARGE],
];

function nest(depth: number): CborValue {
  let v: CborValue = 0;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

for (const [name, value, code] of UNENCODABLE) {
  test(`encoder refuses ${name} with ${code}`, (t) => {
    const err = t.throws(() => encodeDeterministic(value as CborValue));
    t.true(isDtError(err, code), String(err));
  });
}

test('nesting of exactly MAX_DEPTH levels below the top round-trips', (t) => {
  const v = nest(MAX_DEPTH);
  t.deepEqual(decodeDeterministic(encodeDeterministic(v)), v);
});

// ---------------------------------------------------------------- invalid inputs

/**
 * The decoder's invalid-input vectors (SPEC.md §2.5). Each expects one code,
 * or a list when the SPEC leaves the code to the step order of an
 * implementation detail; every rejection must be a DtError.
 */
const INVALID: Array<{ name: string; hex: string; code: ErrorCode | ErrorCode[] }> = [
  // non-shortest heads
  { name: 'non-shortest uint 1 (18 01)', hex: '1801', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest uint 1 (19 0001)', hex: '190001', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest uint 1 (1a)', hex: '1a00000001', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest uint 1 (1b)', hex: '1b0000000000000001', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest uint 255 (19 00ff)', hex: '1900ff', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest negative -1 (38 00)', hex: '3800', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest byte string length', hex: '5801ff', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest text length', hex: '780161', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest array count', hex: '980101', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest map count', hex: 'b8010101', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'non-shortest map key', hex: 'a1180101', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  // key order
  { name: 'unsorted keys {2, 1}', hex: 'a202010101', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'negative keys in ascending order {-2, -1}', hex: 'a221002000', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'negative key before positive {-1, 0}', hex: 'a220010001', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'length-first (RFC 7049) order {-1, 24}', hex: 'a220011818 01'.replace(' ', ''), code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'unsorted keys in a nested map', hex: '81a202010101', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  // duplicate keys (SPEC.md §2.5 step 2)
  { name: 'duplicate key {1: 1, 1: 2}', hex: 'a201010102', code: ErrorCode.CBOR_DUPLICATE_KEY },
  { name: 'duplicate key with equal values', hex: 'a201010101', code: ErrorCode.CBOR_DUPLICATE_KEY },
  { name: 'duplicate key, second copy non-shortest', hex: 'a20101180102', code: ErrorCode.CBOR_DUPLICATE_KEY },
  { name: 'duplicate negative key', hex: 'a220012002', code: ErrorCode.CBOR_DUPLICATE_KEY },
  { name: 'duplicate key among three', hex: 'a3010102020101', code: ErrorCode.CBOR_DUPLICATE_KEY },
  { name: 'duplicate key in a nested map', hex: 'a101a201010102', code: ErrorCode.CBOR_DUPLICATE_KEY },
  // indefinite lengths
  { name: 'indefinite array', hex: '9f01ff', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'indefinite map', hex: 'bf0101ff', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'indefinite byte string', hex: '5f4101ff', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'indefinite text string', hex: '7f6161ff', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  { name: 'empty indefinite array', hex: '9fff', code: ErrorCode.CBOR_NON_DETERMINISTIC },
  // floats, whatever their value
  { name: 'half float 1.0', hex: 'f93c00', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'half float 1.5', hex: 'f93e00', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'half float NaN', hex: 'f97e00', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'single float 1.5', hex: 'fa3fc00000', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'double 1.0', hex: 'fb3ff0000000000000', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'double 2^60 (integral, beyond 2^53)', hex: 'fb43b0000000000000', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'float as a map value', hex: 'a101f93c00', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  // simple values
  { name: 'null', hex: 'f6', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'undefined', hex: 'f7', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'simple(16)', hex: 'f0', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'simple(32)', hex: 'f820', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'null inside an array', hex: '8201f6', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  // tags
  { name: 'tag 0 (date string)', hex: 'c074323031332d30332d32315432303a30343a30305a', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'tag 1 (epoch date)', hex: 'c11a514b67b0', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'tag 2 (bignum)', hex: 'c24101', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'tag 24 (embedded CBOR)', hex: 'd81841a0', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'tag 61 (CWT) around a COSE_Sign1', hex: 'd83dd28440a04040', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'tag 64 (typed array)', hex: 'd84043010203', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'tag 258 (set)', hex: 'd9010283010203', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'tag 55799 (self-described)', hex: 'd9d9f7a0', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  // map keys and integer range
  { name: 'text map key', hex: 'a1616101', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'byte string map key', hex: 'a1410101', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'array map key', hex: 'a18001', code: ErrorCode.CBOR_FORBIDDEN_TYPE },
  { name: 'uint 2^53 (beyond the data model)', hex: '1b0020000000000000', code: ErrorCode.SCHEMA_OUT_OF_RANGE },
  { name: 'nint -(2^53+1)', hex: '3b0020000000000000', code: ErrorCode.SCHEMA_OUT_OF_RANGE },
  { name: 'uint 2^64-1', hex: '1bffffffffffffffff', code: ErrorCode.SCHEMA_OUT_OF_RANGE },
  // not well-formed
  { name: 'empty input', hex: '', code: ErrorCode.CBOR_MALFORMED },
  { name: 'trailing bytes', hex: '0101', code: ErrorCode.CBOR_MALFORMED },
  { name: 'trailing zero after a map', hex: 'a0' + '00', code: ErrorCode.CBOR_MALFORMED },
  { name: 'truncated head argument', hex: '1a0000', code: ErrorCode.CBOR_MALFORMED },
  { name: 'truncated byte string', hex: '43 0102'.replace(' ', ''), code: ErrorCode.CBOR_MALFORMED },
  { name: 'truncated text string', hex: '6261', code: ErrorCode.CBOR_MALFORMED },
  { name: 'truncated array', hex: '830102', code: ErrorCode.CBOR_MALFORMED },
  { name: 'truncated map', hex: 'a201', code: ErrorCode.CBOR_MALFORMED },
  { name: 'missing break', hex: '9f01', code: [ErrorCode.CBOR_MALFORMED] },
  { name: 'array claiming 2^32-1 items', hex: '9affffffff', code: ErrorCode.CBOR_MALFORMED },
  { name: 'map claiming 2^32-1 pairs', hex: 'baffffffff', code: ErrorCode.CBOR_MALFORMED },
  { name: 'byte string claiming 2^64-1 bytes', hex: '5bffffffffffffffff', code: ErrorCode.CBOR_MALFORMED },
  { name: 'stray break', hex: 'ff', code: ErrorCode.CBOR_MALFORMED },
  { name: 'reserved additional information 28', hex: '1c', code: ErrorCode.CBOR_MALFORMED },
  { name: 'reserved additional information 30', hex: '5e', code: ErrorCode.CBOR_MALFORMED },
  { name: 'indefinite uint (1f)', hex: '1f', code: ErrorCode.CBOR_MALFORMED },
  { name: 'indefinite tag (df)', hex: 'df', code: ErrorCode.CBOR_MALFORMED },
  { name: 'two-byte simple value below 32', hex: 'f810', code: ErrorCode.CBOR_MALFORMED },
  { name: 'text that is not UTF-8 (c3 28)', hex: '62c328', code: ErrorCode.CBOR_MALFORMED },
  { name: 'overlong UTF-8 (c0 80)', hex: '62c080', code: ErrorCode.CBOR_MALFORMED },
  { name: 'UTF-8 encoded surrogate (ed a0 80)', hex: '63eda080', code: ErrorCode.CBOR_MALFORMED },
  { name: 'indefinite byte string with a text chunk', hex: '5f6161ff', code: ErrorCode.CBOR_MALFORMED },
  // nesting
  { name: `arrays nested ${MAX_DEPTH + 4} deep`, hex: '81'.repeat(MAX_DEPTH + 4) + '00', code: ErrorCode.TOO_LARGE },
  { name: `maps nested ${MAX_DEPTH + 4} deep`, hex: 'a101'.repeat(MAX_DEPTH + 4) + '00', code: ErrorCode.TOO_LARGE },
];

for (const v of INVALID) {
  test(`decoder rejects ${v.name}`, (t) => {
    const err = t.throws(() => decodeDeterministic(fromHex(v.hex)));
    t.true(err instanceof DtError, `not a DtError: ${String(err)}`);
    const codes = Array.isArray(v.code) ? v.code : [v.code];
    t.true(codes.includes((err as DtError).code), `got ${(err as DtError).code}, expected ${codes.join(' or ')}`);
  });
}

test('every invalid vector really is invalid: the relaxed decoder of the cbor library reads the well-formed ones', (t) => {
  // Guards the table itself: a vector that a general CBOR decoder accepts is
  // rejected for a DT rule, not because the hex is garbage. Counted so that
  // the table cannot silently become all-garbage.
  let wellFormed = 0;
  for (const v of INVALID) {
    const codes = Array.isArray(v.code) ? v.code : [v.code];
    if (codes.includes(ErrorCode.CBOR_MALFORMED) || codes.includes(ErrorCode.TOO_LARGE)) continue;
    t.notThrows(() => cbor.decodeAllSync(Buffer.from(fromHex(v.hex))), v.name);
    wellFormed++;
  }
  t.true(wellFormed >= 40);
});

test('size limit is checked before decoding (TOO_LARGE), at the exact boundary', (t) => {
  const bytes = encodeDeterministic(new Uint8Array(100)); // 58 64 + 100 bytes = 102
  t.is(bytes.length, 102);
  t.deepEqual(decodeDeterministic(bytes, 102), new Uint8Array(100));
  const err = t.throws(() => decodeDeterministic(bytes, 101));
  t.true(isDtError(err, ErrorCode.TOO_LARGE));
  // The size check comes first: even garbage over the limit is TOO_LARGE.
  t.true(
    isDtError(
      t.throws(() => decodeDeterministic(new Uint8Array(DEFAULT_MAX_SIZE + 1).fill(0xff))),
      ErrorCode.TOO_LARGE,
    ),
  );
});

test('decoder rejects a non-Uint8Array input with CBOR_MALFORMED', (t) => {
  t.true(
    isDtError(
      t.throws(() => decodeDeterministic('00' as unknown as Uint8Array)),
      ErrorCode.CBOR_MALFORMED,
    ),
  );
});

test('the decoder does not alias its input: mutating the input afterwards does not change the result', (t) => {
  const input = encodeDeterministic([Uint8Array.of(1, 2, 3)]);
  const out = decodeDeterministic(input) as Uint8Array[];
  input.fill(0);
  t.deepEqual(out[0], Uint8Array.of(1, 2, 3));
});

// ---------------------------------------------------------------- properties

/** Arbitrary values of the DT CBOR data model (SPEC.md §2.1). */
const cborValue: fc.Arbitrary<CborValue> = fc.letrec<{ value: CborValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.maxSafeInteger(),
    fc.integer({ min: -100, max: 100 }),
    fc.constantFrom(23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, MAX, -24, -25, -256, -257, -(2 ** 32), -(2 ** 32) - 1, -MAX),
    fc.uint8Array({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 20 }),
    fc.boolean(),
    fc.array(tie('value'), { maxLength: 5 }),
    fc
      .uniqueArray(fc.tuple(fc.oneof(fc.integer({ min: -70000, max: 70000 }), fc.maxSafeInteger()), tie('value')), {
        maxLength: 6,
        selector: ([k]) => k,
      })
      .map((entries) => new Map(entries)),
  ),
})).value;

/** Node-cbor's view of a DT value (Buffers instead of Uint8Arrays, which it would tag as typed arrays). */
function toNodeCbor(v: CborValue): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v);
  if (Array.isArray(v)) return v.map(toNodeCbor);
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [k, toNodeCbor(x)]));
  if (typeof v === 'object') return new cbor.Tagged(v.tag, toNodeCbor(v.value));
  return v;
}

test('property: decode(encode(v)) = v and encode(decode(b)) = b for every value of the data model', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(cborValue, (v) => {
        const bytes = encodeDeterministic(v);
        const back = decodeDeterministic(bytes);
        if (!deepEqualCbor(back, v)) throw new Error(`round trip changed the value: ${toHex(bytes)}`);
        if (toHex(encodeDeterministic(back)) !== toHex(bytes)) throw new Error('re-encoding changed the bytes');
      }),
      { seed: SEED, numRuns: 500 },
    ),
  );
});

test('property: the encoding equals the RFC 8949 canonical encoding of an independent library (cbor)', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(cborValue, (v) => {
        const ours = toHex(encodeDeterministic(v));
        const theirs = cbor.encodeCanonical(toNodeCbor(v)).toString('hex');
        if (ours !== theirs) throw new Error(`ours ${ours} != cbor ${theirs}`);
      }),
      { seed: SEED, numRuns: 500 },
    ),
  );
});

test('property: a non-shortest integer head is always rejected', (t) => {
  // Re-encode an integer with a head one size too long: never accepted.
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.boolean(), (n, negative) => {
        const major = negative ? 0x20 : 0x00;
        let head: number[];
        if (n < 24) head = [major | 24, n];
        else if (n < 256) head = [major | 25, 0, n];
        else if (n < 65536) head = [major | 26, 0, 0, n >> 8, n & 255];
        else head = [major | 27, 0, 0, 0, 0, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
        try {
          decodeDeterministic(Uint8Array.from(head));
        } catch (e) {
          if (isDtError(e, ErrorCode.CBOR_NON_DETERMINISTIC)) return;
          throw e;
        }
        throw new Error(`accepted non-shortest head ${toHex(Uint8Array.from(head))}`);
      }),
      { seed: SEED, numRuns: 300 },
    ),
  );
});

test('property: any single-byte corruption of a valid encoding is rejected or decodes to a different value, never crashes', (t) => {
  // Fuzzing the decoder: whatever it is fed, it either returns a value whose
  // encoding is exactly the input (deterministic), or throws a DtError.
  t.notThrows(() =>
    fc.assert(
      fc.property(cborValue, fc.nat(), fc.integer({ min: 1, max: 255 }), (v, pos, xor) => {
        const bytes = encodeDeterministic(v);
        const bad = bytes.slice();
        bad[pos % bad.length] ^= xor;
        try {
          const out = decodeDeterministic(bad);
          if (toHex(encodeDeterministic(out)) !== toHex(bad)) throw new Error('accepted a non-deterministic encoding');
        } catch (e) {
          if (!(e instanceof DtError)) throw e;
        }
      }),
      { seed: SEED, numRuns: 1000 },
    ),
  );
});

test('property: random bytes never crash the decoder; accepted ones are deterministic', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (bytes) => {
        try {
          const out = decodeDeterministic(bytes);
          if (toHex(encodeDeterministic(out)) !== toHex(bytes)) throw new Error('accepted a non-deterministic encoding');
        } catch (e) {
          if (!(e instanceof DtError)) throw e;
        }
      }),
      { seed: SEED, numRuns: 2000 },
    ),
  );
});

/** Structural equality for CBOR values (Maps compared by key, bytes by content). */
function deepEqualCbor(a: CborValue, b: CborValue): boolean {
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && toHex(a) === toHex(b);
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqualCbor(x, b[i]!));
  }
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) return false;
    for (const [k, x] of a) {
      if (!b.has(k) || !deepEqualCbor(x, b.get(k)!)) return false;
    }
    return true;
  }
  if (typeof a === 'object' && typeof b === 'object') return a.tag === b.tag && deepEqualCbor(a.value, b.value);
  return a === b;
}

test('decoding leaves the caller’s byte array untouched (no cached properties)', (t) => {
  const bytes = encodeDeterministic(new Map([[1, 'a']]));
  decodeDeterministic(bytes);
  t.deepEqual(Object.keys(bytes), ['0', '1', '2', '3']);
  t.false(Object.prototype.hasOwnProperty.call(bytes, 'dataView'));
});
