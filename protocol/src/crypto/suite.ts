/**
 * The DT crypto suite 1: ECDSA over P-256 with SHA-256 (COSE alg ES256 = -7).
 *
 * `@noble/curves` is the reference implementation and the only one used by
 * `protocol/` and `firmware/` (the instance, with a base field written for
 * interpreters and the suite's SHA-256 for its digest and RFC 6979 HMAC, is `p256.ts`). The
 * {@link sha256} of everything else (key ids, payload hashes, output ids, the
 * card's journal and certificate memo) is the package import `#sha256`, chosen
 * when the module is resolved (package.json `imports`): on Node `sha256-node.ts`
 * (`node:crypto` from 1 KiB up, `fast-sha256` below), everywhere else
 * `sha256.ts` (`fast-sha256`, which the firmware bundle for QuickJS gets); `protocol/test/suite.test.ts` checks both
 * against `@noble/hashes` and each other. Signatures are deterministic (RFC 6979) and
 * always low-S; verification rejects high-S signatures so that a signed
 * object has exactly one valid signature (no malleability), on every path.
 * Servers may inject a faster {@link Verifier} (see `@dt/protocol/native`).
 *
 * @module
 */
import { p256, p256Prepared, type PreparedPoint } from './p256.ts';
import { sha256Digest } from '#sha256';
import { DtError, ErrorCode } from '../errors.ts';
import { bytesEqual, concatBytes } from '../bytes.ts';

/** COSE algorithm identifier for ES256. */
export const ALG_ES256 = -7;
/** Length of a SEC1 uncompressed P-256 public key (0x04 || x || y). */
export const PUBLIC_KEY_LENGTH = 65;
/** Length of a raw (r || s) P-256 signature. */
export const SIGNATURE_LENGTH = 64;
/** Length of a key id (see {@link keyId}). */
export const KEY_ID_LENGTH = 16;

/** The P-256 group order n. */
export const P256_N = p256.Point.CURVE().n;
const HALF_N = P256_N >> 1n;
/** `n` and `n >> 1` as 32 big-endian bytes. */
const N_BYTES = bigintBytes32(P256_N);
const HALF_N_BYTES = bigintBytes32(HALF_N);

/** SHA-256 (FIPS 180-4). */
export function sha256(data: Uint8Array): Uint8Array {
  return sha256Digest(data);
}

/** A source of random bytes (a CSPRNG on real hardware; seeded in tests). */
export type RandomSource = (length: number) => Uint8Array;

/** An ES256 key pair. `secretKey` must never be logged or serialized outside secure storage. */
export interface KeyPair {
  /** 32-byte scalar. */
  readonly secretKey: Uint8Array;
  /** 65-byte SEC1 uncompressed point. */
  readonly publicKey: Uint8Array;
}

/**
 * Something that verifies ES256 signatures. The reference is {@link nobleVerifier};
 * the Node-only fast path lives in `@dt/protocol/native`.
 */
export interface Verifier {
  /** Verifies a 64-byte r||s signature over `message` (hashed with SHA-256 inside). Never throws. */
  verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
}

/**
 * Generates a key pair from 48 random bytes (reduced mod n-1 by noble, bias < 2^-128).
 */
export function generateKeyPair(random: RandomSource): KeyPair {
  const secretKey = p256.utils.randomSecretKey(random(48));
  return { secretKey, publicKey: p256.getPublicKey(secretKey, false) };
}

/** Derives the public key of a secret key. Throws `BAD_KEY` for an invalid scalar. */
export function publicKeyOf(secretKey: Uint8Array): Uint8Array {
  if (!p256.utils.isValidSecretKey(secretKey)) throw new DtError(ErrorCode.BAD_KEY, 'invalid secret key');
  return p256.getPublicKey(secretKey, false);
}

/** Answers of {@link isValidPublicKey} by the 65 key bytes (as a string), oldest dropped first. */
const pointMemo = new Map<string, boolean>();
const POINT_MEMO_MAX = 1024;

