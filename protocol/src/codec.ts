/**
 * Encoding, decoding, signing and verifying DT messages by name.
 *
 * @example
 * const bytes = signMessage('Token', token, ledgerSigner);
 * const verified = verifySigned('Token', bytes, ledgerPublicKey);
 *
 * @module
 */
import { DtError, ErrorCode } from './errors.ts';
import { decodeDeterministic, encodeDeterministic } from './cbor/deterministic.ts';
import { decodeStruct, encodeStruct, type StructSchema } from './schema/dsl.ts';
import { MESSAGES, type MessageName, type MessageOf, type SignedMessageName } from './schema/messages.ts';
import { coseSign1, coseSign1Async, decodeCoseSign1, verifyCoseSign1, type CoseSign1, type Signer } from './cose/sign1.ts';
import { nobleVerifier, sha256, type Verifier } from './crypto/suite.ts';

/** Encodes a message payload (or an unsigned container such as a Handover) deterministically. */
export function encodeMessage<N extends MessageName>(name: N, value: MessageOf<N>): Uint8Array {
  const def = MESSAGES[name];
  const bytes = encodeDeterministic(encodeStruct(def.schema as StructSchema, value as never));
  if (bytes.length > def.maxSize)
    throw new DtError(ErrorCode.TOO_LARGE, `${name} exceeds its size limit`, { size: bytes.length, maxSize: def.maxSize });
  return bytes;
}

/** Decodes and validates a message payload or unsigned container. */
export function decodeMessage<N extends MessageName>(name: N, bytes: Uint8Array): MessageOf<N> {
  const def = MESSAGES[name];
  return decodeStruct(def.schema as StructSchema, decodeDeterministic(bytes, def.maxSize)) as MessageOf<N>;
}

/** Signs a message as a tagged COSE_Sign1 with the message's content type. */
export function signMessage<N extends SignedMessageName>(name: N, value: MessageOf<N>, signer: Signer): Uint8Array {
  return signEncoded(name, encodeMessage(name, value), signer);
}

/**
 * {@link signMessage} for a payload already encoded with `encodeMessage(name, value)`, for a
 * signer that needs the payload bytes too (to hash them) and should not encode them twice.
 */
export function signEncoded<N extends SignedMessageName>(name: N, payload: Uint8Array, signer: Signer): Uint8Array {
  const def = MESSAGES[name];
  const out = coseSign1(payload, def.contentFormat, signer);
  if (out.length > def.maxSize)
    throw new DtError(ErrorCode.TOO_LARGE, `signed ${name} exceeds its size limit`, { size: out.length, maxSize: def.maxSize });
  return out;
}

/** {@link signMessage} through the signer's `signAsync` when it has one (`coseSign1Async`): the same bytes, signed off the calling thread. */
export async function signMessageAsync<N extends SignedMessageName>(name: N, value: MessageOf<N>, signer: Signer): Promise<Uint8Array> {
  const def = MESSAGES[name];
  const out = await coseSign1Async(encodeMessage(name, value), def.contentFormat, signer);
  if (out.length > def.maxSize)
    throw new DtError(ErrorCode.TOO_LARGE, `signed ${name} exceeds its size limit`, { size: out.length, maxSize: def.maxSize });
  return out;
}

/** A signed message opened but not yet verified: use it only to find the signer's key. */
export interface OpenedMessage<N extends MessageName> {
  readonly cose: CoseSign1;
  readonly message: MessageOf<N>;
}

/**
 * Parses a signed message and checks its content type and payload schema,
 * WITHOUT verifying the signature. Callers must verify before trusting it.
 */
export function openSigned<N extends SignedMessageName>(name: N, bytes: Uint8Array): OpenedMessage<N> {
  const def = MESSAGES[name];
  const cose = decodeCoseSign1(bytes, def.maxSize);
  // The integer content format, or the text content type of objects signed before it (SPEC §4.1).
  if (cose.contentType !== def.contentFormat && cose.contentType !== def.contentType) {
    throw new DtError(ErrorCode.COSE_WRONG_CONTENT_TYPE, `expected a ${name}`, { expected: def.contentFormat });
  }
  return { cose, message: decodeMessage(name, cose.payload) };
}

/** Opens and verifies a signed message against `publicKey`; returns its typed payload. */
export function verifySigned<N extends SignedMessageName>(
  name: N,
  bytes: Uint8Array,
  publicKey: Uint8Array,
  verifier: Verifier = nobleVerifier,
): OpenedMessage<N> {
  const opened = openSigned(name, bytes);
  verifyCoseSign1(opened.cose, publicKey, verifier);
  return opened;
}

/**
 * The hash that names a signed object: SHA-256 of its payload bytes.
 * It does not cover the signature, so it cannot be changed by re-signing,
 * and (signatures being low-S and deterministic) one object has one name.
 */
export function payloadHash(cose: CoseSign1): Uint8Array {
  return sha256(cose.payload);
}
