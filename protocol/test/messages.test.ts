/**
 * Message schemas (SPEC.md §2.6, §3): property-based round trips for every
 * message in MESSAGES with values generated from the schema tables
 * themselves, schema errors derived from the same tables (so a new message
 * or field is covered without new test code), and checks that SPEC.md says
 * exactly what the tables say (CDDL, size limits, error codes, status words,
 * instructions, enumerations).
 */
import { readFileSync } from 'node:fs';
import { deepStrictEqual } from 'node:assert/strict';
import test from 'ava';
import fc from 'fast-check';

import {
  ACQUIRER_SCHEMAS,
  BankPermission,
  CARD_FORMATS,
  Cvm,
  decodeDeterministic,
  decodeMessage,
  decodeStruct,
  DtError,
  encodeDeterministic,
  encodeMessage,
  encodeStruct,
  ErrorCode,
  INS,
  isDtError,
  LIMITS,
  MAX_UINT,
  MESSAGES,
  OutcomeStatus,
  Role,
  SW_TABLE,
  toHex,
  type CborMap,
  type CborValue,
  type FieldKind,
  type MessageName,
  type StructSchema,
} from '../src/index.ts';
import { arbitraryStruct, cddlType, reachableSchemas, SEED } from './helpers/arbitrary.ts';

const NAMES = Object.keys(MESSAGES) as MessageName[];
const SPEC = readFileSync(new URL('../SPEC.md', import.meta.url), 'utf8');

// ---------------------------------------------------------------- round trips

for (const name of NAMES) {
  const def = MESSAGES[name];
  test(`property: ${name} values within the schema bounds round-trip (decode∘encode = id, encode∘decode = id)`, (t) => {
    let encoded = 0;
    let tooLarge = 0;
    t.notThrows(() =>
      fc.assert(
        fc.property(arbitraryStruct(def.schema), (value) => {
          const raw = encodeDeterministic(encodeStruct(def.schema as StructSchema, value as never));
          if (raw.length > def.maxSize) {
            // Valid per field but over the message's size limit (SPEC.md §2.4): both directions refuse.
            tooLarge++;
            expectCode(() => encodeMessage(name, value as never), ErrorCode.TOO_LARGE);
            expectCode(() => decodeMessage(name, raw), ErrorCode.TOO_LARGE);
            return;
          }
          encoded++;
          const bytes = encodeMessage(name, value as never);
          deepStrictEqual(toHex(bytes), toHex(raw));
          const back = decodeMessage(name, bytes);
          deepStrictEqual(back, value);
          deepStrictEqual(toHex(encodeMessage(name, back)), toHex(bytes));
          // The generic decoder agrees: the bytes are deterministic CBOR.
          deepStrictEqual(toHex(encodeDeterministic(decodeDeterministic(bytes, def.maxSize))), toHex(bytes));
        }),
        { seed: SEED, numRuns: 150 },
      ),
    );
    // The generator must actually exercise the encoder, not only the size limit.
    t.true(encoded > 100, `only ${encoded} values encoded (${tooLarge} over the size limit)`);
  });
}

function expectCode(fn: () => unknown, code: ErrorCode): void {
  try {
    fn();
  } catch (e) {
    if (isDtError(e, code)) return;
    throw new Error(`expected ${code}, got ${String(e)}`, { cause: e });
  }
  throw new Error(`expected ${code}, nothing thrown`);
}

// ---------------------------------------------------------------- schema-derived base values

/** The smallest valid value of a kind; arrays get at least one item so that their items can be mutated. */
function minimal(kind: FieldKind): unknown {
  switch (kind.kind) {
    case 'const':
      return kind.value;
    case 'uint':
      return kind.min;
    case 'int':
      return 0;
    case 'bytes':
      return new Uint8Array(kind.sizes ? kind.sizes[0]! : kind.minSize).fill(0xab);
    case 'text':
      return 'a';
    case 'bool':
      return false;
    case 'array':
      return Array.from({ length: Math.max(kind.minItems, 1) }, () => minimal(kind.of));
    case 'struct':
      return minimalStruct(kind.schema);
  }
}

/** A valid value with every field, optional ones included, at its smallest. */
function minimalStruct(schema: StructSchema): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of schema.fields) if (f.type.kind !== 'const') out[f.name] = minimal(f.type);
  return out;
}