/** Forgets the curve-point answers of {@link isValidPublicKey} (for benchmarks; see `clearNativeKeyCache`). */
export function clearPublicKeyMemo(): void {
  pointMemo.clear();
}

/** True for a valid uncompressed P-256 point (on the curve, not infinity). */
export function isValidPublicKey(publicKey: Uint8Array): boolean {
  if (publicKey.length !== PUBLIC_KEY_LENGTH || publicKey[0] !== 4) return false;
  // The curve check costs a few field operations in pure JS; the same keys (a bank's, a
  // terminal's) come back with every certificate chain, so answers are remembered by the
  // key's bytes, a bounded number of them.
  const k = String.fromCharCode.apply(null, publicKey as unknown as number[]);
  const known = pointMemo.get(k);
  if (known !== undefined) return known;
  let ok: boolean;
  try {
    ok = p256.utils.isValidPublicKey(publicKey, false);
  } catch {
    ok = false;
  }
  if (pointMemo.size >= POINT_MEMO_MAX) pointMemo.delete(pointMemo.keys().next().value as string);
  pointMemo.set(k, ok);
  return ok;
}

/** Splits an uncompressed public key into its 32-byte coordinates. */
export function publicKeyCoordinates(publicKey: Uint8Array): { x: Uint8Array; y: Uint8Array } {
  if (!isValidPublicKey(publicKey)) throw new DtError(ErrorCode.BAD_KEY, 'not an uncompressed P-256 point');
  return { x: publicKey.slice(1, 33), y: publicKey.slice(33, 65) };
}

/** Builds an uncompressed public key from coordinates, validating the point. */
export function publicKeyFromCoordinates(x: Uint8Array, y: Uint8Array): Uint8Array {
  const pk = concatBytes(new Uint8Array([4]), x, y);
  if (!isValidPublicKey(pk)) throw new DtError(ErrorCode.BAD_KEY, 'coordinates are not a P-256 point');
  return pk;
}

/**
 * Key id: the first 16 bytes of SHA-256 over the 65-byte uncompressed public key.
 * Used as COSE `kid`, card id, terminal id and token owner.
 */
export function keyId(publicKey: Uint8Array): Uint8Array {
  return keyIdOf(publicKey).slice();
}

/**
 * Key ids already computed, by the key array they were computed from (a validator checks each
 * transfer of a chain against the same card key object). An entry holds a copy of the key and
 * is used only while the array still holds exactly those bytes; entries go with their arrays
 * (a WeakMap holds no key alive), so the memo is bounded by the keys in use.
 */
const kidMemo = new WeakMap<Uint8Array, { readonly key: Uint8Array; readonly kid: Uint8Array }>();

/** {@link keyId} without the copy: the result is shared and must not be modified. */
export function keyIdOf(publicKey: Uint8Array): Uint8Array {
  if (publicKey.length !== PUBLIC_KEY_LENGTH) throw new DtError(ErrorCode.BAD_KEY, 'public key must be 65 bytes');
  const hit = kidMemo.get(publicKey);
  if (hit !== undefined && bytesEqual(hit.key, publicKey)) return hit.kid;
  const kid = sha256(publicKey).slice(0, KEY_ID_LENGTH);
  kidMemo.set(publicKey, { key: Uint8Array.from(publicKey), kid });
  return kid;
}

/** Signs `message` (SHA-256 inside) with RFC 6979 deterministic k; returns low-S r||s. */
export function sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  return p256.sign(message, secretKey, { lowS: true, prehash: true });
}

/** True when `signature` (64 bytes, r||s, 0 < r,s < n, s ≤ n/2) is over the 32-byte `r||s` form. */
export function isCanonicalSignature(signature: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_LENGTH) return false;
  // Compared as 32-byte big-endian numbers, byte by byte (no bigint built per signature).
  return !isZero(signature, 0) && below(signature, 0, N_BYTES, false) && !isZero(signature, 32) && below(signature, 32, HALF_N_BYTES, true);
}

function bigintBytes32(v: bigint): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 31; i >= 0; i--, v >>= 8n) out[i] = Number(v & 0xffn);
  return out;
}

