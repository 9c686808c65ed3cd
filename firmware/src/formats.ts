/**
 * Data and response formats of the DT applet's APDU commands (APDU.md gives
 * the same definitions as normative text). Structured fields are CBOR maps
 * with integer keys, encoded deterministically, defined as schema tables like
 * every DT message.
 *
 * @module
 */
import {
  array, bool, bytes, bytesUpTo, CardLimitsSchema, decodeDeterministic, decodeStruct, defineSchema, encodeDeterministic,
  encodeStruct, LIMITS, struct, uint, MAX_UINT, type Infer, type StructSchema,
} from '@dt/protocol';

/** Version of the applet (SELECT key 1). */
export const APPLET_VERSION = 1;
/** Version of the DT protocol the applet speaks (SELECT key 2). */
export const PROTOCOL_VERSION = 1;

/** Capability bits announced by SELECT (key 3). */
export const Capability = {
  /** PAY: offline payment. */
  PAY: 0x01,
  /** SYNC BEGIN/COMPLETE. */
  SYNC: 0x02,
  /** LOAD BEGIN/COMPLETE. */
  LOAD: 0x04,
  /** Offline PIN (VERIFY, CHANGE, UNBLOCK PIN). */
  OFFLINE_PIN: 0x08,
  /** The device asks its holder to confirm every payment (screen and button). */
  ON_DEVICE_CONFIRM: 0x10,
  /** Purpose-bound (marked) tokens. */
  MARKS: 0x20,
  /** Torn-tap retry (PaymentRequest.retryOf). */
  RETRY: 0x40,
} as const;

/** SELECT response. */
export const SelectResponseSchema = defineSchema({
  name: 'SelectResponse',
  fields: [
    { key: 1, name: 'applet', type: uint(255, 1) },
    { key: 2, name: 'protocol', type: uint(255, 1) },
    { key: 3, name: 'capabilities', type: uint(0xffff) },
    { key: 4, name: 'locked', type: bool() },
    { key: 5, name: 'maxCommand', type: uint(0xffffff, 255) },
    { key: 6, name: 'card', type: bytes(16), optional: true },
  ],
});
export type SelectResponse = Infer<typeof SelectResponseSchema>;

/** Personalization progress bits (GET STATUS key 15). */
export const Personalized = { KEY: 0x01, CERTIFICATES: 0x02, PIN: 0x04, CONFIG: 0x08 } as const;

/** GET STATUS response. */
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
    { key: 15, name: 'personalized', type: uint(15) },
    { key: 16, name: 'lastNonce', type: bytes(16), optional: true },
    // Trusted time (SPEC §10.8), once certificates are written.
    { key: 17, name: 'trusted', type: uint(MAX_UINT), optional: true },
  ],
});
export type CardStatus = Infer<typeof CardStatusSchema>;

const signedCert = bytesUpTo(LIMITS.maxCertificateSize, 16);

/** PERSONALIZE P1=02 (write certificates) data. */
export const WriteCertificatesSchema = defineSchema({
  name: 'WriteCertificates',
  fields: [
    { key: 1, name: 'chain', type: array(signedCert, LIMITS.maxChainCerts, 1) },
    { key: 2, name: 'root', type: signedCert },
    { key: 3, name: 'ledger', type: signedCert },
    { key: 4, name: 'time', type: uint(MAX_UINT) },
  ],
});
export type WriteCertificates = Infer<typeof WriteCertificatesSchema>;

/** Smallest and largest PIN (ASCII digits). */
export const PIN_LENGTH = { min: 4, max: 12 } as const;
/** Smallest and largest unblock code (ASCII digits). */
export const PUK_LENGTH = { min: 8, max: 16 } as const;

/** PERSONALIZE P1=03 (set PIN) data. */
export const SetPinSchema = defineSchema({
  name: 'SetPin',
  fields: [
    { key: 1, name: 'pin', type: bytesUpTo(PIN_LENGTH.max, PIN_LENGTH.min) },
    { key: 2, name: 'puk', type: bytesUpTo(PUK_LENGTH.max, PUK_LENGTH.min) },
    { key: 3, name: 'pinTries', type: uint(15, 1), optional: true },
    { key: 4, name: 'pukTries', type: uint(15, 1), optional: true },
  ],
});
export type SetPin = Infer<typeof SetPinSchema>;

/** PERSONALIZE P1=04 (set configuration) data. */
export const SetConfigSchema = defineSchema({
  name: 'SetConfig',
  fields: [
    // Raises the card's clock floor (seconds); it never goes down.
    { key: 1, name: 'floor', type: uint(MAX_UINT), optional: true },
    // 1: ask Hal.confirm before every payment when the device has it; 0: never.
    { key: 2, name: 'confirm', type: uint(1), optional: true },
  ],
});
export type SetConfig = Infer<typeof SetConfigSchema>;

/** CHANGE PIN data. */
export const ChangePinSchema = defineSchema({
  name: 'ChangePin',
  fields: [
    { key: 1, name: 'current', type: bytesUpTo(PIN_LENGTH.max, 1) },
    { key: 2, name: 'next', type: bytesUpTo(PIN_LENGTH.max, 1) },
  ],
});

/** UNBLOCK PIN data. */
export const UnblockPinSchema = defineSchema({
  name: 'UnblockPin',
  fields: [
    { key: 1, name: 'puk', type: bytesUpTo(PUK_LENGTH.max, 1) },
    { key: 2, name: 'next', type: bytesUpTo(PIN_LENGTH.max, 1) },
  ],
});

/** Encodes a format struct as deterministic CBOR. */
export function encodeFormat<S extends StructSchema>(schema: S, value: Infer<S>): Uint8Array {
  return encodeDeterministic(encodeStruct(schema, value));
}

/** Decodes deterministic CBOR against a format schema (throws DtError on bad input). */
export function decodeFormat<S extends StructSchema>(schema: S, data: Uint8Array, maxSize = 8192): Infer<S> {
  return decodeStruct(schema, decodeDeterministic(data, maxSize));
}
