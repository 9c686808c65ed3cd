/**
 * COSE_Sign1 (RFC 9052 §4.2) with ES256, as DT uses it:
 *
 * ```
 * COSE_Sign1_Tagged = #6.18([
 *   protected:   bstr .cbor { 1 => -7, 3 => uint / tstr (content format / type), 4 => bstr .size 16 (kid) },
 *   unprotected: {},                      ; always empty
 *   payload:     bstr .cbor DT-payload,   ; never detached
 *   signature:   bstr .size 64            ; r || s, s ≤ n/2
 * ])
 * ```
 * The signature is over `Sig_structure = ["Signature1", protected, h'', payload]`
 * (external AAD empty), encoded deterministically. Any ordinary COSE library
 * verifies these objects with the signer's public key.
 *
 * @module
 */
import { DtError, ErrorCode } from '../errors.ts';
import { decodeDeterministic, encodeDeterministic, type CborMap, type CborValue } from '../cbor/deterministic.ts';
import {
  ALG_ES256,
  KEY_ID_LENGTH,
  keyId,
  keyIdOf,
  nobleVerifier,
  sign,
  SIGNATURE_LENGTH,
  type KeyPair,
  type Verifier,
} from '../crypto/suite.ts';
import { bytesEqual } from '../bytes.ts';

/** COSE_Sign1 tag. */
export const COSE_SIGN1_TAG = 18;
/** COSE header labels used by DT. */
export const HeaderLabel = { ALG: 1, CONTENT_TYPE: 3, KID: 4 } as const;

/** Something that signs with one key; the secret never leaves it (a card's secure element, an HSM, a key file). */
export interface Signer {
  /** Key id of the signing key (see `keyId`). */
  readonly kid: Uint8Array;
  /** ES256 signature (64 bytes, low-S) over `message`. */
  sign(message: Uint8Array): Uint8Array;
  /**
   * The same signature, computed off the calling thread (a server's signer: `node:crypto`'s
   * thread pool), so that the caller can go on while it is made. Optional: without it,
   * {@link coseSign1Async} signs with {@link sign}.
   */
  signAsync?(message: Uint8Array): Promise<Uint8Array>;
}

/** A {@link Signer} over an in-memory key pair. */
export function keyPairSigner(keyPair: KeyPair): Signer {
  const kid = keyId(keyPair.publicKey);
  const sk = keyPair.secretKey;
  return { kid, sign: (m) => sign(m, sk) };
}

/** A decoded (not yet verified) COSE_Sign1. */
export interface CoseSign1 {
  readonly protectedBytes: Uint8Array;
  /** A CoAP Content-Format number (0..65535) or a media-type string (RFC 9052 §3.1, label 3). */
  readonly contentType: string | number;
  readonly kid: Uint8Array;
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
}

/** `84 6a "Signature1"`: the deterministic head of the Sig_structure, the same for every object. */
const SIG1_PREFIX = Uint8Array.of(0x84, 0x6a, 0x53, 0x69, 0x67, 0x6e, 0x61, 0x74, 0x75, 0x72, 0x65, 0x31);

/** Writes the shortest CBOR byte-string head for `n` bytes at `at`; returns the next offset. */
function bstrHead(out: Uint8Array, at: number, n: number): number {
  if (n < 24) {
    out[at] = 0x40 | n;
    return at + 1;
  }
  if (n < 0x100) {
    out[at] = 0x58;
    out[at + 1] = n;
    return at + 2;
  }
  if (n < 0x10000) {
    out[at] = 0x59;
    out[at + 1] = n >>> 8;
    out[at + 2] = n & 0xff;
    return at + 3;
  }
  out[at] = 0x5a;
  out[at + 1] = n >>> 24;
  out[at + 2] = (n >>> 16) & 0xff;
  out[at + 3] = (n >>> 8) & 0xff;
  out[at + 4] = n & 0xff;
  return at + 5;
}

/**
 * The bytes that are signed: deterministic `["Signature1", protected, h'', payload]`.
 * Written directly (a fixed prefix, two byte strings with their shortest heads and the empty
 * one between), byte for byte what `encodeDeterministic` gives for that array, without the
 * generic encoder: every signature made and checked goes through here.
 */
export function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(
    SIG1_PREFIX.length + headLength(protectedBytes.length) + protectedBytes.length + 1 + headLength(payload.length) + payload.length,
  );
  out.set(SIG1_PREFIX, 0);
  let at = bstrHead(out, SIG1_PREFIX.length, protectedBytes.length);
  out.set(protectedBytes, at);
  at += protectedBytes.length;
  out[at++] = 0x40;
  at = bstrHead(out, at, payload.length);
  out.set(payload, at);
  return out;
}

