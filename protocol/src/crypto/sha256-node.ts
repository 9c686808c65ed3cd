/**
 * SHA-256 on Node: the `node` target of the package import `#sha256` (package.json `imports`).
 * Inputs from {@link NATIVE_FROM} bytes up (batches, sync requests, large handovers) are hashed
 * by `node:crypto` (OpenSSL), several times faster there; smaller ones (keys, output ids,
 * transfer, token and certificate payloads: what validation hashes per transfer) by the pure
 * `sha256.ts`, whose reused state costs less than a call into OpenSSL at those sizes (measured
 * with `protocol/bench/handover.ts`: about 16 against 19 µs of CPU per transfer at 63 hops).
 * Byte-identical either way (`test/suite.test.ts` checks both). Never reaches the firmware
 * bundle: esbuild builds it for a neutral platform, where the `node` condition does not apply.
 *
 * @module
 */
import { createHash, hash } from 'node:crypto';
import { sha256Digest as pureDigest } from './sha256.ts';

/** Inputs at least this long are hashed by OpenSSL. */
export const NATIVE_FROM = 1024;

const oneShot = typeof hash === 'function';

/** SHA-256 (FIPS 180-4) of `data`, as a new 32-byte plain `Uint8Array`. */
export function sha256Digest(data: Uint8Array): Uint8Array {
  if (data.length < NATIVE_FROM) return pureDigest(data);
  // A copy: the digest may sit in a shared pool buffer, and callers expect a plain Uint8Array.
  return new Uint8Array(oneShot ? hash('sha256', data, 'buffer') : createHash('sha256').update(data).digest());
}
