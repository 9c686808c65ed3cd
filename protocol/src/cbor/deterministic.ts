/**
 * CBOR core deterministic encoding (RFC 8949 §4.2.1): encoding on top of `cbor-x`, decoding by a walk of its own.
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
 * Decoding is one walk over the input, written here (not cbor-x), that reads
 * every head once, never allocates by a length the input claims, and builds
 * the value as it goes; the first failing step, in this order, names the error:
 * 1. size check: more than `maxSize` bytes is `TOO_LARGE`;
 * 2. well-formedness, as the walk meets it: truncated or otherwise ill-formed
 *    input (reserved additional information, stray break, trailing bytes, text
 *    that is not UTF-8) is `CBOR_MALFORMED`, nesting deeper than
 *    {@link MAX_DEPTH} is `TOO_LARGE`;
 * 3. once the whole item is known to be well-formed: a map holding the same
 *    key twice (also when one copy uses a non-shortest head) is
 *    `CBOR_DUPLICATE_KEY`, then a float, simple value other than false/true or
 *    tag other than 18 is `CBOR_FORBIDDEN_TYPE`, then an indefinite length is
 *    `CBOR_NON_DETERMINISTIC` ({@link scanCbor} stops here);
 * 4. the data model, first failure in document order: an integer beyond
 *    2^53-1 is `SCHEMA_OUT_OF_RANGE`, a map key that is not an integer is
 *    `CBOR_FORBIDDEN_TYPE`;
 * 5. the input must be the deterministic encoding of that value: a head longer
 *    than its argument needs (integers, lengths, counts, tags) or map keys not in
 *    ascending bytewise order, both noted by the same walk (no re-encoding), is
 *    `CBOR_NON_DETERMINISTIC`.
 *
 * Byte strings are decoded as copies (plain `Uint8Array`s of their own), never
 * as views of the input.
 *
 * @module
 */
import { Decoder, Encoder, Tag } from 'cbor-x';
import { DtError, ErrorCode } from '../errors.ts';
import { plainBytes } from '../bytes.ts';

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
    const entries: Array<[number, unknown]> = [];
    for (const [k, val] of v) {
      if (!Number.isSafeInteger(k)) throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'map keys must be integers');
      if (depth + 1 > MAX_DEPTH) throw new DtError(ErrorCode.TOO_LARGE, 'nesting too deep', { maxDepth: MAX_DEPTH });
      entries.push([k, toEncodable(val, depth + 1)]);
    }
    // The bytewise order of the keys' shortest encodings, without encoding them: every
    // non-negative key (major type 0, a longer head for a larger value) before every negative
    // one (major type 1), non-negative keys ascending, negative keys by descending value.
    entries.sort(([a], [b]) => (a >= 0 ? (b >= 0 ? a - b : -1) : b >= 0 ? 1 : b - a));
    return new Map(entries.map(([k, val]) => [Math.abs(k) >= TWO_32 ? BigInt(k) : k, val]));
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

/**
 * Decodes one CBOR item WITHOUT the deterministic-encoding checks (still bounded by
 * `maxSize`; nesting bounded by the decoder). Returns cbor-x's raw value (maps as `Map`),
 * or `undefined` when the bytes are not CBOR at all. For evidence extraction only
 * (SPEC.md §7.7 step E: a ledger must find card-signed objects even in a handover that is
 * not well formed); never use it to accept anything.
 */
