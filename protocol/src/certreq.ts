/**
 * The terminal certificate request (terminal → acquiring bank): the
 * terminal's public key and the merchant it asks to be certified for,
 * signed with the terminal key itself (proof of possession, like a PKCS#10
 * request), as a COSE_Sign1 with content type `application/dt.certreq+cbor`
 * (SPEC §5.5). `dt-pos init` writes it ({@link certificateRequest});
 * `dt-bank sign-terminal` reads and verifies it ({@link openCertificateRequest})
 * before the bank certifies the key.
 *
 * ```
 * CertificateRequest = {
 *   1: bstr .size 32,  ; x
 *   2: bstr .size 32,  ; y (P-256 public key coordinates)
 *   3: tstr,           ; merchant id (1..64 bytes)
 *   4: uint,           ; merchant category code (0..9999)
 *   5: tstr,           ; merchant name (1..64 bytes)
 *   6: uint,           ; time (seconds)
 * }
 * ```
 *
 * @module
 */
import { bytes, decodeStruct, defineSchema, encodeStruct, MAX_UINT, text, uint } from './schema/dsl.ts';
import { decodeDeterministic, encodeDeterministic } from './cbor/deterministic.ts';
import { coseSign1, decodeCoseSign1, keyPairSigner, verifyCoseSign1 } from './cose/sign1.ts';
import { keyId, nobleVerifier, publicKeyCoordinates, publicKeyFromCoordinates, type KeyPair, type Verifier } from './crypto/suite.ts';
import { DtError, ErrorCode } from './errors.ts';

/** COSE content type of a terminal certificate request. */
export const CERT_REQUEST_CONTENT_TYPE = 'application/dt.certreq+cbor';
/** Largest encoded certificate request (COSE_Sign1 and payload). */
export const MAX_CERT_REQUEST_SIZE = 1024;

/** Schema of the certificate request payload. */
export const CertificateRequestSchema = defineSchema({
  name: 'CertificateRequest',
  fields: [
    { key: 1, name: 'x', type: bytes(32) },
    { key: 2, name: 'y', type: bytes(32) },
    { key: 3, name: 'merchant', type: text(64) },
    { key: 4, name: 'mcc', type: uint(9999) },
    { key: 5, name: 'name', type: text(64) },
    { key: 6, name: 'time', type: uint(MAX_UINT) },
  ],
});

/** The merchant a request names. */
export interface RequestedMerchant {
  readonly id: string;
  readonly mcc: number;
  readonly name: string;
}

/** A certificate request that decoded and whose signature verified with the key it carries. */
export interface OpenedCertificateRequest {
  /** The terminal's public key (65 bytes, uncompressed P-256). */
  readonly publicKey: Uint8Array;
  /** Its key id. */
  readonly kid: Uint8Array;
  readonly merchant: RequestedMerchant;
  /** When the terminal made the request (its clock, seconds). */
  readonly time: number;
}

/** Builds the signed certificate request of `keyPair` for `merchant` at `time`. */
export function certificateRequest(keyPair: KeyPair, merchant: RequestedMerchant, time: number): Uint8Array {
  const { x, y } = publicKeyCoordinates(keyPair.publicKey);
  const payload = encodeDeterministic(
    encodeStruct(CertificateRequestSchema, { x, y, merchant: merchant.id, mcc: merchant.mcc, name: merchant.name, time }),
  );
  return coseSign1(payload, CERT_REQUEST_CONTENT_TYPE, keyPairSigner(keyPair));
}

/**
 * Decodes a certificate request and verifies it: the DT COSE profile within
 * {@link MAX_CERT_REQUEST_SIZE}, the content type, the payload per the schema,
 * a valid P-256 point, the `kid` naming that key, and the signature by it.
 * Throws a `DtError` (`MALFORMED`, `COSE_WRONG_CONTENT_TYPE`, `KEY_MISMATCH`,
 * `BAD_SIGNATURE`, ...) otherwise. A verified request proves only that its
 * sender holds the key: the bank still decides whether the merchant is its own.
 */
export function openCertificateRequest(b: Uint8Array, verifier: Verifier = nobleVerifier): OpenedCertificateRequest {
  if (b.length > MAX_CERT_REQUEST_SIZE)
    throw new DtError(ErrorCode.COSE_MALFORMED, `certificate request larger than ${MAX_CERT_REQUEST_SIZE} bytes`);
  const cose = decodeCoseSign1(b, MAX_CERT_REQUEST_SIZE);
  if (cose.contentType !== CERT_REQUEST_CONTENT_TYPE)
    throw new DtError(ErrorCode.COSE_WRONG_CONTENT_TYPE, 'expected a terminal certificate request');
  const m = decodeStruct(CertificateRequestSchema, decodeDeterministic(cose.payload, MAX_CERT_REQUEST_SIZE));
  const publicKey = publicKeyFromCoordinates(m.x, m.y);
  verifyCoseSign1(cose, publicKey, verifier);
  if (m.merchant.length === 0 || m.name.length === 0)
    throw new DtError(ErrorCode.SCHEMA_OUT_OF_RANGE, 'merchant id and name must not be empty');
  return { publicKey, kid: keyId(publicKey), merchant: { id: m.merchant, mcc: m.mcc, name: m.name }, time: m.time };
}
