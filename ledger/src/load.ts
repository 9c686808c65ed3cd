/**
 * The bank load order (protocol/SPEC.md §7.6.1 "Bank load order"):
 * a COSE_Sign1 by a bank key over `{0: 1, 1: card kid, 2: amount, 3: load id, 4: time, ? 5: mark}`.
 * A marked order's value reaches the card as tokens carrying that mark (SPEC §3.4).
 *
 * @module
 */
import {
  bytes,
  coseSign1,
  decodeCoseSign1,
  decodeDeterministic,
  decodeStruct,
  defineSchema,
  encodeDeterministic,
  encodeStruct,
  DtError,
  ErrorCode,
  MAX_UINT,
  MarkSchema,
  struct,
  uint,
  VERSION_1,
  type Infer,
  type Signer,
  type CoseSign1,
} from '@dt/protocol';

/** COSE content type of a load order. */
export const LOAD_CONTENT_TYPE = 'application/dt.load+cbor';
/** Largest encoded load order. */
export const MAX_LOAD_SIZE = 512;

/** Schema of a load order payload. */
export const LoadOrderSchema = defineSchema({
  name: 'LoadOrder',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'card', type: bytes(16) },
    { key: 2, name: 'amount', type: uint(MAX_UINT, 1) },
    { key: 3, name: 'id', type: bytes(16) },
    { key: 4, name: 'time', type: uint(MAX_UINT) },
    { key: 5, name: 'mark', type: struct(MarkSchema), optional: true },
  ],
});
/** A load order. */
export type LoadOrder = Infer<typeof LoadOrderSchema>;

/** Signs a load order with the bank's key. */
export function signLoadOrder(order: LoadOrder, bank: Signer): Uint8Array {
  return coseSign1(encodeDeterministic(encodeStruct(LoadOrderSchema, order)), LOAD_CONTENT_TYPE, bank);
}

/** Parses a load order without verifying it (the caller verifies with the bank key named by `cose.kid`). */
export function openLoadOrder(b: Uint8Array): { cose: CoseSign1; order: LoadOrder } {
  const cose = decodeCoseSign1(b, MAX_LOAD_SIZE);
  if (cose.contentType !== LOAD_CONTENT_TYPE) throw new DtError(ErrorCode.COSE_WRONG_CONTENT_TYPE, 'expected a load order');
  return { cose, order: decodeStruct(LoadOrderSchema, decodeDeterministic(cose.payload, MAX_LOAD_SIZE)) };
}
