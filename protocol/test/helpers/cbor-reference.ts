/**
 * The deterministic CBOR decoder as it was before the one-pass walk of
 * `src/cbor/deterministic.ts` (a bounded pre-scan, then cbor-x, then a walk of
 * cbor-x's result): kept for `test/cbor-walk.test.ts`, which checks that both
 * give the same value or the same error on every input. Not a test file.
 *
 * @module
 */
import { Decoder, Encoder, Tag } from 'cbor-x';
import { DtError, ErrorCode } from '../../src/errors.ts';
import { compareBytes, plainBytes } from '../../src/bytes.ts';

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
 * `TOO_LARGE`, `CBOR_MALFORMED`, `CBOR_DUPLICATE_KEY`, `CBOR_FORBIDDEN_TYPE`,
 * `SCHEMA_OUT_OF_RANGE` or `CBOR_NON_DETERMINISTIC` (see the module comment
 * for the order in which they are checked).
 */
export function decodeDeterministic(bytes: Uint8Array, maxSize: number = DEFAULT_MAX_SIZE): CborValue {
  if (!(bytes instanceof Uint8Array)) throw new DtError(ErrorCode.CBOR_MALFORMED, 'input is not a byte array');
  if (bytes.length > maxSize) throw new DtError(ErrorCode.TOO_LARGE, 'object exceeds size limit', { size: bytes.length, maxSize });
  if (bytes.length === 0) throw new DtError(ErrorCode.CBOR_MALFORMED, 'empty input');
  const scan = scanState(bytes);
  let raw: unknown;
  try {
    // cbor-x caches a `dataView` property on the array it decodes; give it a
    // fresh view over the same memory so the caller's array is left untouched.
    raw = decoder.decode(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (e) {
    const msg = e instanceof Error ? e.message : 'decode failed';
    throw new DtError(ErrorCode.CBOR_MALFORMED, `not well-formed CBOR (${msg.slice(0, 80)})`);
  }
  const value = fromDecoded(raw, 0);
  // One pass: the scan above checked every rule of core deterministic encoding that the data
  // model leaves open (shortest heads, definite lengths, map keys in ascending bytewise order,
  // no duplicates), so the input is exactly what encodeDeterministic(value) gives; no re-encode.
  if (scan.longAt >= 0) {
    throw new DtError(ErrorCode.CBOR_NON_DETERMINISTIC, 'input is not in core deterministic encoding', {
      size: bytes.length,
      offset: scan.longAt,
    });
  }
  return value;
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

// ---------------------------------------------------------------- pre-scan

function malformed(message: string, offset: number): never {
  throw new DtError(ErrorCode.CBOR_MALFORMED, message, { offset });
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
 * Pre-scanner state. One instance per call, so the scanner is reentrant.
 * `dupAt` is the offset of the first map that repeats a key, or -1.
 */
interface ScanState {
  readonly b: Uint8Array;
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
}

/** The smallest argument each head length may carry (RFC 8949 §4.2.1: the shortest form). */
const HEAD_MIN = [24, 0x100, 0x10000, 2 ** 32];

/** Argument of a head: `value` is exact up to 2^53 and only used as a length or count. */
interface Head {
  readonly major: number;
  readonly ai: number;
  readonly value: number;
  /** Offset just after the head. */
  readonly end: number;
}

function readHead(s: ScanState, pos: number): Head {
  const b = s.b;
  if (pos >= b.length) malformed('truncated: expected a data item', pos);
  const ib = b[pos]!;
  const major = ib >> 5;
  const ai = ib & 31;
  if (ai < 24) return { major, ai, value: ai, end: pos + 1 };
  if (ai <= 27) {
    const n = 1 << (ai - 24);
    if (pos + 1 + n > b.length) malformed('truncated: head argument', pos);
    let value = 0;
    // A length or count above 2^53 is beyond any input anyway; precision loss cannot make it fit.
    for (let i = 0; i < n; i++) value = value * 256 + b[pos + 1 + i]!;
    // Floats (major 7, ai 25-27) are refused on their own; a simple value's two-byte form is checked by scanItem.
    if (major !== 7 && value < HEAD_MIN[ai - 24]! && s.longAt < 0) s.longAt = pos;
    return { major, ai, value, end: pos + 1 + n };
  }
  if (ai < 31) malformed('reserved additional information', pos);
  // ai = 31: indefinite length (majors 2-5) or break (major 7); not well-formed for 0, 1, 6.
  if (major === 0 || major === 1 || major === 6) malformed('indefinite length on a major type that has none', pos);
  if (major !== 7 && s.indefAt < 0) s.indefAt = pos;
  return { major, ai, value: -1, end: pos + 1 };
}

/** True when the byte at `pos` is a break (0xff). Throws on truncation. */
function atBreak(s: ScanState, pos: number): boolean {
  if (pos >= s.b.length) malformed('truncated: missing break', pos);
  return s.b[pos] === 0xff;
}

/**
 * Identity of a map key for duplicate detection: integers by value (so that
 * `1` and a non-shortest `1` collide, as they decode to the same key), strings
 * by major type and content, anything else by its encoded bytes.
 */
function keyIdentity(s: ScanState, h: Head, start: number, end: number): string {
  const b = s.b;
  if ((h.major === 0 || h.major === 1) && h.ai < 28) {
    const n = h.ai < 24 ? 0 : 1 << (h.ai - 24);
    return `${h.major}:${n === 0 ? String(h.ai) : uintString(b, start + 1, n)}`;
  }
  if ((h.major === 2 || h.major === 3) && h.ai !== 31) return `${h.major}s:${toKeyHex(b, h.end, end)}`;
  return `r:${toKeyHex(b, start, end)}`;
}

function toKeyHex(b: Uint8Array, from: number, to: number): string {
  let out = '';
  for (let i = from; i < to; i++) out += (b[i]! < 16 ? '0' : '') + b[i]!.toString(16);
  return out;
}

/** Strict UTF-8 check without allocating (same rules as `fromUtf8`: no overlongs, surrogates or values past U+10FFFF). */
function validUtf8(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to;) {
    const c = b[i]!;
    if (c < 0x80) {
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
    } else return false;
    if (i + n >= to) return false; // continuation bytes i+1..i+n must lie inside the string
    for (let k = 1; k <= n; k++) {
      const d = b[i + k]!;
      if ((d & 0xc0) !== 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
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

/** Scans one data item at `pos` with nesting `depth`; returns the offset after it. */
function scanItem(s: ScanState, pos: number, depth: number): number {
  if (depth > MAX_DEPTH) throw new DtError(ErrorCode.TOO_LARGE, 'nesting too deep', { maxDepth: MAX_DEPTH });
  const b = s.b;
  const h = readHead(s, pos);
  switch (h.major) {
    case 0:
    case 1:
      return h.end;
    case 2:
    case 3: {
      if (h.ai !== 31) {
        if (h.value > b.length - h.end) malformed('truncated: string shorter than its length', pos);
        if (h.major === 3 && !validUtf8(b, h.end, h.end + h.value)) malformed('text string is not valid UTF-8', pos);
        return h.end + h.value;
      }
      // Indefinite string: definite chunks of the same major type, then a break.
      let p = h.end;
      while (!atBreak(s, p)) {
        const c = readHead(s, p);
        if (c.major !== h.major || c.ai === 31) malformed('bad chunk in an indefinite-length string', p);
        if (c.value > b.length - c.end) malformed('truncated: chunk shorter than its length', p);
        p = c.end + c.value;
      }
      return p + 1;
    }
    case 4: {
      let p = h.end;
      if (h.ai === 31) {
        while (!atBreak(s, p)) p = scanItem(s, p, depth + 1);
        return p + 1;
      }
      // Every item takes at least one byte: a count beyond the rest is truncation (and is never allocated).
      if (h.value > b.length - p) malformed('truncated: array shorter than its count', pos);
      for (let i = 0; i < h.value; i++) p = scanItem(s, p, depth + 1);
      return p;
    }
    case 5: {
      let p = h.end;
      const indefinite = h.ai === 31;
      if (!indefinite && h.value > (b.length - p) / 2) malformed('truncated: map shorter than its count', pos);
      const seen = new Set<string>();
      let prevStart = -1;
      let prevEnd = -1;
      for (let i = 0; indefinite ? !atBreak(s, p) : i < h.value; i++) {
        const keyStart = p;
        const kh = readHead(s, p);
        p = scanItem(s, p, depth + 1);
        const id = keyIdentity(s, kh, keyStart, p);
        if (seen.has(id)) {
          if (s.dupAt < 0) s.dupAt = pos;
        } else seen.add(id);
        if (prevStart >= 0 && s.longAt < 0 && compareRange(b, prevStart, prevEnd, keyStart, p) >= 0) s.longAt = keyStart;
        prevStart = keyStart;
        prevEnd = p;
        p = scanItem(s, p, depth + 1);
      }
      return indefinite ? p + 1 : p;
    }
    case 6:
      if (!ALLOWED_TAGS.has(h.value) && s.forbiddenAt < 0) s.forbiddenAt = pos;
      return scanItem(s, h.end, depth + 1);
    default: {
      // Major 7: simple values and floats. Only false (20) and true (21) belong to the DT data model.
      if (h.ai === 31) malformed('unexpected break', pos);
      if (h.ai === 24 && h.value < 32) malformed('two-byte simple value below 32', pos);
      if (h.ai !== 20 && h.ai !== 21 && s.forbiddenAt < 0) s.forbiddenAt = pos;
      return h.end;
    }
  }
}

/**
 * Bounded well-formedness pre-scan of one CBOR item (RFC 8949 appendix C),
 * run before any decoder allocates anything. Work and memory are linear in
 * the input size: a claimed length or count is checked against the bytes
 * that remain before it is used, and nesting is limited to {@link MAX_DEPTH}.
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
  scanState(bytes);
}

/** {@link scanCbor}, returning the scan's state (its `longAt` is judged by {@link decodeDeterministic}). */
function scanState(bytes: Uint8Array): ScanState {
  const s: ScanState = { b: bytes, dupAt: -1, indefAt: -1, forbiddenAt: -1, longAt: -1 };
  const end = scanItem(s, 0, 0);
  if (end !== bytes.length) malformed('trailing bytes after the data item', end);
  if (s.dupAt >= 0) throw new DtError(ErrorCode.CBOR_DUPLICATE_KEY, 'map holds the same key twice', { offset: s.dupAt });
  // Floats are refused whatever their value: 1.0 is not a spelling of 1 in DT CBOR.
  if (s.forbiddenAt >= 0)
    throw new DtError(ErrorCode.CBOR_FORBIDDEN_TYPE, 'float, simple value or tag outside the DT data model', { offset: s.forbiddenAt });
  // Decided here because cbor-x does not read every indefinite form (it fails on indefinite byte strings).
  if (s.indefAt >= 0) throw new DtError(ErrorCode.CBOR_NON_DETERMINISTIC, 'indefinite length', { offset: s.indefAt });
  return s;
}