/** A value of another CBOR type than `kind` accepts. */
function wrongType(kind: FieldKind): CborValue {
  switch (kind.kind) {
    case 'uint':
    case 'int':
    case 'const':
      return 'x';
    case 'bytes':
      return 1;
    case 'text':
      return new Uint8Array(1);
    case 'bool':
      return 0;
    case 'array':
      return new Map();
    case 'struct':
      return [];
  }
}

interface Mutation {
  readonly what: string;
  readonly code: ErrorCode;
  /** Changes a fresh copy of the base CBOR map in place. */
  readonly apply: (root: CborMap) => void;
}

type Slot = { get(root: CborMap): CborValue; set(root: CborMap, v: CborValue): void };

/** Mutations of one value slot of kind `kind` (a map member or an array item). */
function valueMutations(kind: FieldKind, slot: Slot, path: string): Mutation[] {
  const out: Mutation[] = [];
  const set = (what: string, code: ErrorCode, v: () => CborValue) =>
    out.push({ what: `${path}: ${what}`, code, apply: (r) => slot.set(r, v()) });
  switch (kind.kind) {
    case 'const':
      set(`constant ${kind.value} + 1`, kind.code, () => kind.value + 1);
      set('text instead of the constant', kind.code, () => 'x');
      return out;
    case 'uint':
      if (kind.min > 0) set(`${kind.min - 1} below min ${kind.min}`, ErrorCode.SCHEMA_OUT_OF_RANGE, () => kind.min - 1);
      else set('negative', ErrorCode.SCHEMA_OUT_OF_RANGE, () => -1);
      if (kind.max < MAX_UINT) set(`${kind.max + 1} above max ${kind.max}`, ErrorCode.SCHEMA_OUT_OF_RANGE, () => kind.max + 1);
      break;
    case 'bytes':
      set(`${kind.maxSize + 1} bytes, over ${kind.maxSize}`, ErrorCode.TOO_LARGE, () => new Uint8Array(kind.maxSize + 1));
      if (kind.minSize > 0)
        set(`${kind.minSize - 1} bytes, under ${kind.minSize}`, ErrorCode.SCHEMA_OUT_OF_RANGE, () => new Uint8Array(kind.minSize - 1));
      if (kind.sizes) set('a size between the allowed ones', ErrorCode.SCHEMA_OUT_OF_RANGE, () => new Uint8Array(kind.minSize + 1));
      break;
    case 'text':
      set(`${kind.maxLength + 1} UTF-8 bytes`, ErrorCode.TOO_LARGE, () => 'a'.repeat(kind.maxLength + 1));
      // Multi-byte characters count in bytes, not characters (SPEC.md §3: .size is in bytes).
      set(`${Math.ceil((kind.maxLength + 1) / 2)} two-byte characters`, ErrorCode.TOO_LARGE, () =>
        'é'.repeat(Math.ceil((kind.maxLength + 1) / 2)),
      );
      set('empty text', ErrorCode.SCHEMA_OUT_OF_RANGE, () => '');
      break;
    case 'array': {
      set(`${kind.maxItems + 1} items, over ${kind.maxItems}`, ErrorCode.TOO_LARGE, () => encodedArray(kind, kind.maxItems + 1));
      if (kind.minItems > 0)
        set(`${kind.minItems - 1} items, under ${kind.minItems}`, ErrorCode.SCHEMA_OUT_OF_RANGE, () =>
          encodedArray(kind, kind.minItems - 1),
        );
      const item: Slot = {
        get: (r) => (slot.get(r) as CborValue[])[0]!,
        set: (r, v) => {
          (slot.get(r) as CborValue[])[0] = v;
        },
      };
      out.push(...valueMutations(kind.of, item, `${path}[0]`));
      break;
    }
    case 'struct':
      out.push(...structMutations(kind.schema, { get: (r) => slot.get(r) as CborMap }, path));
      break;
    case 'int':
    case 'bool':
      // No bounds to cross: a bool gets only the wrong-type mutation below, an int none.
      break;
  }
  if (kind.kind !== 'int') set('wrong CBOR type', ErrorCode.SCHEMA_WRONG_TYPE, () => wrongType(kind));
  return out;
}

