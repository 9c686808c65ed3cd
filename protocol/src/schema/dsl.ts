/**
 * Message schemas as data. One table per message drives encoding, decoding,
 * validation and (through {@link Infer}) the TypeScript type of the message.
 *
 * A struct is a CBOR map with integer keys. Field kinds:
 * - `uint`: unsigned integer within [min, max] (max ≤ 2^53-1);
 * - `int`: signed integer (COSE labels and parameters);
 * - `bytes`: byte string with an exact size or a size range;
 * - `text`: UTF-8 text with a maximum length in bytes;
 * - `bool`;
 * - `array`: definite-length array of one element kind with item bounds;
 * - `struct`: a nested map with its own schema;
 * - `const`: an integer that must have exactly one value (versions, COSE
 *   constants); written automatically and absent from the TypeScript type.
 *
 * @module
 */
import { DtError, ErrorCode } from '../errors.ts';
import type { CborMap, CborValue } from '../cbor/deterministic.ts';

/** Maximum amount or integer the schemas accept: 2^53-1. */
export const MAX_UINT = Number.MAX_SAFE_INTEGER;

export interface UintKind {
  readonly kind: 'uint';
  readonly min: number;
  readonly max: number;
}
export interface IntKind {
  readonly kind: 'int';
}
export interface BytesKind {
  readonly kind: 'bytes';
  readonly minSize: number;
  readonly maxSize: number;
  readonly sizes?: readonly number[];
}
export interface TextKind {
  readonly kind: 'text';
  readonly maxLength: number;
}
export interface BoolKind {
  readonly kind: 'bool';
}
export interface ArrayKind<T extends FieldKind = FieldKind> {
  readonly kind: 'array';
  readonly of: T;
  readonly minItems: number;
  readonly maxItems: number;
}
export interface StructKind<S extends StructSchema = StructSchema> {
  readonly kind: 'struct';
  readonly schema: S;
}
export interface ConstKind {
  readonly kind: 'const';
  readonly value: number;
  readonly code: ErrorCode;
}

/** Every field kind. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any kind of item or struct: the union must accept every instantiation
export type FieldKind = UintKind | IntKind | BytesKind | TextKind | BoolKind | ArrayKind<any> | StructKind<any> | ConstKind;

/** One field of a struct: CBOR map key, property name, kind, optionality. */
export interface Field {
  readonly key: number;
  readonly name: string;
  readonly type: FieldKind;
  readonly optional?: boolean;
}

/** A struct schema. */
export interface StructSchema {
  readonly name: string;
  readonly fields: readonly Field[];
}

// ---- builders (return literal types so that Infer works) ----
/** Unsigned integer in [min, max]. */
export const uint = (max: number = MAX_UINT, min = 0): UintKind => ({ kind: 'uint', min, max });
/** Signed integer. */
export const int = (): IntKind => ({ kind: 'int' });
/** Byte string of exactly `size` bytes. */
export const bytes = (size: number): BytesKind => ({ kind: 'bytes', minSize: size, maxSize: size });
/** Byte string whose size is one of `sizes`. */
export const bytesOneOf = (...sizes: number[]): BytesKind => ({
  kind: 'bytes',
  minSize: Math.min(...sizes),
  maxSize: Math.max(...sizes),
  sizes,
});
/** Byte string of 1..maxSize bytes. */
export const bytesUpTo = (maxSize: number, minSize = 1): BytesKind => ({ kind: 'bytes', minSize, maxSize });
/** UTF-8 text of 1..maxLength bytes. */
export const text = (maxLength: number): TextKind => ({ kind: 'text', maxLength });
/** Boolean. */
export const bool = (): BoolKind => ({ kind: 'bool' });
/** Array of `of` with item bounds. */
export const array = <T extends FieldKind>(of: T, maxItems: number, minItems = 0): ArrayKind<T> => ({
  kind: 'array',
  of,
  minItems,
  maxItems,
});
/** Nested struct. */
export const struct = <S extends StructSchema>(schema: S): StructKind<S> => ({ kind: 'struct', schema });
/** Constant integer (checked with `code` on decode). */
export const constant = (value: number, code: ErrorCode = ErrorCode.SCHEMA_OUT_OF_RANGE): ConstKind => ({ kind: 'const', value, code });
/** The version field every top-level DT payload carries under key 0. */
export const VERSION_1 = constant(1, ErrorCode.UNSUPPORTED_VERSION);

// ---- type inference ----
/** The TypeScript type of a field kind. */
export type TypeOf<K> = K extends UintKind | IntKind
  ? number
  : K extends BytesKind
    ? Uint8Array
    : K extends TextKind
      ? string
      : K extends BoolKind
        ? boolean
        : K extends ArrayKind<infer O>
          ? Array<TypeOf<O>>
          : K extends StructKind<infer S>
            ? Infer<S>
            : never;