function isZero(b: Uint8Array, at: number): boolean {
  for (let i = 0; i < 32; i++) if (b[at + i] !== 0) return false;
  return true;
}

/** True when the 32 bytes of `b` at `at` are below `bound` (or equal to it, with `orEqual`), as big-endian numbers. */
function below(b: Uint8Array, at: number, bound: Uint8Array, orEqual: boolean): boolean {
  for (let i = 0; i < 32; i++) {
    const d = b[at + i]! - bound[i]!;
    if (d !== 0) return d < 0;
  }
  return orEqual;
}

/** The reference verifier (`@noble/curves`), low-S only. */
export const nobleVerifier: Verifier = {
  verify(signature, message, publicKey) {
    if (!isCanonicalSignature(signature) || !isValidPublicKey(publicKey)) return false;
    try {
      return p256.verify(signature, message, publicKey, { lowS: true, prehash: true });
    } catch {
      return false;
    }
  },
};

/**
 * A public key made ready for many verifications: its point decoded and checked once, and its
 * multiples precomputed (`p256.ts`' {@link p256Prepared}: a window table of 520 points). A
 * verification with it multiplies both points through a table (the base point's is built once
 * per process, as noble does) instead of the joint double-and-add over the key: in QuickJS, the
 * card's engine, about 6 ms instead of 16 ms; building the table costs about 37 ms, so it pays
 * from the fourth use. Servers verify natively and have no use for it; the card keeps one (the
 * terminal's key, in RAM) while it stays powered.
 *
 * Only {@link preparedVerifier} verifies with it. The signature rules are the suite's: 64-byte
 * r||s, 0 < r, s < n, s ≤ n/2 (checked by {@link isCanonicalSignature} before any arithmetic).
 */
export class PreparedKey {
  /** The 65-byte key this was prepared from (a private copy). */
  readonly #publicKey: Uint8Array;
  /** The decoded point with its table. */
  readonly #point: PreparedPoint;

  /** Use {@link prepareKey}. */
  private constructor(publicKey: Uint8Array, point: PreparedPoint) {
    this.#publicKey = publicKey;
    this.#point = point;
  }

  /** @internal See {@link prepareKey}. */
  static of(publicKey: Uint8Array): PreparedKey {
    const bad = () => new DtError(ErrorCode.BAD_KEY, 'not an uncompressed P-256 point');
    // The form here; the point itself once, by `prepare` (decoded and checked on the curve before its table is built).
    if (publicKey.length !== PUBLIC_KEY_LENGTH || publicKey[0] !== 4) throw bad();
    const copy = Uint8Array.from(publicKey);
    let point: PreparedPoint;
    try {
      point = p256Prepared.prepare(copy);
    } catch {
      throw bad();
    }
    return new PreparedKey(copy, point);
  }

  /** True when `publicKey` is the key this was prepared from. */
  isFor(publicKey: Uint8Array): boolean {
    return bytesEqual(publicKey, this.#publicKey);
  }

  /** Verifies a signature over `message` (SHA-256 inside) by this key; false for any refusal. */
  verify(signature: Uint8Array, message: Uint8Array): boolean {
    if (!isCanonicalSignature(signature)) return false;
    try {
      return p256Prepared.verify(this.#point, signature, message);
    } catch {
      return false;
    }
  }
}

/** Prepares `publicKey` for many verifications ({@link PreparedKey}). Throws `BAD_KEY` for an invalid key. */
export function prepareKey(publicKey: Uint8Array): PreparedKey {
  return PreparedKey.of(publicKey);
}

/**
 * A verifier that answers as {@link nobleVerifier} (the same accepted signatures: checked on every
 * vector and on seeded cases in `protocol/test/prepared.test.ts`) and uses `key`'s table when asked
 * about that key; any other key goes to `otherwise`.
 */
export function preparedVerifier(key: PreparedKey, otherwise: Verifier = nobleVerifier): Verifier {
  return {
    verify: (signature, message, publicKey) =>
      key.isFor(publicKey) ? key.verify(signature, message) : otherwise.verify(signature, message, publicKey),
  };
}
