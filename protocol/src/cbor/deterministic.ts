/**
 * CBOR core deterministic encoding (RFC 8949 §4.2.1) on top of `cbor-x`.
 *
 * The data model used by every DT message is deliberately small:
 * unsigned and negative integers (|n| ≤ 2^53-1), byte strings, UTF-8 text
 * strings, booleans, definite-length arrays, maps with integer keys, and
 * tag 18 (COSE_Sign1) only at the top of a signed object. No floats, no
 * indefinite lengths, no null/undefined, no other tags.
 *
 * Encoding: map keys are sorted by the bytewise order of their encodings
 * (here: non-negative keys ascending, then negative keys by descending value),
 * integers use their shortest form (cbor-x writes integers ≥ 2^32 as floats,
 * so those are passed as `bigint`, which it writes as a major-type-0/1 8-byte
 * head: the shortest form for that range).
 *
 * Decoding: size check first, then cbor-x decodes, then the value is walked
 * and every type checked, then the value is re-encoded and compared byte for
 * byte with the input. Any difference (non-shortest integers, unsorted or
 * duplicate map keys, floats standing for integers, indefinite lengths) is
 * `CBOR_NON_DETERMINISTIC`.
 *
 * @module
 */
import { Decoder, Encoder, Tag } from 'cbor-x';
import { DtError, ErrorCode } from '../errors.ts';
import { bytesEqual, compareBytes, plainBytes } from '../bytes.ts';

/** A value of the DT CBOR data model. */
export type CborValue = number | Uint8Array | string | boolean | CborValue[] | CborMap | CborTagged;
/** A CBOR map with integer keys. */
export type CborMap = Map<number, CborValue>;
/** A tagged value; only tag 18 (COSE_Sign1) is allowed. */
export interface CborTagged {
  readonly tag: number;
  readonly value: CborValue;
}

/** Tags permitted anywhere in DT CBOR. */
export const ALLOWED_TAGS: ReadonlySet<number> = new Set([18]);
/** Default limit for a single decoded object. */
export const DEFAULT_MAX_SIZE = 64 * 1024;
/** Maximum nesting depth accepted by the decoder. */
export const MAX_DEPTH = 16;

const encoder = new Encoder({
  useRecords: false,
  mapsAsObjects: false,
  tagUint8Array: false,
  variableMapSize: true,
  pack: false,
  useFloat32: 0,
});
// `int64AsType` is a real cbor-x option missing from its type declarations.
const decoder = new Decoder({
  useRecords: false,
  mapsAsObjects: false,
  int64AsType: 'bigint',
  tagUint8Array: false,
} as ConstructorParameters<typeof Decoder>[0]);

const TWO_32 = 2 ** 32;

/** Converts our data model to what cbor-x must be handed to write it deterministically. */
function toEncodable(v: CborValue, depth: number): unknown {
  if (depth > MAX_DEPTH) throw new DtError(ErrorCode.TOO_LARGE, 'nesting too deep', { maxDepth: MAX_DEPTH });
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) {
      throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'only safe integers may be encoded (no floats)');
    }
    // cbor-x writes |n| ≥ 2^32 as float64; a bigint makes it write the 8-byte integer head.
    return v >= TWO_32 || v < -TWO_32 ? BigInt(v) : v;
  }
  if (typeof v === 'string' || typeof v === 'boolean') return v;
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map((x) => toEncodable(x, depth + 1));
  if (v instanceof Map) {
    const entries: Array<[Uint8Array, number, unknown]> = [];
    for (const [k, val] of v) {
      if (!Number.isSafeInteger(k)) throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'map keys must be integers');
      entries.push([encoder.encode(toEncodable(k, depth + 1)), k, toEncodable(val, depth + 1)]);
    }
    entries.sort((a, b) => compareBytes(a[0], b[0]));
    return new Map(entries.map(([, k, val]) => [typeof k === 'number' && Math.abs(k) >= TWO_32 ? BigInt(k) : k, val]));
  }
  if (typeof v === 'object' && v !== null && 'tag' in v) {
    if (!ALLOWED_TAGS.has(v.tag)) throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'tag not allowed', { tag: v.tag });
    return new Tag(toEncodable(v.value, depth + 1), v.tag);
  }
  throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'value outside the DT CBOR data model');
}