/** Length of the shortest CBOR head for an argument of `n` (as {@link bstrHead} writes it). */
function headLength(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

/** Encodes the protected header. */
export function protectedHeader(contentType: string | number, kid: Uint8Array): Uint8Array {
  return encodeDeterministic(
    new Map<number, CborValue>([
      [HeaderLabel.ALG, ALG_ES256],
      [HeaderLabel.CONTENT_TYPE, contentType],
      [HeaderLabel.KID, kid],
    ]),
  );
}

/** Signs `payload` (already deterministic CBOR) into a tagged COSE_Sign1. */
export function coseSign1(payload: Uint8Array, contentType: string | number, signer: Signer): Uint8Array {
  const prot = protectedHeader(contentType, signer.kid);
  const signature = signer.sign(sigStructure(prot, payload));
  return encodeDeterministic({ tag: COSE_SIGN1_TAG, value: [prot, new Map(), payload, signature] });
}

/** {@link coseSign1} with the signer's `signAsync` when it has one: the same bytes, signed off the calling thread. */
export async function coseSign1Async(payload: Uint8Array, contentType: string | number, signer: Signer): Promise<Uint8Array> {
  const prot = protectedHeader(contentType, signer.kid);
  const tbs = sigStructure(prot, payload);
  const signature = signer.signAsync ? await signer.signAsync(tbs) : signer.sign(tbs);
  if (signature.length !== 64) throw new DtError(ErrorCode.COSE_MALFORMED, 'the signer returned a signature that is not 64 bytes');
  return encodeDeterministic({ tag: COSE_SIGN1_TAG, value: [prot, new Map(), payload, signature] });
}

function malformed(message: string): never {
  throw new DtError(ErrorCode.COSE_MALFORMED, message);
}

/**
 * Parses a tagged COSE_Sign1 and its protected header, without verifying.
 * Rejects anything but ES256, a present content type and a 16-byte kid,
 * an empty unprotected header, and a 64-byte signature.
 */
export function decodeCoseSign1(bytes: Uint8Array, maxSize: number): CoseSign1 {
  const outer = decodeDeterministic(bytes, maxSize);
  if (typeof outer !== 'object' || outer instanceof Uint8Array || Array.isArray(outer) || outer instanceof Map || !('tag' in outer)) {
    malformed('not a tagged COSE_Sign1');
  }
  if (outer.tag !== COSE_SIGN1_TAG) malformed('wrong tag');
  const arr = outer.value;
  if (!Array.isArray(arr) || arr.length !== 4) malformed('COSE_Sign1 must be a 4-element array');
  const [prot, unprot, payload, signature] = arr as [CborValue, CborValue, CborValue, CborValue];
  if (!(prot instanceof Uint8Array) || !(payload instanceof Uint8Array) || !(signature instanceof Uint8Array)) {
    malformed('protected, payload and signature must be byte strings');
  }
  if (!(unprot instanceof Map) || unprot.size !== 0) malformed('unprotected header must be an empty map');
  if (signature.length !== SIGNATURE_LENGTH) malformed('signature must be 64 bytes');
  const hdr = decodeDeterministic(prot, 256);
  if (!(hdr instanceof Map)) malformed('protected header must be a map');
  const h = hdr as CborMap;
  for (const k of h.keys()) {
    if (k !== HeaderLabel.ALG && k !== HeaderLabel.CONTENT_TYPE && k !== HeaderLabel.KID)
      malformed('unexpected protected header parameter');
  }
  if (h.get(HeaderLabel.ALG) !== ALG_ES256) {
    throw new DtError(ErrorCode.COSE_WRONG_ALGORITHM, 'only ES256 (-7) is accepted');
  }
  const ct = h.get(HeaderLabel.CONTENT_TYPE);
  const kid = h.get(HeaderLabel.KID);
  const format = typeof ct === 'number' && Number.isInteger(ct) && ct >= 0 && ct <= 0xffff;
  if (typeof ct !== 'string' && !format) malformed('content type missing (neither a text string nor a content format 0..65535)');
  if (!(kid instanceof Uint8Array) || kid.length !== KEY_ID_LENGTH) malformed('kid must be 16 bytes');
  return { protectedBytes: prot, contentType: ct as string | number, kid, payload, signature };
}

/**
 * Verifies a decoded COSE_Sign1 against `publicKey`. Throws `KEY_MISMATCH` when
 * the kid names another key, `BAD_SIGNATURE` when the signature does not verify.
 */
export function verifyCoseSign1(cose: CoseSign1, publicKey: Uint8Array, verifier: Verifier = nobleVerifier): void {
  if (!bytesEqual(cose.kid, keyIdOf(publicKey))) throw new DtError(ErrorCode.KEY_MISMATCH, 'kid does not name the given key');
  if (!verifier.verify(cose.signature, sigStructure(cose.protectedBytes, cose.payload), publicKey)) {
    throw new DtError(ErrorCode.BAD_SIGNATURE, 'signature does not verify');
  }
}