type FieldsOf<S extends StructSchema> = S['fields'][number];
type Simplify<T> = { [K in keyof T]: T[K] } & {};

/** The TypeScript type of a struct schema (const fields omitted, optional fields optional). */
export type Infer<S extends StructSchema> = Simplify<
  { [F in FieldsOf<S> as F['type'] extends ConstKind ? never : F['optional'] extends true ? never : F['name']]: TypeOf<F['type']> } & {
    [F in FieldsOf<S> as F['type'] extends ConstKind ? never : F['optional'] extends true ? F['name'] : never]?: TypeOf<F['type']>;
  }
>;

/** Declares a schema while keeping its literal type. */
export function defineSchema<const S extends StructSchema>(s: S): S {
  const keys = new Set<number>();
  for (const f of s.fields) {
    if (keys.has(f.key)) throw new Error(`schema ${s.name}: duplicate key ${f.key}`);
    keys.add(f.key);
  }
  return s;
}

// ---- encode / decode ----
function fail(code: ErrorCode, path: string, message: string, extra: Record<string, string | number | boolean> = {}): never {
  throw new DtError(code, `${path}: ${message}`, { path, ...extra });
}

function encodeField(kind: FieldKind, value: unknown, path: string): CborValue {
  switch (kind.kind) {
    case 'const':
      return kind.value;
    case 'uint':
      if (typeof value !== 'number' || !Number.isSafeInteger(value))
        fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected an unsigned integer');
      if (value < kind.min || value > kind.max)
        fail(ErrorCode.SCHEMA_OUT_OF_RANGE, path, 'integer out of range', { min: kind.min, max: kind.max });
      return value;
    case 'int':
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected an integer');
      return value;
    case 'bytes':
      if (!(value instanceof Uint8Array)) fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected bytes');
      checkBytes(kind, value, path);
      return value;
    case 'text':
      if (typeof value !== 'string') fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected text');
      checkText(kind, value, path);
      return value;
    case 'bool':
      if (typeof value !== 'boolean') fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected a boolean');
      return value;
    case 'array': {
      if (!Array.isArray(value)) fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected an array');
      checkItems(kind, value.length, path);
      return value.map((v, i) => encodeField(kind.of, v, `${path}[${i}]`));
    }
    case 'struct':
      if (typeof value !== 'object' || value === null) fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected a struct');
      return encodeStructAt(kind.schema, value as Record<string, unknown>, path);
  }
}

function checkBytes(kind: BytesKind, value: Uint8Array, path: string): void {
  if (value.length < kind.minSize || value.length > kind.maxSize || (kind.sizes && !kind.sizes.includes(value.length))) {
    fail(value.length > kind.maxSize ? ErrorCode.TOO_LARGE : ErrorCode.SCHEMA_OUT_OF_RANGE, path, 'byte string has the wrong length', {
      length: value.length,
      minSize: kind.minSize,
      maxSize: kind.maxSize,
    });
  }
}

/** `utf8(s).length` without building the bytes (a lone surrogate counts as U+FFFD, 3 bytes, as `utf8` writes it). */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

function checkText(kind: TextKind, value: string, path: string): void {
  const n = utf8Length(value);
  if (n === 0 || n > kind.maxLength)
    fail(n > kind.maxLength ? ErrorCode.TOO_LARGE : ErrorCode.SCHEMA_OUT_OF_RANGE, path, 'text has the wrong length', {
      length: n,
      maxLength: kind.maxLength,
    });
}

function checkItems(kind: ArrayKind, n: number, path: string): void {
  if (n < kind.minItems || n > kind.maxItems) {
    fail(n > kind.maxItems ? ErrorCode.TOO_LARGE : ErrorCode.SCHEMA_OUT_OF_RANGE, path, 'wrong number of items', {
      items: n,
      minItems: kind.minItems,
      maxItems: kind.maxItems,
    });
  }
}

function encodeStructAt(schema: StructSchema, obj: Record<string, unknown>, path: string): CborMap {
  const m: CborMap = new Map();
  const known = new Set(schema.fields.map((f) => f.name));
  for (const k of Object.keys(obj)) {
    if (!known.has(k) && obj[k] !== undefined) fail(ErrorCode.SCHEMA_UNKNOWN_FIELD, `${path}.${k}`, 'field not in schema');
  }
  for (const f of schema.fields) {
    const v = f.type.kind === 'const' ? f.type.value : obj[f.name];
    if (v === undefined) {
      if (f.optional) continue;
      fail(ErrorCode.SCHEMA_MISSING_FIELD, `${path}.${f.name}`, 'required field missing');
    }
    m.set(f.key, encodeField(f.type, v, `${path}.${f.name}`));
  }
  return m;
}

