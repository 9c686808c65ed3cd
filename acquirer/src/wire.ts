/**
 * Acquirer-specific wire objects (deterministic CBOR, integer keys), shared
 * by the server and the terminal-side client:
 *
 * ```
 * BatchAck = {            ; answer to POST /v1/batches (new or identical resend)
 *   1: bstr .size 16,     ; terminal key id
 *   2: uint,              ; batch sequence number
 *   3: bstr .size 32,     ; SHA-256 of the signed batch bytes as stored
 *   4: uint,              ; number of handovers
 *   5: uint,              ; time the acquirer stored it (seconds)
 * }
 * OutcomePage = {         ; answer to GET /v1/terminals/:kid/outcomes
 *   1: [* bstr],          ; signed Outcome objects, oldest first
 *   2: uint,              ; cursor to pass as ?after= next time
 *   3: [* [uint, uint]],  ; for each outcome: [batch seq, handover index]
 *   4: bool,              ; true when more outcomes wait (ask again at once)
 * }
 * ```
 *
 * @module
 */
import {
  array, bool, bytes, bytesUpTo, decodeDeterministic, decodeStruct, defineSchema, encodeDeterministic, encodeStruct,
  LIMITS, uint, MAX_UINT, type CborValue, type Infer,
} from '@dt/protocol';

/** Schema of the batch acknowledgement. */
export const BatchAckSchema = defineSchema({
  name: 'BatchAck',
  fields: [
    { key: 1, name: 'terminal', type: bytes(16) },
    { key: 2, name: 'seq', type: uint(MAX_UINT, 1) },
    { key: 3, name: 'hash', type: bytes(32) },
    { key: 4, name: 'handovers', type: uint(LIMITS.maxBatchHandovers) },
    { key: 5, name: 'received', type: uint(MAX_UINT) },
  ],
});
export type BatchAck = Infer<typeof BatchAckSchema>;

/** Most outcomes in one page. */
export const MAX_PAGE = 10_000;

/** Schema of a page of outcomes. The [seq, index] pairs are carried as raw CBOR (checked below). */
const OutcomePageSchema = defineSchema({
  name: 'OutcomePage',
  fields: [
    { key: 1, name: 'outcomes', type: array(bytesUpTo(LIMITS.maxOutcomeSize), MAX_PAGE) },
    { key: 2, name: 'cursor', type: uint(MAX_UINT) },
    { key: 3, name: 'refs', type: array(array(uint(MAX_UINT), 2, 2), MAX_PAGE) },
    { key: 4, name: 'more', type: bool() },
  ],
});
/** A page of outcomes for one terminal. */
export interface OutcomePage {
  readonly outcomes: Uint8Array[];
  readonly cursor: number;
  readonly refs: Array<[number, number]>;
  readonly more: boolean;
}

/** Encodes a batch acknowledgement. */
export function encodeAck(a: BatchAck): Uint8Array {
  return encodeDeterministic(encodeStruct(BatchAckSchema, a));
}

/** Decodes a batch acknowledgement (bounded). */
export function decodeAck(b: Uint8Array): BatchAck {
  return decodeStruct(BatchAckSchema, decodeDeterministic(b, 256));
}

/** Encodes a page of outcomes. */
export function encodeOutcomePage(p: OutcomePage): Uint8Array {
  return encodeDeterministic(encodeStruct(OutcomePageSchema, { outcomes: p.outcomes, cursor: p.cursor, refs: p.refs, more: p.more }) as CborValue);
}

/** Decodes a page of outcomes (bounded; the outcomes themselves are still unverified). */
export function decodeOutcomePage(b: Uint8Array): OutcomePage {
  const v = decodeStruct(OutcomePageSchema, decodeDeterministic(b, MAX_PAGE * (LIMITS.maxOutcomeSize + 32) + 64));
  if (v.refs.length !== v.outcomes.length) throw new Error('outcome page: refs and outcomes differ in length');
  return { outcomes: v.outcomes, cursor: v.cursor, refs: v.refs.map((r) => [r[0]!, r[1]!] as [number, number]), more: v.more };
}
