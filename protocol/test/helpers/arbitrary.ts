/**
 * fast-check arbitraries derived from the schema DSL (`src/schema/dsl.ts`), so
 * that every message in `MESSAGES`, present or future, gets property tests
 * without a hand-written generator. Also the CDDL rendering of a field kind
 * that SPEC.md §3 must use (checked in `messages.test.ts`).
 *
 * Not a test file: ava only runs `test/**\/*.test.ts`.
 */
import fc from 'fast-check';
import { MAX_UINT, utf8, type FieldKind, type StructSchema } from '../../src/index.ts';

/** Caps that keep generated values small enough for fast tests. */
export interface ArbitraryCaps {
  /** Largest array length generated (the schema's maximum when lower). */
  readonly maxItems: number;
  /** Largest byte string generated when the schema allows a range (the schema's maximum when lower). */
  readonly maxBytes: number;
}

/** Default caps: small values, but schema bounds of up to 16 items are reached. */
export const DEFAULT_CAPS: ArbitraryCaps = { maxItems: 4, maxBytes: 48 };

/** Fixed seeds: property tests are reproducible run to run (fast-check prints the seed on failure anyway). */
export const SEED = 20261123;

/** Drops trailing code points until the UTF-8 encoding fits `maxBytes` (at least one code point is kept). */
function fitUtf8(s: string, maxBytes: number): string {
  const cps = Array.from(s);
  while (cps.length > 1 && utf8(cps.join('')).length > maxBytes) cps.pop();
  return cps.join('');
}

/** Lengths to try for a bounded size: both ends often, anything in between otherwise. */
function lengthArb(min: number, max: number, cap: number): fc.Arbitrary<number> {
  const upper = Math.min(max, Math.max(min, cap));
  const ends = [min, upper];
  // Reach the schema maximum itself when it is small enough to be cheap.
  if (max !== upper && max <= 2048) ends.push(max);
  return fc.oneof({ arbitrary: fc.constantFrom(...ends), weight: 1 }, { arbitrary: fc.integer({ min, max: upper }), weight: 3 });
}

/** An arbitrary producing valid values of one field kind. */
export function arbitraryFor(kind: FieldKind, caps: ArbitraryCaps = DEFAULT_CAPS): fc.Arbitrary<unknown> {
  switch (kind.kind) {
    case 'const':
      return fc.constant(kind.value);
    case 'uint':
      return fc.oneof(
        { arbitrary: fc.constantFrom(kind.min, kind.max), weight: 1 },
        { arbitrary: fc.integer({ min: kind.min, max: kind.max }), weight: 3 },
      );
    case 'int':
      return fc.oneof(fc.constantFrom(-MAX_UINT, -1, 0, MAX_UINT), fc.maxSafeInteger());
    case 'bytes': {
      const sizes = kind.sizes;
      const len = sizes ? fc.constantFrom(...sizes) : lengthArb(kind.minSize, kind.maxSize, caps.maxBytes);
      return len.chain((n) => fc.uint8Array({ minLength: n, maxLength: n }));
    }
    case 'text':
      return fc
        .oneof(
          fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: kind.maxLength }),
          // Any code point but lone surrogates: 1 to 4 UTF-8 bytes each.
          fc.string({ unit: 'binary', minLength: 1, maxLength: kind.maxLength }),
        )
        .map((s) => fitUtf8(s, kind.maxLength));
    case 'bool':
      return fc.boolean();
    case 'array':
      return lengthArb(kind.minItems, kind.maxItems, caps.maxItems).chain((n) =>
        fc.array(arbitraryFor(kind.of, caps), { minLength: n, maxLength: n }),
      );
    case 'struct':
      return arbitraryStruct(kind.schema, caps);
  }
}

/** Valid typed objects of a struct schema (const fields omitted; optional fields sometimes absent). */
export function arbitraryStruct(schema: StructSchema, caps: ArbitraryCaps = DEFAULT_CAPS): fc.Arbitrary<Record<string, unknown>> {
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  const required: string[] = [];
  for (const f of schema.fields) {
    if (f.type.kind === 'const') continue;
    model[f.name] = arbitraryFor(f.type, caps);
    if (!f.optional) required.push(f.name);
  }
  // fast-check builds null-prototype records; decoded messages are plain objects.
  return fc.record(model, { requiredKeys: required }).map((o) => ({ ...o })) as fc.Arbitrary<Record<string, unknown>>;
}

/**
 * The CDDL type SPEC.md §3 writes for a field kind. `uint53` and `posuint53`
 * are the two named ranges of SPEC.md §3.1; everything else is inline.
 */
export function cddlType(kind: FieldKind): string {
  switch (kind.kind) {
    case 'uint':
      if (kind.max === MAX_UINT && kind.min === 0) return 'uint53';
      if (kind.max === MAX_UINT && kind.min === 1) return 'posuint53';
      return `${kind.min}..${kind.max}`;
    case 'int':
      return 'int';
    case 'const':
      return String(kind.value);
    case 'bytes':
      if (kind.sizes) return '(' + kind.sizes.map((s) => `bstr .size ${s}`).join(' / ') + ')';
      return kind.minSize === kind.maxSize ? `bstr .size ${kind.minSize}` : `bstr .size (${kind.minSize}..${kind.maxSize})`;
    case 'text':
      return `tstr .size (1..${kind.maxLength})`;
    case 'bool':
      return 'bool';
    case 'array':
      return `[ ${kind.minItems}*${kind.maxItems} ${cddlType(kind.of)} ]`;
    case 'struct':
      return kind.schema.name;
  }
}

/** Every struct schema reachable from `roots`, each once, parents before children. */
export function reachableSchemas(roots: readonly StructSchema[]): StructSchema[] {
  const out: StructSchema[] = [];
  const seen = new Set<string>();
  const visitKind = (k: FieldKind): void => {
    if (k.kind === 'struct') visit(k.schema);
    else if (k.kind === 'array') visitKind(k.of);
  };
  const visit = (s: StructSchema): void => {
    if (seen.has(s.name)) return;
    seen.add(s.name);
    out.push(s);
    for (const f of s.fields) visitKind(f.type);
  };
  roots.forEach(visit);
  return out;
}
