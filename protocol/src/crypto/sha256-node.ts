/**
 * SHA-256 through `node:crypto` (OpenSSL): the `node` target of the package import `#sha256`
 * (package.json `imports`), so that everything the protocol hashes on a server (payload
 * hashes, key ids, output ids) is hashed natively, several times faster than in JS for the
 * few hundred bytes of a DT object. Byte-identical to `sha256.ts` (`test/suite.test.ts`
 * checks both). Never reaches the firmware bundle: esbuild builds it for a neutral platform,
 * where the `node` condition does not apply.
 *
 * @module
 */
import { createHash, hash } from 'node:crypto';

const oneShot = typeof hash === 'function';

/** SHA-256 (FIPS 180-4) of `data`, as a new 32-byte plain `Uint8Array`. */
export function sha256Digest(data: Uint8Array): Uint8Array {
  // A copy: the digest may sit in a shared pool buffer, and callers expect a plain Uint8Array.
  return new Uint8Array(oneShot ? hash('sha256', data, 'buffer') : createHash('sha256').update(data).digest());
}