export function decodeRelaxed(bytes: Uint8Array, maxSize: number): unknown {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0 || bytes.length > maxSize) return undefined;
  try {
    return decoder.decode(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- one-pass decoder

/**
 * Decodes exactly one deterministic CBOR item. Throws a {@link DtError} with
 * `TOO_LARGE`, `CBOR_MALFORMED`, `CBOR_DUPLICATE_KEY`, `CBOR_FORBIDDEN_TYPE`,
 * `SCHEMA_OUT_OF_RANGE` or `CBOR_NON_DETERMINISTIC` (see the module comment
 * for the order in which they are checked).
 */
export function decodeDeterministic(bytes: Uint8Array, maxSize: number = DEFAULT_MAX_SIZE): CborValue {
  if (!(bytes instanceof Uint8Array)) throw new DtError(ErrorCode.CBOR_MALFORMED, 'input is not a byte array');
  if (bytes.length > maxSize) throw new DtError(ErrorCode.TOO_LARGE, 'object exceeds size limit', { size: bytes.length, maxSize });
  if (bytes.length === 0) throw new DtError(ErrorCode.CBOR_MALFORMED, 'empty input');
  const s = walk(bytes);
  // The data model's own rules (integers within 2^53-1, integer map keys), first failure in document order.
  if (s.modelError !== undefined) throw s.modelError;
  // One pass: the walk checked every rule of core deterministic encoding that the data model
  // leaves open (shortest heads, definite lengths, map keys in ascending bytewise order, no
  // duplicates), so the input is exactly what encodeDeterministic(value) gives; no re-encode.
  if (s.longAt >= 0) {
    throw new DtError(ErrorCode.CBOR_NON_DETERMINISTIC, 'input is not in core deterministic encoding', {
      size: bytes.length,
      offset: s.longAt,
    });
  }
  return s.value;
}

function malformed(message: string, offset: number): never {
  throw new DtError(ErrorCode.CBOR_MALFORMED, message, { offset });
}

/**
 * Walker state. One instance per call, so the walker is reentrant. The walk reads every head
 * once, builds the value as it goes and notes (by the offset of the first occurrence) what it
 * judges only once the whole item is known to be well-formed.
 */
interface WalkState {
  /** The input, as a plain `Uint8Array` view (so `slice` copies into plain arrays, also for a `Buffer`). */
  readonly b: Uint8Array;
  /** Offset of the first map that repeats a key, or -1. */
  dupAt: number;
  /** Offset of the first indefinite-length item, or -1. */
  indefAt: number;
  /** Offset of the first float, simple value other than false/true, or tag not in {@link ALLOWED_TAGS}, or -1. */
  forbiddenAt: number;
  /**
   * Offset of the first departure from core deterministic encoding that the other flags do not
   * cover (a head longer than its argument needs, map keys not in ascending bytewise order of
   * their encodings), or -1.
   */
  longAt: number;
  /** Heads longer than their argument needs, counted (tells whether a map key holds one). */
  longs: number;
  /** The first violation of the data model in document order (an integer beyond 2^53-1, a map key that is not an integer). */
  modelError: DtError | undefined;
  /** The last head read: major type, additional information, argument (exact up to 2^53; a length or count), offset after it. */
  major: number;
  ai: number;
  arg: number;
  end: number;
  /** The value of the item walked last. */
  value: CborValue;
  /** Offsets (start, end) of the keys of the maps being walked, innermost last (see walkItem). */
  readonly keys: number[];
}

/** The smallest argument each head length may carry (RFC 8949 §4.2.1: the shortest form). */
const HEAD_MIN = [24, 0x100, 0x10000, 2 ** 32];
/** 2^32, to assemble an 8-byte argument from its two halves. */
const HI = 2 ** 32;
/** The largest high half of an 8-byte argument that stays within 2^53-1. */
const SAFE_HI = 0x1fffff;

/** Reads the head at `pos` into `s.major`, `s.ai`, `s.arg` and `s.end`. */
function readHead(s: WalkState, pos: number): void {
  const b = s.b;
  if (pos >= b.length) malformed('truncated: expected a data item', pos);
  const ib = b[pos]!;
  const major = ib >> 5;
  const ai = ib & 31;
  s.major = major;
  s.ai = ai;
  if (ai < 24) {
    s.arg = ai;
    s.end = pos + 1;
    return;
  }
  if (ai <= 27) {
    const n = 1 << (ai - 24);
    if (pos + 1 + n > b.length) malformed('truncated: head argument', pos);
    let value = 0;
    // A length or count above 2^53 is beyond any input anyway; precision loss cannot make it fit.
    for (let i = 0; i < n; i++) value = value * 256 + b[pos + 1 + i]!;
    // Floats (major 7, ai 25-27) are refused on their own; a simple value's two-byte form is checked by walkItem.
    if (major !== 7 && value < HEAD_MIN[ai - 24]!) {
      s.longs++;
      if (s.longAt < 0) s.longAt = pos;
    }
    s.arg = value;
    s.end = pos + 1 + n;
    return;
  }
  if (ai < 31) malformed('reserved additional information', pos);
  // ai = 31: indefinite length (majors 2-5) or break (major 7); not well-formed for 0, 1, 6.
  if (major === 0 || major === 1 || major === 6) malformed('indefinite length on a major type that has none', pos);
  if (major !== 7 && s.indefAt < 0) s.indefAt = pos;
  s.arg = -1;
  s.end = pos + 1;
}

/** True when the byte at `pos` is a break (0xff). Throws on truncation. */
function atBreak(s: WalkState, pos: number): boolean {
  if (pos >= s.b.length) malformed('truncated: missing break', pos);
  return s.b[pos] === 0xff;
}

function modelError(s: WalkState, code: ErrorCode, message: string): void {
  if (s.modelError === undefined) s.modelError = new DtError(code, message);
}

/** Big-endian unsigned integer of `n` bytes at `pos` as a decimal string (exact up to 2^64-1). */
function uintString(b: Uint8Array, pos: number, n: number): string {
  if (n <= 4) {
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + b[pos + i]!;
    return String(v);
  }
  let v = 0n;
  for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(b[pos + i]!);
  return v.toString();
}

/**
 * Identity of the map key encoded at `b[start, end)` for duplicate detection: integers by value
 * (so that `1` and a non-shortest `1` collide, as they decode to the same key), strings by major
 * type and content, anything else by its encoded bytes.
 */
function keyIdentity(b: Uint8Array, start: number, end: number): string {
  const major = b[start]! >> 5;
  const ai = b[start]! & 31;
  if ((major === 0 || major === 1) && ai < 28) {
    const n = ai < 24 ? 0 : 1 << (ai - 24);
    return `${major}:${n === 0 ? String(ai) : uintString(b, start + 1, n)}`;
  }
  if ((major === 2 || major === 3) && ai !== 31) {
    const n = ai < 24 ? 0 : 1 << (ai - 24);
    return `${major}s:${toKeyHex(b, start + 1 + n, end)}`;
  }
  return `r:${toKeyHex(b, start, end)}`;
}

function toKeyHex(b: Uint8Array, from: number, to: number): string {
  let out = '';
  for (let i = from; i < to; i++) out += (b[i]! < 16 ? '0' : '') + b[i]!.toString(16);
  return out;
}

/**
 * The text of strict UTF-8 `b[from, to)` (same rules as `fromUtf8`: no overlongs, surrogates or
 * values past U+10FFFF), or `undefined` when it is not valid UTF-8.
 */
function utf8Text(b: Uint8Array, from: number, to: number): string | undefined {
  let out = '';
  for (let i = from; i < to;) {
    const c = b[i]!;
    if (c < 0x80) {
      out += String.fromCharCode(c);
      i++;
      continue;
    }
    let n: number;
    let cp: number;
    let min: number;
    if ((c & 0xe0) === 0xc0) {
      n = 1;
      cp = c & 0x1f;
      min = 0x80;
    } else if ((c & 0xf0) === 0xe0) {
      n = 2;
      cp = c & 0x0f;
      min = 0x800;
    } else if ((c & 0xf8) === 0xf0) {
      n = 3;
      cp = c & 0x07;
      min = 0x10000;
    } else return undefined;
    if (i + n >= to) return undefined; // continuation bytes i+1..i+n must lie inside the string
    for (let k = 1; k <= n; k++) {
      const d = b[i + k]!;
      if ((d & 0xc0) !== 0x80) return undefined;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return undefined;
    out += String.fromCodePoint(cp);
    i += n + 1;
  }
  return out;
}

/** Bytewise comparison of `b[a0, a1)` with `b[c0, c1)` (shorter first when one is a prefix of the other). */
function compareRange(b: Uint8Array, a0: number, a1: number, c0: number, c1: number): number {
  const n = Math.min(a1 - a0, c1 - c0);
  for (let i = 0; i < n; i++) {
    const d = b[a0 + i]! - b[c0 + i]!;
    if (d !== 0) return d;
  }
  return a1 - a0 - (c1 - c0);
}

/**
 * The integer of a major type 0 or 1 head just read (at `pos`), or `undefined` (and a model
 * error) beyond ±(2^53-1). Only an 8-byte argument can be that large.
 */
function integerOf(s: WalkState, pos: number): number | undefined {
  let n = s.arg;
  if (s.ai === 27) {
    const b = s.b;
    const hi = ((b[pos + 1]! << 24) | (b[pos + 2]! << 16) | (b[pos + 3]! << 8) | b[pos + 4]!) >>> 0;
    const lo = ((b[pos + 5]! << 24) | (b[pos + 6]! << 16) | (b[pos + 7]! << 8) | b[pos + 8]!) >>> 0;
    // -1 - n must not go below -(2^53-1): n ≤ 2^53-2 for a negative integer.
    if (hi > SAFE_HI || (s.major === 1 && hi === SAFE_HI && lo === 0xffffffff)) {
      modelError(s, ErrorCode.SCHEMA_OUT_OF_RANGE, 'integer beyond 2^53-1');
      return undefined;
    }
    n = hi * HI + lo;
  }
  return s.major === 0 ? n : -1 - n;
}

/** Walks one data item at `pos` with nesting `depth`, leaving its value in `s.value`; returns the offset after it. */
function walkItem(s: WalkState, pos: number, depth: number): number {
  if (depth > MAX_DEPTH) throw new DtError(ErrorCode.TOO_LARGE, 'nesting too deep', { maxDepth: MAX_DEPTH });
  const b = s.b;
  readHead(s, pos);
  const major = s.major;
  const ai = s.ai;
  const arg = s.arg;
  const end = s.end;
  switch (major) {
    case 0:
    case 1:
      s.value = integerOf(s, pos) ?? 0;
      return end;
    case 2:
    case 3: {
      if (ai !== 31) {
        if (arg > b.length - end) malformed('truncated: string shorter than its length', pos);
        if (major === 2) {
          s.value = b.slice(end, end + arg);
        } else {
          const text = utf8Text(b, end, end + arg);
          if (text === undefined) malformed('text string is not valid UTF-8', pos);
          s.value = text;
        }
        return end + arg;
      }
      // Indefinite string (refused as non-deterministic once the walk is done): definite chunks of the same major type, then a break.
      let p = end;
      while (!atBreak(s, p)) {
        readHead(s, p);
        if (s.major !== major || s.ai === 31) malformed('bad chunk in an indefinite-length string', p);
        if (s.arg > b.length - s.end) malformed('truncated: chunk shorter than its length', p);
        p = s.end + s.arg;
      }
      s.value = major === 2 ? new Uint8Array(0) : '';
      return p + 1;
    }
    case 4: {
      let p = end;
      const items: CborValue[] = [];
      if (ai === 31) {
        while (!atBreak(s, p)) {
          p = walkItem(s, p, depth + 1);
          items.push(s.value);
        }
        s.value = items;
        return p + 1;
      }
      // Every item takes at least one byte: a count beyond the rest is truncation (and is never allocated).
      if (arg > b.length - p) malformed('truncated: array shorter than its count', pos);
      for (let i = 0; i < arg; i++) {
        p = walkItem(s, p, depth + 1);
        items.push(s.value);
      }
      s.value = items;
      return p;
    }
    case 5: {
      let p = end;
      const indefinite = ai === 31;
      if (!indefinite && arg > (b.length - p) / 2) malformed('truncated: map shorter than its count', pos);
      const map: CborMap = new Map();
      // Keys whose encodings ascend strictly and hold no over-long head cannot repeat one another
      // (equal identities need equal encodings then): identities are only computed, for every key
      // so far, from the first key that breaks this.
      let seen: Set<string> | undefined;
      // The clean keys' offsets (start, end) until then, on the walk's shared stack.
      const keys = s.keys;
      const base = keys.length;
      let prevStart = -1;
      let prevEnd = -1;
      for (let i = 0; indefinite ? !atBreak(s, p) : i < arg; i++) {
        const keyStart = p;
        const longsBefore = s.longs;
        const modelBefore = s.modelError;
        p = walkItem(s, p, depth + 1);
        const key = s.value;
        if (typeof key !== 'number') {
          // Only integer keys: what lies inside another key is not judged (as a key, it is refused whole).
          s.modelError = modelBefore;
          modelError(s, ErrorCode.CBOR_FORBIDDEN_TYPE, 'map keys must be integers');
        }
        const ordered = prevStart < 0 || compareRange(b, prevStart, prevEnd, keyStart, p) < 0;
        if (!ordered && s.longAt < 0) s.longAt = keyStart;
        if (seen === undefined && (!ordered || s.longs !== longsBefore)) {
          seen = new Set();
          for (let k = base; k < keys.length; k += 2) seen.add(keyIdentity(b, keys[k]!, keys[k + 1]!));
          keys.length = base;
        }
        if (seen !== undefined) {
          const id = keyIdentity(b, keyStart, p);
          if (seen.has(id)) {
            if (s.dupAt < 0) s.dupAt = pos;
          } else seen.add(id);
        } else keys.push(keyStart, p);
        prevStart = keyStart;
        prevEnd = p;
        p = walkItem(s, p, depth + 1);
        if (typeof key === 'number') map.set(key, s.value);
      }
      keys.length = base;
      s.value = map;
      return indefinite ? p + 1 : p;
    }
    case 6: {
      if (!ALLOWED_TAGS.has(arg) && s.forbiddenAt < 0) s.forbiddenAt = pos;
      const p = walkItem(s, end, depth + 1);
      s.value = { tag: arg, value: s.value };
      return p;
    }
    default: {
      // Major 7: simple values and floats. Only false (20) and true (21) belong to the DT data model.
      if (ai === 31) malformed('unexpected break', pos);
      if (ai === 24 && arg < 32) malformed('two-byte simple value below 32', pos);
      if (ai !== 20 && ai !== 21 && s.forbiddenAt < 0) s.forbiddenAt = pos;
      s.value = ai === 21;
      return end;
    }
  }
}

/**
 * Walks the whole input and applies the judgements that wait for the end of the walk:
 * trailing bytes, then duplicate keys, forbidden types and indefinite lengths (in that order).
 */
function walk(bytes: Uint8Array): WalkState {
  const s: WalkState = {
    b: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    dupAt: -1,
    indefAt: -1,
    forbiddenAt: -1,
    longAt: -1,
    longs: 0,
    modelError: undefined,
    major: 0,
    ai: 0,
    arg: 0,
    end: 0,
    value: 0,
    keys: [],
  };
  const end = walkItem(s, 0, 0);
  if (end !== bytes.length) malformed('trailing bytes after the data item', end);
  if (s.dupAt >= 0) throw new DtError(ErrorCode.CBOR_DUPLICATE_KEY, 'map holds the same key twice', { offset: s.dupAt });
  // Floats are refused whatever their value: 1.0 is not a spelling of 1 in DT CBOR.
  if (s.forbiddenAt >= 0)
    throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'float, simple value or tag outside the DT data model', { offset: s.forbiddenAt });
  if (s.indefAt >= 0) throw new DtError(ErrorCode.CBOR_NON_DETERMINISTIC, 'indefinite length', { offset: s.indefAt });
  return s;
}

/**
 * Bounded well-formedness check of one CBOR item (RFC 8949 appendix C). Work
 * and memory are linear in the input size: a claimed length or count is
 * checked against the bytes that remain before it is used (nothing is
 * allocated by a length the input claims), and nesting is limited to
 * {@link MAX_DEPTH}.
 *
 * Throws `CBOR_MALFORMED` (truncated, reserved or ill-formed heads, trailing
 * bytes, text that is not UTF-8), `TOO_LARGE` (nesting) or, once the whole
 * item is known to be well-formed: `CBOR_DUPLICATE_KEY` for a map that
 * repeats a key, else `CBOR_FORBIDDEN_TYPE` for a float, a simple value other
 * than false/true or a tag other than 18, else `CBOR_NON_DETERMINISTIC` for an
 * indefinite length. The other rules of
 * determinism and the data model are judged by {@link decodeDeterministic}.
 */
export function scanCbor(bytes: Uint8Array): void {
  walk(bytes);
}
