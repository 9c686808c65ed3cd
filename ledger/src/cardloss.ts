/**
 * Lost or stolen cards (protocol/SPEC.md §7.9): the messages a card's issuing
 * bank signs to block a card and, after the void window, to have its value
 * restored, and the ledger-signed restitution record that says how much
 * came back to the bank (which pays the owner, or loads a replacement card).
 * Like the bank load order (`load.ts`), these are messages of the ledger's API,
 * not of the card or the terminal: COSE_Sign1 (ES256) over deterministic CBOR
 * maps, at most 512 bytes.
 *
 * ```cddl
 * CardBlock = { 0 => 1, 1 => bstr .size 16, 2 => uint53 }          ; v, card, bank time
 * CardRestore = { 0 => 1, 1 => bstr .size 16, 2 => uint53 }        ; v, card, bank time
 * Restitution = {                                                  ; signed by the ledger
 *   0 => 1, 1 => bstr .size 16,  ; card
 *   2 => bstr .size 16,          ; bank: the issuing bank credited
 *   3 => uint53,                 ; amount: tiyn credited to the bank
 *   4 => uint53,                 ; time: ledger time of the restitution
 *   5 => uint53,                 ; blocked: ledger time of the block
 *   6 => uint53,                 ; cancelled: pending loads returned to their banks, tiyn
 * }
 * ```
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
  uint,
  VERSION_1,
  type CoseSign1,
  type Infer,
  type Signer,
} from '@dt/protocol';

/** COSE content type of a bank's card block. */
export const CARD_BLOCK_CONTENT_TYPE = 'application/dt.cardblock+cbor';
/** COSE content type of a bank's restore request. */
export const CARD_RESTORE_CONTENT_TYPE = 'application/dt.cardrestore+cbor';
/** COSE content type of the ledger's restitution record. */
export const RESTITUTION_CONTENT_TYPE = 'application/dt.restitution+cbor';
/** Largest encoded message of this module. */
export const MAX_CARD_LOSS_SIZE = 512;

/** Schema of a card block and of a restore request (the same fields). */
export const CardBankRequestSchema = defineSchema({
  name: 'CardBankRequest',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'card', type: bytes(16) },
    { key: 2, name: 'time', type: uint(MAX_UINT) },
  ],
});
/** A card block or restore request. */
export type CardBankRequest = Infer<typeof CardBankRequestSchema>;

/** Schema of the restitution record. */
export const RestitutionSchema = defineSchema({
  name: 'Restitution',
  fields: [
    { key: 0, name: 'v', type: VERSION_1 },
    { key: 1, name: 'card', type: bytes(16) },
    { key: 2, name: 'bank', type: bytes(16) },
    { key: 3, name: 'amount', type: uint(MAX_UINT) },
    { key: 4, name: 'time', type: uint(MAX_UINT) },
    { key: 5, name: 'blocked', type: uint(MAX_UINT) },
    { key: 6, name: 'cancelled', type: uint(MAX_UINT) },
  ],
});
/** A restitution record. */
export type Restitution = Infer<typeof RestitutionSchema>;

/** Which bank request. */
export type CardBankRequestKind = 'block' | 'restore';

const TYPE: Record<CardBankRequestKind, string> = { block: CARD_BLOCK_CONTENT_TYPE, restore: CARD_RESTORE_CONTENT_TYPE };

/** Signs a card block or restore request with the issuing bank's key. */
export function signCardBankRequest(kind: CardBankRequestKind, request: CardBankRequest, bank: Signer): Uint8Array {
  return coseSign1(encodeDeterministic(encodeStruct(CardBankRequestSchema, request)), TYPE[kind], bank);
}

/** Parses a card block or restore request without verifying it (the ledger verifies with the bank key named by `cose.kid`). */
export function openCardBankRequest(kind: CardBankRequestKind, b: Uint8Array): { cose: CoseSign1; request: CardBankRequest } {
  const cose = decodeCoseSign1(b, MAX_CARD_LOSS_SIZE);
  if (cose.contentType !== TYPE[kind]) throw new DtError(ErrorCode.COSE_WRONG_CONTENT_TYPE, `expected a card ${kind} request`);
  return { cose, request: decodeStruct(CardBankRequestSchema, decodeDeterministic(cose.payload, MAX_CARD_LOSS_SIZE)) };
}

/** Signs a restitution record with the ledger's key. */
export function signRestitution(r: Restitution, ledger: Signer): Uint8Array {
  return coseSign1(encodeDeterministic(encodeStruct(RestitutionSchema, r)), RESTITUTION_CONTENT_TYPE, ledger);
}

/** Parses a restitution record without verifying it (verify `cose` with the ledger key). */
export function openRestitution(b: Uint8Array): { cose: CoseSign1; record: Restitution } {
  const cose = decodeCoseSign1(b, MAX_CARD_LOSS_SIZE);
  if (cose.contentType !== RESTITUTION_CONTENT_TYPE) throw new DtError(ErrorCode.COSE_WRONG_CONTENT_TYPE, 'expected a restitution record');
  return { cose, record: decodeStruct(RestitutionSchema, decodeDeterministic(cose.payload, MAX_CARD_LOSS_SIZE)) };
}