/**
 * Encodes a value with core deterministic encoding.
 *
 * @example
 * encodeDeterministic(new Map([[2, 'b'], [1, 'a']])) // a2 01 61 61 02 61 62
 */
export function encodeDeterministic(value: CborValue): Uint8Array {
  return plainBytes(encoder.encode(toEncodable(value, 0)));
}

/** Walks a cbor-x result and maps it onto the DT data model, rejecting anything else. */
function fromDecoded(v: unknown, depth: number): CborValue {
  if (depth > MAX_DEPTH) throw new DtError(ErrorCode.TOO_LARGE, 'nesting too deep', { maxDepth: MAX_DEPTH });
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'floats are not allowed');
    return v;
  }
  if (typeof v === 'bigint') {
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new DtError(ErrorCode.SCHEMA_OUT_OF_RANGE, 'integer beyond 2^53-1');
    }
    return Number(v);
  }
  if (typeof v === 'string' || typeof v === 'boolean') return v;
  if (v instanceof Uint8Array) return plainBytes(v);
  if (Array.isArray(v)) return v.map((x) => fromDecoded(x, depth + 1));
  if (v instanceof Map) {
    const out: CborMap = new Map();
    for (const [k, val] of v) {
      const key = typeof k === 'bigint' ? fromDecoded(k, depth + 1) : k;
      if (typeof key !== 'number' || !Number.isSafeInteger(key)) {
        throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'map keys must be integers');
      }
      out.set(key, fromDecoded(val, depth + 1));
    }
    return out;
  }
  if (v instanceof Tag) {
    if (!ALLOWED_TAGS.has(v.tag)) throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'tag not allowed', { tag: v.tag });
    return { tag: v.tag, value: fromDecoded(v.value, depth + 1) };
  }
  // Date (tag 0/1), null, undefined, simple values, typed arrays, sets, regexps...
  throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'value outside the DT CBOR data model');
}

/**
 * Decodes exactly one deterministic CBOR item. Throws a {@link DtError} with
 * `TOO_LARGE`, `CBOR_MALFORMED`, `CBOR_FORBIDDEN_TYPE` or `CBOR_NON_DETERMINISTIC`.
 */
export function decodeDeterministic(bytes: Uint8Array, maxSize: number = DEFAULT_MAX_SIZE): CborValue {
  if (!(bytes instanceof Uint8Array)) throw new DtError(ErrorCode.CBOR_MALFORMED, 'input is not a byte array');
  if (bytes.length > maxSize) throw new DtError(ErrorCode.TOO_LARGE, 'object exceeds size limit', { size: bytes.length, maxSize });
  if (bytes.length === 0) throw new DtError(ErrorCode.CBOR_MALFORMED, 'empty input');
  let raw: unknown;
  try {
    raw = decoder.decode(bytes);
  } catch (e) {
    const msg = e instanceof Error ? e.message : 'decode failed';
    throw new DtError(ErrorCode.CBOR_MALFORMED, `not well-formed CBOR (${msg.slice(0, 80)})`);
  }
  const value = fromDecoded(raw, 0);
  let again: Uint8Array;
  try {
    again = encodeDeterministic(value);
  } catch (e) {
    if (e instanceof DtError) throw e;
    throw new DtError(ErrorCode.CBOR_MALFORMED, 'cannot re-encode value');
  }
  if (!bytesEqual(again, bytes)) {
    throw new DtError(ErrorCode.CBOR_NON_DETERMINISTIC, 'input is not in core deterministic encoding', {
      size: bytes.length,
      canonicalSize: again.length,
    });
  }
  return value;
}
