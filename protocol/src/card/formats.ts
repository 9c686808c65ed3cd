/**
 * Data and response formats of the DT applet's commands (SPEC §10.4). The
 * structured fields are CBOR maps with integer keys, encoded
 * deterministically, defined as schema tables like every DT message: one
 * table per format drives encoding, decoding, validation and the type. The
 * applet (`@dt/firmware`) and every host read and write them from here.
 *
 * @module
 */
import { decodeDeterministic, encodeDeterministic } from '../cbor/deterministic.ts';
import { DtError, ErrorCode } from '../errors.ts';
import {
  array,
  bool,
  bytes,
  bytesUpTo,
  decodeStruct,
  defineSchema,
  encodeStruct,
  MAX_UINT,
  struct,
  uint,
  type Infer,
  type StructSchema,
} from '../schema/dsl.ts';
import { CardLimitsSchema, LIMITS } from '../schema/messages.ts';
import { FORMAT_MAX_SIZE, PIN_LENGTH, PUK_LENGTH } from './constants.ts';

/** SELECT response (SPEC §10.4 `SelectResponse`). */
export const SelectResponseSchema = defineSchema({
  name: 'SelectResponse',
  fields: [
    { key: 1, name: 'applet', type: uint(255, 1) },
    { key: 2, name: 'protocol', type: uint(255, 1) },
    // Bit set of Capability.
    { key: 3, name: 'capabilities', type: uint(0xffff) },
    { key: 4, name: 'locked', type: bool() },
    // Largest (chained) command data the applet accepts.
    { key: 5, name: 'maxCommand', type: uint(0xffffff, 255) },
    // The card key id, once the key exists.
    { key: 6, name: 'card', type: bytes(16), optional: true },
  ],
});
/** A decoded SELECT response. */
export type SelectResponse = Infer<typeof SelectResponseSchema>;

/** GET STATUS response (SPEC §10.4 `CardStatus`). */
export const CardStatusSchema = defineSchema({
  name: 'CardStatus',
  fields: [
    { key: 1, name: 'locked', type: bool() },
    { key: 2, name: 'card', type: bytes(16), optional: true },
    { key: 3, name: 'counter', type: uint(MAX_UINT) },
    { key: 4, name: 'balance', type: uint(MAX_UINT) },
    { key: 5, name: 'offlineValue', type: uint(MAX_UINT) },
    { key: 6, name: 'offlineCount', type: uint(LIMITS.maxHistory) },
    { key: 7, name: 'limits', type: struct(CardLimitsSchema), optional: true },
    { key: 8, name: 'pinTries', type: uint(15) },
    { key: 9, name: 'pukTries', type: uint(15) },
    { key: 10, name: 'pinVerified', type: bool() },
    { key: 11, name: 'syncPending', type: bool() },
    { key: 12, name: 'floor', type: uint(MAX_UINT) },
    { key: 13, name: 'coins', type: uint(LIMITS.maxTokens) },
    { key: 14, name: 'currency', type: uint(999, 1), optional: true },
    // Bit set of Personalized.
    { key: 15, name: 'personalized', type: uint(15) },
    // Nonce of the last signed transfer (what a torn-tap retry names).
    { key: 16, name: 'lastNonce', type: bytes(16), optional: true },
    // Trusted time (SPEC §10.8), once certificates are written.
    { key: 17, name: 'trusted', type: uint(MAX_UINT), optional: true },
  ],
});
/** A decoded GET STATUS response. */
export type CardStatus = Infer<typeof CardStatusSchema>;

const signedCert = bytesUpTo(LIMITS.maxCertificateSize, 16);

/** PERSONALIZE P1=02 (write certificates) data (SPEC §10.4 `WriteCertificates`). */
export const WriteCertificatesSchema = defineSchema({
  name: 'WriteCertificates',
  fields: [
    { key: 1, name: 'chain', type: array(signedCert, LIMITS.maxChainCerts, 1) },
    { key: 2, name: 'root', type: signedCert },
    { key: 3, name: 'ledger', type: signedCert },
    { key: 4, name: 'time', type: uint(MAX_UINT) },
  ],
});
/** WRITE CERTIFICATES data. */
export type WriteCertificates = Infer<typeof WriteCertificatesSchema>;

/** PERSONALIZE P1=03 (set PIN) data (SPEC §10.4 `SetPin`). */
export const SetPinSchema = defineSchema({
  name: 'SetPin',
  fields: [
    { key: 1, name: 'pin', type: bytesUpTo(PIN_LENGTH.max, PIN_LENGTH.min) },
    { key: 2, name: 'puk', type: bytesUpTo(PUK_LENGTH.max, PUK_LENGTH.min) },
    // Absent: DEFAULT_PIN_TRIES (constants.ts).
    { key: 3, name: 'pinTries', type: uint(15, 1), optional: true },
    // Absent: DEFAULT_PUK_TRIES (constants.ts).
    { key: 4, name: 'pukTries', type: uint(15, 1), optional: true },
  ],
});
/** SET PIN data. */
export type SetPin = Infer<typeof SetPinSchema>;