function encodedArray(kind: FieldKind & { kind: 'array' }, n: number): CborValue[] {
  const item = encodeItem(kind.of, minimal(kind.of));
  return Array.from({ length: n }, () => item);
}

function encodeItem(kind: FieldKind, v: unknown): CborValue {
  return kind.kind === 'struct' ? encodeStruct(kind.schema as StructSchema, v as never) : (v as CborValue);
}

/** Every mutation of a struct at `map`: each field's value mutations, removals, an unknown key. */
function structMutations(schema: StructSchema, map: { get(root: CborMap): CborMap }, path: string): Mutation[] {
  const out: Mutation[] = [];
  for (const f of schema.fields) {
    const p = `${path}.${f.name}`;
    const slot: Slot = { get: (r) => map.get(r).get(f.key)!, set: (r, v) => void map.get(r).set(f.key, v) };
    const isVersion = f.type.kind === 'const' && f.type.code === ErrorCode.UNSUPPORTED_VERSION;
    if (!f.optional) {
      out.push({
        what: `${p}: removed`,
        // An absent version is UNSUPPORTED_VERSION; any other absent field (constants included) is missing.
        code: isVersion ? ErrorCode.UNSUPPORTED_VERSION : ErrorCode.SCHEMA_MISSING_FIELD,
        apply: (r) => void map.get(r).delete(f.key),
      });
    }
    out.push(...valueMutations(f.type, slot, p));
  }
  const unused = Math.max(...schema.fields.map((f) => f.key)) + 1;
  out.push({ what: `${path}: unknown key ${unused}`, code: ErrorCode.SCHEMA_UNKNOWN_FIELD, apply: (r) => void map.get(r).set(unused, 0) });
  out.push({ what: `${path}: unknown key -100`, code: ErrorCode.SCHEMA_UNKNOWN_FIELD, apply: (r) => void map.get(r).set(-100, 0) });
  return out;
}

for (const name of NAMES) {
  const def = MESSAGES[name];
  const schema = def.schema as StructSchema;
  const baseValue = minimalStruct(schema);
  const base = () => encodeStruct(schema, baseValue as never);

  test(`${name}: the all-fields minimal value is valid (base of the error table)`, (t) => {
    const bytes = encodeMessage(name, baseValue as never);
    t.deepEqual(decodeMessage(name, bytes), baseValue as never);
  });

  test(`${name}: every schema violation derived from the table is rejected with its code`, (t) => {
    const muts = structMutations(schema, { get: (r) => r }, name);
    t.true(muts.length >= schema.fields.length * 2);
    for (const m of muts) {
      const root = base();
      m.apply(root);
      let bytes: Uint8Array;
      try {
        bytes = encodeDeterministic(root);
      } catch (e) {
        t.fail(`${m.what}: could not build the invalid input: ${String(e)}`);
        continue;
      }
      const err = t.throws(() => decodeMessage(name, bytes), undefined, m.what);
      t.true(err instanceof DtError, `${m.what}: not a DtError: ${String(err)}`);
      t.is((err as DtError).code, m.code, m.what);
    }
  });

  test(`${name}: optional fields may be absent`, (t) => {
    const optional = schema.fields.filter((f) => f.optional);
    const value = { ...baseValue };
    for (const f of optional) delete value[f.name];
    const back = decodeMessage(name, encodeMessage(name, value as never)) as Record<string, unknown>;
    for (const f of optional) t.false(f.name in back, f.name);
    t.deepEqual(back, value);
  });

  test(`${name}: the encoder refuses invalid typed values with the same codes`, (t) => {
    for (const f of schema.fields) {
      if (f.type.kind === 'const') continue;
      if (!f.optional) {
        const v = { ...baseValue };
        delete v[f.name];
        expectThrowsCode(t, () => encodeMessage(name, v as never), ErrorCode.SCHEMA_MISSING_FIELD, `${f.name} missing`);
      }
      // A struct given as a non-object (an array would be read as an object with no fields).
      const bad = f.type.kind === 'struct' ? 7 : wrongType(f.type);
      expectThrowsCode(
        t,
        () => encodeMessage(name, { ...baseValue, [f.name]: bad } as never),
        ErrorCode.SCHEMA_WRONG_TYPE,
        `${f.name} wrong type`,
      );
      if (f.type.kind === 'uint') {
        expectThrowsCode(
          t,
          () => encodeMessage(name, { ...baseValue, [f.name]: f.type.kind === 'uint' ? f.type.min + 0.5 : 0 } as never),
          ErrorCode.SCHEMA_WRONG_TYPE,
          `${f.name} fraction`,
        );
      }
    }
    expectThrowsCode(
      t,
      () => encodeMessage(name, { ...baseValue, notInSchema: 1 } as never),
      ErrorCode.SCHEMA_UNKNOWN_FIELD,
      'unknown property',
    );
  });

  test(`${name}: a non-map payload is SCHEMA_WRONG_TYPE`, (t) => {
    for (const v of [[], 1, 'x', new Uint8Array(3)] as CborValue[]) {
      expectThrowsCode(t, () => decodeMessage(name, encodeDeterministic(v)), ErrorCode.SCHEMA_WRONG_TYPE, JSON.stringify(String(v)));
    }
  });
}

