/**
 * Identifiers and hashes derived from messages.
 *
 * @module
 */
import { concatBytes, utf8 } from './bytes.ts';
import { sha256 } from './crypto/suite.ts';
import { DtError, ErrorCode } from './errors.ts';
import { LIMITS } from './schema/messages.ts';

/** `prev` of a card's first transfer before it ever synced: 32 zero bytes. */
export const GENESIS_PREV: Uint8Array = new Uint8Array(32);

const OUTPUT_DOMAIN = utf8('DT-OUTPUT-V1');
/** "DT-OUTPUT-V1" || transfer hash (32 bytes) || index (1 byte). */
const OUTPUT_INPUT: Uint8Array = concatBytes(OUTPUT_DOMAIN, new Uint8Array(33));

/**
 * Id of output `index` of the transfer whose payload hash is `transferHash`:
 * SHA-256("DT-OUTPUT-V1" || transferHash || index as one byte). 32 bytes, so
 * it can never collide with a 16-byte token serial.
 */
export function outputId(transferHash: Uint8Array, index: number): Uint8Array {
  if (transferHash.length !== 32) throw new DtError(ErrorCode.SCHEMA_OUT_OF_RANGE, 'transfer hash must be 32 bytes');
  if (!Number.isInteger(index) || index < 0 || index >= LIMITS.maxOutputs) {
    throw new DtError(ErrorCode.SCHEMA_OUT_OF_RANGE, 'output index out of range', { index });
  }
  // The hashed bytes are written into one scratch array (hashing is synchronous and copies nothing out of it).
  OUTPUT_INPUT.set(transferHash, OUTPUT_DOMAIN.length);
  OUTPUT_INPUT[OUTPUT_INPUT.length - 1] = index;
  return sha256(OUTPUT_INPUT);
}