/** PERSONALIZE P1=04 (set configuration) data (SPEC §10.4 `SetConfig`). */
export const SetConfigSchema = defineSchema({
  name: 'SetConfig',
  fields: [
    // Raises the card's clock floor (seconds); it never goes down.
    { key: 1, name: 'floor', type: uint(MAX_UINT), optional: true },
    // 1: ask Hal.confirm before every payment when the device has it; 0: never.
    { key: 2, name: 'confirm', type: uint(1), optional: true },
  ],
});
/** SET CONFIG data. */
export type SetConfig = Infer<typeof SetConfigSchema>;

/** CHANGE PIN data (SPEC §10.4 `ChangePin`). */
export const ChangePinSchema = defineSchema({
  name: 'ChangePin',
  fields: [
    { key: 1, name: 'current', type: bytesUpTo(PIN_LENGTH.max, 1) },
    { key: 2, name: 'next', type: bytesUpTo(PIN_LENGTH.max, 1) },
  ],
});
/** CHANGE PIN data. */
export type ChangePin = Infer<typeof ChangePinSchema>;

/** UNBLOCK PIN data (SPEC §10.4 `UnblockPin`). */
export const UnblockPinSchema = defineSchema({
  name: 'UnblockPin',
  fields: [
    { key: 1, name: 'puk', type: bytesUpTo(PUK_LENGTH.max, 1) },
    { key: 2, name: 'next', type: bytesUpTo(PIN_LENGTH.max, 1) },
  ],
});
/** UNBLOCK PIN data. */
export type UnblockPin = Infer<typeof UnblockPinSchema>;

/** Every format table of SPEC §10.4, in its order (a test checks the CDDL there against them). */
export const CARD_FORMATS = [
  SelectResponseSchema,
  CardStatusSchema,
  WriteCertificatesSchema,
  SetPinSchema,
  SetConfigSchema,
  ChangePinSchema,
  UnblockPinSchema,
] as const;

/**
 * Encodes a format struct as deterministic CBOR.
 *
 * @example
 * encodeFormat(SetConfigSchema, { floor: 1_790_000_000, confirm: 0 })
 */
export function encodeFormat<S extends StructSchema>(schema: S, value: Infer<S>): Uint8Array {
  return encodeDeterministic(encodeStruct(schema, value));
}

/**
 * Decodes deterministic CBOR against a format schema, strictly: an unknown
 * key, a missing required key, a value out of range or more than `maxSize`
 * bytes throw a `DtError`. This is how the applet reads command data and how
 * a conformance test reads the applet's answers.
 */
export function decodeFormat<S extends StructSchema>(schema: S, data: Uint8Array, maxSize: number = FORMAT_MAX_SIZE): Infer<S> {
  return decodeStruct(schema, decodeDeterministic(data, maxSize));
}

/**
 * Reads a format map leniently, the way a host reads an applet that may be
 * newer than itself: keys the schema does not name are ignored, and a known
 * field whose value does not fit its schema type is left out (as if absent).
 * Every field present in the result has passed the schema's own checks.
 *
 * Returns `undefined` when `data` is well-formed CBOR but not a map; throws a
 * `DtError` when it is not deterministic CBOR within `maxSize` bytes.
 */
export function decodeFormatLenient<S extends StructSchema>(
  schema: S,
  data: Uint8Array,
  maxSize: number = FORMAT_MAX_SIZE,
): Partial<Infer<S>> | undefined {
  const value = decodeDeterministic(data, maxSize);
  if (!(value instanceof Map)) return undefined;
  const out: Record<string, unknown> = {};
  for (const field of schema.fields) {
    const v = value.get(field.key);
    if (v === undefined) continue;
    // One field at a time through the schema's decoder, so the checks are the schema's own.
    const single: StructSchema = { name: schema.name, fields: [{ ...field, optional: true }] };
    try {
      const decoded = decodeStruct(single, new Map([[field.key, v]])) as Record<string, unknown>;
      if (field.name in decoded) out[field.name] = decoded[field.name];
    } catch (e) {
      if (!(e instanceof DtError)) throw e;
    }
  }
  return out as Partial<Infer<S>>;
}

/** The map key of field `name` in `schema` (for tests and tools that must build a malformed answer on purpose). */
export function formatKey<S extends StructSchema>(schema: S, name: S['fields'][number]['name']): number {
  const f = schema.fields.find((x) => x.name === name);
  if (!f) throw new DtError(ErrorCode.SCHEMA_UNKNOWN_FIELD, `${schema.name}.${String(name)}: field not in schema`);
  return f.key;
}