function expectThrowsCode(t: import('ava').ExecutionContext, fn: () => unknown, code: ErrorCode, what: string): void {
  const err = t.throws(fn, undefined, what);
  t.is((err as DtError | undefined)?.code, code, what);
}

test('a future version is UNSUPPORTED_VERSION even when it adds keys (SPEC.md §2.6 step 1)', (t) => {
  for (const name of NAMES) {
    const def = MESSAGES[name];
    const schema = def.schema as StructSchema;
    const versionField = schema.fields.find((f) => f.type.kind === 'const' && f.type.code === ErrorCode.UNSUPPORTED_VERSION);
    t.truthy(versionField, `${name} has a version field`);
    const root = encodeStruct(schema, minimalStruct(schema) as never);
    root.set(versionField!.key, 2);
    root.set(1000, 'a field of version 2');
    const err = t.throws(() => decodeMessage(name, encodeDeterministic(root)));
    t.true(isDtError(err, ErrorCode.UNSUPPORTED_VERSION), `${name}: ${String(err)}`);
  }
});

test('decodeStruct reports the first invalid field in encoded key order', (t) => {
  // Token: key 2 (value) and key 4 (owner) both invalid: key 2 is reported.
  const root = encodeStruct(MESSAGES.Token.schema, minimalStruct(MESSAGES.Token.schema) as never);
  root.set(2, 0);
  root.set(4, new Uint8Array(3));
  const err = t.throws(() => decodeStruct(MESSAGES.Token.schema, root));
  t.is((err as DtError).code, ErrorCode.SCHEMA_OUT_OF_RANGE);
  t.is((err as DtError).details.path, 'Token.value');
});

test('LIMITS are consistent with the schema bounds and the amount range', (t) => {
  t.is(LIMITS.maxAmount, 2 ** 53 - 1);
  t.is(MAX_UINT, Number.MAX_SAFE_INTEGER);
  t.true(LIMITS.maxCertificateSize * LIMITS.maxChainCerts < LIMITS.maxPaymentRequestSize);
  t.true(LIMITS.maxTransferSize <= LIMITS.maxHandoverSize);
});

// ---------------------------------------------------------------- SPEC.md agrees with the tables

interface CddlMember {
  optional: boolean;
  key: number;
  type: string;
  name: string;
}

/** Parses the `Name = { ... }` rules of the cddl blocks of SPEC.md, members with their `; name` comments. */
function specRules(): Map<string, CddlMember[]> {
  const rules = new Map<string, CddlMember[]>();
  const blocks = [...SPEC.matchAll(/```cddl\n([\s\S]*?)```/g)].map((m) => m[1]!);
  for (const block of blocks) {
    let current: CddlMember[] | undefined;
    for (const line of block.split('\n')) {
      const start = /^([A-Za-z_][\w-]*) = \{\s*$/.exec(line);
      if (start) {
        current = [];
        rules.set(start[1]!, current);
        continue;
      }
      if (/^\}/.test(line)) {
        current = undefined;
        continue;
      }
      if (!current) continue;
      const m = /^\s*(\?\s+)?(-?\d+)\s*=>\s*(.+?),\s*;\s*([A-Za-z]\w*)/.exec(line);
      if (m) current.push({ optional: m[1] !== undefined, key: Number(m[2]), type: m[3]!.trim(), name: m[4]! });
      else if (line.trim() !== '' && !line.trim().startsWith(';')) throw new Error(`unparsed CDDL member line: ${line}`);
    }
  }
  return rules;
}