/** Converts a typed object into the CBOR map of its schema, validating every field. */
export function encodeStruct<S extends StructSchema>(schema: S, obj: Infer<S>): CborMap {
  return encodeStructAt(schema, obj as Record<string, unknown>, schema.name);
}

function decodeField(kind: FieldKind, v: CborValue, path: string): unknown {
  switch (kind.kind) {
    case 'const':
      if (v !== kind.value) fail(kind.code, path, 'unexpected value', { expected: kind.value });
      return v;
    case 'uint':
      if (typeof v !== 'number') fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected an unsigned integer');
      if (v < kind.min || v > kind.max) fail(ErrorCode.SCHEMA_OUT_OF_RANGE, path, 'integer out of range', { min: kind.min, max: kind.max });
      return v;
    case 'int':
      if (typeof v !== 'number') fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected an integer');
      return v;
    case 'bytes':
      if (!(v instanceof Uint8Array)) fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected bytes');
      checkBytes(kind, v, path);
      return v;
    case 'text':
      if (typeof v !== 'string') fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected text');
      checkText(kind, v, path);
      return v;
    case 'bool':
      if (typeof v !== 'boolean') fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected a boolean');
      return v;
    case 'array':
      if (!Array.isArray(v)) fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected an array');
      checkItems(kind, v.length, path);
      return v.map((x, i) => decodeField(kind.of, x, `${path}[${i}]`));
    case 'struct':
      if (!(v instanceof Map)) fail(ErrorCode.SCHEMA_WRONG_TYPE, path, 'expected a map');
      return decodeStructAt(kind.schema, v, path);
  }
}

/** What decoding a struct needs of its schema, worked out once per schema (schemas are constant tables). */
interface DecodePlan {
  /** Fields whose constant is the message version (checked first). */
  readonly versions: readonly Field[];
  readonly byKey: ReadonlyMap<number, Field>;
  /** Constants first (COSE_Key kty, alg, crv), then the other fields in schema order. */
  readonly ordered: readonly Field[];
}

const plans = new WeakMap<StructSchema, DecodePlan>();

function planOf(schema: StructSchema): DecodePlan {
  let plan = plans.get(schema);
  if (!plan) {
    plan = {
      versions: schema.fields.filter((f) => f.type.kind === 'const' && f.type.code === ErrorCode.UNSUPPORTED_VERSION),
      byKey: new Map(schema.fields.map((f) => [f.key, f])),
      ordered: [...schema.fields].sort((a, b) => (a.type.kind === 'const' ? -1 : 0) - (b.type.kind === 'const' ? -1 : 0)),
    };
    plans.set(schema, plan);
  }
  return plan;
}

function decodeStructAt(schema: StructSchema, m: CborMap, path: string): Record<string, unknown> {
  const plan = planOf(schema);
  // The version is checked before anything else (unknown keys included) so
  // that a future version, which will likely add keys, gets
  // UNSUPPORTED_VERSION rather than a confusing field error (SPEC.md §2.6).
  for (const f of plan.versions) {
    const v = m.get(f.key);
    if (v !== (f.type as ConstKind).value)
      fail(ErrorCode.UNSUPPORTED_VERSION, `${path}.${f.name}`, v === undefined ? 'required field missing' : 'unexpected value', {
        expected: (f.type as ConstKind).value,
      });
  }
  for (const k of m.keys()) {
    if (!plan.byKey.has(k)) fail(ErrorCode.SCHEMA_UNKNOWN_FIELD, `${path}.#${k}`, 'unknown map key', { key: k });
  }
  // Other constants (COSE_Key kty, alg, crv) come next, then the fields in order.
  const out: Record<string, unknown> = {};
  for (const f of plan.ordered) {
    const v = m.get(f.key);
    if (v === undefined) {
      if (f.optional) continue;
      fail(
        f.type.kind === 'const' && f.type.code === ErrorCode.UNSUPPORTED_VERSION
          ? ErrorCode.UNSUPPORTED_VERSION
          : ErrorCode.SCHEMA_MISSING_FIELD,
        `${path}.${f.name}`,
        'required field missing',
      );
    }
    const d = decodeField(f.type, v, `${path}.${f.name}`);
    if (f.type.kind !== 'const') out[f.name] = d;
  }
  return out;
}

/** Validates a decoded CBOR value against a struct schema and returns the typed object. */
export function decodeStruct<S extends StructSchema>(schema: S, value: CborValue): Infer<S> {
  if (!(value instanceof Map)) fail(ErrorCode.SCHEMA_WRONG_TYPE, schema.name, 'expected a map');
  return decodeStructAt(schema, value, schema.name) as Infer<S>;
}