test('SPEC.md §3 (and §7.7.1 for the acquirer API objects) gives the CDDL of every schema exactly (keys, names, optionality, types)', (t) => {
  const rules = specRules();
  const schemas = reachableSchemas([
    ...NAMES.map((n) => MESSAGES[n].schema as StructSchema),
    ...(ACQUIRER_SCHEMAS as readonly StructSchema[]),
  ]);
  t.true(schemas.length >= 18);
  for (const s of ACQUIRER_SCHEMAS) t.true(schemas.includes(s as StructSchema), s.name);
  for (const s of schemas) {
    const members = rules.get(s.name);
    if (!members) {
      t.fail(`SPEC.md has no CDDL rule ${s.name}`);
      continue;
    }
    t.deepEqual(
      members,
      s.fields.map((f) => ({ optional: f.optional === true, key: f.key, type: cddlType(f.type), name: f.name })),
      `CDDL of ${s.name}`,
    );
  }
});

test('SPEC.md §10.4 gives the CDDL of every card command format exactly (keys, names, optionality, types)', (t) => {
  const rules = specRules();
  for (const s of CARD_FORMATS as readonly StructSchema[]) {
    const members = rules.get(s.name);
    if (!members) {
      t.fail(`SPEC.md has no CDDL rule ${s.name}`);
      continue;
    }
    t.deepEqual(
      members,
      s.fields.map((f) => ({ optional: f.optional === true, key: f.key, type: cddlType(f.type), name: f.name })),
      `CDDL of ${s.name}`,
    );
  }
});

test('SPEC.md §2.4 lists every message with its content type and size limit', (t) => {
  for (const name of NAMES) {
    const def = MESSAGES[name];
    const ct = def.contentType === null ? 'none[^|]*' : '`' + def.contentType.replace(/[.+]/g, '\\$&') + '`';
    const row = new RegExp(`^\\| ${name} \\| ${ct} \\| (\\d+)[^|]*\\|[^|]*\\| ([^|]+) \\|$`, 'm').exec(SPEC);
    t.truthy(row, `no row for ${name}`);
    t.is(Number(row?.[1]), def.maxSize, name);
    t.is(row?.[2], def.contentFormat === null ? 'none' : String(def.contentFormat), `${name}: content format`);
  }
});

test('SPEC.md §8 lists every error code, and only existing ones', (t) => {
  // §8.2 (the ledger API's codes) is checked against the ledger's table by the ledger's tests.
  const section = SPEC.slice(SPEC.indexOf('## 8. Error codes'), SPEC.indexOf('### 8.2 Ledger API codes'));
  const listed = new Set([...section.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]!));
  for (const code of Object.values(ErrorCode)) t.true(listed.has(code), `${code} missing from SPEC.md §8`);
  for (const code of listed) t.true(code in ErrorCode, `SPEC.md §8 lists unknown code ${code}`);
});

test('SPEC.md §9.3 lists every status word of SW_TABLE with its name', (t) => {
  for (const row of SW_TABLE) {
    t.true(SPEC.includes(`| ${row.pattern} | ${row.name} | ${row.description} |`), `${row.pattern} ${row.name}`);
  }
});

test('SPEC.md §9.2 gives every instruction byte', (t) => {
  const section = SPEC.slice(SPEC.indexOf('### 9.2 Command table'), SPEC.indexOf('### 9.3'));
  for (const [name, ins] of Object.entries(INS)) {
    const hex = ins.toString(16).toUpperCase().padStart(2, '0');
    t.regex(section, new RegExp(`\\| (00|80) \\| ${hex} \\|`), name);
  }
});

test('SPEC.md §3.13 gives every enumeration value', (t) => {
  const section = SPEC.slice(SPEC.indexOf('### 3.13 Enumerations'), SPEC.indexOf('## 4.'));
  const enums: Array<[string, Record<string, number>]> = [
    ['Role', Role],
    ['BankPermission', BankPermission],
    ['Cvm', Cvm],
    ['OutcomeStatus', OutcomeStatus],
  ];
  for (const [enumName, table] of enums) {
    for (const [k, v] of Object.entries(table)) t.true(section.includes(`${v} ${k}`), `${enumName}.${k} = ${v}`);
  }
});
